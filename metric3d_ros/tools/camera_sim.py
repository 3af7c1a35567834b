"""metric3d_camera_sim: publish N synthetic cameras (Image + CameraInfo) at a fixed rate from its own process.

For the node's cross-process tests and its benchmark::

    metric3d_camera_sim --cameras front,left --size 640x480 --size-of left=320x240 --rate-hz 10 \
        --duration-s 20 --summary-json /tmp/sim.json

Per camera ``<name>`` it publishes ``<name>/image`` (rgb8 by default) and ``<name>/camera_info`` with the
same header (stamp = publish time of the tick, frame_id ``<name>_optical_frame``). All cameras of one
process share a tick, like hardware-synchronized cameras. Images are a few precomputed textured frames
cycled (cheap enough for 4 x 1280x720 at 30 Hz); the content is not a real scene.

``--start-at-unix-s T``: the first tick at wall-clock time T; simulator processes started with the same T
tick together (one process per camera, like cameras with one driver each, as ``metric3d_node_bench
--sim-per-camera`` runs them).

``--info-mode``: ``every`` (a CameraInfo with each image), ``static`` (one CameraInfo stamped at start-up,
republished once a second with that stamp: the node needs a negative ``info_tolerance_ms``), ``none``.

At exit (``--duration-s`` or ``--frames`` reached, or SIGINT/SIGTERM) it prints one JSON line with the
frames published per camera and, with ``--summary-json``, also writes it (with every published stamp).
Use the Fast DDS profile ``config/fastdds_shm.xml`` for images larger than ~500 KiB between processes.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np

from metric3d_ros.codec.camera_info import camera_info_cdr
from metric3d_ros.codec.image import image_cdr
from metric3d_ros.core.geometry.camera_info import CameraInfoFields
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.tools.processes import Pacer

ENCODINGS = ('rgb8', 'bgr8', 'mono8')
INFO_MODES = ('every', 'static', 'none')
FRAMES_CYCLED = 4


@dataclass(frozen=True)
class SimCamera:
    """One simulated camera: name, image size and intrinsics (fx = fy = 0.8 * width, centred)."""

    name: str
    width_px: int
    height_px: int

    @property
    def intrinsics(self) -> Intrinsics:
        focal_px = 0.8 * self.width_px
        return Intrinsics(focal_px, focal_px, (self.width_px - 1) / 2.0, (self.height_px - 1) / 2.0)

    @property
    def frame_id(self) -> str:
        return f'{self.name}_optical_frame'


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator does (see ``--help``)."""

    cameras: tuple[SimCamera, ...]
    rate_hz: float = 10.0
    duration_s: float = 0.0
    frames: int = 0
    encoding: str = 'rgb8'
    info_mode: str = 'every'
    reliability: str = 'best_effort'
    qos_depth: int = 1
    wait_for_subscribers_s: float = 0.0
    start_delay_s: float = 0.0
    start_at_unix_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError('at least one camera is needed (--cameras a,b,c)')
        if not self.rate_hz > 0.0:
            raise ValueError(f'--rate-hz must be > 0, got {self.rate_hz}')
        if self.encoding not in ENCODINGS:
            raise ValueError(f'--encoding must be one of {ENCODINGS}, got {self.encoding!r}')
        if self.info_mode not in INFO_MODES:
            raise ValueError(f'--info-mode must be one of {INFO_MODES}, got {self.info_mode!r}')


def parse_size(text: str) -> tuple[int, int]:
    """``'640x480'`` -> ``(640, 480)`` (width x height)."""
    parts = text.lower().split('x')
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f'a size looks like WIDTHxHEIGHT, e.g. 640x480; got {text!r}')
    return int(parts[0]), int(parts[1])


def synthetic_frames(width_px: int, height_px: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` (H, W, 3) uint8 RGB frames: colour gradients, a chequerboard and a bar that moves."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height_px, 0:width_px].astype(np.float32)
    base = np.stack(
        [255.0 * xs / max(width_px - 1, 1), 255.0 * ys / max(height_px - 1, 1), np.full_like(xs, 96.0)],
        axis=-1,
    )
    cell_px = max(8, width_px // 16)
    checker = (((xs // cell_px) + (ys // cell_px)) % 2)[..., None] * 40.0
    noise = rng.integers(0, 16, size=(height_px, width_px, 1)).astype(np.float32)
    frames = []
    for i in range(count):
        img = base + checker + noise
        x0 = int((i + 0.5) * width_px / (count + 1))
        img[:, x0:x0 + max(2, width_px // 20)] = (250.0, 250.0, 250.0)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def _encode(frame_rgb: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == 'rgb8':
        return frame_rgb
    if encoding == 'bgr8':
        return np.ascontiguousarray(frame_rgb[..., ::-1])
    return np.ascontiguousarray(frame_rgb.mean(axis=-1).astype(np.uint8))


def parse_args(argv: list[str]) -> tuple[SimConfig, str]:
    """``(SimConfig, summary_json_path)`` from command-line arguments (ROS arguments already removed)."""
    parser = argparse.ArgumentParser(prog='metric3d_camera_sim', description=__doc__.split('\n')[0])
    parser.add_argument('--cameras', default='camera', help='comma-separated camera names')
    parser.add_argument('--size', default='640x480', help='WIDTHxHEIGHT of every camera')
    parser.add_argument('--size-of', action='append', default=[], metavar='NAME=WxH',
                        help='size of one camera (repeatable), overrides --size')
    parser.add_argument('--rate-hz', type=float, default=10.0)
    parser.add_argument('--duration-s', type=float, default=0.0, help='stop after this long (0: never)')
    parser.add_argument('--frames', type=int, default=0, help='stop after this many ticks (0: never)')
    parser.add_argument('--encoding', default='rgb8', choices=ENCODINGS)
    parser.add_argument('--info-mode', default='every', choices=INFO_MODES)
    parser.add_argument('--reliability', default='best_effort', choices=('best_effort', 'reliable'))
    parser.add_argument('--qos-depth', type=int, default=1)
    parser.add_argument('--wait-for-subscribers-s', type=float, default=0.0,
                        help='wait this long at most for a subscriber on each image topic')
    parser.add_argument('--start-delay-s', type=float, default=0.0, help='sleep before the first tick')
    parser.add_argument('--start-at-unix-s', type=float, default=0.0,
                        help='first tick at this wall-clock time (several simulator processes given the same '
                             'time tick together, like hardware-triggered cameras with one driver each)')
    parser.add_argument('--summary-json', default='', help='also write the summary (with stamps) here')
    args = parser.parse_args(argv)
    sizes = {}
    for item in args.size_of:
        name, _, size = item.partition('=')
        sizes[name] = parse_size(size)
    default_size = parse_size(args.size)
    names = [n.strip() for n in args.cameras.split(',') if n.strip()]
    unknown = sorted(set(sizes) - set(names))
    if unknown:
        raise ValueError(f'--size-of names cameras that are not in --cameras: {unknown}')
    cameras = tuple(SimCamera(n, *sizes.get(n, default_size)) for n in names)
    config = SimConfig(
        cameras=cameras,
        rate_hz=args.rate_hz,
        duration_s=args.duration_s,
        frames=args.frames,
        encoding=args.encoding,
        info_mode=args.info_mode,
        reliability=args.reliability,
        qos_depth=args.qos_depth,
        wait_for_subscribers_s=args.wait_for_subscribers_s,
        start_delay_s=args.start_delay_s,
        start_at_unix_s=args.start_at_unix_s,
    )
    return config, args.summary_json


class CameraSimulator:
    """Publishers and precomputed frames for every simulated camera of one rclpy node; each tick publishes
    the codec's serialized bytes (``Publisher.publish(bytes)``: no Python message is built per frame)."""

    def __init__(self, node, config: SimConfig) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        self._node = node
        self._config = config
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=config.qos_depth,
            reliability=ReliabilityPolicy.RELIABLE if config.reliability == 'reliable'
            else ReliabilityPolicy.BEST_EFFORT,
        )
        self.image_pubs = {}
        self.info_pubs = {}
        self.images = {}
        self.infos = {}
        for index, cam in enumerate(config.cameras):
            self.image_pubs[cam.name] = node.create_publisher(Image, f'{cam.name}/image', qos)
            self.info_pubs[cam.name] = node.create_publisher(CameraInfo, f'{cam.name}/camera_info', qos)
            frames = synthetic_frames(cam.width_px, cam.height_px, FRAMES_CYCLED, seed=index)
            encoded = [_encode(f, config.encoding) for f in frames]
            self.images[cam.name] = encoded
            self.infos[cam.name] = CameraInfoFields.from_intrinsics(cam.intrinsics, cam.width_px,
                                                                    cam.height_px)
        self.published = {cam.name: 0 for cam in config.cameras}
        self.stamps_ns: list[int] = []
        self.publish_ms: list[float] = []  # per tick: stamp to the last image handed to the middleware
        self._static_stamp_ns: int | None = None
        self._last_static_s = -1e9

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """True once every image topic has a subscriber (polls; no executor needed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self.image_pubs.values()):
                return True
            time.sleep(0.05)
        return False

    def tick(self, tick_index: int) -> None:
        """Publish one frame of every camera, stamped now."""
        stamp_ns = self._node.get_clock().now().nanoseconds
        mode = self._config.info_mode
        now_s = time.monotonic()
        send_static = mode == 'static' and now_s - self._last_static_s >= 1.0
        if send_static:
            self._last_static_s = now_s
            if self._static_stamp_ns is None:
                self._static_stamp_ns = stamp_ns
        for cam in self._config.cameras:
            frame = self.images[cam.name][tick_index % FRAMES_CYCLED]
            if mode == 'every' or send_static:
                info_stamp_ns = stamp_ns if mode == 'every' else self._static_stamp_ns
                self.info_pubs[cam.name].publish(camera_info_cdr(self.infos[cam.name], info_stamp_ns,
                                                                 cam.frame_id))
            self.image_pubs[cam.name].publish(image_cdr(frame, self._config.encoding, stamp_ns, cam.frame_id))
            self.published[cam.name] += 1
        self.stamps_ns.append(stamp_ns)
        self.publish_ms.append((self._node.get_clock().now().nanoseconds - stamp_ns) / 1e6)


def _percentiles(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {}
    ordered = sorted(values_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {'p50': round(pick(0.50), 3), 'p99': round(pick(0.99), 3), 'max': round(ordered[-1], 3)}


def run(config: SimConfig, summary_path: str = '', args: list[str] | None = None) -> dict:
    """Run the simulator until its duration, frame count or a signal; return the summary."""
    import rclpy

    rclpy.init(args=args)
    stop = {'flag': False}

    def _on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
        stop['flag'] = True

    node = rclpy.create_node('metric3d_camera_sim')
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        sim = CameraSimulator(node, config)
        wait_s = config.wait_for_subscribers_s
        if wait_s > 0.0 and not sim.wait_for_subscribers(wait_s):
            node.get_logger().warning('not every image topic has a subscriber yet; publishing anyway')
        if config.start_delay_s > 0.0:
            time.sleep(config.start_delay_s)
        if config.start_at_unix_s > 0.0:
            time.sleep(max(0.0, config.start_at_unix_s - time.time()))
        pacer = Pacer(config.rate_hz)
        start_s = time.monotonic()
        tick = 0
        while not stop['flag'] and rclpy.ok():
            if config.frames and tick >= config.frames:
                break
            if config.duration_s and time.monotonic() - start_s >= config.duration_s:
                break
            sim.tick(tick)
            tick += 1
            pacer.wait()
        elapsed_s = time.monotonic() - start_s
        summary = {
            'published': sim.published,
            'ticks': tick,
            'elapsed_s': round(elapsed_s, 3),
            'rate_hz': config.rate_hz,
            'stamp_to_published_ms': _percentiles(sim.publish_ms),
        }
        print(json.dumps(summary), flush=True)
        if summary_path:
            with open(summary_path, 'w', encoding='utf-8') as f:
                json.dump({**summary, 'stamps_ns': sim.stamps_ns}, f)
        return summary
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``metric3d_camera_sim``."""
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if argv is None else argv
    try:
        config, summary_path = parse_args(remove_ros_args(argv)[1:])
    except ValueError as exc:
        print(f'metric3d_camera_sim: {exc}', file=sys.stderr)
        return 2
    run(config, summary_path, args=argv)
    return 0


if __name__ == '__main__':
    sys.exit(main())
