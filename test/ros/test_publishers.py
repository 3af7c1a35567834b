"""ros/publishers.py: which outputs a frame is computed and published for, from one look at the subscription
counts per frame (at receipt), with fake publishers (no middleware)."""
from __future__ import annotations

import numpy as np
import pytest

from metric3d_ros.core.engine.types import FrameResult
from metric3d_ros.core.geometry.camera_info import CameraInfoFields
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.outputs import OUTPUTS

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('isolated_ros_env')]

W, H = 8, 6


class FakePublisher:
    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.count_calls = 0
        self.sent: list[bytes] = []

    def get_subscription_count(self) -> int:
        self.count_calls += 1
        return self.subscribers

    def publish(self, data: bytes) -> None:
        self.sent.append(data)


class FakeNode:
    """Hands out fake publishers; ``subscribed`` names the topics (suffixes) with one subscriber."""

    def __init__(self, subscribed: set[str]) -> None:
        self.subscribed = subscribed
        self.publishers: dict[str, FakePublisher] = {}

    def create_publisher(self, _msg_type, topic: str, _qos) -> FakePublisher:
        pub = self.publishers[topic] = FakePublisher(int(topic.split('/', 1)[1] in self.subscribed))
        return pub

    def destroy_publisher(self, _pub) -> None:
        pass


def _outputs(subscribed: set[str]):
    from metric3d_ros.ros.params import OutputConfig
    from metric3d_ros.ros.publishers import CameraOutputs, output_topics

    node = FakeNode(subscribed)
    outputs = CameraOutputs(node, 'cam', OUTPUTS, output_topics('cam', OUTPUTS), OutputConfig(), None)
    return node, outputs


def _result() -> FrameResult:
    arrays = {'depth_m': np.full((H, W), 2.0, np.float32), 'confidence': np.ones((H, W), np.float32),
              'normals': np.zeros((H, W, 3), np.float32), 'points_xyz': np.zeros((H, W, 3), np.float32)}
    return FrameResult('cam', 5, 'cam_optical_frame', Intrinsics(4.0, 4.0, 3.5, 2.5), arrays)


def test_subscription_counts_are_read_once_per_frame():
    from metric3d_ros.ros.publishers import DEPTH_INFO, Job

    node, outputs = _outputs({'points', 'depth/camera_info'})
    wanted = outputs.wanted_request()
    assert wanted is not None
    assert wanted.publish == {'points', DEPTH_INFO}
    assert 'depth' in wanted.request.outputs  # the cloud requires the depth: computed, not published
    info = CameraInfoFields.from_intrinsics(Intrinsics(4.0, 4.0, 3.5, 2.5), W, H)
    sent = outputs.publish(Job('cam', 5, 'cam_optical_frame', info, wanted), _result())
    assert sent == 2
    assert {topic: len(p.sent) for topic, p in node.publishers.items() if p.sent} == \
        {'cam/points': 1, 'cam/depth/camera_info': 1}
    assert all(p.count_calls == 1 for p in node.publishers.values()), \
        {topic: p.count_calls for topic, p in node.publishers.items()}


def test_nothing_is_wanted_without_a_subscriber_on_a_computed_output():
    _, outputs = _outputs({'depth/camera_info'})  # the depth CameraInfo alone does not make the node infer
    assert outputs.wanted_request() is None
