"""The dispatch rule, on fake clocks: full batch, max_wait, max_batch_size, drop-oldest, stale,
camera activity, oldest-first fair selection."""
from __future__ import annotations

import numpy as np
import pytest

from metric3d_ros.core.batching import BatchPlanner, SchedulerConfig

MS = 1_000_000


def _planner(**kwargs) -> BatchPlanner:
    defaults = dict(max_batch_size=8, max_wait_ms=20.0, queue_depth=1, max_input_age_ms=-1,
                    camera_timeout_ms=500.0)
    defaults.update(kwargs)
    return BatchPlanner(SchedulerConfig(**defaults))


def _stamps(batch):
    return [(pending.camera_id, pending.stamp_ns) for pending in batch]


def _prime(planner: BatchPlanner, cameras, now_ns: int) -> None:
    """Make ``cameras`` active, then empty the slots."""
    for camera_id in cameras:
        planner.add(camera_id, None, 0, now_ns)
    planner.clear()


def test_nothing_pending_is_never_ready():
    planner = _planner()
    assert not planner.ready(0) and planner.next_deadline_ns(0) is None
    assert planner.take(0) == ([], [])


def test_full_batch_is_ready_as_soon_as_every_active_camera_has_a_frame():
    planner = _planner(max_wait_ms=1000.0)
    _prime(planner, 'abc', 0)
    planner.add('a', 'a1', 10, 1 * MS)
    planner.add('b', 'b1', 11, 2 * MS)
    assert not planner.ready(3 * MS), 'camera c is active and has no frame yet'
    planner.add('c', 'c1', 12, 3 * MS)
    assert planner.ready(3 * MS)
    batch, stale = planner.take(0)
    assert _stamps(batch) == [('a', 10), ('b', 11), ('c', 12)] and stale == []
    assert [pending.item for pending in batch] == ['a1', 'b1', 'c1']
    assert planner.pending_count() == 0


def test_partial_batch_after_max_wait_from_its_first_frame():
    planner = _planner(max_wait_ms=20.0)
    _prime(planner, 'ab', 0)
    planner.add('a', 'a1', 10, 5 * MS)
    assert not planner.ready(5 * MS)
    assert planner.next_deadline_ns(5 * MS) == 25 * MS
    assert not planner.ready(25 * MS - 1)
    assert planner.ready(25 * MS)
    assert _stamps(planner.take(0)[0]) == [('a', 10)]


def test_first_frame_of_the_batch_sets_the_deadline_not_the_latest():
    planner = _planner(max_wait_ms=20.0)
    _prime(planner, 'abc', 0)
    planner.add('a', 'a1', 10, 5 * MS)
    planner.add('b', 'b1', 11, 15 * MS)
    assert planner.next_deadline_ns(15 * MS) == 25 * MS
    assert planner.ready(25 * MS)


def test_max_batch_size_dispatches_and_bounds_the_batch():
    planner = _planner(max_batch_size=2, max_wait_ms=1000.0)
    _prime(planner, 'abcd', 0)
    planner.add('c', 'c', 30, 1 * MS)
    assert not planner.ready(1 * MS)
    planner.add('a', 'a', 10, 2 * MS)
    assert planner.ready(2 * MS), 'max_batch_size frames pending: no point waiting'
    planner.add('b', 'b', 20, 3 * MS)
    batch, _ = planner.take(0)
    assert _stamps(batch) == [('a', 10), ('b', 20)], 'oldest stamps first'
    assert _stamps(planner.take(0)[0]) == [('c', 30)]


def test_drop_oldest_per_camera_slot():
    planner = _planner(queue_depth=2)
    assert planner.add('a', 'a1', 1, 0) == []
    assert planner.add('a', 'a2', 2, 0) == []
    overflow = planner.add('a', 'a3', 3, 0)
    assert _stamps(overflow) == [('a', 1)]
    assert planner.pending_stamps_ns('a') == [2, 3]
    overflow = _planner().add('b', 'b1', 1, 0)
    assert overflow == []


def test_selection_is_fair_across_cameras_with_deep_queues():
    planner = _planner(max_batch_size=3, queue_depth=3)
    for stamp in (1, 2, 3):
        planner.add('a', f'a{stamp}', stamp, 0)
    planner.add('b', 'b9', 9, 0)
    planner.add('c', 'c8', 8, 0)
    batch, _ = planner.take(0)
    assert _stamps(batch) == [('a', 1), ('c', 8), ('b', 9)], "each camera's oldest frame before any second"
    assert planner.pending_stamps_ns('a') == [2, 3]
    batch, _ = planner.take(0)
    assert _stamps(batch) == [('a', 2), ('a', 3)]


def test_stale_frames_are_dropped_at_take():
    planner = _planner(max_input_age_ms=100.0)
    planner.add('a', 'old', 1_000 * MS, 0)
    planner.add('b', 'fresh', 1_150 * MS, 0)
    batch, stale = planner.take(1_200 * MS)
    assert _stamps(batch) == [('b', 1_150 * MS)]
    assert _stamps(stale) == [('a', 1_000 * MS)]


def test_a_silent_camera_stops_being_waited_for():
    planner = _planner(max_wait_ms=1000.0, camera_timeout_ms=300.0)
    planner.add('a', 'a0', 0, 0)
    planner.add('b', 'b0', 0, 0)
    planner.take(0)
    planner.add('a', 'a1', 1, 100 * MS)
    assert not planner.ready(100 * MS), 'b is still active'
    assert planner.next_deadline_ns(100 * MS) == 300 * MS, 'b stops being active before max_wait expires'
    assert planner.active_cameras(299 * MS) == ['a', 'b']
    assert planner.ready(300 * MS) and planner.active_cameras(300 * MS) == ['a']
    planner.take(0)
    planner.add('a', 'a2', 2, 310 * MS)
    assert planner.ready(310 * MS), 'b is no longer waited for: a dispatches at once'


def test_camera_that_comes_back_is_waited_for_again():
    planner = _planner(max_wait_ms=1000.0, camera_timeout_ms=300.0)
    planner.add('b', 'b0', 0, 0)
    planner.take(0)
    planner.add('a', 'a1', 1, 400 * MS)
    assert planner.ready(400 * MS)
    planner.take(0)
    planner.add('b', 'b1', 1, 410 * MS)
    planner.take(0)
    planner.add('a', 'a2', 2, 420 * MS)
    assert not planner.ready(420 * MS)


def test_forget_camera_and_clear():
    planner = _planner(max_wait_ms=1000.0)
    _prime(planner, 'ab', 0)
    planner.add('a', 'a1', 1, 1 * MS)
    assert not planner.ready(1 * MS)
    assert planner.forget_camera('b') == []
    assert planner.ready(1 * MS)
    assert len(planner.clear()) == 1 and planner.pending_count() == 0


def test_numpy_items_are_fine():
    planner = _planner(max_input_age_ms=10.0)
    planner.add('a', np.zeros((2, 2)), 0, 0)
    planner.add('b', np.zeros((2, 2)), 100 * MS, 0)
    batch, stale = planner.take(100 * MS)
    assert len(batch) == 1 and len(stale) == 1


@pytest.mark.parametrize('kwargs', [
    {'max_batch_size': 0}, {'queue_depth': 0}, {'max_batch_size': 2.0}, {'max_wait_ms': -1.0},
    {'camera_timeout_ms': 0.0}, {'max_input_age_ms': 0.0}, {'error_log_period_s': -1.0},
    {'max_wait_ms': float('inf')}, {'max_wait_ms': 'soon'},
])
def test_bad_scheduler_config_raises(kwargs):
    with pytest.raises(ValueError, match='SchedulerConfig'):
        SchedulerConfig(**kwargs)
