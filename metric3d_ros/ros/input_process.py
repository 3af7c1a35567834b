"""Receiving images in helper processes: ``InputProcessPool`` (node parameter ``input_processes``).

Why: the node process takes every image on one executor thread that shares its interpreter lock with the
inference worker and the publishing threads; rclpy deserializes a 2.7 MB image into a Python message there
(several copies under the lock), so under load a frame reaches the node's callback late and jittery. A
receiver process has its own interpreter: it subscribes to its cameras' image topics with raw (serialized)
subscriptions, reads the header and pixel layout straight from the CDR bytes (``cdr.parse_image_cdr``),
copies the pixels once into a shared-memory slot and sends the node a small description. The node builds an
Image-like object whose ``data`` is a view of that slot and hands it to its usual image callback (pairing,
validation, counters, batching unchanged). The slot goes back to the receiver when the node no longer
references it (the frame was processed or dropped).

Each camera has up to ``slots_per_camera`` slots (the node passes its ``queue_depth`` + 3; created on demand,
each as large as the camera's frames); when all are in use the receiver drops the frame and the node counts it
as ``queue_overflow``. CameraInfo
stays with the node (small messages). A receiver that dies is restarted by its reader thread after a pause;
its camera's frames are missed meanwhile (diagnostics show the camera silent). Raw (uncompressed) images only.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
import weakref
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from metric3d_ros.core.child_process import requests, start_child, stop_child
from metric3d_ros.ros.qos import QosSettings

LOG = logging.getLogger(__name__)

#: slots per camera when the node does not say (it passes its queue depth + 3: one frame held for its
#: CameraInfo, one in the batch being processed, one arriving)
_SLOTS_PER_CAMERA = 6


@dataclass(frozen=True)
class ReceiverSpec:
    """What one receiver process subscribes to (picklable: sent to the spawned process)."""

    index: int
    node_name: str
    namespace: str
    domain_id: int
    topics: dict  # camera -> resolved image topic
    qos: QosSettings
    malloc_tuning: bool = True
    slots_per_camera: int = _SLOTS_PER_CAMERA


@dataclass
class _Header:
    """std_msgs/Header's fields, enough for the node's image callback."""

    stamp: object
    frame_id: str


@dataclass
class _Stamp:
    sec: int
    nanosec: int


@dataclass
class ShmImage:
    """A received image whose ``data`` is a view of a receiver's shared-memory slot (duck-types Image)."""

    header: _Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray


# --------------------------------------------------------------------------------------- process side
def _serve(conn, spec: ReceiverSpec) -> None:
    """Receiver process main: take images, copy their pixels into slots, describe them to the node."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from metric3d_ros.core.malloc_tuning import keep_large_allocations
    from metric3d_ros.ros.cdr import CdrError, parse_image_cdr
    from metric3d_ros.ros.helper_node import start_helper_node, stop_helper_node

    if spec.malloc_tuning:
        keep_large_allocations()
    slots: dict[str, list[shared_memory.SharedMemory]] = {cam: [] for cam in spec.topics}
    free: dict[str, set[int]] = {cam: set() for cam in spec.topics}
    lock = threading.Lock()
    send_lock = threading.Lock()
    stop = threading.Event()

    def send(msg: tuple) -> None:
        with send_lock:
            conn.send(msg)

    def on_image(cam: str, raw: bytes) -> None:
        try:
            head = parse_image_cdr(raw)
        except CdrError as exc:
            send(('bad', cam, str(exc)))
            return
        size = head.data_size
        with lock:
            index = next((i for i in sorted(free[cam]) if slots[cam][i].size >= size), None)
            if index is None and len(slots[cam]) < spec.slots_per_camera:
                slots[cam].append(shared_memory.SharedMemory(create=True, size=max(size, 1)))
                index = len(slots[cam]) - 1
            elif index is None and free[cam]:  # larger frames than before: replace a free slot
                index = min(free[cam])
                old = slots[cam][index]
                slots[cam][index] = shared_memory.SharedMemory(create=True, size=max(size, 1))
                old.close()
                old.unlink()
            if index is None:
                send(('full', cam))
                return
            free[cam].discard(index)
        block = slots[cam][index]
        np.copyto(np.ndarray((size,), np.uint8, block.buf),
                  np.frombuffer(raw, np.uint8, count=size, offset=head.data_offset))
        send(('image', cam, index, block.name, (head.stamp_sec, head.stamp_nanosec, head.frame_id),
              head.height, head.width, head.encoding, head.is_bigendian, head.step, size))

    def read_frees() -> None:
        for msg in requests(conn):
            if stop.is_set():
                break
            if msg[0] == 'free':
                with lock:
                    free[msg[1]].add(msg[2])
        stop.set()

    try:
        node = start_helper_node(spec.node_name, spec.namespace, spec.domain_id)
        profile = spec.qos.profile()
        subs = [node.create_subscription(Image, topic, lambda raw, c=cam: on_image(c, raw), profile, raw=True)
                for cam, topic in spec.topics.items()]
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
    except Exception as exc:  # noqa: BLE001 - reported to the node
        conn.send(('error', f'{type(exc).__name__}: {exc}'))
        return
    conn.send(('ready', None))
    reader = threading.Thread(target=read_frees, daemon=True, name='frees')
    reader.start()
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    except Exception:  # noqa: BLE001 - a broken pipe to the node: it is gone
        pass
    finally:
        stop.set()
        del subs
        executor.shutdown()
        stop_helper_node(node)
        for blocks in slots.values():
            for block in blocks:
                block.close()
                block.unlink()
        conn.close()


# ------------------------------------------------------------------------------------------ node side
class _Receiver:
    """One receiver process, its pipe and its reader thread (which calls the node's image callback)."""

    def __init__(self, spec: ReceiverSpec, pool: InputProcessPool) -> None:
        self.spec = spec
        self._pool = pool
        # re-entrant: a slot's finalizer (which sends 'free') may run during garbage collection anywhere
        self._send_lock = threading.RLock()
        self._blocks: dict[str, shared_memory.SharedMemory] = {}
        self._slot_names: dict[tuple[str, int], str] = {}
        self.proc = None
        self.conn = None
        self.restarts = -1
        self.closed = False
        self._start()
        self.reader = threading.Thread(target=self._read, daemon=True,
                                       name=f'metric3d-receiver-{spec.index}')
        self.reader.start()

    def _start(self) -> None:
        proc, parent_conn = start_child(_serve, (self.spec,), f'metric3d-receiver-{self.spec.index}',
                                        self._pool.start_timeout_s, f'receiver process {self.spec.index}')
        if self.closed:  # closed while this (re)start was under way: nobody would stop it later
            stop_child(proc, parent_conn, 5.0)
            parent_conn.close()
            return
        self._close_blocks()
        self.proc, self.conn = proc, parent_conn
        self.restarts += 1

    def _block(self, cam: str, index: int, name: str) -> shared_memory.SharedMemory:
        from metric3d_ros.core.engine.process_engine import attach_block, close_block

        previous = self._slot_names.get((cam, index))
        if previous is not None and previous != name:  # the receiver replaced the slot by a larger one
            old = self._blocks.pop(previous, None)
            if old is not None:
                close_block(old)  # (unmapped once the frames that still view it are gone)
        self._slot_names[(cam, index)] = name
        block = self._blocks.get(name)
        if block is None:
            block = self._blocks[name] = attach_block(name)
        return block

    def _free(self, conn, cam: str, index: int) -> None:
        """The node no longer references slot ``index`` of ``cam``: hand it back (any thread)."""
        if conn is not self.conn:
            return  # a slot of a receiver that was replaced
        try:
            with self._send_lock:
                conn.send(('free', cam, index))
        except Exception:  # noqa: BLE001 - the receiver is gone; its slots went with it
            pass

    def _read(self) -> None:
        while not self.closed:
            conn = self.conn
            try:
                msg = conn.recv()
            except Exception:  # noqa: BLE001 - EOF or a broken pipe: the receiver died (or is closing)
                if self.closed:
                    return
                try:
                    self._pool.on_receiver_died(self.spec)
                except Exception:  # noqa: BLE001 - the restart below must happen regardless
                    LOG.exception('receiver process %d: reporting its exit failed', self.spec.index)
                self._unlink_blocks()  # the dead process cannot remove its slots any more
                self._restart()
                continue
            try:
                self._handle(conn, msg)
            except Exception:  # noqa: BLE001 - one bad message must not stop this camera's images
                LOG.exception('receiver process %d: handling %r failed', self.spec.index, msg[:2])

    def _handle(self, conn, msg: tuple) -> None:
        kind, cam = msg[0], msg[1]
        if kind == 'image':
            index, name, stamp, height, width, encoding, bigendian, step, size = msg[2:]
            sec, nanosec, frame_id = stamp
            try:
                block = self._block(cam, index, name)
            except FileNotFoundError:
                self._free(conn, cam, index)
                return
            data = np.ndarray((size,), np.uint8, block.buf)
            weakref.finalize(data, self._free, conn, cam, index)
            image = ShmImage(_Header(_Stamp(sec, nanosec), frame_id), height, width, encoding, bigendian,
                             step, data)
            del data
            self._pool.deliver(cam, image)
        elif kind == 'full':
            self._pool.on_dropped(cam)
        elif kind == 'bad':
            self._pool.on_bad(cam, msg[2])

    def _restart(self) -> None:
        while not self.closed:
            time.sleep(1.0)
            if self.closed:
                return
            try:
                self._start()
                if not self.closed:
                    LOG.warning('receiver process %d restarted', self.spec.index)
                return
            except Exception as exc:  # noqa: BLE001 - retried after a pause
                LOG.error('restarting receiver process %d failed: %s', self.spec.index, exc)
                time.sleep(4.0)

    def _unlink_blocks(self) -> None:
        from metric3d_ros.core.engine.process_engine import unlink_block

        for block in self._blocks.values():
            unlink_block(block)

    def _close_blocks(self) -> None:
        from metric3d_ros.core.engine.process_engine import close_block

        blocks, self._blocks = self._blocks, {}
        self._slot_names = {}
        for block in blocks.values():
            close_block(block)

    def close(self, timeout_s: float) -> None:
        self.closed = True
        proc, conn = self.proc, self.conn
        stop_child(proc, conn, timeout_s, self._send_lock)
        self.reader.join(timeout_s)
        if conn is not None:
            conn.close()
        self.proc = self.conn = None


class InputProcessPool:
    """``processes`` receiver processes for the node's cameras (assigned round-robin; see the module doc).

    on_image(camera, image): called on a reader thread with a ``ShmImage`` (the node's image callback).
    on_event(camera, reason, detail): a frame the receiver could not hand over ('queue_overflow': no free
    slot; 'malformed_image': unreadable bytes) or a receiver that died ('receiver_died').
    """

    def __init__(self, node, topics: dict[str, str], qos: QosSettings, processes: int, on_image, on_event,
                 malloc_tuning: bool = True, start_timeout_s: float = 60.0,
                 slots_per_camera: int = _SLOTS_PER_CAMERA) -> None:
        cams = list(topics)
        count = max(1, min(int(processes), len(cams)))
        self.start_timeout_s = start_timeout_s
        self._on_image = on_image
        self._on_event = on_event
        self.receivers: list[_Receiver] = []
        try:
            for k in range(count):
                mine = {cam: topics[cam] for i, cam in enumerate(cams) if i % count == k}
                spec = ReceiverSpec(index=k, node_name=f'{node.get_name()}_receiver_{k}',
                                    namespace=node.get_namespace(), domain_id=node.context.get_domain_id(),
                                    topics=mine, qos=qos, malloc_tuning=malloc_tuning,
                                    slots_per_camera=max(2, int(slots_per_camera)))
                self.receivers.append(_Receiver(spec, self))
        except Exception:
            self.close()
            raise

    def deliver(self, cam: str, image: ShmImage) -> None:
        self._on_image(cam, image)

    def on_dropped(self, cam: str) -> None:
        self._on_event(cam, 'queue_overflow', 'no free receive slot (frames are held too long)')

    def on_bad(self, cam: str, detail: str) -> None:
        self._on_event(cam, 'malformed_image', detail)

    def on_receiver_died(self, spec: ReceiverSpec) -> None:
        LOG.error('receiver process %d exited: restarting it', spec.index)
        for cam in spec.topics:
            self._on_event(cam, 'receiver_died', f'receiver process {spec.index} exited; restarting it')

    def close(self, timeout_s: float = 5.0) -> None:
        receivers, self.receivers = self.receivers, []
        for receiver in receivers:
            receiver.close(timeout_s)
