"""One camera group's whole path in one process: ``CameraGroup``.

A group owns, for its cameras: the raw subscriptions (image or compressed image, CameraInfo), pairing
and holding (``core.batching.camera_input.CameraInput``), intrinsics, the batching scheduler and its worker
thread, its own engine (on the group's device) and the output publishers. A frame's path inside the group::

    DDS sample --(rmw copy into Python bytes, executor thread)--> read_image_cdr (view, no copy)
      --> image_to_rgb8 (view for rgb8; one conversion otherwise) --> CameraInput.add_image --> scheduler
      --(worker thread 'metric3d-<group>')--> engine.infer (batch) --> codec writers (one copy per message)
      --> Publisher.publish(bytes) --(rmw copy into shared memory)--> subscribers

The same class runs inside the node process (``process_layout: in_process``) and inside a group worker
process (``group_workers``, ``ros.layout.workers``): only the rclpy node it creates its entities on differs.

Counting: every image received is counted once as input; it ends published (counted when the middleware
took every message of the frame), or dropped with one reason (``core.batching.reasons`` and the node's
reasons below). Errors are logged throttled per reason and camera.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from rclpy.duration import Duration
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from metric3d_ros.codec.camera_info import read_camera_info_cdr
from metric3d_ros.codec.cdr import CdrError
from metric3d_ros.codec.compressed import compressed_size, compressed_to_rgb8, read_compressed_cdr
from metric3d_ros.codec.image import COLOUR_ENCODINGS, ImageConversionError, image_to_rgb8, read_image_cdr
from metric3d_ros.core.batching import reasons
from metric3d_ros.core.batching.camera_input import CameraInput, Dropped
from metric3d_ros.core.batching.scheduler import PAUSED, STOPPED, BatchScheduler
from metric3d_ros.core.batching.throttle import Throttle
from metric3d_ros.core.engine.types import Frame
from metric3d_ros.core.geometry.camera_info import (
    CalibrationError,
    CameraInfoFields,
    CameraIntrinsics,
    intrinsics_from_camera_info,
    published_size,
)
from metric3d_ros.core.geometry.letterbox import compute_letterbox
from metric3d_ros.core.outputs import OutputSpec
from metric3d_ros.core.stats import BatchSnapshot, CameraSnapshot, DiagnosticsStats
from metric3d_ros.ros.diagnostics import CameraExtras
from metric3d_ros.ros.fused import FusedOutput, make_extrinsics, with_depth
from metric3d_ros.ros.params import GroupConfig, NodeConfig
from metric3d_ros.ros.publishers import DEPTH_INFO, CameraOutputs, Job, Wanted
from metric3d_ros.ros.timers import steady_timer
from metric3d_ros.ros.timing import TimingStats

# Drop reasons added by the node (the batching core defines the pairing, stamp and scheduler ones).
UNSUPPORTED_ENCODING = 'unsupported_encoding'
MALFORMED_IMAGE = 'malformed_image'
INVALID_CAMERA_INFO = 'invalid_camera_info'
CAMERA_INFO_SIZE_MISMATCH = 'camera_info_size_mismatch'
IMAGE_TOO_LARGE = 'image_too_large'
"""The image has more pixels than ``max_image_megapixels`` (rejected before any conversion)."""
EXTREME_ASPECT_RATIO = 'extreme_aspect_ratio'
"""The image letterboxed into the network input would be empty (e.g. 2000x1): nothing to infer."""
INFERENCE_ERROR = 'inference_error'
INTERNAL_ERROR = 'internal_error'
WORKER_DIED = 'worker_died'
"""Frames a group worker process held when it died (counted by the node from the worker's last report)."""


@dataclass(frozen=True)
class CameraTopics:
    """A camera's resolved topic names (namespace and remappings applied by the node)."""

    image: str
    compressed: str
    camera_info: str
    outputs: Mapping[str, str]


@dataclass(frozen=True)
class GroupReport:
    """A group's state for /diagnostics (picklable: group workers send it to the node)."""

    name: str
    device: str
    state: str
    error: str
    cameras: tuple[tuple[CameraSnapshot, CameraExtras], ...]
    batch: BatchSnapshot | None
    timing: Mapping[str, str]
    restarts: int = 0
    lost: int = 0
    fused: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Image:
    """A converted image waiting for pairing."""

    stamp_ns: int
    frame_id: str
    rgb: object
    wanted: Wanted


@dataclass(frozen=True)
class _Info:
    """A received CameraInfo: its fields, or why it is unusable."""

    fields: CameraInfoFields | None
    error: str | None = None


class _Camera:
    """Per-camera state of the group (pairing, outputs, notes)."""

    def __init__(self, name: str, config: NodeConfig) -> None:
        self.name = name
        self.input: CameraInput[_Image, _Info] = CameraInput(name, config.pairing, config.info_wait_ms)
        self.outputs: CameraOutputs | None = None
        self.subscriptions: list = []
        self.image_subscription = None
        self.last_error = ''
        self.skipped_no_subscriber = 0
        self.info_warnings: tuple[str, ...] = ()
        self.hint = ''
        self.empty_frame_id = 0
        self.intrinsics_cache: tuple[CameraInfoFields, int, int, CameraIntrinsics] | None = None


def is_rectified_topic(topic: str) -> bool:
    """Whether an image topic is named as a rectified one (image_proc's ``image_rect``, ``image_rect_color``,
    ...): its last name part, or the one before ``compressed``, contains ``rect``."""
    parts = [p for p in topic.split('/') if p]
    if parts and parts[-1] == 'compressed':
        parts = parts[:-1]
    return bool(parts) and 'rect' in parts[-1]


def unrectified_input_warnings(image_topic: str, info: CameraInfoFields, source: str,
                               source_used: str) -> tuple[str, ...]:
    """The warning for a probably raw, distorted image that ``camera_info_source: auto`` takes as rectified
    (P set): the topic is not named as rectified and the CameraInfo has non-zero distortion. Empty otherwise
    (also with an explicit ``rectified`` or ``raw``: the user has said what the image is)."""
    if source != 'auto' or source_used != 'rectified' or is_rectified_topic(image_topic):
        return ()
    if not any(c != 0.0 for c in info.d):
        return ()
    return (f'{image_topic} is not named as a rectified image (image_rect) and its CameraInfo has non-zero '
            f'distortion ({info.distortion_model}, d={list(info.d)}): depth assumes a rectified image '
            '(intrinsics from P); if the image is raw, rectify it first (image_proc) and remap '
            '<camera>/image to image_rect; if it is rectified, set camera_info_source: rectified',)


def torch_threads(device: str) -> int:
    """torch's CPU threads for a group on ``device`` (process-wide): on a GPU one (the host work is copies
    and ROS; idle OpenMP threads only spin against the ROS threads); on the CPU every core this process may
    use but one, which stays for receiving and publishing."""
    if not device.startswith('cpu'):
        return 1
    return max(1, len(os.sched_getaffinity(0)) - 1)


def build_engine(config: NodeConfig, group: GroupConfig):
    """The group's engine on its device, warmed up (imports torch: only when configuring)."""
    import torch

    from metric3d_ros.core.engine.engine import DepthEngine

    engine_config = config.engine_for(group)
    device = engine_config.device
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.set_num_threads(torch_threads(device))
    engine = DepthEngine(engine_config)
    try:
        if engine.config.warmup_iters > 0:
            engine.warmup()
    except Exception:
        engine.close()
        raise
    return engine


class CameraGroup:
    """Subscriptions, pairing, batching, inference and publishing of one camera group (module docstring).

    node: the rclpy node the group's entities live on (the depth node, or a worker's node).
    catalogue: the output catalogue (``core.outputs.OUTPUTS`` as the node saw it at configure).
    fused_topic: the resolved ``fused_points`` topic of this group ('' when ``fused.enabled`` is false):
        one cloud per batch of this group's cameras (``ros.fused``).
    """

    def __init__(self, node, config: NodeConfig, group: GroupConfig, topics: Mapping[str, CameraTopics],
                 catalogue: Mapping[str, OutputSpec], fused_topic: str = '') -> None:
        self._node = node
        self._fused_topic = fused_topic if config.fused is not None else ''
        self._fused: FusedOutput | None = None
        self._fused_listener = None
        self._config = config
        self.group = group
        self._topics = dict(topics)
        self._catalogue = dict(catalogue)
        self._engine = None
        self._scheduler: BatchScheduler | None = None
        self._stats: DiagnosticsStats | None = None
        self._cameras: dict[str, _Camera] = {}
        self._timer = None
        self._hint_timer = None
        self._jump_handle = None
        self._timing = TimingStats()
        self._throttle = Throttle(config.log_throttle_s)
        self._lock = threading.RLock()
        self.state = 'unconfigured'
        self.error = ''
        self._stuck = False

    @property
    def engine(self):
        """The group's engine (None before configure)."""
        return self._engine

    @property
    def stats(self) -> DiagnosticsStats | None:
        """The group's counters (None while inactive)."""
        return self._stats

    @property
    def fused(self) -> FusedOutput | None:
        """The group's fused cloud output (None when disabled or before the first activate)."""
        return self._fused

    @property
    def scheduler(self) -> BatchScheduler | None:
        """The group's batching scheduler (None while inactive)."""
        return self._scheduler

    def outputs(self, camera_id: str) -> CameraOutputs | None:
        """The output publishers of ``camera_id`` (None while inactive)."""
        cam = self._cameras.get(camera_id)
        return None if cam is None else cam.outputs

    # --------------------------------------------------------------------------------------- lifecycle
    def configure(self) -> None:
        """Build and warm up the engine (raises with the reason)."""
        self._engine = build_engine(self._config, self.group)
        self.state = 'inactive'

    def activate(self) -> None:
        """Create publishers, the scheduler, subscriptions and the hold-expiry timer."""
        config = self._config
        node = self._node
        stats = DiagnosticsStats(config.stats, self.group.cameras)
        scheduler = BatchScheduler(config.scheduler, self._process_batch, self._publish, self._now_ns,
                                   stats=stats, log_error=self._log_error,
                                   thread_name=f'metric3d-{self.group.name}',
                                   in_flight=self._engine.config.pipeline_depth,
                                   on_batch=self._publish_fused if self._fused_topic else None)
        out_qos = config.output_qos.profile()
        in_qos = config.input_qos.profile()
        with self._lock:
            if self._fused_topic:
                self._activate_fused(out_qos)
            self._stats, self._scheduler, self._timing = stats, scheduler, TimingStats()
            for name in self.group.cameras:
                cam = self._cameras[name] = _Camera(name, config)
                cam.outputs = CameraOutputs(node, name, self._catalogue, self._topics[name].outputs,
                                            config.outputs, out_qos)
            scheduler.start()
            for name in self.group.cameras:
                cam, topics = self._cameras[name], self._topics[name]
                cam.subscriptions.append(node.create_subscription(
                    CameraInfo, topics.camera_info, lambda raw, c=cam: self._on_info(c, raw), in_qos,
                    raw=True))
                if config.input_transport == 'compressed':
                    cam.image_subscription = node.create_subscription(
                        CompressedImage, topics.compressed, lambda raw, c=cam: self._on_image(c, raw, True),
                        in_qos, raw=True)
                else:
                    cam.image_subscription = node.create_subscription(
                        Image, topics.image, lambda raw, c=cam: self._on_image(c, raw, False), in_qos,
                        raw=True)
                cam.subscriptions.append(cam.image_subscription)
            if config.info_wait_ms > 0.0:  # images may be held: drop them when their wait is over
                period_s = max(0.01, min(config.info_wait_ms / 4e3, 0.1))
                self._timer = steady_timer(node, period_s, self._expire_held)
            self._hint_timer = steady_timer(node, config.diagnostics_period_s, self._update_hints)
            self._add_jump_handler()
            self.state = 'active'

    def deactivate(self) -> None:
        """Destroy subscriptions, stop the scheduler (pending frames discarded), destroy publishers."""
        node = self._node
        with self._lock:
            for cam in self._cameras.values():
                for sub in cam.subscriptions:
                    node.destroy_subscription(sub)
                cam.subscriptions = []
                cam.image_subscription = None
                cam.hint = ''
            for timer in (self._timer, self._hint_timer):
                if timer is not None:
                    node.destroy_timer(timer)
            self._timer = self._hint_timer = None
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None and not scheduler.stop(timeout_s=30.0):
            self._stuck = True
            self._log_error(f'{self.group.name}: the inference worker did not stop within 30 s; its engine '
                            'is left open')
        with self._lock:
            for cam in self._cameras.values():
                if cam.outputs is not None:
                    cam.outputs.destroy()
                    cam.outputs = None
            handle, self._jump_handle = self._jump_handle, None
            if handle is not None:
                handle.unregister()
            self._deactivate_fused()
            if self.state == 'active':
                self.state = 'inactive'

    def close(self) -> None:
        """Deactivate if active and close the engine (frees its device memory)."""
        self.deactivate()
        engine, self._engine = self._engine, None
        self.state = 'unconfigured'
        if engine is not None and not self._stuck:  # never under an inference thread that is still running
            engine.close()

    def _activate_fused(self, qos) -> None:
        """The fused cloud's publisher and extrinsics (a tf2 listener on the group's node for 'tf')."""
        settings = self._config.fused
        extrinsics, self._fused_listener = make_extrinsics(self._node, settings)
        publisher = self._node.create_publisher(PointCloud2, self._fused_topic, qos)
        logger = self._node.get_logger()
        self._fused = FusedOutput(publisher, settings, extrinsics, self._engine.device,
                                  log_error=logger.error, log_warning=logger.warning,
                                  log_throttle_s=self._config.log_throttle_s, topic=self._fused_topic)

    def _deactivate_fused(self) -> None:
        fused, listener, self._fused_listener = self._fused, self._fused_listener, None
        if listener is not None:
            listener.unregister()
        if fused is not None and fused.publisher is not None:
            self._node.destroy_publisher(fused.publisher)
            fused.publisher = None

    def _publish_fused(self, items: list, results: list) -> None:
        fused = self._fused
        if fused is not None and fused.wanted() and self._node.context.ok():
            start_s = time.perf_counter()
            fused.publish_batch(items, results)
            self._timing.add('fused', (time.perf_counter() - start_s) * 1e3)

    def reset_stamps(self) -> None:
        """Forget the last stamps (ROS time jumped back: a looping bag)."""
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.reset_stamps()

    def _add_jump_handler(self) -> None:
        from rclpy.clock import JumpThreshold

        threshold = JumpThreshold(min_forward=None, min_backward=Duration(seconds=-0.5), on_clock_change=True)
        self._jump_handle = self._node.get_clock().create_jump_callback(
            threshold, post_callback=lambda _info: self.reset_stamps())

    # ----------------------------------------------------------------------------------------- helpers
    def _now_ns(self) -> int:
        return self._node.get_clock().now().nanoseconds

    def _log_error(self, message: str) -> None:
        self._node.get_logger().error(message)

    def _reject(self, cam: _Camera, reason: str, detail: str, stamp_ns: int | None = None) -> None:
        """Drop an input frame before the scheduler: count it, note it, log it (throttled)."""
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.reject(cam.name, reason)
        self._note(cam, reason, detail, stamp_ns)

    def _warn(self, cam: _Camera, key: str, message: str) -> None:
        """A warning about ``cam``, throttled per ``key`` and camera."""
        suppressed = self._throttle.poll((key, cam.name))
        if suppressed is None:
            return
        more = f' [{suppressed} similar not logged]' if suppressed else ''
        self._node.get_logger().warning(f'camera {cam.name}: {message}{more}')

    def _note(self, cam: _Camera, reason: str, detail: str, stamp_ns: int | None,
              what: str = 'frame dropped') -> None:
        cam.last_error = f'{reason}: {detail}'
        suppressed = self._throttle.poll((reason, cam.name))
        if suppressed is None:
            return
        when = '' if stamp_ns is None else f' (stamp {stamp_ns / 1e9:.6f})'
        more = f' [{suppressed} similar not logged]' if suppressed else ''
        self._log_error(f'camera {cam.name}: {what}{when}, {reason}: {detail}{more}')

    # ------------------------------------------------------------------------------------ input side
    def _on_info(self, cam: _Camera, raw: bytes) -> None:
        try:
            try:
                stamp_ns, frame_id, fields = read_camera_info_cdr(raw)
                info = _Info(fields)
            except CdrError as exc:
                self._note(cam, INVALID_CAMERA_INFO, f'unreadable CameraInfo: {exc}', None,
                           'CameraInfo ignored')
                return
            except (CalibrationError, ValueError) as exc:
                from metric3d_ros.codec.cdr import read_header

                stamp_ns, frame_id = read_header(raw)
                info = _Info(None, str(exc))
            if not frame_id:
                self._empty_frame_id(cam, 'CameraInfo', stamp_ns)
            if stamp_ns < 0:
                self._note(cam, reasons.NEGATIVE_STAMP, _negative_detail(stamp_ns), None,
                           'CameraInfo ignored')
                return
            self._handle(cam, cam.input.add_info(info, stamp_ns, time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - a callback must never take the node down
            self._note(cam, INTERNAL_ERROR, f'CameraInfo callback raised {exc!r}', None, 'CameraInfo ignored')

    def _on_image(self, cam: _Camera, raw: bytes, compressed: bool) -> None:
        start_s = time.perf_counter()
        try:
            self._take_image(cam, raw, compressed)
        except Exception as exc:  # noqa: BLE001 - a callback must never take the node down
            self._reject(cam, INTERNAL_ERROR, f'image callback raised {exc!r}')
        self._timing.add('image_callback', (time.perf_counter() - start_s) * 1e3)

    def _take_image(self, cam: _Camera, raw: bytes, compressed: bool) -> None:
        scheduler = self._scheduler
        outputs = cam.outputs
        if scheduler is None or outputs is None:
            return
        wanted = outputs.wanted_request()  # the frame's one look at the subscription counts
        fused = self._fused
        if fused is not None and fused.wanted():  # the fused cloud needs the depth (published or not)
            wanted = Wanted(with_depth(wanted.request if wanted is not None else None, self._config.outputs),
                            wanted.publish if wanted is not None else frozenset())
        if wanted is None:
            cam.skipped_no_subscriber += 1
            scheduler.stats.record_input(cam.name)
            return
        encoding = None
        message = None
        try:
            message = read_compressed_cdr(raw) if compressed else read_image_cdr(raw)
            stamp_ns = message.stamp_ns
            if stamp_ns < 0:
                self._reject(cam, reasons.NEGATIVE_STAMP, _negative_detail(stamp_ns))
                return
            if not message.frame_id:
                self._empty_frame_id(cam, 'image', stamp_ns)
            self._timing.add('stamp_to_receive', (self._now_ns() - stamp_ns) / 1e6)
            if compressed:  # the size from the file's header first: a small file can hold a huge image
                size = compressed_size(message)
                if size is not None and self._refuse_size(cam, size[0], size[1], stamp_ns):
                    return
                rgb = compressed_to_rgb8(message)
            else:
                encoding = message.encoding
                if self._refuse_size(cam, message.width, message.height, stamp_ns):  # before any copy
                    return
                rgb = image_to_rgb8(message)
            if rgb.shape[0] == 0 or rgb.shape[1] == 0:
                raise ImageConversionError(f'image is empty ({rgb.shape[1]}x{rgb.shape[0]})')
            if compressed and self._refuse_size(cam, rgb.shape[1], rgb.shape[0], stamp_ns):
                return
        except CdrError as exc:
            self._reject(cam, MALFORMED_IMAGE, f'unreadable message: {exc}')
            return
        except (ImageConversionError, ValueError) as exc:
            reason = UNSUPPORTED_ENCODING if encoding is not None and encoding not in COLOUR_ENCODINGS \
                else MALFORMED_IMAGE
            self._reject(cam, reason, str(exc), None if message is None else message.stamp_ns)
            return
        image = _Image(stamp_ns, message.frame_id, rgb, wanted)
        self._handle(cam, cam.input.add_image(image, stamp_ns, time.monotonic()))

    def _empty_frame_id(self, cam: _Camera, what: str, stamp_ns: int) -> None:
        """Count (``empty_frame_id`` in /diagnostics) and warn, throttled, about an input without a frame_id;
        the frame is still processed."""
        cam.empty_frame_id += 1
        self._warn(cam, 'empty_frame_id',
                   f'{what} stamped {stamp_ns / 1e9:.6f} has an empty header.frame_id: the outputs copy the '
                   "input header, so their frame_id is empty and tf cannot place them; set the driver's "
                   "frame_id to the camera's optical frame (REP 103, e.g. <camera>_optical_frame)")

    def _refuse_size(self, cam: _Camera, width: int, height: int, stamp_ns: int) -> bool:
        """Reject (counted) an image too large for ``max_image_megapixels`` or whose letterbox into the
        network input is empty; True when rejected. An empty image (0 pixels) is left to the conversion."""
        limit_mp = self._config.max_image_megapixels
        if width * height > limit_mp * 1e6:
            self._reject(cam, IMAGE_TOO_LARGE,
                         f'image is {width}x{height} ({width * height / 1e6:.1f} megapixels), above '
                         f'max_image_megapixels={limit_mp:g}; publish smaller images (binning, image_proc '
                         'resize) or raise max_image_megapixels', stamp_ns)
            return True
        if width > 0 and height > 0:
            net_h, net_w = self._config.engine.net_hw
            try:
                compute_letterbox(height, width, net_h, net_w)
            except ValueError as exc:
                self._reject(cam, EXTREME_ASPECT_RATIO, f'{exc}; crop the image to a less extreme aspect '
                             'ratio', stamp_ns)
                return True
        return False

    def _expire_held(self) -> None:
        try:
            now_s = time.monotonic()
            for cam in list(self._cameras.values()):
                self._handle(cam, cam.input.expire(now_s))
        except Exception as exc:  # noqa: BLE001 - a timer must never take the node down
            self._log_error(f'{self.group.name}: expiring held images raised {exc!r}')

    def _handle(self, cam: _Camera, outcomes: list) -> None:
        for outcome in outcomes:  # each image is counted once, whatever happens to the others
            try:
                if isinstance(outcome, Dropped):
                    detail = self._pairing_detail(outcome.reason)
                    self._reject(cam, outcome.reason, detail, outcome.image.stamp_ns)
                else:
                    self._submit(cam, outcome.image, outcome.info)
            except Exception as exc:  # noqa: BLE001 - counted, never lost
                self._reject(cam, INTERNAL_ERROR, f'handling a paired image raised {exc!r}',
                             outcome.image.stamp_ns)

    def _submit(self, cam: _Camera, image: _Image, info: _Info) -> None:
        scheduler = self._scheduler
        if scheduler is None:
            return
        if info.error is not None:
            self._reject(cam, INVALID_CAMERA_INFO, info.error, image.stamp_ns)
            return
        height, width = image.rgb.shape[:2]
        try:
            resolved = self._intrinsics(cam, info.fields, width, height)
        except CalibrationError as exc:
            try:
                described = published_size(info.fields)
            except CalibrationError:
                described = None
            reason = CAMERA_INFO_SIZE_MISMATCH if described is not None and described != (width, height) \
                else INVALID_CAMERA_INFO
            self._reject(cam, reason, str(exc), image.stamp_ns)
            return
        frame = Frame(image.rgb, resolved.intrinsics, cam.name, image.stamp_ns, image.frame_id)
        job = Job(cam.name, image.stamp_ns, image.frame_id, info.fields, image.wanted)
        restarts = scheduler.stamp_restarts(cam.name)
        outcome = scheduler.submit(cam.name, (frame, job), image.stamp_ns)
        if scheduler.stamp_restarts(cam.name) != restarts:
            self._warn(cam, 'stamp_restart',
                       f'stamp {image.stamp_ns / 1e9:.6f} is more than stamp_restart_ms='
                       f'{scheduler.config.stamp_restart_ms:g} before the previous image: a new timeline '
                       '(restarted driver or clock jump back?); the stamp order restarts from it')
        if outcome is not None and outcome not in (PAUSED, STOPPED):
            self._note(cam, outcome, _stamp_detail(outcome, scheduler), image.stamp_ns)

    def _intrinsics(self, cam: _Camera, fields: CameraInfoFields, width: int,
                    height: int) -> CameraIntrinsics:
        # Keyed by the object itself (held, compared with `is`): an id() of a freed CameraInfo can be reused.
        cached = cam.intrinsics_cache
        if cached is not None and cached[0] is fields and cached[1:3] == (width, height):
            return cached[3]
        source = self._config.camera_info_source
        resolved = intrinsics_from_camera_info(fields, width, height, source=source)
        cam.intrinsics_cache = (fields, width, height, resolved)
        topics = self._topics[cam.name]
        topic = topics.compressed if self._config.input_transport == 'compressed' else topics.image
        warnings = resolved.warnings + unrectified_input_warnings(topic, fields, source, resolved.source_used)
        if warnings != cam.info_warnings:  # logged when they change: once per camera for a steady CameraInfo
            cam.info_warnings = warnings
            for warning in warnings:
                self._node.get_logger().warning(f'camera {cam.name}: {warning}')
        return resolved

    def _pairing_detail(self, reason: str) -> str:
        config = self._config
        tolerance = config.pairing.info_tolerance_ms
        if reason == reasons.NO_CAMERA_INFO:
            return (f'no CameraInfo received within {config.info_wait_ms:g} ms: is <camera>/camera_info '
                    'published and remapped, with a QoS compatible with qos.input?')
        if reason == reasons.CAMERA_INFO_TOO_OLD:
            return (f'the newest CameraInfo is older than the image by more than '
                    f'info_tolerance_ms={tolerance:g}; for a static CameraInfo publisher use -1.0')
        if reason == reasons.CAMERA_INFO_TOO_NEW:
            return f'every CameraInfo is newer than the image by more than info_tolerance_ms={tolerance:g}'
        return reason

    # ------------------------------------------------------------------------------------ worker side
    def _process_batch(self, items: list) -> list:
        engine = self._engine
        if engine is None:
            raise RuntimeError('no engine (the group was closed)')
        frames = [frame for frame, _ in items]
        now_ns = self._now_ns()
        for frame in frames:  # receive + pairing + waiting for the batch's other cameras
            self._timing.add('stamp_to_dispatch', (now_ns - frame.stamp_ns) / 1e6)
        requests = [job.wanted.request for _, job in items]
        if engine.config.pipeline_depth > 1:  # batches in flight: the scheduler collects the ticket later
            return _TimedTicket(engine.submit(frames, requests), self._timing)
        results = engine.infer(frames, requests)
        if results and results[0].timings_ms:
            self._timing.add_all('engine_', results[0].timings_ms)
        return results

    def _publish(self, item, result) -> str | None:
        _, job = item
        cam = self._cameras.get(job.camera_id)
        if not result.ok:
            if cam is not None:
                self._note(cam, INFERENCE_ERROR, result.error, result.stamp_ns)
            return INFERENCE_ERROR
        if cam is None or cam.outputs is None or not self._node.context.ok():
            return STOPPED  # deactivated, or shutting down (Ctrl-C): not a publish error
        start_s = time.perf_counter()
        cam.outputs.publish(job, result)  # raises -> publish_error (counted by the scheduler)
        self._timing.add('publish', (time.perf_counter() - start_s) * 1e3)
        self._timing.add('stamp_to_publish', (self._now_ns() - job.stamp_ns) / 1e6)
        return None

    # ------------------------------------------------------------------------------------ diagnostics
    def report(self) -> GroupReport:
        """Statistics and state of the group now (a pure read: the hints are set by ``_update_hints``)."""
        stats = self._stats
        scheduler = self._scheduler
        cameras = []
        fused_wanted = self._fused is not None and self._fused.wanted()  # its cameras are not idle
        for name in self.group.cameras:
            cam = self._cameras.get(name)
            outputs = cam.outputs if cam is not None else None
            subscribed = outputs.subscribed() if outputs is not None else {}
            snap = stats.snapshot(name) if stats is not None else None
            extras = CameraExtras(
                subscribed=tuple(key for key, yes in subscribed.items() if yes),
                idle=outputs is not None and not fused_wanted and not any(
                    yes for key, yes in subscribed.items() if key != DEPTH_INFO),
                skipped_no_subscriber=cam.skipped_no_subscriber if cam else 0,
                last_error=cam.last_error if cam else '',
                info_warnings=cam.info_warnings if cam else (),
                stamp_restarts=scheduler.stamp_restarts(name) if scheduler is not None else 0,
                hint=cam.hint if cam else '',
                empty_frame_id=cam.empty_frame_id if cam else 0,
            )
            if snap is not None:
                cameras.append((snap, extras))
        engine = self._engine
        return GroupReport(
            name=self.group.name, device=str(getattr(engine, 'device', self.group.device)), state=self.state,
            error=self.error, cameras=tuple(cameras), batch=stats.batch_snapshot() if stats else None,
            timing=self._timing.summary(), fused=self._fused.report() if self._fused is not None else {})

    def _update_hints(self) -> None:
        """The silent-camera hints, every ``diagnostics.period_s`` (a steady timer of the group, on the
        executor)."""
        try:
            stats = self._stats
            if stats is None:
                return
            for cam in list(self._cameras.values()):
                self._silent_hint(cam, stats.snapshot(cam.name))
        except Exception as exc:  # noqa: BLE001 - a timer must never take the node down
            self._log_error(f'{self.group.name}: updating the camera hints raised {exc!r}')

    def _silent_hint(self, cam: _Camera, snap: CameraSnapshot) -> None:
        """Set (and log, throttled) a hint for a camera that is silent although its image topic has a
        publisher: the messages are lost on the way (QoS, or large messages losing fragments)."""
        sub = cam.image_subscription
        silent = sub is not None and snap.message.startswith('camera silent')
        publishers = sub.get_publisher_count() if silent else 0
        if publishers == 0:
            cam.hint = ''
            return
        qos = self._config.input_qos
        cam.hint = (f'{snap.message} although {sub.topic_name} has {publishers} publisher(s): check that '
                    f'its QoS is compatible with qos.input (reliability {qos.reliability}); with best_effort '
                    'input, images of tens of MB lose fragments in Fast DDS and never arrive: use '
                    'qos.input.reliability reliable, smaller or compressed images, or the shipped Fast DDS '
                    'profile between processes (docs/NODE.md, QoS and Fast DDS profile)')
        self._warn(cam, 'silent_hint', cam.hint)


class _TimedTicket:
    """An engine ticket whose results' stage times are recorded when they are collected."""

    def __init__(self, ticket, timing: TimingStats) -> None:
        self._ticket = ticket
        self._timing = timing

    def result(self) -> list:
        results = self._ticket.result()
        if results and results[0].timings_ms:
            self._timing.add_all('engine_', results[0].timings_ms)
        return results


def _stamp_detail(reason: str, scheduler: BatchScheduler) -> str:
    if reason == reasons.DUPLICATE_STAMP:
        return 'same stamp as the previous image of this camera'
    if reason == reasons.OUT_OF_ORDER_STAMP:
        return 'stamp older than the previous image of this camera'
    if reason == reasons.FUTURE_STAMP:
        return (f'stamped more than max_future_ms={scheduler.config.max_future_ms:g} after ROS time now '
                '(driver clock ahead, clock skew between hosts, or use_sim_time mismatch?)')
    if reason == reasons.STALE:
        return (f'older than max_input_age_ms={scheduler.config.max_input_age_ms:g} w.r.t. ROS time '
                '(clock skew between hosts, or use_sim_time mismatch?)')
    return reason


def _negative_detail(stamp_ns: int) -> str:
    return (f'stamp {stamp_ns / 1e9:.6f} s is before 1970: the driver publishes an unset or wrong clock; '
            'stamp images with the ROS time of capture')
