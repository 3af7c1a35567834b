"""The depth node's inputs in process: pairing of images with CameraInfo, and every kind of bad input
(dropped with a reason, counted, in /diagnostics, never an output, never a crash)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from node_support import (
    Harness,
    assert_accounted,
    camera_info_msg,
    image_msg,
    rgb_image,
    ros_env,
    start_cams,
    unique_namespace,
    wait_until,
)

pytestmark = pytest.mark.ros

W, H = 160, 120
BAD_CASES = ('encoding', 'step', 'short', 'zero_k', 'nan_k', 'no_info', 'size', 'dup', 'order', 'stale')


@pytest.fixture(scope='module')
def harness():
    env = ros_env(23)
    h = Harness(int(env['ROS_DOMAIN_ID']), unique_namespace('inputs'))
    yield h
    h.close()


def test_pairing_exact_tolerance_and_image_before_info(harness):
    node, cams = start_cams(harness, 'pair', ['exact', 'near', 'far', 'early'], info_tolerance_ms=50.0,
                       info_wait_ms=300.0)
    # Exact stamp wins over a newer CameraInfo that is also within the tolerance.
    c = cams['exact']
    t = c.now()
    c.info(t, focal_px=111.0)
    c.info(t + 10_000_000, focal_px=222.0)
    c.image(t)
    assert wait_until(lambda: c.info_out(t) is not None, 10.0)
    assert c.info_out(t).k[0] == pytest.approx(111.0)
    # No exact match: the latest CameraInfo within 50 ms pairs.
    c = cams['near']
    t = c.now()
    c.info(t - 30_000_000, focal_px=150.0)
    c.image(t)
    assert wait_until(lambda: c.info_out(t) is not None, 10.0)
    assert c.info_out(t).k[0] == pytest.approx(150.0)
    # Beyond the tolerance: dropped as camera_info_too_old, no output.
    c = cams['far']
    t = c.now()
    c.info(t - 200_000_000)
    c.image(t)
    assert wait_until(lambda: c.drops().get('camera_info_too_old', 0) >= 1, 10.0)
    assert t not in c.depth_stamps()
    assert c.status_values()['drops_camera_info_too_old'] == '1'
    # The image arrives before its CameraInfo (image_transport publishes the image first): it waits.
    c = cams['early']
    t = c.now()
    c.info(t - 500_000_000, focal_px=90.0)  # an old one that does not pair
    c.image(t)
    c.info(t, focal_px=175.0)
    assert wait_until(lambda: c.info_out(t) is not None, 10.0)
    assert c.info_out(t).k[0] == pytest.approx(175.0)
    assert_accounted(node)


def test_static_camera_info_publisher(harness):
    node, cams = start_cams(harness, 'static', ['cam'], info_tolerance_ms=-1.0)
    c = cams['cam']
    c.info(1_000_000_000)  # stamped long ago, published once
    stamps = [c.now()]
    c.image(stamps[0])
    stamps.append(c.now())
    c.image(stamps[1])
    assert wait_until(lambda: set(stamps) <= set(c.depth_stamps()), 10.0)
    assert_accounted(node)


def test_binning_roi_and_size_mismatch(harness):
    from sensor_msgs.msg import RegionOfInterest

    node, cams = start_cams(harness, 'calib', ['binned', 'roi', 'size'])
    # 640x480 calibration binned 4x4 describes a 160x120 image: intrinsics divided by 4.
    c = cams['binned']
    t = c.now()
    full = camera_info_msg(640, 480, t, c.frame_id)
    full.binning_x = full.binning_y = 4
    c.h.publisher(type(full), f'{c.prefix}/camera_info').publish(full)
    time.sleep(0.03)
    c.image(t)
    assert wait_until(lambda: c.info_out(t) is not None, 10.0)
    out = c.info_out(t)
    assert (out.width, out.height, out.binning_x) == (W, H, 0)
    assert out.k[0] == pytest.approx(full.k[0] / 4) and out.k[2] == pytest.approx(full.k[2] / 4)
    # A 160x120 ROI of a 640x480 calibration: cx, cy shifted by the offsets.
    c = cams['roi']
    t = c.now()
    info = camera_info_msg(640, 480, t, c.frame_id)
    info.roi = RegionOfInterest(x_offset=100, y_offset=50, width=W, height=H)
    c.h.publisher(type(info), f'{c.prefix}/camera_info').publish(info)
    time.sleep(0.03)
    c.image(t)
    assert wait_until(lambda: c.info_out(t) is not None, 10.0)
    out = c.info_out(t)
    assert out.k[2] == pytest.approx(info.k[2] - 100) and out.k[5] == pytest.approx(info.k[5] - 50)
    assert out.k[0] == pytest.approx(info.k[0])
    # A CameraInfo of another size (unscaled 640x480 for a 160x120 image) is refused.
    c = cams['size']
    t = c.now()
    info = camera_info_msg(640, 480, t, c.frame_id)
    c.h.publisher(type(info), f'{c.prefix}/camera_info').publish(info)
    time.sleep(0.03)
    c.image(t)
    assert wait_until(lambda: c.drops().get('camera_info_size_mismatch', 0) == 1, 10.0)
    assert c.depth_stamps() == []
    assert 'camera_info_size_mismatch' in c.status_values()['last_error']
    assert_accounted(node)


def test_each_bad_input_is_dropped_counted_and_reported(harness):
    node, cams = start_cams(harness, 'bad', list(BAD_CASES) + ['good'], max_input_age_ms=2000.0)
    expected = {}
    bad_stamps = {}

    def bad(case, reason, stamp_ns):
        expected[case] = reason
        bad_stamps[case] = stamp_ns

    c = cams['encoding']  # a depth image is no colour image
    t = c.now()
    c.info(t)
    c.image(t, image_msg(np.zeros((H, W), np.uint16), '16UC1', t, c.frame_id))
    bad('encoding', 'unsupported_encoding', t)
    c = cams['step']  # step smaller than a row
    t = c.now()
    msg = image_msg(rgb_image(W, H), 'rgb8', t, c.frame_id)
    msg.step = W * 3 - 3
    c.info(t)
    c.image(t, msg)
    bad('step', 'malformed_image', t)
    c = cams['short']  # data shorter than step * height
    t = c.now()
    msg = image_msg(rgb_image(W, H), 'rgb8', t, c.frame_id)
    msg.height = H + 10
    c.info(t)
    c.image(t, msg)
    bad('short', 'malformed_image', t)
    c = cams['zero_k']  # uncalibrated: K and P all zero
    t = c.now()
    c.info(t, k=[0.0] * 9, p=[0.0] * 12)
    c.image(t)
    bad('zero_k', 'invalid_camera_info', t)
    c = cams['nan_k']  # non-finite intrinsics
    t = c.now()
    nan_k = camera_info_msg(W, H, t, c.frame_id)
    c.info(t, k=[float('nan')] + list(nan_k.k)[1:], p=[float('nan')] + list(nan_k.p)[1:])
    c.image(t)
    bad('nan_k', 'invalid_camera_info', t)
    c = cams['no_info']  # CameraInfo never published
    t = c.now()
    c.image(t)
    bad('no_info', 'no_camera_info', t)
    c = cams['size']  # image larger than its CameraInfo says
    t = c.now()
    c.info(t)
    c.image(t, width=W * 2, height=H)
    bad('size', 'camera_info_size_mismatch', t)
    c = cams['dup']  # the same stamp twice: the second is dropped
    t = c.now()
    c.frame(t)
    c.image(t)
    bad('dup', 'duplicate_stamp', None)
    c = cams['order']  # an older stamp after a newer one
    t = c.now()
    c.frame(t)
    c.frame(t - 100_000_000)
    bad('order', 'out_of_order_stamp', t - 100_000_000)
    c = cams['stale']  # 10 s old with max_input_age_ms 2000
    t = c.now(-10_000)
    c.frame(t)
    bad('stale', 'stale', t)

    def all_counted():
        return all(cams[case].drops().get(reason, 0) >= 1 for case, reason in expected.items())

    assert wait_until(all_counted, 15.0), {case: cams[case].drops() for case in expected}
    time.sleep(0.3)
    for case, reason in expected.items():
        c = cams[case]
        assert c.drops() == {reason: 1}, (case, c.drops())
        if bad_stamps[case] is not None:
            assert bad_stamps[case] not in c.depth_stamps(), case
        values = c.status_values()
        assert values[f'drops_{reason}'] == '1', case
        assert values['last_error'].startswith(reason), (case, values['last_error'])
    assert len(cams['dup'].depth_stamps()) == 1 and len(cams['order'].depth_stamps()) == 1
    # The node carries on: good frames on every camera are processed after the bad ones.
    for case in ('encoding', 'step', 'zero_k', 'good'):
        c = cams[case]
        t = c.now()
        c.frame(t)
        assert wait_until(lambda c=c, t=t: t in c.depth_stamps(), 10.0), case
    assert_accounted(node)
