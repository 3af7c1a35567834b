"""Helpers for the depth node tests (no tests here): ROS environment per process, an in-process harness
with camera publishers and output collectors, synthetic images and CameraInfo.

Every test process gets its own ROS_DOMAIN_ID (a per-module base + pid % 40) and ROS_LOG_DIR, and the
shipped Fast DDS profile (config/fastdds_shm.xml, shared memory) for cross-process image traffic. Topics
live under a per-process namespace as well, so that concurrent test runs on one machine never see each
other.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO_ROOT / 'config' / 'fastdds_shm.xml'


def ros_env(module_offset: int) -> dict[str, str]:
    """Set (and return) the ROS environment of this test process: domain, log dir, Fast DDS profile.

    ``module_offset`` (0..59) separates test modules that may run at once; the pid separates processes.
    """
    domain = 1 + (module_offset + os.getpid()) % 100
    env = {
        'ROS_DOMAIN_ID': str(domain),
        'ROS_LOG_DIR': tempfile.mkdtemp(prefix='metric3d_ros_log_'),
        'FASTDDS_DEFAULT_PROFILES_FILE': str(FASTDDS_PROFILE),
        'FASTRTPS_DEFAULT_PROFILES_FILE': str(FASTDDS_PROFILE),
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
    }
    os.environ.update(env)
    return env


def unique_namespace(tag: str) -> str:
    """A namespace unique to this process and tag, e.g. '/t12345_outputs'."""
    return f'/t{os.getpid()}_{tag}'


def wait_until(predicate, timeout_s: float, period_s: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(period_s)


def rgb_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB test image (smooth gradients plus noise)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    img = np.stack([xs * 255 // max(width - 1, 1), ys * 255 // max(height - 1, 1),
                    np.full_like(xs, 100)], axis=-1).astype(np.int32)
    img += rng.integers(0, 30, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def camera_info_msg(width: int, height: int, stamp_ns: int, frame_id: str, *, focal_px: float | None = None,
                    **overrides):
    """A CameraInfo for a ``width`` x ``height`` image (K = P[:, :3], fx = fy = 0.8 width by default)."""
    from sensor_msgs.msg import CameraInfo

    f = 0.8 * width if focal_px is None else focal_px
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    msg = CameraInfo()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.width, msg.height = width, height
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    msg.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    for key, value in overrides.items():
        setattr(msg, key, value)
    return msg


def image_msg(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    """An Image holding ``array`` (through the package's conversion)."""

    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from metric3d_ros.codec.image import image_cdr

    return deserialize_message(image_cdr(array, encoding, stamp_ns, frame_id), Image)


def stamp_ns_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def newest_common_stamp(harness, topics, timeout_s: float = 10.0) -> int:
    """The newest stamp that every topic in ``topics`` has received: a frame's messages arrive one by one, so
    the newest message of one topic may have no partner yet. Waits up to ``timeout_s`` for one."""
    box = []

    def found():
        stamps = [{stamp_ns_of(m) for m in harness.messages(topic)} for topic in topics]
        common = set.intersection(*stamps)
        box[:] = [max(common)] if common else []
        return bool(common)

    assert wait_until(found, timeout_s), {t: len(harness.messages(t)) for t in topics}
    return box[0]


def message_at(harness, topic: str, stamp_ns: int):
    """The message of ``topic`` stamped ``stamp_ns`` (it must have arrived)."""
    found = [m for m in harness.messages(topic) if stamp_ns_of(m) == stamp_ns]
    assert found, (topic, stamp_ns)
    return found[-1]


class Spinner:
    """Spins ``executor`` in a background thread until ``stop``; ``call`` runs a function on that thread.

    Entities (subscriptions, clients, timers, nodes) must not be destroyed from another thread while the
    executor waits on them: rclpy then raises ``InvalidHandle: cannot use Destroyable because destruction
    was requested`` in the spinning thread. Destroy them through ``call`` while spinning, or after ``stop``.
    """

    def __init__(self, executor, name: str = 'spinner') -> None:
        import queue

        self.executor = executor
        self._calls: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._spin, name=name, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while not self._stop.is_set() and self.executor.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
                self._run_calls()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc
        finally:
            self._run_calls()

    def _run_calls(self) -> None:
        while not self._calls.empty():
            fn, done, box = self._calls.get_nowait()
            try:
                box.append(fn())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box.append(exc)
            done.set()

    def call(self, fn, timeout_s: float = 10.0):
        """Run ``fn()`` on the spinning thread (between two executor waits) and return its result."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return fn()
        done, box = threading.Event(), []
        self._calls.put((fn, done, box))
        if not done.wait(timeout_s):
            raise TimeoutError(f'the executor thread did not run {fn!r} within {timeout_s} s')
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop spinning and join the thread; raises what the spinning thread raised."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f'the executor thread did not stop within {timeout_s} s')
        if self.error is not None:
            raise self.error


class Harness:
    """An rclpy context with the node under test and a helper node, spun by one SingleThreadedExecutor
    in a background thread. The helper publishes camera inputs and collects outputs."""

    def __init__(self, domain_id: int, namespace: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.namespace = namespace
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.helper = rclpy.create_node('harness', namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.helper)
        self.lock = threading.Lock()
        self.received: dict[str, list] = defaultdict(list)
        self._pubs: dict[tuple[str, str], object] = {}
        self._subs: dict[str, object] = {}
        self.nodes: list = []
        self.spinner = Spinner(self.executor, name='harness-spin')

    def on_executor(self, fn, timeout_s: float = 30.0):
        """Run ``fn()`` on the executor thread (destroy entities there, never from the test thread)."""
        return self.spinner.call(fn, timeout_s)

    def add_node(self, node) -> None:
        self.nodes.append(node)
        self.executor.add_node(node)

    def input_qos(self):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

    def publisher(self, msg_type, topic: str):
        key = (msg_type.__name__, topic)
        if key not in self._pubs:
            self._pubs[key] = self.helper.create_publisher(msg_type, topic, self.input_qos())
        return self._pubs[key]

    def subscribe(self, msg_type, topic: str, qos=None) -> None:
        """Collect every message on ``topic`` (relative to the namespace) into ``received[topic]``."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        if topic in self._subs:
            return
        qos = qos or QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)

        def store(msg, topic=topic):
            with self.lock:
                self.received[topic].append(msg)

        self._subs[topic] = self.helper.create_subscription(msg_type, topic, store, qos)

    def unsubscribe(self, topic: str) -> None:
        sub = self._subs.pop(topic, None)
        if sub is not None:
            self.on_executor(lambda: self.helper.destroy_subscription(sub))

    def messages(self, topic: str) -> list:
        with self.lock:
            return list(self.received[topic])

    def clear(self) -> None:
        with self.lock:
            self.received.clear()

    def publish_frame(self, camera: str, array: np.ndarray, stamp_ns: int, *, encoding: str = 'rgb8',
                      info=True, image=None) -> None:
        """Publish ``camera``'s CameraInfo (unless ``info`` is False; a message to send a custom one) then
        its image (``image`` overrides the Image built from ``array``)."""
        from sensor_msgs.msg import CameraInfo, Image

        frame_id = f'{camera}_optical_frame'
        if info is True:
            h, w = array.shape[:2]
            info = camera_info_msg(w, h, stamp_ns, frame_id)
        if info is not False and info is not None:
            self.publisher(CameraInfo, f'{camera}/camera_info').publish(info)
        msg = image if image is not None else image_msg(array, encoding, stamp_ns, frame_id)
        self.publisher(Image, f'{camera}/image').publish(msg)

    def wait_matched(self, node_topics: list[str], timeout_s: float = 10.0) -> bool:
        """Wait until every helper publisher on ``node_topics`` has a subscriber."""
        def ready():
            return all(any(t == key[1] and p.get_subscription_count() > 0 for key, p in self._pubs.items())
                       for t in node_topics)
        return wait_until(ready, timeout_s)

    def close(self) -> None:
        # Stop spinning first: releasing and destroying entities while the executor thread waits on them
        # raised InvalidHandle in that thread (seen with the Jazzy wheels).
        try:
            self.spinner.stop()
        finally:
            for node in self.nodes:
                release = getattr(node, 'release', None)
                if release is not None:
                    release()
            self.executor.shutdown(timeout_sec=5.0)
            for node in self.nodes:
                node.destroy_node()
            self.helper.destroy_node()
            self.rclpy.shutdown(context=self.context)


def node_overrides(**values):
    """rclpy Parameter overrides for the node (dots in names as keyword '__': qos__output__depth)."""
    from rclpy.parameter import Parameter

    return [Parameter(name.replace('__', '.'), value=value) for name, value in values.items()]


FAST_NODE = dict(
    backend='fake', device='cpu', net_height_px=112, net_width_px=140, warmup_iters=0,
    preprocess='reference', max_wait_ms=30.0, max_input_age_ms=-1.0, info_tolerance_ms=50.0,
    **{'diagnostics.period_s': 0.2,
       # the tests count every frame they send: inputs must not be replaced in a keep-last-1 history when the
       # loaded test machine is slow to take them (the shipped default is best effort, keep last 1)
       'qos.input.reliability': 'reliable', 'qos.input.depth': 20},
)
"""Parameters for a quick node with the deterministic fake backend at a tiny network size."""


def _msg_types():
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    return {'depth/image': Image, 'depth/camera_info': CameraInfo, 'points': PointCloud2,
            'normals/image': Image, 'confidence/image': Image}


def start_node(harness, sub_ns: str, cameras, subscribe: dict[str, tuple[str, ...]], **params):
    """A DepthNode in ``<harness ns>/<sub_ns>`` with the fake backend; ``subscribe`` = outputs per camera."""
    from sensor_msgs.msg import CameraInfo, Image

    from metric3d_ros.ros.node import DepthNode

    ns = f'{harness.namespace}/{sub_ns}'
    values = {**FAST_NODE, 'cameras': list(cameras), **params}
    node = DepthNode(namespace=ns, context=harness.context, parameter_overrides=node_overrides(**values))
    assert node.autostart(), 'configure/activate failed'
    harness.add_node(node)
    types = _msg_types()
    for cam, outputs in subscribe.items():
        outputs = [o for o in outputs if o in types]
        for out in outputs:
            harness.subscribe(types[out], f'{sub_ns}/{cam}/{out}')
    for cam in cameras:
        harness.publisher(Image, f'{sub_ns}/{cam}/image')
        harness.publisher(CameraInfo, f'{sub_ns}/{cam}/camera_info')
    assert harness.wait_matched([f'{sub_ns}/{cam}/image' for cam in cameras])

    assert wait_until(lambda: node_sees_subscribers(node, subscribe), 20.0)
    return node


def group_of(node, index: int = 0):
    """The node's ``index``-th camera group (in_process layout): its stats, scheduler, outputs."""
    return node.layout.groups[index]


def snapshots(node) -> dict:
    """Camera id -> ``CameraSnapshot`` from every camera group of the node (any layout)."""
    return {snap.camera_id: snap for report in node.layout.reports() for snap, _ in report.cameras}


def unaccounted(node) -> dict[str, tuple[int, int, int, int]]:
    """Cameras whose inputs are not all accounted for: camera -> (inputs, outputs, drops, skipped), where
    every input must be an output, a counted drop or skipped for want of a subscriber (empty: all balance)."""
    out = {}
    for report in node.layout.reports():
        for snap, extras in report.cameras:
            drops = sum(snap.drops_total.values())
            if snap.inputs_total != snap.outputs_total + drops + extras.skipped_no_subscriber:
                out[snap.camera_id] = (snap.inputs_total, snap.outputs_total, drops,
                                       extras.skipped_no_subscriber)
    return out


def assert_accounted(node, timeout_s: float = 15.0) -> None:
    """Wait until every input of every camera is an output, a counted drop or skipped (frames in flight
    settle), and assert it."""
    assert wait_until(lambda: not unaccounted(node), timeout_s), unaccounted(node)


_OUTPUT_KEYS = {'depth/image': 'depth', 'depth/camera_info': 'depth_info', 'points': 'points',
                'normals/image': 'normals', 'confidence/image': 'confidence'}


def node_sees_subscribers(node, subscribe: dict[str, tuple[str, ...]]) -> bool:
    """True when the node's camera groups report a subscriber on every output in ``subscribe`` (group workers
    report every ``diagnostics.period_s``)."""
    layout = node.layout
    if layout is None:
        return False
    seen = {snap.camera_id: set(extras.subscribed)
            for report in layout.reports() for snap, extras in report.cameras}
    return all(cam in seen and {_OUTPUT_KEYS[o] for o in outputs} <= seen[cam]
               for cam, outputs in subscribe.items())


def publish_ticks(harness, node, sub_ns: str, cameras: dict, ticks: int, period_s: float = 0.06) -> list[int]:
    stamps = []
    for i in range(ticks):
        stamp_ns = node.get_clock().now().nanoseconds
        stamps.append(stamp_ns)
        for index, (cam, (w, h)) in enumerate(cameras.items()):
            harness.publish_frame(f'{sub_ns}/{cam}', rgb_image(w, h, seed=index * 100 + i), stamp_ns)
        time.sleep(period_s)
    return stamps


def publish_until(harness, node, sub_ns: str, cameras: dict, done, timeout_s: float = 30.0,
                  period_s: float = 0.1, min_ticks: int = 3) -> list[int]:
    """Publish ticks (as ``publish_ticks``) until ``done()`` is true after at least ``min_ticks``, or until
    ``timeout_s``; a slow machine then just takes more ticks. Returns the stamps sent."""
    stamps = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stamps += publish_ticks(harness, node, sub_ns, cameras, ticks=1, period_s=period_s)
        if len(stamps) >= min_ticks and done():
            break
    return stamps
