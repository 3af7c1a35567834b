"""The ROS half of the demo: start ``depth_node``, play the bag to it, record what it publishes.

``run_ros_session`` starts the node in its own process (``depth_node --ros-args --params-file ...``), waits
until it subscribes to every camera and publishes depth, then plays the input bag with ``BagPlayer``
(camera_info and image topics only) and records ``<cam>/depth/image``, ``<cam>/depth/camera_info`` and
``<cam>/points`` into an output bag (serialized messages as received, log time = receive time).

Pacing: ``realtime`` plays with the bag's timing times ``rate`` (frames the node cannot keep up with are
dropped by its newest-frame-wins queue, as on a robot); ``lockstep`` publishes one stamp (all cameras) at a
time and waits until the node has published depth for it (or ``frame_timeout_s`` passed), so that a slow
CPU still shows every frame.

Latency of a frame = time its depth image arrived - time its input image was published (wall clock, both
in this process).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from metric3d_ros.codec.cdr import read_header
from metric3d_ros.tools.bagio import BagReader, BagWriter
from metric3d_ros.tools.play import BagPlayer, PlayOptions
from metric3d_ros.tools.processes import interrupt_and_wait

PACINGS = ('lockstep', 'realtime')
OUTPUTS = (('depth/image', 'sensor_msgs/msg/Image'), ('depth/camera_info', 'sensor_msgs/msg/CameraInfo'),
           ('points', 'sensor_msgs/msg/PointCloud2'))


@dataclass(frozen=True)
class RosSessionConfig:
    """What the ROS session runs: bag, cameras, node parameters file, pacing and time limits."""

    bag: Path
    cameras: tuple[str, ...]
    params_file: Path
    output_bag: Path
    node_log: Path
    pacing: str = 'lockstep'
    rate: float = 1.0
    node_start_timeout_s: float = 600.0
    frame_timeout_s: float = 300.0
    drain_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.pacing not in PACINGS:
            raise ValueError(f'pacing must be one of {PACINGS}, got {self.pacing!r}')
        if not self.cameras:
            raise ValueError('the ROS session needs at least one camera')


@dataclass
class RosSessionResult:
    """Publish and receive wall times per (camera, stamp), and the node's exit."""

    published: dict[tuple[str, int], float] = field(default_factory=dict)
    received: dict[tuple[str, int], float] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    node_returncode: int | None = None
    node_start_s: float = 0.0
    play_s: float = 0.0


def node_command(params_file: Path) -> list[str]:
    """``depth_node`` (the console script beside this Python, else ``python -m``) with the params file."""
    script = Path(sys.executable).with_name('depth_node')
    found = str(script) if script.exists() else shutil.which('depth_node')
    base = [found] if found else [sys.executable, '-m', 'metric3d_ros.ros.node']
    return [*base, '--ros-args', '--params-file', str(params_file)]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])
    except OSError:
        return '(no log)'


class _Recorder:
    """Subscribes (serialized) to the node's outputs and writes them into a bag."""

    def __init__(self, node, cameras: Sequence[str], writer: BagWriter, result: RosSessionResult) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from metric3d_ros.tools.play import message_class

        self.writer = writer
        self.result = result
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.subscriptions = []
        for cam in cameras:
            for suffix, msgtype in OUTPUTS:
                topic = f'/{cam}/{suffix}'
                callback = self._callback(cam, topic, msgtype, suffix)
                self.subscriptions.append(
                    node.create_subscription(message_class(msgtype), topic, callback, qos, raw=True))

    def _callback(self, camera: str, topic: str, msgtype: str, suffix: str):
        def on_message(data: bytes) -> None:
            now = time.time()
            with self.changed:
                self.writer.write_raw(topic, msgtype, time.time_ns(), data)
                self.result.outputs[topic] += 1
                if suffix == 'depth/image':
                    self.result.received.setdefault((camera, read_header(data)[0]), now)
                self.changed.notify_all()
        return on_message

    def wait_for(self, keys: Sequence[tuple[str, int]], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while not all(k in self.result.received for k in keys):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(min(remaining, 0.5))
        return True


def _wait_for_node(ros_node, process: subprocess.Popen, cameras: Sequence[str], timeout_s: float,
                   log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f'depth_node exited with code {process.returncode} before it was ready; '
                               f'the end of its log ({log}):\n{_tail(log)}')
        ready = all(ros_node.count_subscribers(f'/{c}/image') > 0 and ros_node.count_publishers(
            f'/{c}/depth/image') > 0 for c in cameras)
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f'depth_node was not ready after {timeout_s:.0f} s (no subscription on '
                               f'/<camera>/image); the end of its log ({log}):\n{_tail(log)}')
        time.sleep(0.2)


def _input_topics(bag: Path, cameras: Sequence[str]) -> list[str]:
    with BagReader(bag) as reader:
        topics = reader.topics
    wanted = []
    for cam in cameras:
        for suffix in ('camera_info', 'image', 'image/compressed'):
            if f'/{cam}/{suffix}' in topics:
                wanted.append(f'/{cam}/{suffix}')
    return wanted


def _play_lockstep(player: BagPlayer, recorder: _Recorder, bag: Path, topics: Sequence[str],
                   result: RosSessionResult, frame_timeout_s: float, log) -> None:
    image_topics = {t: t.split('/')[1] for t in topics if t.endswith('/image') or t.endswith('/compressed')}
    with BagReader(bag) as reader:
        group: list = []
        for message in reader.messages(topics):
            if group and message.log_time_ns != group[0].log_time_ns:
                _publish_group(player, recorder, group, image_topics, result, frame_timeout_s, log)
                group = []
            group.append(message)
        if group:
            _publish_group(player, recorder, group, image_topics, result, frame_timeout_s, log)


def _publish_group(player: BagPlayer, recorder: _Recorder, group: list, image_topics: dict[str, str],
                   result: RosSessionResult, frame_timeout_s: float, log) -> None:
    keys = []
    for message in group:
        player.publishers[message.topic].publish(message.data)
        if message.topic in image_topics:
            key = (image_topics[message.topic], read_header(message.data)[0])
            result.published[key] = time.time()
            keys.append(key)
    t0 = time.monotonic()
    if not recorder.wait_for(keys, frame_timeout_s):
        missing = [k for k in keys if k not in result.received]
        log(f'[demo] no depth after {frame_timeout_s:.0f} s for {missing}: continuing')
    else:
        log(f'[demo] stamp {keys[0][1] if keys else "?"}: depth for {len(keys)} camera(s) after '
            f'{time.monotonic() - t0:.2f} s')


def run_ros_session(config: RosSessionConfig, log=print) -> RosSessionResult:
    """Start the node, play, record, stop the node (see the module docstring). Needs rclpy."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    result = RosSessionResult()
    topics = _input_topics(config.bag, config.cameras)
    config.node_log.parent.mkdir(parents=True, exist_ok=True)
    cmd = node_command(config.params_file)
    log(f'[demo] starting the depth node: {" ".join(cmd)} (log: {config.node_log})')
    with open(config.node_log, 'w') as node_log:
        process = subprocess.Popen(cmd, stdout=node_log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                   start_new_session=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    ros_node = rclpy.create_node('metric3d_demo', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(ros_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    writer = BagWriter(config.output_bag, 'mcap', overwrite=True)
    writer.open()
    try:
        recorder = _Recorder(ros_node, config.cameras, writer, result)
        spinner.start()
        t0 = time.monotonic()
        _wait_for_node(ros_node, process, config.cameras, config.node_start_timeout_s, config.node_log)
        result.node_start_s = time.monotonic() - t0
        log(f'[demo] depth node ready after {result.node_start_s:.1f} s (weights loaded, warmed up)')
        options = PlayOptions(rate=config.rate, topics=tuple(topics), wait_for_subscribers_s=30.0)
        player = BagPlayer(ros_node, config.bag, options)
        player.wait_for_subscribers(threading.Event())
        time.sleep(0.5)  # let the node's subscriptions match our publishers too
        t0 = time.monotonic()
        if config.pacing == 'lockstep':
            _play_lockstep(player, recorder, config.bag, topics, result, config.frame_timeout_s, log)
        else:
            def on_publish(topic: str, _type: str, _t: int, data: bytes, wall: float) -> None:
                if topic.endswith('/image') or topic.endswith('/compressed'):
                    result.published[(topic.split('/')[1], read_header(data)[0])] = wall

            player.play(on_publish=on_publish)
            recorder.wait_for(list(result.published), config.drain_timeout_s)
        result.play_s = time.monotonic() - t0
        time.sleep(0.5)  # camera_info and points of the last frame
    finally:
        result.node_returncode = interrupt_and_wait(process)
        executor.shutdown()
        ros_node.destroy_node()
        rclpy.shutdown(context=context)
        spinner.join(timeout=5)
        writer.close()
    return result
