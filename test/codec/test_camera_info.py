"""codec/camera_info.py: CameraInfo bytes and message objects <-> CameraInfoFields, checked through rclpy's
and rosbags' serializers."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from metric3d_ros.codec.camera_info import camera_info_cdr, camera_info_from_msg, read_camera_info_cdr
from metric3d_ros.codec.cdr import CdrError
from metric3d_ros.core.geometry.camera_info import (
    CalibrationError,
    CameraInfoFields,
    Roi,
    intrinsics_from_camera_info,
)

K = (612.5, 0.0, 321.25, 0.0, 611.75, 239.5, 0.0, 0.0, 1.0)
R = (0.999, -0.01, 0.02, 0.011, 0.998, -0.03, -0.019, 0.031, 0.997)
P = (600.0, 0.0, 330.0, -36.0, 0.0, 600.0, 242.0, 0.0, 0.0, 0.0, 1.0, 0.0)
D_CASES = [
    ((-0.28, 0.07, 0.0002, -0.0001, 0.0), 'plumb_bob'),
    ((0.1, -0.2, 0.001, 0.002, 0.03, 0.4, -0.5, 0.06), 'rational_polynomial'),
    ((), ''),
]
STAMP_NS = 1_556_919_593_841_523_000


def _fields(d: tuple[float, ...] = (0.1, -0.05, 0.0, 0.0, 0.01),
            model: str = 'plumb_bob') -> CameraInfoFields:
    return CameraInfoFields(
        width=1280, height=960, distortion_model=model, d=d, k=K, r=R, p=P, binning_x=2, binning_y=4,
        roi=Roi(x_offset=16, y_offset=8, height=480, width=640, do_rectify=True),
    )


@pytest.mark.parametrize(('d', 'model'), D_CASES)
@pytest.mark.parametrize('frame_id', ['', 'c', 'cam1_optical', 'kamera_ö'])
def test_round_trip_keeps_every_calibration_value(d, model, frame_id):
    fields = _fields(d, model)
    stamp_ns, got_frame, got = read_camera_info_cdr(camera_info_cdr(fields, STAMP_NS, frame_id))
    assert (stamp_ns, got_frame, got) == (STAMP_NS, frame_id, fields)
    assert all(type(v) is float for v in got.k + got.p + got.d)


def test_converted_fields_feed_the_geometry_core():
    """P, ROI (16, 8; 640x480) and binning (2, 4) survive the codec: hand-computed published intrinsics."""
    _, _, fields = read_camera_info_cdr(camera_info_cdr(_fields((0.0,) * 5), 0, ''))
    resolved = intrinsics_from_camera_info(fields, image_width=320, image_height=120)
    assert resolved.source_used == 'rectified'
    assert resolved.intrinsics.as_tuple() == (600.0 / 2, 600.0 / 4, (330.0 - 16) / 2, (242.0 - 8) / 4)


def test_an_empty_header_is_written_as_given():
    raw = camera_info_cdr(_fields(), 0, '')
    assert read_camera_info_cdr(raw) == (0, '', _fields())


def test_bad_input_is_rejected():
    with pytest.raises(TypeError, match='CameraInfoFields'):
        camera_info_cdr(object(), 0, '')
    raw = camera_info_cdr(_fields(), 0, '')
    with pytest.raises(CdrError, match='truncated'):
        read_camera_info_cdr(raw[:-1])


def test_rosbags_reads_the_bytes_and_serializes_the_same():
    from rosbags.typesys import Stores, get_typestore

    for store in (get_typestore(Stores.ROS2_HUMBLE), get_typestore(Stores.ROS2_KILTED)):
        for d, model in D_CASES:
            raw = camera_info_cdr(_fields(d, model), STAMP_NS, 'cam_optical_frame')
            msg = store.deserialize_cdr(raw, 'sensor_msgs/msg/CameraInfo')
            assert msg.header.frame_id == 'cam_optical_frame' and msg.distortion_model == model
            assert bytes(store.serialize_cdr(msg, 'sensor_msgs/msg/CameraInfo')) == raw
            assert camera_info_from_msg(msg) == _fields(d, model)


def _rclpy_message(d: tuple[float, ...], model: str):
    from sensor_msgs.msg import CameraInfo, RegionOfInterest

    msg = CameraInfo(width=1280, height=960, distortion_model=model)
    msg.header.frame_id = 'cam1_optical'
    msg.header.stamp.sec, msg.header.stamp.nanosec = 100, 250
    msg.d, msg.k, msg.r, msg.p = list(d), list(K), list(R), list(P)
    msg.binning_x, msg.binning_y = 2, 4
    msg.roi = RegionOfInterest(x_offset=16, y_offset=8, height=480, width=640, do_rectify=True)
    return msg


@pytest.mark.ros
@pytest.mark.usefixtures('isolated_ros_env')
@pytest.mark.parametrize(('d', 'model'), D_CASES)
def test_rclpy_serialized_messages_are_read(d, model):
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CameraInfo

    raw = serialize_message(_rclpy_message(d, model))
    assert read_camera_info_cdr(raw) == (100_000_000_250, 'cam1_optical', _fields(d, model))
    fields = camera_info_from_msg(deserialize_message(raw, CameraInfo))
    assert fields == _fields(d, model)
    assert all(type(v) is float for v in fields.k + fields.p + fields.d)
    assert camera_info_from_msg(_rclpy_message(d, model)) == _fields(d, model)  # plain lists too


@pytest.mark.ros
@pytest.mark.usefixtures('isolated_ros_env')
@pytest.mark.parametrize(('d', 'model'), D_CASES)
@pytest.mark.parametrize('frame_id', ['', 'cam1_optical', 'kamera_ö'])
def test_rclpy_reads_the_bytes_field_for_field(d, model, frame_id):
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CameraInfo

    want = _rclpy_message(d, model)
    want.header.frame_id = frame_id
    raw = camera_info_cdr(_fields(d, model), 100_000_000_250, frame_id)
    got = deserialize_message(raw, CameraInfo)
    assert got == want
    assert len(serialize_message(want)) == len(raw)
    assert got.roi.do_rectify is True
    np.testing.assert_array_equal(got.d, d)


def test_message_objects_are_duck_typed_and_checked():
    roi = SimpleNamespace(x_offset=16, y_offset=8, height=480, width=640, do_rectify=True)
    msg = SimpleNamespace(width=1280, height=960, distortion_model='plumb_bob', d=np.array(_fields().d),
                          k=np.array(K), r=list(R), p=P, binning_x=2, binning_y=4, roi=roi)
    assert camera_info_from_msg(msg) == _fields()
    msg.k = [1.0] * 8
    with pytest.raises(CalibrationError, match='k must have 9 values'):
        camera_info_from_msg(msg)
