"""A measuring consumer: one process that subscribes to some topics raw and records, per message, the header
stamp, the receive time and the size; it writes them as JSON when it is stopped.

    python -m metric3d_ros.tools.consumer --topic cam0/depth/image:Image --topic cam0/points:PointCloud2 \
        --report /tmp/cam0.json [--reliability best_effort] [--depth 10] [--ros-args -r __ns:=/bench]

It stands for a real downstream consumer (a C++ node, RViz, a planner) of one camera's outputs:
``metric3d_node_bench`` starts one per camera (or one per topic), so that no consumer shares its
interpreter with the others. Per message it does only what every consumer has to do: the middleware hands
over the serialized bytes (``raw=True``: nothing is deserialized), the receive time is taken
(``time.time_ns()``, the system clock: the clock the stamps are taken from when time is not simulated), the
stamp is read from the CDR header (``codec.cdr.read_header``) and three integers are appended. ``--check`` in
``metric3d_node_bench`` feeds it a known publish stream to show that it keeps up.

Protocol with the parent: once subscribed it prints ``{"event": "subscribed"}``; once every topic has at
least ``--wait-publishers`` publishers it prints ``{"event": "matched", ...}`` (one line each, stdout). On
SIGINT or SIGTERM it stops receiving and writes the report (``--report``; ``-`` = stdout):
``{"topics": {topic: {"type", "stamp_ns": [...], "receive_ns": [...], "size": [...], "bad"}}, "cpu_s",
"wall_s", "reliability", "depth", "executor", "matched"}``, keyed by the topics as given (relative names
resolve in the node's namespace); ``bad`` counts messages too short for a header (not recorded).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass

from metric3d_ros.codec.cdr import read_header

MESSAGE_TYPES = {
    'Image': ('sensor_msgs.msg', 'Image'),
    'CameraInfo': ('sensor_msgs.msg', 'CameraInfo'),
    'PointCloud2': ('sensor_msgs.msg', 'PointCloud2'),
    'CompressedImage': ('sensor_msgs.msg', 'CompressedImage'),
}
RELIABILITIES = ('reliable', 'best_effort')
EXECUTORS = ('events', 'single')



@dataclass(frozen=True)
class ConsumerConfig:
    """What one consumer process subscribes to and how."""

    topics: tuple[tuple[str, str], ...]
    """(topic, message type name of ``MESSAGE_TYPES``)."""
    reliability: str = 'reliable'
    depth: int = 10
    wait_publishers: int = 1
    executor: str = 'events'
    """'events': rclpy's EventsExecutor (callbacks dispatched from C++: about half the CPU per message of the
    Python executor here, 0.5 vs 1.1 ms per CameraInfo at 200 Hz); 'single': SingleThreadedExecutor."""

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError('a consumer needs at least one --topic NAME:TYPE')
        unknown = sorted({t for _, t in self.topics} - set(MESSAGE_TYPES))
        if unknown:
            raise ValueError(f'unknown message types {unknown}; known: {sorted(MESSAGE_TYPES)}')
        if self.reliability not in RELIABILITIES:
            raise ValueError(f'reliability must be one of {RELIABILITIES}, got {self.reliability!r}')
        if self.depth < 1:
            raise ValueError(f'depth must be >= 1, got {self.depth}')
        if self.executor not in EXECUTORS:
            raise ValueError(f'executor must be one of {EXECUTORS}, got {self.executor!r}')


class TopicRecord:
    """Per message of one topic: header stamp, receive time (ns since the epoch) and serialized size."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        self.stamp_ns: list[int] = []
        self.receive_ns: list[int] = []
        self.size: list[int] = []
        self.bad = 0  # messages too short for a header

    def callback(self):
        """The subscription callback: the least work a consumer has to do."""
        clock = time.time_ns
        receive = self.receive_ns.append
        stamp = self.stamp_ns.append
        size = self.size.append

        def on_message(raw: bytes) -> None:
            now_ns = clock()
            try:
                stamp(read_header(raw)[0])
            except ValueError:
                self.bad += 1
                return
            receive(now_ns)
            size(len(raw))

        return on_message

    def to_json(self) -> dict:
        return {'type': self.type_name, 'stamp_ns': self.stamp_ns, 'receive_ns': self.receive_ns,
                'size': self.size, 'bad': self.bad}


def _qos(config: ConsumerConfig):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=config.depth,
                      reliability=ReliabilityPolicy.RELIABLE if config.reliability == 'reliable'
                      else ReliabilityPolicy.BEST_EFFORT)


def _emit(event: dict) -> None:
    print(json.dumps(event), flush=True)


def run(config: ConsumerConfig, report_path: str, ros_args: list[str] | None = None) -> dict:
    """Subscribe, announce, receive until SIGINT/SIGTERM, then write and return the report."""
    import importlib

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('metric3d_bench_consumer', start_parameter_services=False,
                             enable_rosout=False)
    if config.executor == 'events':
        from rclpy.experimental import EventsExecutor

        executor = EventsExecutor()
    else:
        executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()

    def _on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    records: dict[str, TopicRecord] = {}
    subscriptions = []
    qos = _qos(config)
    for topic, type_name in config.topics:
        module, name = MESSAGE_TYPES[type_name]
        msg_type = getattr(importlib.import_module(module), name)
        record = TopicRecord(type_name)
        records[topic] = record
        subscriptions.append(node.create_subscription(msg_type, topic, record.callback(), qos, raw=True))
    _emit({'event': 'subscribed', 'topics': [s.topic_name for s in subscriptions]})
    wall_start_s = time.monotonic()
    cpu_start_s = time.process_time()
    matched = False
    try:
        while not stop.is_set():
            # short waits so that a signal is seen promptly; each call still serves every ready callback
            executor.spin_once(timeout_sec=0.05)
            if not matched and all(s.get_publisher_count() >= config.wait_publishers for s in subscriptions):
                matched = True
                _emit({'event': 'matched', 'publishers': {s.topic_name: s.get_publisher_count()
                                                          for s in subscriptions}})
    finally:
        report = {
            'topics': {topic: record.to_json() for topic, record in records.items()},
            'reliability': config.reliability,
            'depth': config.depth,
            'executor': config.executor,
            'matched': matched,
            'cpu_s': round(time.process_time() - cpu_start_s, 3),
            'wall_s': round(time.monotonic() - wall_start_s, 3),
        }
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.shutdown()
    text = json.dumps(report)
    if report_path == '-':
        print(text, flush=True)
    else:
        with open(report_path, 'w', encoding='utf-8') as f:
            f.write(text)
    return report


def parse_args(argv: list[str]) -> tuple[ConsumerConfig, str]:
    """``(ConsumerConfig, report_path)`` from command-line arguments (ROS arguments already removed)."""
    parser = argparse.ArgumentParser(prog='metric3d_bench_consumer', description=__doc__.split('\n')[0])
    parser.add_argument('--topic', action='append', default=[], metavar='NAME:TYPE', required=True,
                        help=f'a topic and its message type ({", ".join(MESSAGE_TYPES)}); repeatable')
    parser.add_argument('--reliability', default='reliable', choices=RELIABILITIES)
    parser.add_argument('--depth', type=int, default=10, help='QoS history depth (keep last N)')
    parser.add_argument('--executor', default='events', choices=EXECUTORS,
                        help="rclpy's EventsExecutor (default, less CPU per message) or "
                             'SingleThreadedExecutor')
    parser.add_argument('--wait-publishers', type=int, default=1,
                        help='announce "matched" once every topic has this many publishers')
    parser.add_argument('--report', required=True, help="where the JSON report goes at exit ('-': stdout)")
    args = parser.parse_args(argv)
    topics = []
    for item in args.topic:
        name, sep, type_name = item.rpartition(':')
        if not sep or not name:
            parser.error(f'--topic looks like NAME:TYPE, got {item!r}')
        topics.append((name, type_name))
    try:
        config = ConsumerConfig(topics=tuple(topics), reliability=args.reliability, depth=args.depth,
                                wait_publishers=args.wait_publishers, executor=args.executor)
    except ValueError as exc:
        parser.error(str(exc))
    return config, args.report


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``metric3d_bench_consumer``."""
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if argv is None else argv
    config, report_path = parse_args(remove_ros_args(argv)[1:])
    run(config, report_path, ros_args=argv)
    return 0


if __name__ == '__main__':
    sys.exit(main())
