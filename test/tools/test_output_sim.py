"""output_sim: the known stream the benchmark's consumers are checked with."""
from __future__ import annotations

import pytest

from metric3d_ros.codec.cdr import read_header

pytestmark = pytest.mark.ros


def test_serialized_outputs_take_the_stamp_and_read_back():
    pytest.importorskip('rclpy')
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from metric3d_ros.tools.output_sim import serialized_outputs, set_stamp

    buffers = serialized_outputs('cam0', 64, 48, ['depth', 'depth_info', 'points'], cloud_stride=2)
    for name, msg_type in (('depth', Image), ('depth_info', CameraInfo), ('points', PointCloud2)):
        set_stamp(buffers[name], 1795300827_478474983)
        assert read_header(buffers[name])[0] == 1795300827_478474983
        msg = deserialize_message(bytes(buffers[name]), msg_type)
        assert msg.header.frame_id == 'cam0_optical_frame'
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1795300827, 478474983)
    cloud = deserialize_message(bytes(buffers['points']), PointCloud2)
    assert (cloud.height, cloud.width, cloud.point_step) == (24, 32, 16)
    assert len(deserialize_message(bytes(buffers['depth']), Image).data) == 64 * 48 * 4
