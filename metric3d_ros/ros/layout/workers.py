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

LOG = logging.getLogger(__name__)
_RESTART_DELAY_S = 5.0
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


# ------------------------------------------------------------------------------------------ worker side
def _serve(spec: WorkerSpec, conn) -> None:
    """Entry point of a worker process."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    try:
        from rclpy.signals import SignalHandlerOptions
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    except ImportError:  # pragma: no cover - older rclpy
        rclpy.init()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_large_allocations()  # frame-sized buffers stay mapped between frames (no page faults per frame)
    from metric3d_ros.ros.layout.group import CameraGroup

    for output in spec.catalogue.values():  # the node's catalogue, outputs registered at run time included
        if output.name not in OUTPUTS:
            register_output(output)

    node = rclpy.create_node(f'{spec.node_name}_{spec.group.name}', namespace=spec.namespace,
                             parameter_overrides=[Parameter('use_sim_time', value=spec.use_sim_time)])
    group = CameraGroup(node, spec.config, spec.group, spec.topics, spec.catalogue)
    commands: queue.SimpleQueue = queue.SimpleQueue()
    done = threading.Event()
    send_lock = threading.Lock()

    def send(msg: tuple) -> None:
        with send_lock:
            try:
                conn.send(msg)
            except (OSError, ValueError):  # the node is gone: end
                done.set()

    def run_commands() -> None:  # on the executor thread
        while True:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                return
            error = None
            try:
                if command == 'configure':
                    group.configure()
                elif command == 'activate':
                    group.activate()
                elif command == 'deactivate':
                    group.deactivate()
                elif command == 'close':
                    group.close()
                    done.set()
                else:
                    error = f'unknown command {command!r}'
            except Exception as exc:  # noqa: BLE001 - reported to the node
                error = f'{type(exc).__name__}: {exc}'
                group.error = error
            send(('reply', command, error))

    wake = node.create_guard_condition(run_commands)

    def read_commands() -> None:  # thread 'metric3d-<group>-commands'
        while not done.is_set():
            try:
                command = conn.recv()[0]
            except (EOFError, OSError):
                commands.put('close')
                wake.trigger()
                return
            commands.put(command)
            wake.trigger()

    node.create_timer(spec.config.diagnostics_period_s, lambda: send(('report', group.report())))
    threading.Thread(target=read_commands, name=f'metric3d-{spec.group.name}-commands', daemon=True).start()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not done.is_set():
            executor.spin_once(timeout_sec=0.1)
    finally:
        try:
            group.close()
        finally:
            send(('report', group.report()))
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
        ctx = multiprocessing.get_context('spawn')
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(spec, child), name=f'metric3d-{spec.group.name}')
        self.process.start()
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
        try:
            answered, error = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            raise WorkerError(f'camera group {self.spec.group.name}: no answer to {command} '
                              f'within {timeout_s:g} s') from None
        if answered is None:
            code = self.process.exitcode
            raise WorkerError(f'camera group {self.spec.group.name}: the worker process died during '
                              f'{command} (exit code {code})')
        if error is not None:
            raise WorkerError(f'camera group {self.spec.group.name} (device {self.spec.group.device}): '
                              f'{command} failed: {error}')

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """Close the worker (engine and node) and wait for its process; killed if it does not end."""
        self.closing = True
        if self.process.is_alive():
            try:
                self.call('close', timeout_s)
            except WorkerError as exc:
                LOG.warning('%s', exc)
            self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self._conn.close()
        self._reader.join(5.0)


class GroupWorkersLayout:
    """One worker process per camera group (module docstring)."""

    def __init__(self, node, config: NodeConfig, topics: Mapping[str, CameraTopics],
                 catalogue: Mapping[str, OutputSpec]) -> None:
        self._node = node
        self._lock = threading.Lock()
        self._active = False
        self._closed = False
        self._restarts: dict[str, int] = {}
        self._lost: dict[str, int] = {}
        self._failed: dict[str, str] = {}
        use_sim_time = bool(node.get_parameter('use_sim_time').value)
        self._specs = [
            WorkerSpec(node.get_name(), node.get_namespace(), config, group,
                       {cam: topics[cam] for cam in group.cameras}, dict(catalogue), use_sim_time)
            for group in config.groups]
        self._workers: dict[str, _Worker] = {}

    def _start(self, spec: WorkerSpec) -> _Worker:
        worker = _Worker(spec, self._on_death)
        try:
            worker.call('configure')
            if self._active:
                worker.call('activate')
        except Exception:
            worker.stop()
            raise
        return worker

    def configure(self) -> None:
        try:
            for spec in self._specs:
                self._workers[spec.group.name] = self._start(spec)
        except Exception:
            self.close()
            raise

    def activate(self) -> None:
        with self._lock:
            self._active = True
            workers = list(self._workers.values())
        for worker in workers:
            worker.call('activate', _STOP_TIMEOUT_S)

    def deactivate(self) -> None:
        with self._lock:
            self._active = False
            workers = list(self._workers.values())
        for worker in workers:
            try:
                worker.call('deactivate', _STOP_TIMEOUT_S)
            except WorkerError as exc:
                self._node.get_logger().warning(str(exc))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._active = False
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.stop()

    def engines(self) -> list:
        return []

    def reports(self) -> list[GroupReport]:
        out = []
        with self._lock:
            workers = dict(self._workers)
        for spec in self._specs:
            name = spec.group.name
            worker = workers.get(name)
            report = worker.report if worker is not None else None
            failed = self._failed.get(name, '')
            if report is None:
                report = GroupReport(name=name, device=spec.group.device, state='starting' if not failed else
                                     'failed', error=failed, cameras=(), batch=None, timing={})
            elif failed:
                report = replace(report, state='failed', error=failed)
            out.append(replace(report, restarts=self._restarts.get(name, 0), lost=self._lost.get(name, 0)))
        return out

    # ----------------------------------------------------------------------------------- failures
    def _on_death(self, worker: _Worker) -> None:
        """A worker ended without being asked (reader thread): count what it held, restart it off-path."""
        name = worker.spec.group.name
        lost = _in_flight(worker.report)
        with self._lock:
            if self._closed or self._workers.get(name) is not worker:
                return
            self._lost[name] = self._lost.get(name, 0) + lost
            self._failed[name] = f'worker process died (exit code {worker.process.exitcode}); restarting'
        self._node.get_logger().error(
            f'camera group {name}: worker process died (exit code {worker.process.exitcode}); '
            f'{lost} frame(s) in flight counted as worker_died; restarting it')
        threading.Thread(target=self._restart, args=(worker,), name=f'metric3d-{name}-restart',
                         daemon=True).start()

    def _restart(self, dead: _Worker) -> None:
        name = dead.spec.group.name
        dead.closing = True
        dead.process.join(5.0)
        while True:
            with self._lock:
                if self._closed or self._workers.get(name) is not dead:
                    return
            try:
                worker = self._start(dead.spec)
            except Exception as exc:  # noqa: BLE001 - retried
                with self._lock:
                    self._failed[name] = f'restart failed: {exc}; retrying in {_RESTART_DELAY_S:g} s'
                self._node.get_logger().error(f'camera group {name}: restart failed: {exc}')
                time.sleep(_RESTART_DELAY_S)
                continue
            with self._lock:
                if self._closed or self._workers.get(name) is not dead:
                    stale = worker
                else:
                    stale = None
                    self._workers[name] = worker
                    self._restarts[name] = self._restarts.get(name, 0) + 1
                    self._failed.pop(name, None)
            if stale is not None:
                stale.stop()
                return
            self._node.get_logger().info(f'camera group {name}: worker restarted')
            return


def _in_flight(report: GroupReport | None) -> int:
    """Frames a group had received but neither published nor dropped at its last report."""
    if report is None:
        return 0
    total = 0
    for snap, _extras in report.cameras:
        total += max(0, snap.inputs_total - snap.outputs_total - sum(snap.drops_total.values()))
    return total
