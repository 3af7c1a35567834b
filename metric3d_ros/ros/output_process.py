"""Publishing from helper processes: ``OutputProcessPool`` (node parameter ``publisher_processes``).

Why: rclpy holds the interpreter lock while it publishes, and a message is copied four times on the way
(into the ``array``, the C message, the CDR buffer, the shared-memory segment). On the H100 host a 720p
depth image plus its stride-2 cloud cost 7.3 ms of lock time per frame under load, so four cameras at 30 Hz
need ~880 ms of every second of one interpreter, and two publishing threads were measured no faster than
one (on the dev machine, docs/NODE.md). Separate processes have separate interpreters.

How: with the engine in its own process (``engine_process``) every output already lies in shared memory
(``ProcessEngine.infer(..., shared=True)``). The node hands each result to the publisher processes of its
camera (a camera's images and its cloud are two units assigned round-robin, so that two processes publish
a frame's depth and cloud at the same time): a small message with the header, the CameraInfo fields, the
request and where each array lies. That process attaches to the arena, builds the messages from views (one
copy into each message, as in the node) and publishes them on the node's own output topics (the resolved
names of the node's publishers, so remappings hold), then reports back. Until then the node keeps the result
referenced, so the engine process does not write that arena again. Stamp order holds per topic: one
process publishes a topic, in the order the node hands results over.

The node keeps its own (idle) publishers: their subscription counts still decide which outputs are computed,
and their resolved names are the topics. ``ros2 topic info`` therefore lists the node and one or two of its
``<node>_publisher_<k>`` helpers as publishers of each output topic (only one of them publishes it). A helper
that dies releases what it held at once (reported failed: ``publish_error`` in /diagnostics) and is
restarted by the next result for one of its cameras (after a failed restart, not before 5 s); a restarted
helper publishes an output once its subscribers have matched it again.
"""
from __future__ import annotations

import itertools
import logging
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from metric3d_ros.core.child_process import ChildStartError, requests, start_child, stop_child
from metric3d_ros.core.engine.types import FrameResult
from metric3d_ros.ros.params import OutputConfig
from metric3d_ros.ros.publishers import CameraOutputs, Job
from metric3d_ros.ros.qos import QosSettings

LOG = logging.getLogger(__name__)

_ARRAY_FIELDS = ('depth_m', 'confidence', 'normals', 'points_xyz', 'points_rgb')
_MAX_ATTACHED = 16


class OutputProcessError(RuntimeError):
    """A publisher process failed to start or died."""


@dataclass(frozen=True)
class PublisherSpec:
    """What one publisher process publishes (picklable: it is sent to the spawned process)."""

    index: int
    node_name: str
    namespace: str
    domain_id: int
    cameras: tuple[str, ...]
    topics: dict  # camera -> {output key -> resolved topic name}
    outputs: OutputConfig
    qos: QosSettings
    malloc_tuning: bool = True


# --------------------------------------------------------------------------------------- process side
def _serve(conn, spec: PublisherSpec) -> None:
    """Publisher process main: publish what the node sends until 'close' or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from multiprocessing import shared_memory

    from std_msgs.msg import Header

    from metric3d_ros.core.engine.process_engine import attach_block, close_block, shared_array_view
    from metric3d_ros.core.malloc_tuning import keep_large_allocations
    from metric3d_ros.ros.helper_node import start_helper_node, stop_helper_node

    if spec.malloc_tuning:
        keep_large_allocations()
    try:
        node = start_helper_node(spec.node_name, spec.namespace, spec.domain_id)
        profile = spec.qos.profile()
        outputs = {cam: CameraOutputs(node, cam, spec.outputs, profile, topics=spec.topics[cam])
                   for cam in spec.cameras}
    except Exception as exc:  # noqa: BLE001 - reported to the node
        conn.send(('error', f'{type(exc).__name__}: {exc}'))
        return
    conn.send(('ready', None))
    attached: OrderedDict[str, shared_memory.SharedMemory] = OrderedDict()

    def block_of(name: str) -> shared_memory.SharedMemory:
        block = attached.get(name)
        if block is None:
            block = attached[name] = attach_block(name)
            while len(attached) > _MAX_ATTACHED:  # arenas the engine replaced by larger ones
                close_block(attached.popitem(last=False)[1])
        attached.move_to_end(name)
        return block

    try:
        for msg in requests(conn):
            token, camera_id, (sec, nanosec, frame_id), info, request, meta, shared, only = msg[1:]
            start_s = time.perf_counter()
            error = None
            try:
                header = Header(frame_id=frame_id)
                header.stamp.sec, header.stamp.nanosec = sec, nanosec
                result = FrameResult(camera_id=camera_id, stamp_ns=meta['stamp_ns'], frame_id=frame_id,
                                     intrinsics=meta['intrinsics'])
                for name, where in shared.items():
                    setattr(result, name, shared_array_view(block_of(where.arena), where))
                outputs[camera_id].publish(Job(camera_id, header, info, request), result, only)
            except Exception as exc:  # noqa: BLE001 - reported per frame
                error = f'{type(exc).__name__}: {exc}'
            result = None
            conn.send(('done', token, (time.perf_counter() - start_s) * 1e3, error, time.time_ns()))
    finally:
        for block in attached.values():
            close_block(block)
        for out in outputs.values():
            out.destroy()
        stop_helper_node(node)
        conn.close()


# ------------------------------------------------------------------------------------------ node side
# (job, result, publish time in ms, error or None, system time when the last part was published in ns; 0 if
# it was not)
PublishedCallback = Callable[[Job, FrameResult, float, 'str | None', int], None]

# A camera's outputs in two halves that two processes can publish at the same time.
OUTPUT_GROUPS = {
    'image': frozenset({'depth', 'depth_info', 'normals', 'confidence'}),
    'cloud': frozenset({'points'}),
}


class _Frame:
    """One result on its way through one or two publisher processes."""

    def __init__(self, job: Job, result: FrameResult, parts: int) -> None:
        self.job = job
        self.result = result
        self.remaining = parts
        self.publish_ms = 0.0
        self.error: str | None = None
        self.end_ns = 0
        self._lock = threading.Lock()

    def ack(self, publish_ms: float, error: str | None, end_ns: int = 0) -> bool:
        """Record one part published; True when it was the last."""
        with self._lock:
            self.remaining -= 1
            self.publish_ms = max(self.publish_ms, publish_ms)
            self.error = self.error or error
            self.end_ns = max(self.end_ns, end_ns)
            return self.remaining == 0


class _Worker:
    """One publisher process, its pipe and the results it holds."""

    def __init__(self, spec: PublisherSpec, on_done: PublishedCallback, start_timeout_s: float) -> None:
        self.spec = spec
        self._on_done = on_done
        self._start_timeout_s = start_timeout_s
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Frame] = {}
        self._pending_lock = threading.Lock()
        self.proc = None
        self.conn = None
        self.reader: threading.Thread | None = None
        self.restarts = -1
        self.closed = False
        self._retry_after_s = 0.0
        self.start()

    def start(self) -> None:
        try:
            proc, parent_conn = start_child(_serve, (self.spec,), f'metric3d-publisher-{self.spec.index}',
                                            self._start_timeout_s, f'publisher process {self.spec.index}')
        except ChildStartError as exc:
            raise OutputProcessError(str(exc)) from exc
        self.proc, self.conn = proc, parent_conn
        self.restarts += 1
        self.reader = threading.Thread(target=self._read, args=(parent_conn,), daemon=True,
                                       name=f'metric3d-publisher-{self.spec.index}-acks')
        self.reader.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def submit(self, token: int, frame: _Frame, only: frozenset[str] | None) -> None:
        """Send one part of ``frame``; never raises (a failure is reported through the callback)."""
        if self.closed:
            self._finish(frame, 0.0, 'the node stopped publishing')
            return
        if not self.alive:
            if time.monotonic() < self._retry_after_s:
                self._finish(frame, 0.0, f'publisher process {self.spec.index} is down (restart failed)')
                return
            self._fail_pending('the publisher process exited')
            LOG.warning('publisher process %d is gone: starting a new one', self.spec.index)
            try:
                self.start()
            except Exception as exc:  # noqa: BLE001 - retried after a pause, never on every frame
                self._retry_after_s = time.monotonic() + 5.0
                LOG.error('restarting publisher process %d failed: %s', self.spec.index, exc)
                self._finish(frame, 0.0, f'publisher process {self.spec.index} is down: {exc}')
                return
        job, result = frame.job, frame.result
        header = job.header
        meta = {'stamp_ns': result.stamp_ns, 'intrinsics': result.intrinsics}
        msg = ('publish', token, job.camera_id, (header.stamp.sec, header.stamp.nanosec, header.frame_id),
               job.info, job.request, meta, result.shared or {}, only)
        with self._pending_lock:
            self._pending[token] = frame
        try:
            with self._send_lock:
                self.conn.send(msg)
        except Exception:  # noqa: BLE001 - a dead pipe (or a closed worker): this part failed
            with self._pending_lock:
                self._pending.pop(token, None)
            self._finish(frame, 0.0, 'the publisher process exited')

    def _finish(self, frame: _Frame, publish_ms: float, error: str | None, end_ns: int = 0) -> None:
        if frame.ack(publish_ms, error, end_ns):
            try:
                self._on_done(frame.job, frame.result, frame.publish_ms, frame.error, frame.end_ns)
            except Exception:  # noqa: BLE001 - the acknowledgement thread must survive a failing callback
                LOG.exception('publisher process %d: the published callback failed', self.spec.index)

    def _read(self, conn) -> None:
        while True:
            try:
                kind, token, publish_ms, error, end_ns = conn.recv()
            except Exception:  # noqa: BLE001 - EOF, a broken pipe or a torn message: the process is gone
                break
            if kind != 'done':
                continue
            with self._pending_lock:
                frame = self._pending.pop(token, None)
            if frame is not None:
                self._finish(frame, publish_ms, error, end_ns)
            frame = None  # drop the result now: its arena may be written again
        if conn is self.conn:  # the process died (not replaced or closed): release what it held now
            self._fail_pending('the publisher process exited')

    def _fail_pending(self, error: str) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for frame in pending.values():
            self._finish(frame, 0.0, error)

    def pending(self) -> int:
        with self._pending_lock:
            return len(self._pending)

    def close(self, timeout_s: float) -> None:
        self.closed = True
        proc, conn = self.proc, self.conn
        stop_child(proc, conn, timeout_s, self._send_lock)
        if self.reader is not None:
            self.reader.join(timeout_s)
        if conn is not None:
            conn.close()
        self._fail_pending('the node stopped publishing')
        self.proc = self.conn = None


class OutputProcessPool:
    """``processes`` publisher processes for the node's cameras (see the module docstring).

    Each camera's outputs are two units, its images (depth, depth CameraInfo, normals, confidence) and its
    cloud, assigned round-robin over the processes, so that with two or more processes a frame's depth
    image and cloud are published at the same time by different processes.
    """

    def __init__(self, node, outputs: dict[str, CameraOutputs], config: OutputConfig, qos: QosSettings,
                 processes: int, on_published: PublishedCallback, start_timeout_s: float = 60.0,
                 malloc_tuning: bool = True) -> None:
        units = [(cam, group) for cam in outputs for group in OUTPUT_GROUPS]
        count = max(1, min(int(processes), len(units)))
        assigned = {unit: k % count for k, unit in enumerate(units)}
        domain_id = node.context.get_domain_id()
        namespace = node.get_namespace()
        self._tokens = itertools.count()
        self._units: dict[tuple[str, str], _Worker] = {}
        self.workers: list[_Worker] = []
        try:
            for k in range(count):
                cams = tuple(dict.fromkeys(cam for (cam, _), w in assigned.items() if w == k))
                spec = PublisherSpec(
                    index=k, node_name=f'{node.get_name()}_publisher_{k}', namespace=namespace,
                    domain_id=domain_id, cameras=cams,
                    topics={cam: outputs[cam].topic_names() for cam in cams}, outputs=config, qos=qos,
                    malloc_tuning=malloc_tuning,
                )
                self.workers.append(_Worker(spec, on_published, start_timeout_s))
            for unit, k in assigned.items():
                self._units[unit] = self.workers[k]
        except Exception:
            self.close()
            raise

    def submit(self, job: Job, result: FrameResult) -> None:
        """Hand ``result`` (with ``result.shared``) to the process(es) of its camera; returns at once."""
        targets: dict[_Worker, set[str]] = {}
        for group, keys in OUTPUT_GROUPS.items():
            targets.setdefault(self._units[(job.camera_id, group)], set()).update(keys)
        frame = _Frame(job, result, len(targets))
        for worker, keys in targets.items():
            worker.submit(next(self._tokens), frame, None if len(targets) == 1 else frozenset(keys))

    def pending(self) -> int:
        """Parts of results handed over and not yet reported published."""
        return sum(w.pending() for w in self.workers)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop every publisher process (what they hold is reported failed)."""
        for worker in self.workers:
            worker.close(timeout_s)
        self.workers = []
        self._units = {}
