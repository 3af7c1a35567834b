"""The batching scheduler: executor callbacks enqueue frames, ONE worker thread batches and processes them.

The worker thread is the only one that calls ``process_batch`` (it owns the device) and ``publish``.
``submit`` is cheap and never blocks on inference: it checks the stamp, puts the frame in its camera's
bounded slot (pushing out the oldest, counted) and wakes the worker. The dispatch rule is
``BatchPlanner``'s; results of a camera are published in stamp order.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from metric3d_ros.core.batching import reasons
from metric3d_ros.core.batching.clock import ClockNs, monotonic_ns
from metric3d_ros.core.batching.config import SchedulerConfig
from metric3d_ros.core.batching.planner import BatchPlanner, Pending
from metric3d_ros.core.batching.stamps import StampGate, as_stamp_ns
from metric3d_ros.core.batching.throttle import Throttle
from metric3d_ros.core.stats import DiagnosticsStats

Item = TypeVar('Item')
Result = TypeVar('Result')

PAUSED = 'paused'
"""``submit``'s answer while paused (not counted: the node is not taking input)."""
STOPPED = 'stopped'
"""``submit``'s answer after ``stop`` (not counted)."""

_MIN_WAIT_S = 0.0005
_LOG = logging.getLogger('metric3d_ros.batching')


def _results(handle: object) -> list:
    """The results of a batch: ``process_batch``'s list, or its handle's ``result()``."""
    result = getattr(handle, 'result', None)
    return list(result() if callable(result) else handle)


def _default_log_error(message: str) -> None:
    _LOG.error(message)


class BatchScheduler(Generic[Item, Result]):
    """Cross-camera batching with one worker thread.

    process_batch: called on the worker thread with the items of one batch (at most ``max_batch_size``,
        oldest stamp first); returns one result per item, in the same order. If it raises or returns
        the wrong number of results, the batch's frames are dropped as ``process_error``, the error is
        logged (throttled) and the worker carries on.
    publish: called on the worker thread with each item and its result, per camera in stamp order.
        Returns None when published, or a drop reason (str) when it did not publish the frame (e.g. the
        engine reported an error for it); an exception counts as ``publish_error``.
    clock: the stamp clock in ns (the node passes ROS time, possibly sim time): staleness and
        stamp-to-publish latency.
    stats: where inputs, drops, outputs and batches are recorded (a new ``DiagnosticsStats`` if None).
    log_error: receives throttled error messages (default: the ``metric3d_ros.batching`` logger).
    monotonic_ns: the clock of deadlines, camera activity and throttling (tests may pass their own).
    on_batch: optional; called on the worker thread with a batch's items and results (same order) once
        each of them went through ``publish`` (a batch-level output such as the fused cloud). An exception is
        logged (throttled) and the worker carries on; it changes no frame's accounting.
    in_flight: batches in flight (1..4). With more than one, ``process_batch`` may return a handle with a
        ``result()`` method (e.g. ``DepthEngine.submit``'s ticket) instead of the results: when the next batch
        is ready while one is in flight (frames queue faster than a batch takes), the worker submits it before
        it waits for the oldest one; when none is ready it collects the oldest at once. Frames are published
        in batch order, so per-camera stamp order holds. ``idle`` is false while any
        batch is in flight.
    """

    def __init__(
        self,
        config: SchedulerConfig,
        process_batch: Callable[[list[Item]], Sequence[Result]],
        publish: Callable[[Item, Result], str | None],
        clock: ClockNs,
        *,
        stats: DiagnosticsStats | None = None,
        log_error: Callable[[str], None] | None = None,
        monotonic_ns: ClockNs = monotonic_ns,
        thread_name: str = 'metric3d-batching',
        in_flight: int = 1,
        on_batch: Callable[[list[Item], list[Result]], None] | None = None,
    ) -> None:
        if isinstance(in_flight, bool) or not isinstance(in_flight, int) or not 1 <= in_flight <= 4:
            raise ValueError(f'in_flight must be an integer in [1, 4], got {in_flight!r}')
        self._in_flight = in_flight
        if not isinstance(config, SchedulerConfig):
            raise TypeError(f'config must be a SchedulerConfig, got {type(config).__name__}')
        self._config = config
        self._process_batch = process_batch
        self._publish = publish
        self._on_batch = on_batch
        self._clock = clock
        self._mono = monotonic_ns
        self._stats = stats if stats is not None else DiagnosticsStats(monotonic_ns=monotonic_ns)
        self._log_error = log_error if log_error is not None else _default_log_error
        self._throttle = Throttle(config.error_log_period_s, monotonic_ns)
        self._thread_name = thread_name

        self._cond = threading.Condition()
        self._planner: BatchPlanner[Item] = BatchPlanner(config)
        self._gate = StampGate(config.max_input_age_ms, config.max_future_ms, config.stamp_restart_ms)
        self._last_published_ns: dict[str, int] = {}
        # Stamp epochs: every reset_stamps starts a new one; a frame submitted before its camera's last reset
        # belongs to the old timeline and is not published (see reset_stamps).
        self._epoch = 0
        self._reset_epoch_all = 0
        self._reset_epoch: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._paused = False
        self._busy = False

    # ----------------------------------------------------------------------------------------- control
    @property
    def config(self) -> SchedulerConfig:
        return self._config

    @property
    def stats(self) -> DiagnosticsStats:
        return self._stats

    @property
    def running(self) -> bool:
        """True between ``start`` and the end of the worker thread."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the worker thread (once per scheduler; frames submitted before are kept)."""
        with self._cond:
            if self._thread is not None:
                raise RuntimeError('BatchScheduler.start called twice: create a new scheduler after stop()')
            self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float | None = 5.0) -> bool:
        """Stop the worker after its current batch and join it; pending frames are discarded.

        Returns True when the worker has ended (or never started), False if it is still inside
        ``process_batch``/``publish`` after ``timeout_s``. Safe to call more than once.
        """
        with self._cond:
            self._stopping = True
            self._planner.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def pause(self) -> None:
        """Stop dispatching and discard pending frames; ``submit`` answers ``'paused'`` until ``resume``."""
        with self._cond:
            self._paused = True
            self._planner.clear()
            self._cond.notify_all()

    def resume(self) -> None:
        """Accept and dispatch frames again."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def reset_stamps(self, camera_id: str | None = None) -> None:
        """Forget the last stamps of ``camera_id`` (all cameras when None) for the duplicate/out-of-order
        checks and the publish order: call it when the stamp clock jumps back (a looping bag).

        Frames submitted before the reset (waiting, or in inference now) belong to the old timeline: they are
        dropped as ``out_of_order_result`` instead of being published, as publishing one would make every
        frame of the new timeline an out-of-order result."""
        with self._cond:
            self._gate.reset(camera_id)
            self._new_timeline_locked(camera_id)

    def _new_timeline_locked(self, camera_id: str | None) -> None:
        """Start a new stamp epoch for ``camera_id`` (every camera when None): forget the publish order."""
        self._epoch += 1
        if camera_id is None:
            self._last_published_ns.clear()
            self._reset_epoch_all = self._epoch
        else:
            self._last_published_ns.pop(camera_id, None)
            self._reset_epoch[camera_id] = self._epoch

    def stamp_restarts(self, camera_id: str) -> int:
        """How many times ``camera_id``'s stamp order restarted (``SchedulerConfig.stamp_restart_ms``)."""
        return self._gate.restarts(camera_id)

    def forget_camera(self, camera_id: str) -> None:
        """Stop waiting for ``camera_id`` now (e.g. its subscription was destroyed); its pending frames are
        dropped (not counted)."""
        with self._cond:
            self._planner.forget_camera(camera_id)
            self._cond.notify_all()

    def pending_count(self) -> int:
        with self._cond:
            return self._planner.pending_count()

    def idle(self) -> bool:
        """True when nothing is pending and the worker is not processing a batch."""
        with self._cond:
            return not self._busy and self._planner.pending_count() == 0

    # --------------------------------------------------------------------------------- executor side
    def submit(self, camera_id: str, item: Item, stamp_ns: int) -> str | None:
        """Offer a frame; None when queued, else why it was not (counted, except ``paused``/``stopped``).

        Cheap and thread-safe: never waits for inference. Raises ValueError on an empty camera id or a
        stamp that is not a non-negative integer.
        """
        if not isinstance(camera_id, str) or not camera_id:
            raise ValueError(f'camera_id must be a non-empty string, got {camera_id!r}')
        stamp_ns = as_stamp_ns(stamp_ns)
        overflow: list[Pending[Item]] = []
        stamp_now_ns = self._clock()
        with self._cond:
            if self._stopping:
                return STOPPED
            if self._paused:
                return PAUSED
            self._stats.record_input(camera_id)
            restarts = self._gate.restarts(camera_id)
            reason = self._gate.check(camera_id, stamp_ns, stamp_now_ns)
            if self._gate.restarts(camera_id) != restarts:  # new timeline: old frames unpublished
                self._new_timeline_locked(camera_id)
            if reason is None:
                overflow = self._planner.add(camera_id, item, stamp_ns, self._mono(), self._epoch)
                self._cond.notify_all()
        if reason is not None:
            self._stats.record_drop(camera_id, reason)
            return reason
        for pending in overflow:
            self._stats.record_drop(pending.camera_id, reasons.QUEUE_OVERFLOW)
        return None

    def reject(self, camera_id: str, reason: str) -> None:
        """Count an input frame the node dropped before ``submit`` (bad encoding, no CameraInfo, ...)."""
        self._stats.record_input(camera_id)
        self._stats.record_drop(camera_id, reason)

    # ----------------------------------------------------------------------------------- worker side
    def _run(self) -> None:
        flight: deque[tuple[list[Pending[Item]], object, int]] = deque()
        while True:
            with self._cond:
                taken = self._wait_for_batch_locked(in_flight=bool(flight))
                if taken is None:
                    break
                batch, stale = taken
                self._busy = bool(batch) or bool(flight)
            try:
                for pending in stale:
                    self._stats.record_drop(pending.camera_id, reasons.STALE)
                if batch:
                    started = self._start(batch)
                    if started is not None:
                        flight.append(started)
                # finish the oldest batch when the pipeline is full, or when no new batch is ready
                if flight and (len(flight) >= self._in_flight or not batch):
                    self._finish(*flight.popleft())
            except Exception as exc:  # the worker must survive anything
                self._log('worker', f'batching worker error (carrying on): {exc!r}')
            finally:
                with self._cond:
                    self._busy = bool(flight)
        for entry in flight:  # stopping: collect what is in flight (frames dropped, not counted)
            try:
                _results(entry[1])
            except Exception:  # noqa: BLE001 - already stopping
                pass

    def _wait_for_batch_locked(self, in_flight: bool = False) \
            -> tuple[list[Pending[Item]], list[Pending[Item]]] | None:
        """The next batch (and stale frames) once one is ready; with a batch ``in_flight``, ``([], [])`` at
        once when none is ready (the worker then collects the batch in flight instead of waiting)."""
        while not self._stopping:
            now_ns = self._mono()
            if not self._paused and self._planner.ready(now_ns):
                return self._planner.take(self._clock())
            if in_flight:
                return [], []
            deadline_ns = None if self._paused else self._planner.next_deadline_ns(now_ns)
            timeout_s = None if deadline_ns is None else max((deadline_ns - now_ns) / 1e9, _MIN_WAIT_S)
            self._cond.wait(timeout_s)
        return None

    def _start(self, batch: list[Pending[Item]]) -> tuple[list[Pending[Item]], object, int] | None:
        start_ns = self._mono()
        try:
            handle = self._process_batch([pending.item for pending in batch])
        except Exception as exc:  # counted and logged, never fatal
            self._batch_failed(batch, exc)
            return None
        return batch, handle, start_ns

    def _finish(self, batch: list[Pending[Item]], handle: object, start_ns: int) -> None:
        try:
            results = _results(handle)
            if len(results) != len(batch):
                raise RuntimeError(f'process_batch returned {len(results)} results for {len(batch)} frames')
        except Exception as exc:  # counted and logged, never fatal
            self._batch_failed(batch, exc)
            return
        self._stats.record_batch([pending.camera_id for pending in batch], (self._mono() - start_ns) / 1e6)
        for pending, result in zip(batch, results, strict=True):
            self._publish_one(pending, result)
        if self._on_batch is not None:
            try:
                self._on_batch([pending.item for pending in batch], list(results))
            except Exception as exc:  # logged, never fatal; the frames are accounted for already
                self._log('on_batch', f'the batch output of {len(batch)} frames failed: {exc!r}')

    def _batch_failed(self, batch: list[Pending[Item]], exc: Exception) -> None:
        camera_ids = [pending.camera_id for pending in batch]
        self._stats.record_batch_error()
        for camera_id in camera_ids:
            self._stats.record_drop(camera_id, reasons.PROCESS_ERROR)
        self._log('process_batch', f'processing a batch of {len(batch)} frames ({", ".join(camera_ids)}) '
                                   f'failed: {exc!r}')

    def _publish_one(self, pending: Pending[Item], result: Result) -> None:
        camera_id = pending.camera_id
        with self._cond:
            last_ns = self._last_published_ns.get(camera_id)
            reset_epoch = max(self._reset_epoch_all, self._reset_epoch.get(camera_id, 0))
        if pending.epoch < reset_epoch or (last_ns is not None and pending.stamp_ns <= last_ns):
            self._stats.record_drop(camera_id, reasons.OUT_OF_ORDER_RESULT)
            return
        try:
            outcome = self._publish(pending.item, result)
        except Exception as exc:  # counted and logged, never fatal
            self._stats.record_drop(camera_id, reasons.PUBLISH_ERROR)
            self._log(('publish', camera_id), f'publishing camera {camera_id!r} stamp {pending.stamp_ns} '
                                              f'failed: {exc!r}')
            return
        if outcome is not None:
            self._stats.record_drop(camera_id, str(outcome))
            return
        with self._cond:
            self._last_published_ns[camera_id] = pending.stamp_ns
        self._stats.record_output(camera_id, (self._clock() - pending.stamp_ns) / 1e6)

    def _log(self, key: object, message: str) -> None:
        suppressed = self._throttle.poll(key)
        if suppressed is None:
            return
        if suppressed:
            message = f'{message} ({suppressed} similar errors suppressed)'
        try:
            self._log_error(message)
        except Exception:  # a broken logger must not kill the worker
            _LOG.exception('log_error callback failed')
