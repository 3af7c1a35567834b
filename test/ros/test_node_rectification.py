"""``camera_info_source: auto`` takes an image whose CameraInfo has P set as rectified. A raw image (topic not
named image_rect) with non-zero distortion is then most likely a mistake: one warning per camera, shown in
/diagnostics; none for a rectified topic name, zero distortion or an explicit camera_info_source."""
from __future__ import annotations

import time

import pytest
from node_support import (
    Harness,
    assert_accounted,
    camera_info_msg,
    rgb_image,
    ros_env,
    start_node,
    unique_namespace,
    wait_until,
)

pytestmark = pytest.mark.ros

W, H = 96, 72
DISTORTION = [-0.28, 0.07, 0.0002, -0.0001, 0.0]
# only the calibration may raise a camera's level here (not latency, drops or silence on a loaded machine)
QUIET = {'diagnostics.warn_latency_p95_ms': 1e5, 'diagnostics.warn_drop_fraction': 1.0,
         'diagnostics.silent_error_s': 600.0}


@pytest.fixture(scope='module')
def harness():
    env = ros_env(47)
    h = Harness(int(env['ROS_DOMAIN_ID']), unique_namespace('rect'))
    yield h
    h.close()


@pytest.mark.parametrize('topic, rectified', [
    ('/cam/image', False), ('/cam/image_raw', False), ('/cam/image_color/compressed', False),
    ('/cam/image_rect', True), ('/cam/image_rect_color', True), ('/robot/cam/image_rect/compressed', True),
    ('image_rect', True), ('/rectifier/image', False),
])
def test_is_rectified_topic(topic, rectified):
    from metric3d_ros.ros.layout.group import is_rectified_topic

    assert is_rectified_topic(topic) is rectified


def test_unrectified_input_warnings_only_for_auto_p_set_distorted_raw_topic():
    from metric3d_ros.codec.camera_info import camera_info_from_msg
    from metric3d_ros.ros.layout.group import unrectified_input_warnings

    distorted = camera_info_from_msg(camera_info_msg(W, H, 0, 'f', d=DISTORTION))
    ideal = camera_info_from_msg(camera_info_msg(W, H, 0, 'f'))
    (warning,) = unrectified_input_warnings('/cam/image', distorted, 'auto', 'rectified')
    assert '/cam/image' in warning and 'rectified' in warning and 'image_proc' in warning
    assert unrectified_input_warnings('/cam/image_rect', distorted, 'auto', 'rectified') == ()
    assert unrectified_input_warnings('/cam/image', ideal, 'auto', 'rectified') == ()
    assert unrectified_input_warnings('/cam/image', distorted, 'rectified', 'rectified') == ()
    # auto without P takes the image as raw: the raw-distortion note of intrinsics_from_camera_info covers it
    assert unrectified_input_warnings('/cam/image', distorted, 'auto', 'raw') == ()


class _Recorder:
    """Wraps a node's logger, keeping the warnings."""

    def __init__(self, logger) -> None:
        self.logger = logger
        self.warnings: list[str] = []

    def warning(self, message, **kwargs):
        self.warnings.append(message)
        return self.logger.warning(message, **kwargs)

    def __getattr__(self, name):
        return getattr(self.logger, name)


@pytest.mark.parametrize('source, expect_warning', [('auto', True), ('rectified', False)])
def test_auto_warns_once_per_camera_for_a_distorted_raw_topic(harness, source, expect_warning):
    sub_ns = f'src_{source}'
    cams = {'distorted': DISTORTION, 'ideal': [0.0] * 5}
    node = start_node(harness, sub_ns, {c: (W, H) for c in cams}, {c: ('depth/image',) for c in cams},
                      camera_info_source=source, **QUIET)
    logger = _Recorder(node.get_logger())
    node.get_logger = lambda: logger
    frames = 4
    for i in range(frames):
        stamp_ns = node.get_clock().now().nanoseconds
        for cam, d in cams.items():
            info = camera_info_msg(W, H, stamp_ns, f'{cam}_optical_frame', d=d)
            harness.publish_frame(f'{sub_ns}/{cam}', rgb_image(W, H, seed=i), stamp_ns, info=info)
        time.sleep(0.1)

    def published(cam):
        return len(harness.messages(f'{sub_ns}/{cam}/depth/image'))

    assert wait_until(lambda: all(published(c) >= 2 for c in cams), 20.0)
    assert_accounted(node)
    ours = [w for w in logger.warnings if 'not named as a rectified image' in w]
    statuses = {s.hardware_id: s for s in node.diagnostics_message().status if s.hardware_id in cams}
    assert statuses['ideal'].level == b'\x00', statuses['ideal'].message
    if expect_warning:
        assert len(ours) == 1 and ours[0].startswith('camera distorted:'), logger.warnings
        assert f'{sub_ns}/distorted/image' in ours[0]
        assert statuses['distorted'].level == b'\x01'
        assert 'not named as a rectified image' in statuses['distorted'].message
    else:
        assert ours == [], ours
        assert statuses['distorted'].level == b'\x00', statuses['distorted'].message
