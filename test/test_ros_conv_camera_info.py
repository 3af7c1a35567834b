"""CameraInfo <-> CameraInfoFields, through real rclpy serialization."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from metric3d_ros.core.geometry.camera_info import CameraInfoFields, Roi, intrinsics_from_camera_info
from metric3d_ros.ros.camera_info_conv import camera_info_to_fields, fields_to_camera_info

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('isolated_ros_env')]


K = (612.5, 0.0, 321.25, 0.0, 611.75, 239.5, 0.0, 0.0, 1.0)
R = (0.999, -0.01, 0.02, 0.011, 0.998, -0.03, -0.019, 0.031, 0.997)
P = (600.0, 0.0, 330.0, -36.0, 0.0, 600.0, 242.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _wire(msg: CameraInfo) -> CameraInfo:
    return deserialize_message(serialize_message(msg), CameraInfo)


def _message(d: tuple[float, ...], model: str) -> CameraInfo:
    msg = CameraInfo(width=1280, height=960, distortion_model=model)
    msg.header.frame_id = 'cam1_optical'
    msg.header.stamp.sec, msg.header.stamp.nanosec = 100, 250
    msg.d, msg.k, msg.r, msg.p = list(d), list(K), list(R), list(P)
    msg.binning_x, msg.binning_y = 2, 4
    msg.roi = RegionOfInterest(x_offset=16, y_offset=8, height=480, width=640, do_rectify=True)
    return msg


@pytest.mark.parametrize(
    ('d', 'model'),
    [
        ((-0.28, 0.07, 0.0002, -0.0001, 0.0), 'plumb_bob'),
        ((0.1, -0.2, 0.001, 0.002, 0.03, 0.4, -0.5, 0.06), 'rational_polynomial'),
        ((), ''),
    ],
)
def test_message_to_fields_keeps_every_calibration_value(d, model):
    fields = camera_info_to_fields(_wire(_message(d, model)))
    assert fields == CameraInfoFields(
        width=1280, height=960, distortion_model=model, d=d, k=K, r=R, p=P, binning_x=2, binning_y=4,
        roi=Roi(x_offset=16, y_offset=8, height=480, width=640, do_rectify=True),
    )
    assert all(type(v) is float for v in fields.k + fields.p + fields.d)


def test_fields_to_message_round_trip():
    fields = CameraInfoFields(
        width=640, height=480, distortion_model='plumb_bob', d=(0.1, -0.05, 0.0, 0.0, 0.01), k=K, r=R, p=P,
        binning_x=1, binning_y=3, roi=Roi(x_offset=2, y_offset=4, height=100, width=200, do_rectify=False),
    )
    header = Header(frame_id='cam2_optical')
    header.stamp.sec, header.stamp.nanosec = 5, 6
    msg = _wire(fields_to_camera_info(fields, header))
    assert (msg.width, msg.height, msg.distortion_model) == (640, 480, 'plumb_bob')
    np.testing.assert_array_equal(msg.k, K)
    np.testing.assert_array_equal(msg.r, R)
    np.testing.assert_array_equal(msg.p, P)
    np.testing.assert_array_equal(msg.d, fields.d)
    assert (msg.binning_x, msg.binning_y) == (1, 3)
    assert (msg.roi.x_offset, msg.roi.y_offset, msg.roi.height, msg.roi.width) == (2, 4, 100, 200)
    assert msg.roi.do_rectify is False
    assert msg.header.frame_id == 'cam2_optical'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (5, 6)
    assert camera_info_to_fields(msg) == fields


def test_default_header_is_empty():
    fields = camera_info_to_fields(_message((), 'plumb_bob'))
    msg = fields_to_camera_info(fields)
    assert msg.header.frame_id == '' and msg.header.stamp.sec == 0


def test_converted_fields_feed_the_geometry_core():
    """P, ROI (16, 8; 640x480) and binning (2, 4) survive the glue: hand-computed published intrinsics."""
    fields = camera_info_to_fields(_wire(_message((0.0,) * 5, 'plumb_bob')))
    resolved = intrinsics_from_camera_info(fields, image_width=320, image_height=120)
    assert resolved.source_used == 'rectified'
    assert resolved.intrinsics.as_tuple() == (600.0 / 2, 600.0 / 4, (330.0 - 16) / 2, (242.0 - 8) / 4)


def test_fields_to_camera_info_rejects_other_types():
    with pytest.raises(TypeError, match='CameraInfoFields'):
        fields_to_camera_info(CameraInfo())
