"""CameraInfo pairing: exact stamp first, then latest within tolerance, 'any age' mode, reasons."""
from __future__ import annotations

import pytest

from metric3d_ros.core.batching import ANY_AGE_MS, CameraInfoPairer, PairingConfig, reasons

MS = 1_000_000


def _pairer(tolerance_ms: float = 20.0, buffer_size: int = 8) -> CameraInfoPairer:
    return CameraInfoPairer(PairingConfig(info_tolerance_ms=tolerance_ms, buffer_size=buffer_size))


def test_no_camera_info_yet():
    result = _pairer().match(100 * MS)
    assert not result.ok and result.reason == reasons.NO_CAMERA_INFO and result.info is None


def test_exact_stamp_wins_over_a_later_received_info_within_tolerance():
    pairer = _pairer(tolerance_ms=50.0)
    pairer.add('info@100', 100 * MS)
    pairer.add('info@110', 110 * MS)
    result = pairer.match(100 * MS)
    assert result.ok and result.exact and result.info == 'info@100' and result.info_stamp_ns == 100 * MS


def test_latest_received_within_tolerance_when_no_exact_match():
    pairer = _pairer(tolerance_ms=20.0)
    pairer.add('info@90', 90 * MS)
    pairer.add('info@105', 105 * MS)
    pairer.add('info@300', 300 * MS)
    result = pairer.match(100 * MS)
    assert result.ok and not result.exact and result.info == 'info@105'


def test_tolerance_is_inclusive_and_symmetric():
    pairer = _pairer(tolerance_ms=20.0)
    pairer.add('info@80', 80 * MS)
    assert pairer.match(100 * MS).info == 'info@80'
    assert pairer.match(100 * MS + 1).reason == reasons.CAMERA_INFO_TOO_OLD
    pairer = _pairer(tolerance_ms=20.0)
    pairer.add('info@120', 120 * MS)
    assert pairer.match(100 * MS).info == 'info@120'
    assert pairer.match(100 * MS - 1).reason == reasons.CAMERA_INFO_TOO_NEW


def test_old_info_is_rejected_with_a_reason():
    pairer = _pairer(tolerance_ms=20.0)
    pairer.add('static', 0)
    result = pairer.match(5_000 * MS)
    assert not result.ok and result.reason == reasons.CAMERA_INFO_TOO_OLD and result.info is None


def test_any_age_accepts_a_static_publisher_latest_info():
    pairer = _pairer(tolerance_ms=ANY_AGE_MS)
    pairer.add('static-1', 0)
    pairer.add('static-2', 1 * MS)
    result = pairer.match(3_600_000 * MS)
    assert result.ok and result.info == 'static-2' and result.info_stamp_ns == 1 * MS
    assert pairer.config.any_age


def test_any_age_still_prefers_the_exact_stamp():
    pairer = _pairer(tolerance_ms=-5.0)
    pairer.add('exact', 7 * MS)
    pairer.add('later', 9 * MS)
    assert pairer.match(7 * MS).info == 'exact'
    assert pairer.match(8 * MS).info == 'later'


def test_zero_tolerance_means_exact_only():
    pairer = _pairer(tolerance_ms=0.0)
    pairer.add('a', 10 * MS)
    assert pairer.match(10 * MS).info == 'a'
    assert pairer.match(10 * MS + 1).reason == reasons.CAMERA_INFO_TOO_OLD


def test_buffer_is_bounded_oldest_forgotten():
    pairer = _pairer(tolerance_ms=0.0, buffer_size=2)
    for stamp_ms in (1, 2, 3):
        pairer.add(f'info@{stamp_ms}', stamp_ms * MS)
    assert len(pairer) == 2
    assert pairer.match(1 * MS).reason == reasons.CAMERA_INFO_TOO_NEW, "info@1 was forgotten"
    assert pairer.match(3 * MS).info == 'info@3'
    pairer.clear()
    assert pairer.match(3 * MS).reason == reasons.NO_CAMERA_INFO


def test_same_stamp_twice_returns_the_latest_received():
    pairer = _pairer()
    pairer.add('first', 5 * MS)
    pairer.add('second', 5 * MS)
    assert pairer.match(5 * MS).info == 'second'


@pytest.mark.parametrize('kwargs', [
    {'buffer_size': 0}, {'buffer_size': 1.5}, {'buffer_size': True}, {'info_tolerance_ms': float('nan')},
])
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError):
        PairingConfig(**kwargs)


@pytest.mark.parametrize('stamp', [-1, 1.5, '1', None, True])
def test_bad_stamps_raise(stamp):
    pairer = _pairer()
    with pytest.raises(ValueError):
        pairer.add('x', stamp)
    with pytest.raises(ValueError):
        pairer.match(stamp)
