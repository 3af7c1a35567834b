"""BatchScheduler with its real worker thread and a test process_batch.

Deadline behaviour is asserted with wide margins (deadlines of seconds where a test must prove that
something did NOT wait, lower bounds only where it must prove that something did), so the tests hold on a
loaded 2-core machine. The exact rule is covered on fake clocks in test_batching_planner.py.
"""
from __future__ import annotations

import threading
import time

import pytest

from metric3d_ros.core.batching import (
    PAUSED,
    STOPPED,
    BatchScheduler,
    FakeClock,
    SchedulerConfig,
    reasons,
)
from metric3d_ros.core.stats import DiagnosticsStats, Level, StatsConfig

MS = 1_000_000
WAIT_S = 2.5


class Harness:
    """process_batch/publish doubles: items are (camera_id, stamp_ns), results ('r', camera_id, stamp_ns)."""

    def __init__(self, **config) -> None:
        defaults = dict(max_batch_size=8, max_wait_ms=5000.0, queue_depth=1, max_input_age_ms=-1,
                        camera_timeout_ms=10_000.0, error_log_period_s=60.0)
        defaults.update(config)
        self.clock = FakeClock(1_000_000 * MS)
        self.cond = threading.Condition()
        self.batches: list[list[tuple[str, int]]] = []
        self.published: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.in_process = threading.Event()
        self.fail_next = 0
        self.sleep_s = 0.0
        self.threads: set[str] = set()
        self.stats = DiagnosticsStats(StatsConfig(silent_error_s=0.3, window_s=5.0))
        self.scheduler = BatchScheduler(
            SchedulerConfig(**defaults), self.process, self.publish, self.clock,
            stats=self.stats, log_error=self.errors.append,
        )

    def process(self, items):
        self.threads.add(threading.current_thread().name)
        self.in_process.set()
        if not self.gate.wait(10.0):
            raise RuntimeError('test gate never opened')
        if self.sleep_s:
            time.sleep(self.sleep_s)
        with self.cond:
            self.batches.append(list(items))
            self.cond.notify_all()
            if self.fail_next:
                self.fail_next -= 1
                raise ValueError('boom')
        return [('r', camera_id, stamp_ns) for camera_id, stamp_ns in items]

    def publish(self, item, result):
        self.threads.add(threading.current_thread().name)
        assert result == ('r', *item)
        with self.cond:
            self.published.append(item)
            self.cond.notify_all()
        return None

    def submit(self, camera_id: str, stamp_ms: int):
        return self.scheduler.submit(camera_id, (camera_id, stamp_ms * MS), stamp_ms * MS)

    def wait_for(self, predicate, timeout_s: float = WAIT_S) -> bool:
        """Wait until ``predicate()`` (woken by publishes and batches, polling for stats)."""
        deadline_s = time.monotonic() + timeout_s
        with self.cond:
            while not predicate():
                left_s = deadline_s - time.monotonic()
                if left_s <= 0.0:
                    return False
                self.cond.wait(min(left_s, 0.01))
            return True

    def published_stamps_ms(self, camera_id: str) -> list[int]:
        with self.cond:
            return [stamp // MS for cam, stamp in self.published if cam == camera_id]

    def drops(self, camera_id: str) -> dict[str, int]:
        return self.stats.drop_counts(camera_id)


@pytest.fixture
def make():
    made: list[Harness] = []

    def factory(**config) -> Harness:
        harness = Harness(**config)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.gate.set()
        assert harness.scheduler.stop(5.0), 'worker did not stop'


def _warm_up(h: Harness, cameras: str, stamp_ms: int = 1) -> None:
    """Submit one frame per camera before start(): they go out together as the first batch."""
    for camera_id in cameras:
        assert h.submit(camera_id, stamp_ms) is None
    h.scheduler.start()
    assert h.wait_for(lambda: len(h.published) == len(cameras))
    assert h.batches == [[(c, stamp_ms * MS) for c in cameras]]


def test_full_batch_goes_out_as_soon_as_every_camera_has_a_frame(make):
    h = make(max_wait_ms=5000.0)
    _warm_up(h, 'abc')
    t0 = time.monotonic()
    h.submit('a', 2)
    h.submit('b', 2)
    time.sleep(0.2)
    assert len(h.batches) == 1, 'camera c is active and has no frame: the batch must wait'
    h.submit('c', 2)
    assert h.wait_for(lambda: len(h.batches) == 2)
    assert time.monotonic() - t0 < 4.0, 'went out on the full-batch rule, not on max_wait_ms (5 s)'
    assert sorted(h.batches[1]) == [('a', 2 * MS), ('b', 2 * MS), ('c', 2 * MS)]


def test_partial_batch_goes_out_after_max_wait(make):
    h = make(max_wait_ms=300.0)
    _warm_up(h, 'ab')
    t0 = time.monotonic()
    h.submit('a', 2)
    assert h.wait_for(lambda: len(h.batches) == 2)
    elapsed_s = time.monotonic() - t0
    assert elapsed_s >= 0.29, f'went out after {elapsed_s:.3f} s, before max_wait_ms'
    assert h.batches[1] == [('a', 2 * MS)]


def test_max_batch_size_is_respected(make):
    h = make(max_batch_size=2, max_wait_ms=50.0)
    for i, camera_id in enumerate('edcba'):
        h.submit(camera_id, 10 + i)
    h.scheduler.start()
    assert h.wait_for(lambda: len(h.published) == 5)
    assert [len(batch) for batch in h.batches] == [2, 2, 1]
    assert [stamp // MS for batch in h.batches for _, stamp in batch] == [10, 11, 12, 13, 14], 'oldest first'


def test_drop_oldest_is_counted_per_camera(make):
    h = make()
    h.gate.clear()
    h.scheduler.start()
    h.submit('a', 1)
    assert h.in_process.wait(WAIT_S), 'the worker takes a1 and blocks in process_batch'
    t0 = time.monotonic()
    assert h.submit('a', 2) is None
    assert h.submit('a', 3) is None
    assert time.monotonic() - t0 < 1.0, 'submit must not wait for the busy worker'
    assert h.drops('a') == {reasons.QUEUE_OVERFLOW: 1}
    h.gate.set()
    assert h.wait_for(lambda: len(h.published) == 2)
    assert h.published_stamps_ms('a') == [1, 3]


def test_stale_frames_dropped_at_submit_and_at_dispatch(make):
    h = make(max_input_age_ms=100.0, max_wait_ms=50.0)
    now_ms = h.clock() // MS
    assert h.submit('a', now_ms - 500) == reasons.STALE
    h.gate.clear()
    h.scheduler.start()
    h.submit('a', now_ms)
    assert h.in_process.wait(WAIT_S)
    assert h.submit('b', now_ms + 1) is None
    h.clock.advance_ms(1000)
    h.gate.set()
    assert h.wait_for(lambda: h.drops('b').get(reasons.STALE) == 1)
    assert h.published_stamps_ms('a') == [now_ms]
    assert h.published_stamps_ms('b') == []
    assert h.drops('a') == {reasons.STALE: 1}


def test_a_silent_camera_does_not_stall_the_others(make):
    h = make(max_wait_ms=20_000.0, camera_timeout_ms=300.0)
    _warm_up(h, 'abc')
    t0 = time.monotonic()
    for stamp_ms in range(2, 22):
        h.submit('a', stamp_ms)
        h.submit('b', stamp_ms)
        time.sleep(0.025)
    snapshots = {s.camera_id: s for s in h.stats.snapshots()}
    assert h.wait_for(lambda: len(h.published_stamps_ms('b')) >= 5, timeout_s=1.0), (
        'with c silent, a and b must not wait max_wait_ms (20 s) per batch'
    )
    assert len(h.published_stamps_ms('a')) >= 5
    assert time.monotonic() - t0 < 15.0, 'published before max_wait_ms could have expired'
    assert snapshots['c'].level == Level.ERROR and 'silent' in snapshots['c'].message, 'diagnostics name it'


def test_results_are_published_per_camera_in_stamp_order(make):
    h = make(max_batch_size=2, queue_depth=3, max_wait_ms=5.0)
    h.sleep_s = 0.002
    h.scheduler.start()
    for stamp_ms in range(1, 31):
        for camera_id in 'abc':
            h.submit(camera_id, stamp_ms)
    assert h.wait_for(lambda: h.scheduler.idle() and h.scheduler.pending_count() == 0, timeout_s=5.0)
    for camera_id in 'abc':
        stamps = h.published_stamps_ms(camera_id)
        assert stamps and stamps == sorted(set(stamps)), f'{camera_id}: {stamps}'
        inputs, outputs = h.stats.counts(camera_id)
        assert inputs == 30 and inputs == outputs + sum(h.drops(camera_id).values())
    assert all(len(batch) <= 2 for batch in h.batches)


def test_an_older_result_is_never_published_after_a_newer_one(make):
    h = make()
    h.gate.clear()
    h.scheduler.start()
    h.submit('a', 10)
    assert h.in_process.wait(WAIT_S)
    assert h.submit('a', 5) == reasons.OUT_OF_ORDER_STAMP
    assert h.submit('a', 10) == reasons.DUPLICATE_STAMP
    h.gate.set()
    assert h.wait_for(lambda: h.published_stamps_ms('a') == [10])
    h.scheduler._gate.reset('a')  # only the input gate forgets a10: its result still orders the output
    assert h.submit('a', 5) is None
    assert h.wait_for(lambda: h.drops('a').get(reasons.OUT_OF_ORDER_RESULT) == 1)
    assert h.published_stamps_ms('a') == [10]


def test_after_a_stamp_reset_the_new_timeline_is_published_and_the_old_frame_in_flight_is_not(make):
    """The sim clock jumps back (a looping bag) while a10 is in inference: a10 belongs to the old timeline
    and is dropped; the new timeline (a5, a6) is published (a10 used to block it as out-of-order results)."""
    h = make(max_wait_ms=20.0)
    h.gate.clear()
    h.scheduler.start()
    h.submit('a', 10)
    h.submit('b', 10)
    assert h.in_process.wait(WAIT_S)
    h.scheduler.reset_stamps('a')
    assert h.submit('a', 5) is None
    assert h.submit('b', 5) == reasons.OUT_OF_ORDER_STAMP, 'only camera a was reset'
    h.gate.set()
    assert h.wait_for(lambda: h.published_stamps_ms('a') == [5])
    assert h.drops('a') == {reasons.OUT_OF_ORDER_RESULT: 1}
    assert h.submit('a', 6) is None
    assert h.wait_for(lambda: h.published_stamps_ms('a') == [5, 6])
    assert h.published_stamps_ms('b') == [10]
    h.scheduler.reset_stamps()  # every camera
    assert h.submit('b', 5) is None
    assert h.wait_for(lambda: h.published_stamps_ms('b') == [10, 5])


def test_process_batch_exception_is_counted_logged_and_survived(make):
    h = make(max_batch_size=2)
    h.fail_next = 2
    h.submit('a', 1)
    h.submit('b', 1)
    h.scheduler.start()
    assert h.wait_for(lambda: len(h.batches) == 1)
    h.submit('a', 2)
    h.submit('b', 2)
    assert h.wait_for(lambda: len(h.batches) == 2)
    h.submit('a', 3)
    h.submit('b', 3)
    assert h.wait_for(lambda: len(h.published) == 2), 'the worker survived two failing batches'
    assert h.drops('a') == {reasons.PROCESS_ERROR: 2} and h.drops('b') == {reasons.PROCESS_ERROR: 2}
    assert h.stats.batch_snapshot().batch_errors_total == 2
    assert len(h.errors) == 1 and 'boom' in h.errors[0], 'second error throttled'
    assert h.scheduler.running
    assert h.threads == {'metric3d-batching'}, 'process_batch and publish run only on the worker'


def test_wrong_number_of_results_is_a_process_error(make):
    h = make()
    h.scheduler = BatchScheduler(h.scheduler.config, lambda items: [], h.publish, h.clock,
                                 stats=h.stats, log_error=h.errors.append)
    h.submit('a', 1)
    h.scheduler.start()
    assert h.wait_for(lambda: h.drops('a') == {reasons.PROCESS_ERROR: 1})
    assert h.published == [] and '0 results for 1 frames' in h.errors[0]


def test_publish_exception_and_publish_refusal_are_counted(make):
    h = make()
    calls = []

    def publish(item, result):
        calls.append(item)
        if len(calls) == 1:
            raise RuntimeError('publisher gone')
        if len(calls) == 2:
            return 'inference_error'
        return h.publish(item, result)

    h.scheduler = BatchScheduler(h.scheduler.config, h.process, publish, h.clock,
                                 stats=h.stats, log_error=h.errors.append)
    h.scheduler.start()
    for stamp_ms in (1, 2, 3):
        h.submit('a', stamp_ms)
        assert h.wait_for(lambda n=stamp_ms: len(calls) == n)
    assert h.drops('a') == {reasons.PUBLISH_ERROR: 1, 'inference_error': 1}
    assert h.published_stamps_ms('a') == [3]
    assert 'publisher gone' in h.errors[0]


def test_on_batch_sees_each_batch_after_its_publishes_and_its_errors_are_survived(make):
    h = make()
    seen = []

    def on_batch(items, results):
        with h.cond:
            seen.append((list(items), list(results), list(h.published)))
        if len(seen) == 1:
            raise RuntimeError('fused cloud failed')

    h.scheduler = BatchScheduler(h.scheduler.config, h.process, h.publish, h.clock, stats=h.stats,
                                 log_error=h.errors.append, on_batch=on_batch)
    for camera_id in 'ab':
        h.submit(camera_id, 1)
    h.scheduler.start()
    assert h.wait_for(lambda: len(seen) == 1)
    items, results, published_before = seen[0]
    assert items == [('a', MS), ('b', MS)] and results == [('r', 'a', MS), ('r', 'b', MS)]
    assert published_before == items  # the batch output comes after every frame of the batch
    assert 'fused cloud failed' in h.errors[0]
    h.submit('a', 2)
    h.submit('b', 2)
    assert h.wait_for(lambda: len(seen) == 2)  # the worker carried on
    assert sum(h.stats.snapshot(c).outputs_total for c in 'ab') == 4 and h.drops('a') == {}


def test_latency_and_batch_stats_are_recorded(make):
    h = make()
    h.submit('a', h.clock() // MS - 40)
    h.submit('b', h.clock() // MS - 40)
    h.scheduler.start()
    assert h.wait_for(lambda: len(h.published) == 2)
    snap = h.stats.snapshot('a')
    assert snap.outputs_total == 1 and snap.latency_p50_ms == pytest.approx(40.0)
    assert snap.batch_size_mean == 2.0 and snap.inference_mean_ms >= 0.0
    batches = h.stats.batch_snapshot()
    assert batches.batches_total == 1 and batches.batch_size_histogram == {2: 1}


def test_reject_counts_an_input_and_a_drop(make):
    h = make()
    h.scheduler.reject('a', 'bad_encoding')
    assert h.stats.counts('a') == (1, 0) and h.drops('a') == {'bad_encoding': 1}


def test_pause_discards_and_refuses_then_resume(make):
    h = make()
    h.submit('a', 1)
    h.scheduler.pause()
    h.scheduler.start()
    assert h.submit('a', 2) == PAUSED
    time.sleep(0.1)
    assert h.batches == [] and h.scheduler.pending_count() == 0
    h.scheduler.resume()
    assert h.submit('a', 3) is None
    assert h.wait_for(lambda: h.published_stamps_ms('a') == [3])
    assert h.stats.counts('a') == (2, 1), 'the paused submission is not an input'


def test_stop_joins_cleanly_and_twice(make):
    h = make()
    h.scheduler.start()
    h.submit('a', 1)
    assert h.wait_for(lambda: len(h.published) == 1)
    assert h.scheduler.stop(WAIT_S)
    assert not h.scheduler.running
    assert h.scheduler.stop(WAIT_S)
    assert h.submit('a', 2) == STOPPED
    with pytest.raises(RuntimeError, match='start'):
        h.scheduler.start()


def test_stop_reports_a_worker_stuck_in_process_batch(make):
    h = make()
    h.gate.clear()
    h.scheduler.start()
    h.submit('a', 1)
    assert h.in_process.wait(WAIT_S)
    assert h.scheduler.stop(0.05) is False
    h.gate.set()
    assert h.scheduler.stop(WAIT_S) is True
    assert h.published_stamps_ms('a') == [1], 'the batch in flight still completes'


def test_stop_before_start_and_bad_submissions(make):
    h = make()
    assert h.scheduler.stop(0.1)
    h2 = make()
    for bad_camera in ('', None, 3):
        with pytest.raises(ValueError):
            h2.scheduler.submit(bad_camera, None, 1)
    for bad_stamp in (-1, 1.5, None):
        with pytest.raises(ValueError):
            h2.scheduler.submit('a', None, bad_stamp)
    with pytest.raises(TypeError):
        BatchScheduler({'max_batch_size': 2}, h.process, h.publish, h.clock)


class _Ticket:
    """A batch in flight: ``result()`` blocks until the test releases it."""

    def __init__(self, items) -> None:
        self.items = list(items)
        self.release = threading.Event()

    def result(self):
        if not self.release.wait(10.0):
            raise RuntimeError('ticket never released')
        return [('r', camera_id, stamp_ns) for camera_id, stamp_ns in self.items]


def test_batches_in_flight_overlap_and_publish_in_order():
    """With in_flight=2 and frames queued, the worker submits the next batch before it waits for the previous
    one; frames are published in batch order; with nothing queued the batch in flight is collected at once."""
    tickets: list[_Ticket] = []
    published: list[tuple[str, int]] = []
    cond = threading.Condition()

    def process(items):
        ticket = _Ticket(items)
        with cond:
            tickets.append(ticket)
            cond.notify_all()
        return ticket

    def publish(item, result):
        assert result == ('r', *item)
        with cond:
            published.append(item)
            cond.notify_all()

    clock = FakeClock(1_000_000 * MS)
    config = SchedulerConfig(max_batch_size=1, max_wait_ms=0.0, queue_depth=4, max_input_age_ms=-1,
                             camera_timeout_ms=10_000.0, error_log_period_s=60.0)
    scheduler = BatchScheduler(config, process, publish, clock, in_flight=2)
    for stamp_ms in (1, 2):  # queued before the worker starts
        scheduler.submit('a', ('a', stamp_ms * MS), stamp_ms * MS)
    scheduler.start()
    try:
        def wait(predicate):
            with cond:
                return cond.wait_for(predicate, WAIT_S)

        assert wait(lambda: len(tickets) == 2), 'the second batch is submitted while the first is in flight'
        assert published == [] and not scheduler.idle()
        tickets[1].release.set()   # the second finishes first: still published after the first
        time.sleep(0.05)
        assert published == []
        tickets[0].release.set()
        assert wait(lambda: published == [('a', 1 * MS), ('a', 2 * MS)])
        assert wait(lambda: scheduler.idle())
        scheduler.submit('a', ('a', 3 * MS), 3 * MS)  # alone: collected as soon as it is done
        assert wait(lambda: len(tickets) == 3)
        tickets[2].release.set()
        assert wait(lambda: published[-1:] == [('a', 3 * MS)])
    finally:
        for ticket in tickets:
            ticket.release.set()
        assert scheduler.stop(5.0)


def test_in_flight_is_validated():
    config = SchedulerConfig()
    with pytest.raises(ValueError, match='in_flight'):
        BatchScheduler(config, lambda items: items, lambda item, result: None, lambda: 0, in_flight=5)


def test_a_stamp_far_behind_restarts_the_camera_and_publishes_again(make):
    h = make(max_batch_size=1, max_wait_ms=0.0, stamp_restart_ms=1000.0)
    h.scheduler.start()
    assert h.submit('a', 50_000) is None
    assert h.wait_for(lambda: h.published_stamps_ms('a') == [50_000])
    assert h.submit('a', 49_500) == reasons.OUT_OF_ORDER_STAMP
    assert h.submit('a', 2_000) is None, 'a restarted driver: a new timeline'
    assert h.submit('a', 2_100) is None
    assert h.wait_for(lambda: h.published_stamps_ms('a')[-1:] == [2_100])
    assert h.scheduler.stamp_restarts('a') == 1
    assert h.drops('a').get(reasons.OUT_OF_ORDER_RESULT, 0) == 0


def test_a_future_stamp_does_not_black_the_camera_out(make):
    h = make(max_batch_size=1, max_wait_ms=0.0, max_future_ms=1000.0)
    h.scheduler.start()
    now_ms = h.clock() // MS
    assert h.submit('a', now_ms + 3_000) == reasons.FUTURE_STAMP
    assert h.submit('a', now_ms) is None
    assert h.wait_for(lambda: h.published_stamps_ms('a') == [now_ms])
    assert h.drops('a') == {reasons.FUTURE_STAMP: 1}
