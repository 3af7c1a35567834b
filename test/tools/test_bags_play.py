"""metric3d_play: a bag's messages on ROS 2 with the original timing, rate factor, loop, /clock, CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from metric3d_ros.core.geometry.camera_info import CameraInfoFields
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.tools.bagio import BagWriter

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip('rclpy')
from node_support import REPO_ROOT, ros_env, unique_namespace, wait_until  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

ENV = ros_env(47)
DOMAIN = int(ENV['ROS_DOMAIN_ID'])
NS = unique_namespace('play')
T0 = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000  # 10 Hz
N = 5


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp('play') / 'bag'
    info = CameraInfoFields.from_intrinsics(Intrinsics(20.0, 20.0, 16.0, 12.0), 32, 24)
    with BagWriter(path, 'mcap') as w:
        for i in range(N):
            stamp = T0 + i * PERIOD_NS
            w.write_camera_info(f'{NS}/cam/camera_info', info, stamp, 'cam_optical_frame')
            image = np.full((24, 32, 3), i, np.uint8)
            w.write_image(f'{NS}/cam/image', image, 'rgb8', stamp, 'cam_optical_frame')
    return path


class Listener:
    """A node in its own context that records what arrives (reliable subscriptions: nothing may be lost)."""

    def __init__(self, image_topic: str, info_topic: str) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN)
        self.node = rclpy.create_node('play_listener', context=self.context)
        self.images, self.infos, self.clock = [], [], []
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Image, image_topic, self.images.append, reliable)
        self.node.create_subscription(CameraInfo, info_topic, self.infos.append, reliable)
        self.node.create_subscription(Clock, '/clock', self.clock.append, reliable)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(timeout=5)


@pytest.fixture
def player_node():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    node = rclpy.create_node('play_test_player', context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_plays_every_message_with_original_timing_and_clock(bag, player_node):
    from metric3d_ros.tools.play import BagPlayer, PlayOptions

    listener = Listener(f'{NS}/cam/image', f'{NS}/cam/camera_info')
    try:
        published = []
        options = PlayOptions(rate=2.0, clock=True, wait_for_subscribers_s=10.0, image_reliability='reliable',
                              image_depth=50)
        player = BagPlayer(player_node, bag, options)
        stats = player.play(on_publish=lambda topic, _type, t, _data, wall: published.append((topic, wall)))
        assert stats.messages == {f'{NS}/cam/camera_info': N, f'{NS}/cam/image': N}
        assert stats.loops == 1 and not stats.interrupted
        ok = wait_until(lambda: len(listener.infos) == N and len(listener.images) == N, 10.0)
        assert ok, (len(listener.infos), len(listener.images), [_stamp(m) for m in listener.infos])
        assert [_stamp(m) for m in listener.infos] == [T0 + i * PERIOD_NS for i in range(N)]
        for i, img in enumerate(listener.images):
            assert (img.height, img.width, img.encoding) == (24, 32, 'rgb8')
            assert set(np.frombuffer(img.data, np.uint8)) == {i}
        # Rate 2: the 0.4 s of bag time take 0.2 s; each image 50 ms after the previous one.
        walls = [w for topic, w in published if topic.endswith('image')]
        gaps = np.diff(walls)
        assert np.all(np.abs(gaps - 0.05) < 0.03), gaps
        assert 0.15 < walls[-1] - walls[0] < 0.3
        last_ns = T0 + (N - 1) * PERIOD_NS
        assert wait_until(lambda: listener.clock and _clock_ns(listener.clock[-1]) == last_ns, 5.0)
        clocks = [_clock_ns(c) for c in listener.clock]
        assert clocks == sorted(clocks) and clocks[0] >= T0
    finally:
        listener.close()


def _clock_ns(msg) -> int:
    return msg.clock.sec * 1_000_000_000 + msg.clock.nanosec


def test_loop_remap_topic_selection_and_stop(bag, player_node):
    from metric3d_ros.tools.play import BagPlayer, PlayOptions

    listener = Listener(f'{NS}/other/image', f'{NS}/cam/camera_info_unused')
    try:
        options = PlayOptions(rate=10.0, loop=True, max_loops=2, topics=(f'{NS}/cam/image',),
                              remap=((f'{NS}/cam/image', f'{NS}/other/image'),), wait_for_subscribers_s=10.0,
                              image_reliability='reliable', image_depth=50)
        stats = BagPlayer(player_node, bag, options).play()
        assert stats.loops == 2 and stats.messages == {f'{NS}/cam/image': 2 * N}
        assert wait_until(lambda: len(listener.images) == 2 * N, 10.0)
        assert listener.infos == []
        # A stop request ends an endless loop.
        stop = threading.Event()
        endless = BagPlayer(player_node, bag, PlayOptions(rate=1.0, loop=True, topics=(f'{NS}/cam/image',)))
        threading.Timer(0.3, stop.set).start()
        t = time.monotonic()
        stats = endless.play(stop)
        assert stats.interrupted and time.monotonic() - t < 2.0
    finally:
        listener.close()


def test_default_qos_best_effort_images_reliable_camera_info(bag, player_node):
    from rclpy.qos import ReliabilityPolicy

    from metric3d_ros.tools.play import BagPlayer, PlayOptions

    pubs = BagPlayer(player_node, bag, PlayOptions()).publishers
    image_qos = pubs[f'{NS}/cam/image'].qos_profile
    info_qos = pubs[f'{NS}/cam/camera_info'].qos_profile
    assert image_qos.reliability == ReliabilityPolicy.BEST_EFFORT and image_qos.depth == 5
    assert info_qos.reliability == ReliabilityPolicy.RELIABLE and info_qos.depth == 10


def test_bad_options_raise(bag, player_node):
    from metric3d_ros.tools.play import BagPlayer, PlayOptions, parse_remap

    with pytest.raises(ValueError, match='rate'):
        PlayOptions(rate=0.0)
    with pytest.raises(ValueError, match='image_reliability'):
        PlayOptions(image_reliability='sometimes')
    with pytest.raises(ValueError, match='remap'):
        parse_remap(['/a=/b'])
    with pytest.raises(ValueError, match='not in'):
        BagPlayer(player_node, bag, PlayOptions(topics=('/missing',)))


def test_command_line_in_another_process(bag):
    listener = Listener(f'{NS}/cam/image', f'{NS}/cam/camera_info')
    try:
        env = {**os.environ, **ENV}
        proc = subprocess.run(
            [sys.executable, '-m', 'metric3d_ros.tools.play', str(bag), '--rate', '4',
             '--wait-for-subscribers-s', '20', '--image-reliability', 'reliable', '--topics',
             f'{NS}/cam/camera_info', f'{NS}/cam/image'],
            capture_output=True, text=True, timeout=60, env=env, cwd=REPO_ROOT,
        )
        assert proc.returncode == 0, proc.stderr
        stats = json.loads(proc.stdout.strip().splitlines()[-1])
        assert stats['messages'] == {f'{NS}/cam/camera_info': N, f'{NS}/cam/image': N}
        assert wait_until(lambda: len(listener.infos) == N and len(listener.images) == N, 10.0)
        assert [_stamp(m) for m in listener.infos] == [T0 + i * PERIOD_NS for i in range(N)]
    finally:
        listener.close()
