"""Stamp admission: duplicates, out-of-order and stale stamps per camera, on a fake stamp clock."""
from __future__ import annotations

import numpy as np
import pytest

from metric3d_ros.core.batching import FakeClock, StampGate, as_stamp_ns, reasons

MS = 1_000_000


def test_duplicate_and_out_of_order_are_rejected_per_camera():
    gate = StampGate(max_input_age_ms=-1)
    assert gate.check('a', 100 * MS, 0) is None
    assert gate.check('a', 100 * MS, 0) == reasons.DUPLICATE_STAMP
    assert gate.check('a', 99 * MS, 0) == reasons.OUT_OF_ORDER_STAMP
    assert gate.check('b', 50 * MS, 0) is None, 'another camera has its own order'
    assert gate.check('a', 101 * MS, 0) is None
    assert gate.last_stamp_ns('a') == 101 * MS


def test_rejected_stamps_do_not_move_the_last_stamp():
    gate = StampGate(max_input_age_ms=100)
    clock = FakeClock(1_000 * MS)
    assert gate.check('a', 950 * MS, clock()) is None
    assert gate.check('a', 800 * MS, clock()) == reasons.OUT_OF_ORDER_STAMP
    assert gate.check('a', 880 * MS, clock()) == reasons.OUT_OF_ORDER_STAMP
    assert gate.last_stamp_ns('a') == 950 * MS


def test_stale_against_the_given_clock():
    clock = FakeClock(10_000 * MS)
    gate = StampGate(max_input_age_ms=100)
    assert gate.check('a', 9_900 * MS, clock()) is None, 'exactly max age is still fresh'
    assert gate.check('b', 9_900 * MS - 1, clock()) == reasons.STALE
    assert gate.last_stamp_ns('b') is None, 'a stale stamp is not remembered'
    clock.advance_ms(500)
    assert gate.check('a', 9_950 * MS, clock()) == reasons.STALE


def test_stamps_from_the_future_and_sim_time_zero_are_not_stale():
    gate = StampGate(max_input_age_ms=100)
    assert gate.check('a', 5_000 * MS, 0) is None  # sim time not received yet: ROS now is 0


def test_negative_age_disables_staleness():
    gate = StampGate(max_input_age_ms=-1)
    assert gate.check('a', 0, 10**18) is None


def test_reset_after_a_time_jump_back():
    gate = StampGate(max_input_age_ms=-1)
    assert gate.check('a', 100 * MS, 0) is None
    assert gate.check('b', 100 * MS, 0) is None
    gate.reset('a')
    assert gate.check('a', 1 * MS, 0) is None
    assert gate.check('b', 1 * MS, 0) == reasons.OUT_OF_ORDER_STAMP
    gate.reset()
    assert gate.check('b', 1 * MS, 0) is None


@pytest.mark.parametrize('age_ms', [0, 0.0, float('nan')])
def test_zero_or_nan_age_limit_raises(age_ms):
    with pytest.raises(ValueError, match='max_input_age_ms'):
        StampGate(max_input_age_ms=age_ms)


def test_as_stamp_ns_accepts_numpy_integers_and_rejects_the_rest():
    assert as_stamp_ns(np.int64(5)) == 5 and type(as_stamp_ns(np.int64(5))) is int
    for bad in (-1, 1.0, True, '5', None):
        with pytest.raises(ValueError):
            as_stamp_ns(bad)


def test_future_stamps_are_rejected_and_never_become_the_last_stamp():
    gate = StampGate(max_input_age_ms=-1, max_future_ms=1000)
    now = 100_000 * MS
    assert gate.check('a', now, now) is None
    assert gate.check('a', now + 3_000 * MS, now) == reasons.FUTURE_STAMP
    assert gate.check('a', now + 10 * 365 * 86_400_000 * MS, now) == reasons.FUTURE_STAMP
    assert gate.last_stamp_ns('a') == now
    assert gate.check('a', now + 1 * MS, now) is None, 'the next frame is not out of order'
    assert gate.check('a', now + 1_000 * MS, now) is None, 'exactly the tolerance is accepted'
    assert gate.check('b', 5_000 * MS, 0) is None, 'sim time not received yet (now 0): not checked'


def test_a_stamp_far_behind_restarts_the_order_and_is_counted():
    gate = StampGate(max_input_age_ms=-1, stamp_restart_ms=1000)
    assert gate.check('a', 50_000 * MS, 0) is None
    assert gate.check('a', 49_500 * MS, 0) == reasons.OUT_OF_ORDER_STAMP, 'a small step back is reordering'
    assert gate.restarts('a') == 0
    assert gate.check('a', 1_000 * MS, 0) is None, 'driver restarted: its stamps start again lower'
    assert gate.restarts('a') == 1 and gate.last_stamp_ns('a') == 1_000 * MS
    assert gate.check('a', 1_001 * MS, 0) is None
    assert gate.restarts('b') == 0


def test_a_restart_that_is_stale_forgets_the_old_order():
    gate = StampGate(max_input_age_ms=100, stamp_restart_ms=1000)
    now = 100_000 * MS
    assert gate.check('a', now, now) is None
    assert gate.check('a', 10_000 * MS, now) == reasons.STALE
    assert gate.restarts('a') == 1 and gate.last_stamp_ns('a') is None
    assert gate.check('a', now - 50 * MS, now) is None


@pytest.mark.parametrize('name', ['max_future_ms', 'stamp_restart_ms'])
def test_zero_future_or_restart_limit_raises(name):
    with pytest.raises(ValueError, match=name):
        StampGate(max_input_age_ms=-1, **{name: 0.0})
