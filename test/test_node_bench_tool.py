"""metric3d_node_bench helpers: the observer reads stamps from serialized messages."""
from __future__ import annotations

import pytest

pytest.importorskip('rclpy')

from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from metric3d_ros.tools.node_bench import cdr_stamp_ns, evaluate  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.mark.parametrize('msg_type', [Image, PointCloud2, CameraInfo])
@pytest.mark.parametrize('frame_id', ['', 'cam0_optical_frame'])
def test_stamp_from_serialized_header(msg_type, frame_id):
    msg = msg_type()
    msg.header.stamp.sec = 1795300827
    msg.header.stamp.nanosec = 478474983
    msg.header.frame_id = frame_id
    assert cdr_stamp_ns(serialize_message(msg)) == 1795300827_478474983


def test_evaluate_counts_a_frame_only_when_every_output_arrived():
    published = {'cam0': [0, 10_000_000_000, 20_000_000_000]}
    arrivals = {('cam0', 10_000_000_000): {'depth': 10_020_000_000, 'points': 10_030_000_000},
                ('cam0', 20_000_000_000): {'depth': 20_010_000_000}}
    result = evaluate(published, arrivals, ['depth', 'points'], skip_ns=1)
    assert result['frames_measured'] == 2 and result['delivered_fraction'] == 0.5
    assert result['latency_ms']['p50'] == pytest.approx(30.0)
