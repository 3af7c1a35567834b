"""The depth node under faulty input (issue 16): stamps from the future, restarted drivers, negative stamps,
non-finite CameraInfo values, oversized and extreme-aspect images (compressed ones before decoding), a
silent camera whose topic has a publisher, and an empty frame_id. Every frame is accounted for: inputs =
outputs + counted drops (+ skipped, no subscriber)."""
from __future__ import annotations

import math
import time

import pytest
from node_support import (
    Harness,
    assert_accounted,
    camera_info_msg,
    image_msg,
    jpeg_claiming,
    png_of_zeros,
    rgb_image,
    ros_env,
    start_cams,
    unique_namespace,
    wait_until,
)

pytestmark = pytest.mark.ros

W, H = 160, 120
SEC = 1_000_000_000


@pytest.fixture(scope='module')
def harness():
    env = ros_env(29)
    h = Harness(int(env['ROS_DOMAIN_ID']), unique_namespace('faults'))
    yield h
    h.close()


@pytest.mark.parametrize('layout', ['in_process', 'group_workers'])
def test_future_restarted_and_negative_stamps(harness, layout):
    node, cams = start_cams(harness, f'stamps_{layout}', ['fut', 'restart', 'neg'], process_layout=layout,
                       max_future_ms=1000.0, stamp_restart_ms=1000.0)
    # One frame 3 s ahead, one 10 years ahead: dropped as future_stamp, the camera goes on at once.
    c = cams['fut']
    t0 = c.now()
    c.frame(t0)
    assert wait_until(lambda: t0 in c.depth_stamps(), 15.0)  # (queue_depth 1: one frame at a time)
    c.frame(t0 + 3 * SEC)
    c.frame(t0 + 10 * 365 * 86_400 * SEC)
    t1 = c.now()
    c.frame(t1)
    assert wait_until(lambda: t1 in c.depth_stamps(), 15.0), (c.depth_stamps(), c.drops())
    assert c.depth_stamps() == [t0, t1]
    assert wait_until(lambda: c.drops() == {'future_stamp': 2}, 5.0), c.drops()  # workers report periodically
    # A driver restarted with a clock 100 s behind: a new timeline, published without a node restart.
    c = cams['restart']
    t0 = c.now()
    c.frame(t0)
    assert wait_until(lambda: t0 in c.depth_stamps(), 15.0)
    c.frame(t0 - 200_000_000)  # 0.2 s back: reordering, dropped
    back = [t0 - 100 * SEC, t0 - 100 * SEC + 50_000_000]
    for stamp in back:
        c.frame(stamp)
        assert wait_until(lambda stamp=stamp: stamp in c.depth_stamps(), 15.0), (c.depth_stamps(), c.drops())
    assert c.depth_stamps() == [t0, *back]
    assert wait_until(lambda: c.drops() == {'out_of_order_stamp': 1}, 5.0), c.drops()
    assert wait_until(lambda: c.extras().stamp_restarts == 1, 5.0), c.extras()
    # Negative stamps (legal int32 seconds) are their own reason, not internal_error.
    c = cams['neg']
    c.frame(-5 * SEC)
    assert wait_until(lambda: c.drops() == {'negative_stamp': 1}, 15.0), c.drops()
    assert 'before 1970' in c.extras().last_error
    t = c.now()
    c.frame(t)
    assert wait_until(lambda: t in c.depth_stamps(), 15.0)
    assert_accounted(node)


def test_no_non_finite_value_reaches_a_published_camera_info(harness):
    bad = {'k_nan': ('k', 2, math.nan), 'tx_nan': ('p', 3, math.nan), 'r_inf': ('r', 0, math.inf),
           'd_nan': ('d', 1, math.nan)}
    node, cams = start_cams(harness, 'info', list(bad), camera_info_source='auto')
    for name, (field, index, value) in bad.items():
        c = cams[name]
        t = c.now()
        info = camera_info_msg(W, H, t, c.frame_id)
        values = list(getattr(info, field))
        values[index] = value
        setattr(info, field, values)
        c.frame(t, info=info)
    for name, (field, _, _) in bad.items():
        c = cams[name]
        assert wait_until(lambda c=c: c.drops() == {'invalid_camera_info': 1}, 15.0), (name, c.drops())
        assert f'CameraInfo.{field} holds a non-finite value' in c.extras().last_error
        t = c.now()
        c.frame(t)
        assert wait_until(lambda c=c, t=t: t in c.depth_stamps(), 15.0), name
    for name, c in cams.items():
        infos = c.infos()
        assert len(infos) == 1, name
        for msg in infos:
            values = [*msg.k, *msg.r, *msg.p, *msg.d]
            assert all(math.isfinite(v) for v in values), (name, values)
    assert_accounted(node)


def test_oversized_and_extreme_aspect_images_are_rejected_at_the_callback(harness):
    # FAST_NODE's network is 140x112: 2000x1 and 1x400 letterbox to nothing.
    node, cams = start_cams(harness, 'size', ['big', 'wide', 'tall', 'good'], max_image_megapixels=0.05)
    cases = {'big': (320, 240, 'image_too_large', '320x240 (0.1 megapixels), above max_image_megapixels=0.05'
                     ),
             'wide': (2000, 1, 'extreme_aspect_ratio', 'a 2000x1 image letterboxed into 140x112'),
             'tall': (1, 400, 'extreme_aspect_ratio', 'a 1x400 image letterboxed into 140x112')}
    for name, (w, h, _, _) in cases.items():
        c = cams[name]
        c.frame(c.now(), width=w, height=h)
    for name, (_, _, reason, text) in cases.items():
        c = cams[name]
        assert wait_until(lambda c=c, reason=reason: c.drops() == {reason: 1}, 15.0), (name, c.drops())
        assert text in c.extras().last_error, (name, c.extras().last_error)
        assert c.depth_stamps() == []
    c = cams['good']
    t = c.now()
    c.frame(t)
    assert wait_until(lambda: t in c.depth_stamps(), 15.0)
    assert_accounted(node)


def test_oversized_compressed_images_are_rejected_before_decoding(harness, monkeypatch):
    """The size and aspect checks read the PNG IHDR / JPEG SOF: a 50 KB PNG of a 20000x20000 image (1.2 GB
    decoded) is rejected at the callback without being decoded."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    import metric3d_ros.ros.layout.group as group_module

    decoded = []

    def counting_decode(c):
        rgb = real_decode(c)
        decoded.append(rgb.shape[:2])
        return rgb

    real_decode = group_module.compressed_to_rgb8
    monkeypatch.setattr(group_module, 'compressed_to_rgb8', counting_decode)
    node, cams = start_cams(harness, 'compressed', ['png', 'jpeg', 'wide', 'good'],
                            input_transport='compressed')
    cases = {'png': (png_of_zeros(20000, 20000), 'png', 'image_too_large', '20000x20000 (400.0 megapixels)'),
             'jpeg': (jpeg_claiming(20000, 30000), 'jpeg', 'image_too_large',
                      '20000x30000 (600.0 megapixels)'),
             'wide': (png_of_zeros(4000, 1), 'png', 'extreme_aspect_ratio', 'a 4000x1 image letterboxed'),
             'good': (cv2.imencode('.jpg', rgb_image(W, H))[1].tobytes(), 'jpeg', None, '')}
    for name, (data, fmt, _, _) in cases.items():
        c = cams[name]
        t = c.now()
        c.info(t)
        msg = CompressedImage(format=f'rgb8; {fmt} compressed bgr8')
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, SEC)
        msg.header.frame_id = c.frame_id
        msg.data = data
        c.h.publisher(CompressedImage, f'{c.prefix}/image/compressed').publish(msg)
        if name == 'good':
            assert wait_until(lambda c=c, t=t: t in c.depth_stamps(), 15.0), c.drops()
    for name, (_, _, reason, text) in cases.items():
        if reason is None:
            continue
        c = cams[name]
        assert wait_until(lambda c=c, reason=reason: c.drops() == {reason: 1}, 15.0), (name, c.drops())
        assert text in c.extras().last_error, (name, c.extras().last_error)
        assert c.depth_stamps() == []
    assert decoded == [(H, W)], 'only the image within the limits is decoded'
    assert_accounted(node)


def test_a_silent_camera_whose_topic_has_a_publisher_gets_a_qos_hint(harness):
    node, cams = start_cams(harness, 'silent', ['quiet'], **{'diagnostics.silent_error_s': 0.3})
    c = cams['quiet']
    assert wait_until(lambda: c.extras().hint != '', 10.0)
    hint = c.extras().hint
    assert f'{c.prefix}/image has 1 publisher(s)' in hint and 'qos.input.reliability' in hint, hint
    values = {kv.key: kv.value for s in node.diagnostics_message().status if s.hardware_id == 'quiet'
              for kv in s.values}
    assert f'{c.prefix}/image has 1 publisher(s)' in values['hint']  # (its "for X s" moves on)
    stamps = []

    def hint_gone():  # images keep arriving (one image alone is silence again after silent_error_s)
        stamps.append(c.now())
        c.frame(stamps[-1])
        return c.extras().hint == ''

    assert wait_until(hint_gone, 15.0, period_s=0.05), 'the hint goes once images arrive'
    assert wait_until(lambda: stamps[-1] in c.depth_stamps(), 15.0)
    assert_accounted(node)


@pytest.mark.parametrize('layout', ['in_process', 'group_workers'])
def test_an_empty_frame_id_is_published_counted_and_warned_once_per_camera(harness, layout):
    from rcl_interfaces.msg import Log
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    # /rosout keeps the last 10 s for late joiners: a group worker may log before it discovers this reader
    harness.subscribe(Log, '/rosout', QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                                 durability=DurabilityPolicy.TRANSIENT_LOCAL))
    node, cams = start_cams(harness, f'frame_id_{layout}', ['bare', 'named'], process_layout=layout,
                            log_throttle_s=60.0)
    c = cams['bare']
    stamps = []
    for _ in range(3):
        t = c.now()
        stamps.append(t)
        info = camera_info_msg(W, H, t, '')
        image = image_msg(rgb_image(W, H, seed=len(stamps)), 'rgb8', t, '')
        c.frame(t, info=info, image=image)
        assert wait_until(lambda t=t: t in c.depth_stamps(), 15.0), c.drops()
    named = cams['named']
    t = named.now()
    named.frame(t)
    assert wait_until(lambda: t in named.depth_stamps(), 15.0)
    # Published (not a drop), with the input header as it came: an empty frame_id.
    assert c.depth_stamps() == stamps
    depth = c.h.messages(f'{c.prefix}/depth/image')
    assert [m.header.frame_id for m in depth] == [''] * 3
    assert [m.header.frame_id for m in c.infos()] == [''] * 3
    assert c.drops() == {}
    # Counted per camera (3 images + 3 CameraInfo) and shown in /diagnostics.
    assert wait_until(lambda: c.extras().empty_frame_id == 6, 10.0), c.extras()
    assert named.extras().empty_frame_id == 0
    status = {s.hardware_id: {kv.key: kv.value for kv in s.values} for s in node.diagnostics_message().status}
    assert status['bare']['empty_frame_id'] == '6' and status['named']['empty_frame_id'] == '0'
    # One warning for the camera within log_throttle_s, naming it and REP 103 (its logger: the node's, or
    # its group worker's, under this test's namespace).
    def warnings():
        return [m.msg for m in harness.messages('/rosout') if f'frame_id_{layout}' in m.name
                and 'camera bare:' in m.msg and 'empty header.frame_id' in m.msg]

    assert wait_until(lambda: len(warnings()) >= 1, 15.0)
    time.sleep(0.5)
    assert len(warnings()) == 1, warnings()
    assert 'REP 103' in warnings()[0]
    assert_accounted(node)
