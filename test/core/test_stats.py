"""Diagnostics statistics on a fake monotonic clock: rates, drops, latency percentiles, batches, verdict."""
from __future__ import annotations

import math

import pytest

from metric3d_ros.core.batching import FakeClock
from metric3d_ros.core.stats import DiagnosticsStats, Level, StatsConfig


def _stats(**config) -> tuple[DiagnosticsStats, FakeClock]:
    clock = FakeClock(0)
    defaults = dict(window_s=2.0, silent_error_s=1.0, warn_drop_fraction=0.1, warn_latency_p95_ms=50.0,
                    min_inputs_for_level=3)
    defaults.update(config)
    return DiagnosticsStats(StatsConfig(**defaults), camera_ids=('a',), monotonic_ns=clock), clock


def _feed(stats: DiagnosticsStats, clock: FakeClock, camera_id: str, n: int, rate_hz: float,
          latency_ms: float = 10.0, drop_every: int = 0, reason: str = 'stale') -> None:
    for i in range(n):
        clock.advance_s(1.0 / rate_hz)
        stats.record_input(camera_id)
        if drop_every and i % drop_every == 0:
            stats.record_drop(camera_id, reason)
        else:
            stats.record_output(camera_id, latency_ms)


def test_rates_over_the_window():
    stats, clock = _stats(window_s=2.0)
    _feed(stats, clock, 'a', 100, rate_hz=20.0)  # 5 s at 20 Hz
    snap = stats.snapshot('a')
    assert snap.input_rate_hz == pytest.approx(20.0, rel=0.05)
    assert snap.output_rate_hz == pytest.approx(20.0, rel=0.05)
    assert snap.inputs_total == 100 and snap.outputs_total == 100
    assert snap.level == Level.OK and snap.message == 'ok'


def test_rate_at_start_uses_the_time_since_registration():
    stats, clock = _stats(window_s=10.0)
    _feed(stats, clock, 'a', 10, rate_hz=10.0)  # 1 s
    assert stats.snapshot('a').input_rate_hz == pytest.approx(10.0, rel=0.05)


def test_rate_decays_when_silent_and_silence_is_an_error():
    stats, clock = _stats(window_s=2.0, silent_error_s=1.0)
    _feed(stats, clock, 'a', 40, rate_hz=20.0)
    clock.advance_s(0.5)
    assert stats.snapshot('a').level == Level.OK
    clock.advance_s(0.6)
    snap = stats.snapshot('a')
    assert snap.level == Level.ERROR and 'silent' in snap.message and '1.1 s' in snap.message
    assert snap.last_input_age_s == pytest.approx(1.1)
    clock.advance_s(1.0)
    assert stats.snapshot('a').input_rate_hz == 0.0


def test_a_camera_that_never_sent_is_an_error_after_the_grace_period():
    stats, clock = _stats(silent_error_s=1.0)
    snap = stats.snapshot('a')
    assert snap.level == Level.OK and 'waiting' in snap.message and snap.last_input_age_s is None
    clock.advance_s(1.5)
    snap = stats.snapshot('a')
    assert snap.level == Level.ERROR and 'no input received yet' in snap.message


def test_percentiles_of_latency():
    stats, clock = _stats(window_s=100.0)
    for latency_ms in range(1, 101):
        clock.advance_ms(10)
        stats.record_input('a')
        stats.record_output('a', float(latency_ms))
    snap = stats.snapshot('a')
    assert snap.latency_p50_ms == pytest.approx(50.5)
    assert snap.latency_p95_ms == pytest.approx(95.05)
    assert snap.latency_p99_ms == pytest.approx(99.01)


def test_latency_window_forgets_old_samples():
    stats, clock = _stats(window_s=1.0, warn_latency_p95_ms=1e6)
    _feed(stats, clock, 'a', 10, rate_hz=10.0, latency_ms=500.0)
    _feed(stats, clock, 'a', 20, rate_hz=10.0, latency_ms=5.0)
    assert stats.snapshot('a').latency_p95_ms == pytest.approx(5.0)


def test_high_latency_is_a_warning():
    stats, clock = _stats(warn_latency_p95_ms=50.0)
    _feed(stats, clock, 'a', 20, rate_hz=20.0, latency_ms=80.0)
    snap = stats.snapshot('a')
    assert snap.level == Level.WARN and 'latency p95 80 ms > 50 ms' in snap.message


def test_drops_above_the_fraction_warn_and_name_the_reasons():
    stats, clock = _stats(warn_drop_fraction=0.1)
    _feed(stats, clock, 'a', 20, rate_hz=20.0, drop_every=4, reason='queue_overflow')  # 25 %
    snap = stats.snapshot('a')
    assert snap.level == Level.WARN and 'queue_overflow: 5' in snap.message
    assert snap.drops_total == {'queue_overflow': 5} and snap.drop_fraction == pytest.approx(0.25)
    stats2, clock2 = _stats(warn_drop_fraction=0.1)
    _feed(stats2, clock2, 'a', 20, rate_hz=20.0, drop_every=20)  # 5 %
    assert stats2.snapshot('a').level == Level.OK


def test_all_frames_dropped_is_an_error():
    stats, clock = _stats()
    _feed(stats, clock, 'a', 10, rate_hz=20.0, drop_every=1, reason='no_camera_info')
    snap = stats.snapshot('a')
    assert snap.level == Level.ERROR and 'all frames dropped' in snap.message
    assert 'no_camera_info' in snap.message


def test_too_few_inputs_give_no_drop_verdict():
    stats, clock = _stats(min_inputs_for_level=3)
    _feed(stats, clock, 'a', 2, rate_hz=20.0, drop_every=1)
    assert stats.snapshot('a').level == Level.OK


def test_error_wins_over_warnings_and_warnings_combine():
    stats, clock = _stats(warn_drop_fraction=0.1, warn_latency_p95_ms=50.0)
    _feed(stats, clock, 'a', 20, rate_hz=20.0, latency_ms=90.0, drop_every=2)
    snap = stats.snapshot('a')
    assert snap.level == Level.WARN and 'dropped' in snap.message and 'latency' in snap.message
    clock.advance_s(5.0)
    assert stats.snapshot('a').level == Level.ERROR


def test_batch_statistics_global_and_per_camera():
    stats, clock = _stats(window_s=10.0)
    stats.record_batch(['a', 'b'], 20.0)
    clock.advance_ms(100)
    stats.record_batch(['a', 'b', 'c'], 30.0)
    stats.record_batch(['c'], 10.0)
    stats.record_batch_error()
    batches = stats.batch_snapshot()
    assert batches.batches_total == 3 and batches.batch_errors_total == 1
    assert batches.batch_size_histogram == {2: 1, 3: 1, 1: 1}
    assert batches.batch_size_mean == pytest.approx(2.0)
    assert batches.inference_mean_ms == pytest.approx(20.0)
    assert batches.inference_p50_ms == pytest.approx(20.0)
    snap_a = stats.snapshot('a')
    assert snap_a.batch_size_mean == pytest.approx(2.5) and snap_a.inference_mean_ms == pytest.approx(25.0)
    assert stats.camera_ids() == ['a', 'b', 'c']
    assert dict(batches.key_values())['batch_size_histogram'] == '1:1 2:1 3:1'


def test_key_values_are_strings_with_units_and_na_for_empty():
    stats, _ = _stats()
    stats.record_drop('a', 'stale')
    values = dict(stats.snapshot('a').key_values())
    assert values['latency_p50_ms'] == 'n/a' and values['drops_stale'] == '1'
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())
    expected = {'input_rate_hz', 'output_rate_hz', 'latency_p95_ms', 'inference_mean_ms', 'batch_size_mean'}
    assert expected <= set(values)
    empty = stats.batch_snapshot()
    assert math.isnan(empty.inference_p95_ms) and dict(empty.key_values())['batch_size_histogram'] == 'none'


def test_memory_is_bounded_and_rate_stays_right_when_full():
    stats, clock = _stats(window_s=10.0, max_samples=50)
    _feed(stats, clock, 'a', 500, rate_hz=100.0)
    snap = stats.snapshot('a')
    assert snap.inputs_window == 50 and snap.input_rate_hz == pytest.approx(100.0, rel=0.05)


@pytest.mark.parametrize('kwargs', [
    {'window_s': 0.0}, {'silent_error_s': -1.0}, {'warn_drop_fraction': 1.5}, {'max_samples': 0},
    {'min_inputs_for_level': 0}, {'warn_latency_p95_ms': float('nan')},
])
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError, match='StatsConfig'):
        StatsConfig(**kwargs)


def test_bad_names_raise():
    stats, _ = _stats()
    with pytest.raises(ValueError):
        stats.record_input('')
    with pytest.raises(ValueError):
        stats.record_drop('a', '')
