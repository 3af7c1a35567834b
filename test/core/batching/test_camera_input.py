"""CameraInput: pairing with CameraInfo and holding an image that arrived first (ROS-free)."""
from __future__ import annotations

import threading

import pytest

from metric3d_ros.core.batching import reasons
from metric3d_ros.core.batching.camera_input import CameraInput, Dropped, Paired
from metric3d_ros.core.batching.pairing import PairingConfig

MS = 1_000_000


def _cam(wait_ms: float = 100.0, tolerance_ms: float = 50.0) -> CameraInput:
    return CameraInput('front', PairingConfig(info_tolerance_ms=tolerance_ms), wait_ms)


def test_exact_stamp_pairs_at_once():
    cam = _cam()
    assert cam.add_info('info1', 1000 * MS, now_s=0.0) == []
    assert cam.add_image('img1', 1000 * MS, now_s=0.0) == [Paired('img1', 'info1')]
    assert cam.held is None


def test_image_before_its_info_is_held_then_paired():
    cam = _cam()
    assert cam.add_image('img1', 1000 * MS, now_s=0.0) == []
    assert cam.held == 'img1'
    assert cam.add_info('info1', 1000 * MS, now_s=0.05) == [Paired('img1', 'info1')]
    assert cam.held is None


def test_held_image_expires_with_its_reason():
    cam = _cam(wait_ms=100.0)
    cam.add_image('img1', 1000 * MS, now_s=0.0)
    assert cam.expire(now_s=0.05) == []
    assert cam.expire(now_s=0.1) == [Dropped('img1', reasons.NO_CAMERA_INFO)]
    assert cam.held is None


def test_newer_image_replaces_the_held_one():
    cam = _cam()
    cam.add_image('img1', 1000 * MS, now_s=0.0)
    out = cam.add_image('img2', 1033 * MS, now_s=0.033)
    assert out == [Dropped('img1', reasons.NO_CAMERA_INFO)]
    assert cam.held == 'img2'


def test_too_old_info_holds_but_too_new_info_drops_at_once():
    cam = _cam(tolerance_ms=10.0)
    cam.add_info('info_old', 900 * MS, now_s=0.0)
    assert cam.add_image('img1', 1000 * MS, now_s=0.0) == []           # may still get its info
    assert cam.held == 'img1'
    cam2 = _cam(tolerance_ms=10.0)
    cam2.add_info('info_new', 1100 * MS, now_s=0.0)
    assert cam2.add_image('img1', 1000 * MS, now_s=0.0) == [Dropped('img1', reasons.CAMERA_INFO_TOO_NEW)]


def test_zero_wait_never_holds():
    cam = _cam(wait_ms=0.0)
    assert cam.add_image('img1', 1000 * MS, now_s=0.0) == [Dropped('img1', reasons.NO_CAMERA_INFO)]


def test_clear_returns_the_held_image():
    cam = _cam()
    cam.add_image('img1', 1000 * MS, now_s=0.0)
    assert cam.clear() == [Dropped('img1', reasons.NO_CAMERA_INFO)]
    assert cam.add_image('img2', 1000 * MS, now_s=1.0) == []  # the buffer was forgotten too


def test_negative_wait_is_refused():
    with pytest.raises(ValueError, match='info_wait_ms'):
        _cam(wait_ms=-1.0)


def test_every_image_accounted_for_under_concurrency():
    """Images on one thread, CameraInfo on another: each image is paired, dropped or held exactly once."""
    cam = _cam(wait_ms=1e6, tolerance_ms=0.0)
    outcomes: list = []
    lock = threading.Lock()
    count = 2000

    def images():
        for i in range(count):
            out = cam.add_image(i, i * MS, now_s=0.0)
            with lock:
                outcomes.extend(out)

    def infos():
        for i in range(count):
            out = cam.add_info(f'info{i}', i * MS, now_s=0.0)
            with lock:
                outcomes.extend(out)

    threads = [threading.Thread(target=images), threading.Thread(target=infos)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = [o.image for o in outcomes] + ([cam.held] if cam.held is not None else [])
    assert sorted(seen) == list(range(count))
    for o in outcomes:
        if isinstance(o, Paired):
            assert o.info == f'info{o.image}'
