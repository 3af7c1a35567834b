"""Throttle: once per period per key, counting what it held back (fake clock)."""
from __future__ import annotations

import pytest

from metric3d_ros.core.batching import FakeClock, Throttle


def test_once_per_period_and_suppressed_count():
    clock = FakeClock()
    throttle = Throttle(2.0, clock)
    assert throttle.poll() == 0
    assert throttle.poll() is None
    clock.advance_s(1.999)
    assert throttle.poll() is None
    assert throttle.suppressed() == 2
    clock.advance_s(0.001)
    assert throttle.poll() == 2, 'the next message says how many were suppressed'
    assert throttle.suppressed() == 0
    assert throttle.poll() is None


def test_keys_are_independent():
    clock = FakeClock()
    throttle = Throttle(1.0, clock)
    assert throttle.ready(('bad_encoding', 'cam_a'))
    assert throttle.ready(('bad_encoding', 'cam_b'))
    assert not throttle.ready(('bad_encoding', 'cam_a'))


def test_zero_period_never_throttles():
    throttle = Throttle(0.0, FakeClock())
    assert all(throttle.ready() for _ in range(5))


@pytest.mark.parametrize('period_s', [-1.0, float('nan'), float('inf')])
def test_bad_period_raises(period_s):
    with pytest.raises(ValueError):
        Throttle(period_s)


def test_fake_clock_refuses_to_advance_backwards():
    clock = FakeClock(10)
    with pytest.raises(ValueError):
        clock.advance_ns(-1)
    clock.set_ns(3)
    assert clock() == 3
