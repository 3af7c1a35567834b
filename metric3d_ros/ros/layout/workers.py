"""``process_layout: group_workers``: each camera group in its own worker process (see ``ros.layout``).

Processes and threads (each with one job):

- node process: the lifecycle node (parameters, transitions, /diagnostics) and, per group, a reader thread
  ``metric3d-<group>-reader`` (replies and reports from its worker) and, after a death, a restart thread
  ``metric3d-<group>-restart``.
- worker process ``metric3d-<group>`` (multiprocessing ``spawn``, so CUDA starts cleanly): its own rclpy
  context and node ``<node>_<group>`` in the node's namespace, a ``CameraGroup`` on it, the executor on the
  main thread (receives images, runs commands), the group's inference thread ``metric3d-<group>``, and a
  command thread that hands the node's commands to the executor through a guard condition.

Protocol (a duplex pipe): the node sends ``(command,)`` with command in configure, activate, deactivate,
close; the worker answers ``('reply', command, error or None)`` and pushes ``('report', GroupReport)`` every
``diagnostics.period_s``. The worker ignores SIGINT (Ctrl-C reaches the whole process group; shutting down
is the node's job) and exits when its pipe closes (the node died).

A worker that dies is restarted by its restart thread (configure, and activate when the node is active; a
failed start is retried after 5 s); the frames its last report showed in flight are counted as
``worker_died`` (frames it received after that report are not known to the node).
"""
from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from metric3d_ros.core.malloc_tuning import keep_large_allocations
from metric3d_ros.core.outputs import OUTPUTS, OutputSpec, register_output
from metric3d_ros.ros.layout.group import CameraTopics, GroupReport
from metric3d_ros.ros.params import GroupConfig, NodeConfig
from metric3d_ros.ros.timers import steady_timer

LOG = logging.getLogger(__name__)
_RESTART_DELAY_S = 5.0
_COMMAND_POLL_S = 0.02
_CONFIGURE_TIMEOUT_S = 900.0
"""Engine load, warm-up and torch.compile of a group (minutes with compile on a big network)."""
_STOP_TIMEOUT_S = 30.0


class WorkerError(RuntimeError):
    """A group worker failed a command or died."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs (pickled to it)."""

    node_name: str
    namespace: str
    config: NodeConfig
    group: GroupConfig
    topics: Mapping[str, CameraTopics]
    catalogue: Mapping[str, OutputSpec]
    use_sim_time: bool
    fused_topic: str = ''


# ------------------------------------------------------------------------------------------ worker side
def _serve(spec: WorkerSpec, conn) -> None:
    """Entry point of a worker process: one thread runs the executor and the node's commands."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # before unblocking it (the node blocked it around start)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    try:
        from rclpy.signals import SignalHandlerOptions
        rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    except ImportError:  # pragma: no cover - older rclpy
        rclpy.init(args=[])
    keep_large_allocations()  # frame-sized buffers stay mapped between frames (no page faults per frame)
    from metric3d_ros.ros.layout.group import CameraGroup

    for output in spec.catalogue.values():  # the node's catalogue, outputs registered at run time included
        if output.name not in OUTPUTS:
            register_output(output)
    # use_global_arguments=False: the node's command line (spawn restores sys.argv; under launch it carries
    # -r __node:=...) must not rename or remap the worker
    node = rclpy.create_node(f'{spec.node_name}_{spec.group.name}', namespace=spec.namespace,
                             use_global_arguments=False,
                             parameter_overrides=[Parameter('use_sim_time', value=spec.use_sim_time)])
    group = CameraGroup(node, spec.config, spec.group, spec.topics, spec.catalogue, spec.fused_topic)

    def send(msg: tuple) -> bool:
        try:
            conn.send(msg)
            return True
        except (OSError, ValueError):  # the node is gone
            return False

    def run(command: str) -> str | None:
        try:
            if command == 'configure':
                group.configure()
            elif command == 'activate':
                group.activate()
            elif command == 'deactivate':
                group.deactivate()
            elif command == 'close':
                group.close()
            else:
                return f'unknown command {command!r}'
        except Exception as exc:  # noqa: BLE001 - reported to the node
            group.error = f'{type(exc).__name__}: {exc}'
            return group.error
        return None

    steady_timer(node, spec.config.diagnostics_period_s, lambda: send(('report', group.report())))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while True:
            executor.spin_once(timeout_sec=_COMMAND_POLL_S)
            try:
                if not conn.poll():
                    continue
                command = conn.recv()[0]
            except (EOFError, OSError):  # the node process is gone: end
                break
            error = run(command)
            send(('report', group.report()))
            if not send(('reply', command, error)) or command == 'close':
                break
    finally:
        group.close()
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
        conn.close()


# -------------------------------------------------------------------------------------------- node side
class _Worker:
    """One worker process and its reader thread (node side)."""

    def __init__(self, spec: WorkerSpec, on_death) -> None:
        self.spec = spec
        self._on_death = on_death
        self._replies: queue.SimpleQueue = queue.SimpleQueue()
        self.report: GroupReport | None = None
        self.closing = False
        self._close_sent = False
        ctx = multiprocessing.get_context('spawn')
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(spec, child), name=f'metric3d-{spec.group.name}')
        # Ctrl-C reaches the whole process group: the child must not see it before it ignores it
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        child.close()
        self._reader = threading.Thread(target=self._read, name=f'metric3d-{spec.group.name}-reader',
                                        daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == 'report':
                self.report = msg[1]
            elif msg[0] == 'reply':
                self._replies.put((msg[1], msg[2]))
        self._replies.put((None, 'the worker process ended'))
        if not self.closing:
            self._on_death(self)

    def call(self, command: str, timeout_s: float | None = None) -> None:
        """Send ``command`` and wait for its reply; raises ``WorkerError`` on an error or a death."""
        try:
            self._conn.send((command,))
        except (OSError, ValueError) as exc:
            raise WorkerError(f'camera group {self.spec.group.name}: worker unreachable ({exc})') from exc
        deadline_s = None if timeout_s is None else time.monotonic() + timeout_s
        while True:  # a late reply to an earlier command that timed out is skipped
            left_s = None if deadline_s is None else max(0.0, deadline_s - time.monotonic())
            try:
                answered, error = self._replies.get(timeout=left_s)
            except queue.Empty:
                raise WorkerError(f'camera group {self.spec.group.name}: no answer to {command} '
                                  f'within {timeout_s:g} s') from None
            if answered in (command, None):
                break
        if answered is None:
            code = self.process.exitcode
            raise WorkerError(f'camera group {self.spec.group.name}: the worker process died during '
                              f'{command} (exit code {code})')
        if error is not None:
            raise WorkerError(f'camera group {self.spec.group.name} (device {self.spec.group.device}): '
                              f'{command} failed: {error}')

    def request_close(self) -> None:
        """Ask the worker to close (engine and node) and end; ``stop`` waits for it."""
        self.closing = True
        self._close_sent = True
        try:
            self._conn.send(('close',))
        except (OSError, ValueError):
            pass

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """Close the worker and wait for its process; killed if it does not end within ``timeout_s``."""
        if not self._close_sent:
            self.request_close()
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self._conn.close()
        self._reader.join(5.0)


@dataclass
class _GroupState:
    """The node's record of one group (guarded by the layout's lock)."""

    spec: WorkerSpec
    worker: _Worker | None = None
    restarting: bool = False
    failed: str = ''
    restarts: int = 0
    lost: int = 0


class GroupWorkersLayout:
    """One worker process per camera group (module docstring).

    One lock orders lifecycle transitions and restarts: a restarted worker is installed, and activated when
    the node is active, under it; ``activate``/``deactivate`` skip a group that is restarting (its restart
    applies the state the node is in when it is back).
    """

    def __init__(self, node, config: NodeConfig, topics: Mapping[str, CameraTopics],
                 catalogue: Mapping[str, OutputSpec], fused_topics: Mapping[str, str]) -> None:
        self._node = node
        self._lock = threading.RLock()
        self._active = False
        self._closed = False
        self._restart_threads: list[threading.Thread] = []
        use_sim_time = bool(node.get_parameter('use_sim_time').value)
        self._groups = {
            group.name: _GroupState(WorkerSpec(
                node.get_name(), node.get_namespace(), config, group,
                {cam: topics[cam] for cam in group.cameras}, dict(catalogue), use_sim_time,
                fused_topics.get(group.name, '')))
            for group in config.groups}

    def configure(self) -> None:
        try:
            workers = [(state, _Worker(state.spec, self._on_death)) for state in self._groups.values()]
            with self._lock:
                for state, worker in workers:
                    state.worker = worker
            for _state, worker in workers:  # the groups load and warm up at the same time
                worker.call('configure', _CONFIGURE_TIMEOUT_S)
        except BaseException:  # Ctrl-C during a long configure included: no worker left behind
            self.close()
            raise

    def activate(self) -> None:
        with self._lock:
            self._active = True
            for state in self._groups.values():
                if state.worker is not None and not state.restarting:
                    state.worker.call('activate', _STOP_TIMEOUT_S)

    def deactivate(self) -> None:
        with self._lock:
            self._active = False
            for state in self._groups.values():
                if state.worker is not None and not state.restarting:
                    try:
                        state.worker.call('deactivate', _STOP_TIMEOUT_S)
                    except WorkerError as exc:
                        self._node.get_logger().warning(str(exc))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._active = False
            workers = [state.worker for state in self._groups.values() if state.worker is not None]
            for state in self._groups.values():
                state.worker = None
            threads, self._restart_threads = self._restart_threads, []
        for worker in workers:  # all at once, then wait for each
            worker.request_close()
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(_STOP_TIMEOUT_S)

    def engines(self) -> list:
        return []

    def reports(self) -> list[GroupReport]:
        out = []
        with self._lock:
            states = [(state.spec.group, state.worker, state.failed, state.restarts, state.lost)
                      for state in self._groups.values()]
        for group, worker, failed, restarts, lost in states:
            report = worker.report if worker is not None else None
            if report is None:
                report = GroupReport(name=group.name, device=group.device,
                                     state='failed' if failed else 'starting', error=failed, cameras=(),
                                     batch=None, timing={})
            elif failed:
                report = replace(report, state='failed', error=failed)
            out.append(replace(report, restarts=restarts, lost=lost))
        return out

    # ----------------------------------------------------------------------------------- failures
    def _on_death(self, worker: _Worker) -> None:
        """A worker ended without being asked (its reader thread): count what it held, restart it off-path."""
        name = worker.spec.group.name
        code = worker.process.exitcode
        lost = _in_flight(worker.report)
        with self._lock:
            state = self._groups[name]
            if self._closed or state.worker is not worker:
                return
            state.restarting = True
            state.lost += lost
            state.failed = f'worker process died (exit code {code}); restarting'
            thread = threading.Thread(target=self._restart, args=(state, worker),
                                      name=f'metric3d-{name}-restart', daemon=True)
            self._restart_threads.append(thread)
        self._node.get_logger().error(
            f'camera group {name}: worker process died (exit code {code}); {lost} frame(s) in flight counted '
            f'as worker_died; restarting it')
        thread.start()

    def _restart(self, state: _GroupState, dead: _Worker) -> None:
        name = state.spec.group.name
        dead.closing = True
        dead.process.join(5.0)
        while True:
            with self._lock:
                if self._closed:
                    return
            worker = None
            try:
                worker = _Worker(state.spec, self._on_death)
                worker.closing = True  # a death before it is installed is this thread's to handle
                worker.call('configure', _CONFIGURE_TIMEOUT_S)
                with self._lock:
                    if self._closed:
                        raise WorkerError('closed meanwhile')
                    if self._active:
                        worker.call('activate', _STOP_TIMEOUT_S)
                    worker.closing = False
                    state.worker, state.restarting, state.failed = worker, False, ''
                    state.restarts += 1
            except Exception as exc:  # noqa: BLE001 - retried until the node closes
                if worker is not None:
                    worker.stop()
                with self._lock:
                    if self._closed:
                        return
                    state.failed = f'restart failed: {exc}; retrying in {_RESTART_DELAY_S:g} s'
                self._node.get_logger().error(f'camera group {name}: restart failed: {exc}')
                time.sleep(_RESTART_DELAY_S)
                continue
            if not worker.process.is_alive():  # died between its reply and its install
                self._on_death(worker)
            self._node.get_logger().info(f'camera group {name}: worker restarted')
            return


def _in_flight(report: GroupReport | None) -> int:
    """Frames a group had received but neither published nor dropped at its last report."""
    if report is None:
        return 0
    total = 0
    for snap, extras in report.cameras:  # frames skipped for want of a subscriber are inputs without a drop
        done = snap.outputs_total + sum(snap.drops_total.values()) + extras.skipped_no_subscriber
        total += max(0, snap.inputs_total - done)
    return total
