"""``metric3d_play``: publish a rosbag2's topics on ROS 2 with their timing (a ``ros2 bag play`` stand-in).

    metric3d_play BAG [--rate 1.0] [--loop] [--clock] [--topics /a /b] [--remap /a:=/b]
                      [--image-reliability best_effort] [--wait-for-subscribers-s 5]

Messages go out in log-time order; message i is published at ``start + (t_i - t_0) / rate`` wall time. The
stored CDR bytes are published as they are (``Publisher.publish(bytes)``): no deserialization, no copy
into message objects, so full-HD images cost nothing to republish. ``--clock`` publishes
rosgraph_msgs/Clock on /clock with the bag time (before every message and at ``--clock-hz`` while waiting)
for nodes running with ``use_sim_time``. ``--loop`` replays the bag until interrupted (the bag time starts
over, as with ``ros2 bag play --loop``).

QoS: sensor streams (Image, CompressedImage, PointCloud2) are published best effort / keep last
``--image-depth`` by default, as camera drivers do (only best-effort subscriptions match them; use
``--image-reliability reliable`` for reliable subscribers); other topics (CameraInfo, ...) are reliable /
keep last ``--other-depth``, which reliable and best-effort subscriptions both receive. Large images
between processes need the Fast DDS profile ``config/fastdds_shm.xml`` (FASTDDS_DEFAULT_PROFILES_FILE /
FASTRTPS_DEFAULT_PROFILES_FILE).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metric3d_ros.tools.bagio import BagReader

SENSOR_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage', 'sensor_msgs/msg/PointCloud2')
RELIABILITIES = ('best_effort', 'reliable')

#: on_publish(topic, msgtype, bag_time_ns, cdr_bytes, wall_time_s) is called after each publish.
PublishCallback = Callable[[str, str, int, bytes, float], None]


@dataclass(frozen=True)
class PlayOptions:
    """How a bag is played (see the module docstring and ``--help``)."""

    rate: float = 1.0
    loop: bool = False
    clock: bool = False
    clock_hz: float = 100.0
    topics: tuple[str, ...] = ()
    remap: tuple[tuple[str, str], ...] = ()
    image_reliability: str = 'best_effort'
    image_depth: int = 5
    other_reliability: str = 'reliable'
    other_depth: int = 10
    start_offset_s: float = 0.0
    wait_for_subscribers_s: float = 0.0
    delay_s: float = 0.0
    max_loops: int = 0
    flush_s: float = 2.0

    def __post_init__(self) -> None:
        if not (self.rate > 0.0):
            raise ValueError(f'rate must be > 0 (1.0 = original speed), got {self.rate}')
        if not (self.clock_hz > 0.0):
            raise ValueError(f'clock_hz must be > 0, got {self.clock_hz}')
        for name in ('image_reliability', 'other_reliability'):
            if getattr(self, name) not in RELIABILITIES:
                raise ValueError(f'{name} must be one of {RELIABILITIES}, got {getattr(self, name)!r}')
        for name in ('image_depth', 'other_depth'):
            if not 1 <= getattr(self, name) <= 1000:
                raise ValueError(f'{name} must be in 1..1000, got {getattr(self, name)}')
        for name in ('start_offset_s', 'wait_for_subscribers_s', 'delay_s', 'flush_s'):
            if getattr(self, name) < 0.0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        if self.max_loops < 0:
            raise ValueError(f'max_loops must be >= 0 (0 = no limit), got {self.max_loops}')


@dataclass
class PlayStats:
    """What was played: messages per topic, loops completed, wall duration and the largest lateness."""

    messages: dict[str, int] = field(default_factory=dict)
    loops: int = 0
    wall_s: float = 0.0
    max_late_ms: float = 0.0
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {'messages': self.messages, 'loops': self.loops, 'wall_s': round(self.wall_s, 3),
                'max_late_ms': round(self.max_late_ms, 2), 'interrupted': self.interrupted}


def message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Name``."""
    try:
        pkg, kind, name = msgtype.split('/')
        return getattr(importlib.import_module(f'{pkg}.{kind}'), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise ValueError(f'message type {msgtype!r} is not available in this ROS environment: {exc}') from exc


def parse_remap(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``['/a:=/b']`` -> ``(('/a', '/b'),)``."""
    out = []
    for item in items:
        if ':=' not in item:
            raise ValueError(f'remap must look like /from:=/to, got {item!r}')
        src, dst = item.split(':=', 1)
        if not src or not dst:
            raise ValueError(f'remap must look like /from:=/to, got {item!r}')
        out.append((src, dst))
    return tuple(out)


class BagPlayer:
    """Publishes a bag's messages from ``node`` (an rclpy Node) with the original timing."""

    def __init__(self, node: Any, bag: str | Path, options: PlayOptions) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        self.node = node
        self.bag = Path(bag)
        self.options = options
        with BagReader(self.bag) as reader:
            topics = reader.topics
        chosen = list(options.topics) or sorted(topics)
        missing = [t for t in chosen if t not in topics]
        if missing:
            raise ValueError(f'topics {missing} are not in {self.bag}; it has {sorted(topics)}')
        self.topics = {t: topics[t] for t in chosen}
        remap = dict(options.remap)
        reliability = {'best_effort': ReliabilityPolicy.BEST_EFFORT, 'reliable': ReliabilityPolicy.RELIABLE}
        self.publishers = {}
        for topic, msgtype in self.topics.items():
            sensor = msgtype in SENSOR_TYPES
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=options.image_depth if sensor else options.other_depth,
                reliability=reliability[options.image_reliability if sensor else options.other_reliability],
            )
            msg_class = message_class(msgtype)
            self.publishers[topic] = node.create_publisher(msg_class, remap.get(topic, topic), qos)
        self.clock_publisher = None
        if options.clock:
            clock_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                   reliability=ReliabilityPolicy.RELIABLE)
            clock_class = message_class('rosgraph_msgs/msg/Clock')
            self.clock_publisher = node.create_publisher(clock_class, '/clock', clock_qos)

    def _publish_clock(self, bag_time_ns: int) -> None:
        if self.clock_publisher is None:
            return
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        sec, nanosec = divmod(int(bag_time_ns), 1_000_000_000)
        self.clock_publisher.publish(Clock(clock=Time(sec=sec, nanosec=nanosec)))

    def wait_for_subscribers(self, stop: threading.Event) -> bool:
        """Wait up to ``wait_for_subscribers_s`` for every publisher to have a subscriber; True if they do."""
        deadline = time.monotonic() + self.options.wait_for_subscribers_s
        while not stop.is_set():
            if all(p.get_subscription_count() > 0 for p in self.publishers.values()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return False

    def _sleep_until(self, target_s: float, origin_ns: int, origin_wall_s: float,
                     stop: threading.Event) -> None:
        """Sleep until ``target_s`` (monotonic); with /clock, publish the bag time meanwhile."""
        period = 1.0 / self.options.clock_hz
        while not stop.is_set():
            now = time.monotonic()
            remaining = target_s - now
            if remaining <= 0:
                return
            if self.clock_publisher is not None:
                self._publish_clock(origin_ns + round((now - origin_wall_s) * self.options.rate * 1e9))
                stop.wait(min(remaining, period))
            else:
                stop.wait(remaining)

    def play(self, stop: threading.Event | None = None,
             on_publish: PublishCallback | None = None) -> PlayStats:
        """Play to the end (with ``loop`` again and again) or until ``stop`` is set; returns the stats."""
        stop = stop or threading.Event()
        stats = PlayStats(messages={t: 0 for t in self.topics})
        opts = self.options
        if opts.wait_for_subscribers_s > 0:
            self.wait_for_subscribers(stop)
        if opts.delay_s > 0:
            stop.wait(opts.delay_s)
        wall_start = time.monotonic()
        while not stop.is_set():
            with BagReader(self.bag) as reader:
                t0_ns = None
                loop_start = time.monotonic()
                for message in reader.messages(self.topics):
                    if stop.is_set():
                        break
                    if t0_ns is None:
                        t0_ns = message.log_time_ns + round(opts.start_offset_s * 1e9)
                    if message.log_time_ns < t0_ns:
                        continue
                    target = loop_start + (message.log_time_ns - t0_ns) / 1e9 / opts.rate
                    self._sleep_until(target, t0_ns, loop_start, stop)
                    if stop.is_set():
                        break
                    stats.max_late_ms = max(stats.max_late_ms, (time.monotonic() - target) * 1e3)
                    self._publish_clock(message.log_time_ns)
                    self.publishers[message.topic].publish(message.data)
                    stats.messages[message.topic] += 1
                    if on_publish is not None:
                        on_publish(message.topic, message.msgtype, message.log_time_ns, message.data,
                                   time.time())
            if stop.is_set():
                break
            stats.loops += 1
            if not opts.loop or (opts.max_loops and stats.loops >= opts.max_loops):
                break
        stats.interrupted = stop.is_set()
        stats.wall_s = time.monotonic() - wall_start
        if not stats.interrupted:
            self.flush()
        return stats

    def flush(self) -> bool:
        """Wait up to ``flush_s`` until reliable subscribers acknowledged every message (so that a process
        exiting right after playing loses nothing); True when all were acknowledged."""
        from rclpy.duration import Duration

        deadline = time.monotonic() + self.options.flush_s
        acked = True
        for publisher in self.publishers.values():
            remaining = max(deadline - time.monotonic(), 0.0)
            acked = publisher.wait_for_all_acked(Duration(nanoseconds=int(remaining * 1e9))) and acked
        return acked


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='metric3d_play', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('bag', type=Path)
    p.add_argument('--rate', type=float, default=1.0, help='speed factor (2.0 = twice as fast)')
    p.add_argument('--loop', action='store_true')
    p.add_argument('--max-loops', type=int, default=0, help='with --loop: stop after N passes (0: never)')
    p.add_argument('--clock', action='store_true', help='publish /clock with the bag time')
    p.add_argument('--clock-hz', type=float, default=100.0)
    p.add_argument('--topics', nargs='*', default=[], help='topics to play (default: all)')
    p.add_argument('--remap', nargs='*', default=[], help='/from:=/to')
    p.add_argument('--image-reliability', choices=RELIABILITIES, default='best_effort')
    p.add_argument('--image-depth', type=int, default=5)
    p.add_argument('--other-reliability', choices=RELIABILITIES, default='reliable')
    p.add_argument('--other-depth', type=int, default=10)
    p.add_argument('--start-offset-s', type=float, default=0.0, help='skip the first seconds of the bag')
    p.add_argument('--wait-for-subscribers-s', type=float, default=0.0,
                   help='wait up to this long for every topic to have a subscriber before playing')
    p.add_argument('--delay-s', type=float, default=0.0, help='sleep this long before playing')
    p.add_argument('--flush-s', type=float, default=2.0,
                   help='at the end, wait up to this long for reliable subscribers to acknowledge everything')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import rclpy
    from rclpy.utilities import remove_ros_args

    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(remove_ros_args(['metric3d_play', *raw])[1:])
    try:
        options = PlayOptions(
            rate=args.rate, loop=args.loop, clock=args.clock, clock_hz=args.clock_hz,
            topics=tuple(args.topics), remap=parse_remap(args.remap),
            image_reliability=args.image_reliability, image_depth=args.image_depth,
            other_reliability=args.other_reliability, other_depth=args.other_depth,
            start_offset_s=args.start_offset_s, wait_for_subscribers_s=args.wait_for_subscribers_s,
            delay_s=args.delay_s, max_loops=args.max_loops, flush_s=args.flush_s,
        )
    except ValueError as exc:
        print(f'metric3d_play: error: {exc}', file=sys.stderr)
        return 2
    rclpy.init(args=['metric3d_play', *raw])
    node = rclpy.create_node('metric3d_play')
    stop = threading.Event()
    code = 0
    try:
        player = BagPlayer(node, args.bag, options)
        stats = player.play(stop)
        print(json.dumps(stats.as_dict()))
    except KeyboardInterrupt:
        stop.set()
    except ValueError as exc:
        print(f'metric3d_play: error: {exc}', file=sys.stderr)
        code = 2
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
