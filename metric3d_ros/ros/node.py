"""The Metric3D depth node: rclpy lifecycle node ``metric3d_depth``, console script ``depth_node``.

Lifecycle:

- *configure*: read and validate the parameters (``params.py``), build the depth engine, load the weights
  and warm up. A problem fails the transition with a message that says what to change.
- *activate*: per camera create the output publishers, the batching worker and the subscriptions
  ``<cam>/image`` (or ``<cam>/image/compressed``) and ``<cam>/camera_info``; start /diagnostics.
- *deactivate*: destroy the subscriptions, stop the worker, destroy the publishers.
- *cleanup*: close the engine (frees its device memory).
- ``autostart`` (default true): configure and activate at start-up for plain ``ros2 run`` use.

Data flow: executor callbacks only convert (``image_to_rgb8``), pair with CameraInfo (exact stamp, else
the latest within ``info_tolerance_ms``; an image that arrives before its CameraInfo waits up to
``info_wait_ms``), resolve the intrinsics (K/P rule, binning, ROI) and ``submit`` to the
``BatchScheduler``, whose single worker thread runs the engine on cross-camera batches and publishes
each camera's outputs in stamp order with the input image's header. Outputs without subscribers are not
computed; a camera none of whose outputs has a subscriber costs no inference.

Bad input (unsupported encoding, wrong step/size, missing/uncalibrated/non-finite CameraInfo, CameraInfo
of another size, duplicate/out-of-order/stale stamps) drops the frame with a reason: counted, shown in
/diagnostics, logged at most once per ``log_throttle_s`` per reason and camera; never a crash, never an
output computed from it.
"""
from __future__ import annotations

import gc
import queue
import sys
import threading
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from metric3d_ros.core.batching import reasons
from metric3d_ros.core.batching.pairing import CameraInfoPairer
from metric3d_ros.core.batching.scheduler import PAUSED, STOPPED, BatchScheduler
from metric3d_ros.core.batching.throttle import Throttle
from metric3d_ros.core.engine.types import Frame, OutputRequest
from metric3d_ros.core.geometry.camera_info import (
    CalibrationError,
    CameraInfoFields,
    CameraIntrinsics,
    intrinsics_from_camera_info,
    published_size,
)
from metric3d_ros.core.malloc_tuning import keep_large_allocations
from metric3d_ros.core.stats import DiagnosticsStats
from metric3d_ros.ros.conversions import (
    ImageConversionError,
    camera_info_to_fields,
    compressed_to_rgb8,
    image_to_rgb8,
)
from metric3d_ros.ros.diagnostics import (
    CameraExtras,
    NodeExtras,
    camera_status,
    diagnostic_array,
    engine_status,
)
from metric3d_ros.ros.params import SPECS, ConfigError, NodeConfig, declare_parameters, read_node_config
from metric3d_ros.ros.publishers import CameraOutputs, Job
from metric3d_ros.ros.qos import diagnostics_qos
from metric3d_ros.ros.timing import TimingStats

try:  # rclpy >= Humble; guarded so that an older rclpy still gets a clean exit on Ctrl-C
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover
    class ExternalShutdownException(Exception):  # noqa: N818 - mirrors rclpy's name
        """Stand-in for rclpy.executors.ExternalShutdownException."""

NODE_NAME = 'metric3d_depth'

# Drop reasons added by the node (the batching core defines the pairing, stamp and scheduler ones).
UNSUPPORTED_ENCODING = 'unsupported_encoding'
MALFORMED_IMAGE = 'malformed_image'
INVALID_CAMERA_INFO = 'invalid_camera_info'
CAMERA_INFO_SIZE_MISMATCH = 'camera_info_size_mismatch'
INFERENCE_ERROR = 'inference_error'
INTERNAL_ERROR = 'internal_error'
PUBLISH_ERROR = reasons.PUBLISH_ERROR

COLOUR_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')
_STAMP_REASONS = (reasons.DUPLICATE_STAMP, reasons.OUT_OF_ORDER_STAMP, reasons.STALE)


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def copy_header(header: Header) -> Header:
    """A new Header with the same stamp and frame_id (the input message may be reused by its publisher)."""
    out = Header()
    out.stamp.sec = header.stamp.sec
    out.stamp.nanosec = header.stamp.nanosec
    out.frame_id = header.frame_id
    return out


@dataclass(frozen=True)
class _Info:
    """A received CameraInfo: its fields, or why it is unusable."""

    fields: CameraInfoFields | None
    error: str | None = None


@dataclass
class _Pending:
    """A converted image waiting for pairing."""

    header: Header
    rgb: object
    stamp_ns: int
    request: OutputRequest
    received_s: float
    reason: str = ''


class _CameraInput:
    """Per-camera input state: pairing buffer, an image waiting for its CameraInfo, error notes."""

    def __init__(self, name: str, pairer: CameraInfoPairer) -> None:
        self.name = name
        self.pairer = pairer
        self.subscriptions: list = []
        self.held: _Pending | None = None
        self.last_error = ''
        self.skipped_no_subscriber = 0
        self.intrinsics_cache: tuple[CameraInfoFields, int, int, CameraIntrinsics] | None = None
        self.info_warnings: tuple[str, ...] = ()
        self.lock = threading.Lock()
        # images may come on a receiver thread, CameraInfo on the executor: pairing, holding and submitting a
        # camera's frame happen under this lock
        self.pair_lock = threading.Lock()
        self.receiver_deaths = 0


class DepthNode(LifecycleNode):
    """Metric depth for several cameras with cross-camera batching (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._startup_problems: dict[str, str] = {}
        for problem in declare_parameters(self):
            self._startup_problems[problem.split(':', 1)[0]] = problem
        self._config: NodeConfig | None = None
        self._engine = None
        self._input_pool = None
        self._scheduler: BatchScheduler | None = None
        self._stats: DiagnosticsStats | None = None
        self._inputs: dict[str, _CameraInput] = {}
        self._outputs: dict[str, CameraOutputs] = {}
        self._diag_pub = None
        self._diag_timer = None
        self._jump_handle = None
        self._throttle = Throttle(5.0)
        self._timing = TimingStats()
        self._output_thread: _OutputThread | None = None
        self._output_pool = None
        self._state = 'unconfigured'
        self._state_lock = threading.RLock()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------------------------------ state
    @property
    def state(self) -> str:
        """'unconfigured', 'inactive' or 'active' (as far as this node's resources are concerned)."""
        return self._state

    @property
    def config(self) -> NodeConfig | None:
        return self._config

    @property
    def engine(self):
        return self._engine

    @property
    def stats(self) -> DiagnosticsStats | None:
        return self._stats

    def autostart(self) -> bool:
        """Configure and activate through the lifecycle state machine; True when active."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def _on_set_parameters(self, params) -> SetParametersResult:
        names = [p.name for p in params if p.name in SPECS]
        if names and self._state != 'unconfigured':
            return SetParametersResult(
                successful=False,
                reason=(f'{", ".join(names)}: parameters are read at configure; deactivate and clean up the '
                        'node, set them, then configure again'),
            )
        for name in names:
            self._startup_problems.pop(name, None)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------------- transitions
    def on_configure(self, state) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            config = read_node_config(self, list(self._startup_problems.values()))
        except ConfigError as exc:
            log.error(f'configure failed: {exc}\nFix these parameters and configure again.')
            return TransitionCallbackReturn.FAILURE
        try:
            engine = self._build_engine(config)
        except Exception as exc:  # noqa: BLE001 - any failure to load must fail configure, not crash
            log.error(f'configure failed: building the {config.engine.backend!r} engine '
                      f'(variant {config.engine.variant}, device {config.engine.device}) raised: {exc}')
            return TransitionCallbackReturn.FAILURE
        with self._state_lock:
            self._config = config
            self._engine = engine
            self._throttle = Throttle(config.log_throttle_s)
            self._state = 'inactive'
        log.info(
            f'configured: cameras {list(config.cameras)}, backend {config.engine.backend}, variant '
            f'{config.engine.variant}, device {getattr(engine, "device", config.engine.device)}, network '
            f'{config.engine.net_height_px}x{config.engine.net_width_px}, '
            f'max batch {config.scheduler.max_batch_size}'
        )
        return TransitionCallbackReturn.SUCCESS

    def _build_engine(self, config: NodeConfig):
        if config.malloc_tuning and not keep_large_allocations():
            self.get_logger().warning('malloc_tuning: this C library has no mallopt; left as it is')
        if config.gil_switch_interval_ms > 0.0:
            sys.setswitchinterval(config.gil_switch_interval_ms / 1000.0)
        if config.engine_process:
            # The child process owns the device and imports torch; this process stays light.
            from metric3d_ros.core.engine.process_engine import ProcessEngine

            engine = ProcessEngine(config.engine, torch_threads=config.torch_threads,
                                   malloc_tuning=config.malloc_tuning)
        else:
            import torch

            from metric3d_ros.core.engine.engine import DepthEngine  # imports torch: only when configuring

            if config.torch_threads > 0:
                torch.set_num_threads(config.torch_threads)
            engine = DepthEngine(config.engine)
        try:
            if config.engine.warmup_iters > 0:
                engine.warmup()
        except Exception:
            engine.close()
            raise
        return engine

    def on_activate(self, state) -> TransitionCallbackReturn:
        try:
            self._activate()
        except Exception as exc:  # noqa: BLE001 - report and stay inactive
            self.get_logger().error(f'activate failed: {exc!r}')
            self._deactivate()
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._cleanup()
        return super().on_cleanup(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.release()
        return super().on_shutdown(state)

    def on_error(self, state) -> TransitionCallbackReturn:
        self.get_logger().error('lifecycle error: releasing everything and returning to unconfigured')
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        """Deactivate and clean up whatever is active or configured (also used at exit)."""
        self._deactivate()
        self._cleanup()

    def _activate(self) -> None:
        config = self._config
        if config is None:
            raise RuntimeError('activate before configure')
        stats = DiagnosticsStats(config.stats, config.cameras)
        scheduler = BatchScheduler(
            config.scheduler, self._process_batch, self._publish_result, self._now_ns,
            stats=stats, log_error=self._log_error,
        )
        out_qos = config.output_qos.profile()
        in_qos = config.input_qos.profile()
        with self._state_lock:
            self._stats = stats
            self._scheduler = scheduler
            for name in config.cameras:
                self._outputs[name] = CameraOutputs(self, name, config.outputs, out_qos)
            self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', diagnostics_qos())
            self._timing = TimingStats()
            if config.publisher_processes > 0:
                from metric3d_ros.ros.output_process import OutputProcessPool

                self._output_pool = OutputProcessPool(
                    self, self._outputs, config.outputs, config.output_qos, config.publisher_processes,
                    self._on_published, malloc_tuning=config.malloc_tuning)
            elif config.publish_thread:
                depth = 2 * config.scheduler.max_batch_size
                self._output_thread = _OutputThread(self._publish_now, depth=depth)
            scheduler.start()
            for name in config.cameras:
                self._inputs[name] = cam = _CameraInput(name, CameraInfoPairer(config.pairing))
                cam.subscriptions.append(self.create_subscription(
                    CameraInfo, f'{name}/camera_info', lambda msg, c=cam: self._on_info(c, msg), in_qos))
                if config.input_transport == 'compressed':
                    cam.subscriptions.append(self.create_subscription(
                        CompressedImage, f'{name}/image/compressed',
                        lambda msg, c=cam: self._on_image(c, msg), in_qos))
                elif config.input_processes == 0:
                    cam.subscriptions.append(self.create_subscription(
                        Image, f'{name}/image', lambda msg, c=cam: self._on_image(c, msg), in_qos))
            if config.input_processes > 0:
                from metric3d_ros.ros.input_process import InputProcessPool

                inputs = dict(self._inputs)
                self._input_pool = InputProcessPool(
                    self, {name: self.resolve_topic_name(f'{name}/image') for name in config.cameras},
                    config.input_qos, config.input_processes,
                    lambda name, image: self._on_image(inputs[name], image),
                    lambda name, reason, detail: self._on_receiver_event(inputs[name], reason, detail),
                    malloc_tuning=config.malloc_tuning, slots_per_camera=config.scheduler.queue_depth + 3)
            self._diag_timer = self.create_timer(config.diagnostics_period_s, self._publish_diagnostics)
            self._add_jump_handler()
            self._state = 'active'
        self.get_logger().info(f'active: {len(config.cameras)} camera(s)')

    def _deactivate(self) -> None:
        input_pool, self._input_pool = self._input_pool, None
        if input_pool is not None:  # no more images from receiver threads
            input_pool.close()
        with self._state_lock:
            for cam in self._inputs.values():
                for sub in cam.subscriptions:
                    self.destroy_subscription(sub)
                cam.subscriptions = []
            self._inputs = {}
            if self._diag_timer is not None:
                self.destroy_timer(self._diag_timer)
                self._diag_timer = None
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None and not scheduler.stop(timeout_s=30.0):
            self.get_logger().error('the inference worker did not stop within 30 s')
        output_thread, self._output_thread = self._output_thread, None
        if output_thread is not None:
            output_thread.stop()
        pool, self._output_pool = self._output_pool, None
        if pool is not None:
            pool.close()
        with self._state_lock:
            for outputs in self._outputs.values():
                outputs.destroy()
            self._outputs = {}
            if self._diag_pub is not None:
                self.destroy_publisher(self._diag_pub)
                self._diag_pub = None
            handle, self._jump_handle = self._jump_handle, None
            if handle is not None:
                handle.unregister()
            if self._state == 'active':
                self._state = 'inactive'

    def _cleanup(self) -> None:
        with self._state_lock:
            engine, self._engine = self._engine, None
            self._config = None
            self._state = 'unconfigured'
        if engine is not None:
            try:
                engine.close()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                self.get_logger().error(f'closing the engine raised: {exc!r}')
            del engine
            gc.collect()
            torch = sys.modules.get('torch')
            if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.empty_cache()

    def _add_jump_handler(self) -> None:
        """Forget the last stamps when ROS time jumps back (a looping bag), so frames are not out-of-order."""
        from rclpy.clock import JumpThreshold

        def on_jump(_info) -> None:
            scheduler = self._scheduler
            if scheduler is not None:
                scheduler.reset_stamps()

        threshold = JumpThreshold(min_forward=None, min_backward=Duration(seconds=-0.5), on_clock_change=True)
        self._jump_handle = self.get_clock().create_jump_callback(threshold, post_callback=on_jump)

    # ---------------------------------------------------------------------------------------- helpers
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _log_error(self, message: str) -> None:
        self.get_logger().error(message)

    def _reject(self, cam: _CameraInput, reason: str, detail: str, stamp_ns: int | None = None) -> None:
        """Drop an input frame before the scheduler: count it, note it, log it (throttled)."""
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.reject(cam.name, reason)
        self._note(cam, reason, detail, stamp_ns)

    def _note(self, cam: _CameraInput, reason: str, detail: str, stamp_ns: int | None) -> None:
        cam.last_error = f'{reason}: {detail}'
        suppressed = self._throttle.poll((reason, cam.name))
        if suppressed is None:
            return
        when = '' if stamp_ns is None else f' (stamp {stamp_ns / 1e9:.6f})'
        more = f' [{suppressed} similar dropped frames not logged]' if suppressed else ''
        self.get_logger().error(f'camera {cam.name}: frame dropped{when}, {reason}: {detail}{more}')

    # ---------------------------------------------------------------------------------- input callbacks
    def _on_info(self, cam: _CameraInput, msg: CameraInfo) -> None:
        try:
            stamp_ns = stamp_to_ns(msg.header.stamp)
            try:
                info = _Info(camera_info_to_fields(msg))
            except (CalibrationError, ValueError) as exc:
                info = _Info(None, str(exc))
            with cam.pair_lock:  # adding the info and re-pairing a held frame are one step per camera
                cam.pairer.add(info, stamp_ns)
                with cam.lock:
                    held, cam.held = cam.held, None
                if held is not None:
                    self._pair_and_submit(cam, held, may_hold=True)
        except Exception as exc:  # noqa: BLE001 - a callback must never take the node down
            self._note(cam, INTERNAL_ERROR, f'CameraInfo callback raised {exc!r}', None)

    def _on_image(self, cam: _CameraInput, msg) -> None:
        start_s = time.perf_counter()
        try:
            self._handle_image(cam, msg)
        except Exception as exc:  # noqa: BLE001 - a callback must never take the node down
            self._reject(cam, INTERNAL_ERROR, f'image callback raised {exc!r}')
        self._timing.add('image_callback', (time.perf_counter() - start_s) * 1e3)

    def _on_receiver_event(self, cam: _CameraInput, reason: str, detail: str) -> None:
        """A receiver process dropped a frame (no free slot, unreadable bytes) or died."""
        if reason == 'receiver_died':
            cam.receiver_deaths += 1
            cam.last_error = f'receiver_died: {detail}'
            self.get_logger().error(f'camera {cam.name}: {detail}')
        else:
            overflow = reason == reasons.QUEUE_OVERFLOW
            self._reject(cam, reasons.QUEUE_OVERFLOW if overflow else MALFORMED_IMAGE, detail)

    def _handle_image(self, cam: _CameraInput, msg) -> None:
        outputs = self._outputs.get(cam.name)
        scheduler = self._scheduler
        if outputs is None or scheduler is None:
            return
        request = outputs.wanted_request()
        if request is None:
            cam.skipped_no_subscriber += 1
            scheduler.stats.record_input(cam.name)
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self._timing.add('stamp_to_receive', (self._now_ns() - stamp_ns) / 1e6)
        try:
            rgb = compressed_to_rgb8(msg) if isinstance(msg, CompressedImage) else image_to_rgb8(msg)
            if rgb.shape[0] == 0 or rgb.shape[1] == 0:
                raise ImageConversionError(f'image is empty ({msg.width}x{msg.height})')
        except (ImageConversionError, ValueError) as exc:
            encoding = getattr(msg, 'encoding', None)
            reason = UNSUPPORTED_ENCODING if encoding is not None and encoding not in COLOUR_ENCODINGS \
                else MALFORMED_IMAGE
            self._reject(cam, reason, str(exc), stamp_ns)
            return
        pending = _Pending(copy_header(msg.header), rgb, stamp_ns, request, time.monotonic())
        with cam.pair_lock:  # against a CameraInfo callback on another thread (input_processes)
            with cam.lock:
                replaced, cam.held = cam.held, None
            if replaced is not None:
                self._reject(cam, replaced.reason, 'no matching CameraInfo arrived before the next image',
                             replaced.stamp_ns)
            self._pair_and_submit(cam, pending, may_hold=True)

    def _pair_and_submit(self, cam: _CameraInput, pending: _Pending, may_hold: bool) -> None:
        config = self._config
        scheduler = self._scheduler
        if config is None or scheduler is None:
            return
        match = cam.pairer.match(pending.stamp_ns)  # (the callers hold cam.pair_lock)
        if not match.ok:
            waited_ms = (time.monotonic() - pending.received_s) * 1e3
            if may_hold and match.reason != reasons.CAMERA_INFO_TOO_NEW and waited_ms < config.info_wait_ms:
                pending.reason = match.reason
                with cam.lock:
                    cam.held = pending
                return
            self._reject(cam, match.reason, _pairing_detail(match.reason, config), pending.stamp_ns)
            return
        info: _Info = match.info
        if info.error is not None:
            self._reject(cam, INVALID_CAMERA_INFO, info.error, pending.stamp_ns)
            return
        height, width = pending.rgb.shape[:2]
        try:
            resolved = self._intrinsics(cam, info.fields, width, height, config.camera_info_source)
        except CalibrationError as exc:
            try:
                described = published_size(info.fields)
            except CalibrationError:
                described = None
            reason = CAMERA_INFO_SIZE_MISMATCH if described is not None and described != (width, height) \
                else INVALID_CAMERA_INFO
            self._reject(cam, reason, str(exc), pending.stamp_ns)
            return
        frame = Frame(pending.rgb, resolved.intrinsics, cam.name, pending.stamp_ns, pending.header.frame_id)
        job = Job(cam.name, pending.header, info.fields, pending.request)
        outcome = scheduler.submit(cam.name, (frame, job), pending.stamp_ns)
        if outcome is not None and outcome not in (PAUSED, STOPPED):
            self._note(cam, outcome, _stamp_detail(outcome, cam, scheduler), pending.stamp_ns)

    def _intrinsics(self, cam: _CameraInput, fields: CameraInfoFields, width: int, height: int,
                    source: str) -> CameraIntrinsics:
        # Keyed by the object itself (held, compared with `is`): an id() of a freed CameraInfo can be reused.
        cached = cam.intrinsics_cache
        if cached is not None and cached[0] is fields and cached[1:3] == (width, height):
            return cached[3]
        resolved = intrinsics_from_camera_info(fields, width, height, source=source)
        cam.intrinsics_cache = (fields, width, height, resolved)
        if resolved.warnings != cam.info_warnings:
            cam.info_warnings = resolved.warnings
            for warning in resolved.warnings:
                self.get_logger().warning(f'camera {cam.name}: {warning}')
        return resolved

    # ------------------------------------------------------------------------------------ worker side
    def _process_batch(self, items: list) -> list:
        engine = self._engine
        if engine is None:
            raise RuntimeError('no engine (the node was cleaned up)')
        frames = [frame for frame, _ in items]
        requests = [job.request for _, job in items]
        now_ns = self._now_ns()
        for frame in frames:  # receive + pairing + waiting for the batch's other cameras
            self._timing.add('stamp_to_dispatch', (now_ns - frame.stamp_ns) / 1e6)
        if self._config is not None and self._config.engine_process:
            # no copy back: the outputs stay in the engine process's shared memory until published
            # (a slot still held after 5 s means publishing is stuck: fail this batch, do not hang)
            results = engine.infer(frames, requests, shared=True, slot_timeout_s=5.0)
        else:
            results = engine.infer(frames, requests)
        if results and results[0].timings_ms:
            self._timing.add_all('engine_', results[0].timings_ms)
        now_ns = self._now_ns()
        for frame in frames:  # ... + the engine call; publishing follows
            self._timing.add('stamp_to_result', (now_ns - frame.stamp_ns) / 1e6)
        return results

    def _publish_result(self, item, result) -> str | None:
        _, job = item
        if not result.ok:
            cam = self._inputs.get(job.camera_id)
            if cam is not None:
                self._note(cam, INFERENCE_ERROR, result.error, result.stamp_ns)
            return INFERENCE_ERROR
        if self._outputs.get(job.camera_id) is None:
            return STOPPED
        pool = self._output_pool
        output_thread = self._output_thread
        if pool is not None:
            pool.submit(job, result)
        elif output_thread is not None:
            output_thread.put(job, result)
        else:
            self._publish_now(job, result)
        return None

    def _publish_now(self, job: Job, result) -> None:
        outputs = self._outputs.get(job.camera_id)
        if outputs is None:
            return
        start_s = time.perf_counter()
        outputs.publish(job, result)
        self._record_published((time.perf_counter() - start_s) * 1e3, result.stamp_ns, self._now_ns())

    def _on_published(self, job: Job, result, publish_ms: float, error: str | None, end_ns: int = 0) -> None:
        """A publisher process reports a result published (called on its acknowledgement thread)."""
        if error is not None:
            cam = self._inputs.get(job.camera_id)
            scheduler = self._scheduler
            if scheduler is not None:
                scheduler.stats.record_drop(job.camera_id, PUBLISH_ERROR)
            if cam is not None:
                self._note(cam, PUBLISH_ERROR, error, result.stamp_ns)
            return
        # The helper's system time when the frame's last output was published; with simulated time the
        # stamps are not system times, so the node's clock when the report arrives is used instead.
        simulated = getattr(self.get_clock(), 'ros_time_is_active', False)
        self._record_published(publish_ms, result.stamp_ns,
                               end_ns if end_ns and not simulated else self._now_ns())

    def _record_published(self, publish_ms: float, stamp_ns: int, published_ns: int) -> None:
        self._timing.add('publish', publish_ms)
        self._timing.add('stamp_to_publish', (published_ns - stamp_ns) / 1e6)

    # ------------------------------------------------------------------------------------- diagnostics
    def _expire_held(self) -> None:
        config = self._config
        if config is None:
            return
        for cam in list(self._inputs.values()):
            with cam.lock:
                held = cam.held
                if held is None or (time.monotonic() - held.received_s) * 1e3 < config.info_wait_ms:
                    continue
                cam.held = None
            self._reject(cam, held.reason, _pairing_detail(held.reason, config), held.stamp_ns)

    def _publish_diagnostics(self) -> None:
        try:
            self._expire_held()
            msg = self.diagnostics_message()
            if msg is not None and self._diag_pub is not None:
                self._diag_pub.publish(msg)
        except Exception as exc:  # noqa: BLE001 - diagnostics must not take the node down
            self.get_logger().error(f'publishing diagnostics failed: {exc!r}')

    def diagnostics_message(self):
        """The DiagnosticArray for now (None before activation)."""
        stats, config = self._stats, self._config
        if stats is None or config is None:
            return None
        name = self.get_fully_qualified_name()
        cameras = []
        for camera_id in config.cameras:
            cam = self._inputs.get(camera_id)
            outputs = self._outputs.get(camera_id)
            idle = outputs is not None and outputs.wanted_request() is None
            extras = CameraExtras(
                idle=idle,
                skipped_no_subscriber=cam.skipped_no_subscriber if cam else 0,
                last_error=cam.last_error if cam else '',
                info_warnings=cam.info_warnings if cam else (),
            )
            cameras.append((stats.snapshot(camera_id), extras))
        statuses = [camera_status(name, snap, extras) for snap, extras in cameras]
        engine_cfg = config.engine
        node_extras = NodeExtras(state=self._state, values={
            'backend': engine_cfg.backend,
            'variant': engine_cfg.variant,
            'device': str(getattr(self._engine, 'device', engine_cfg.device)),
            'net_size_px': f'{engine_cfg.net_height_px}x{engine_cfg.net_width_px}',
            'max_batch_size': str(config.scheduler.max_batch_size),
            'max_wait_ms': f'{config.scheduler.max_wait_ms:g}',
            'publish_thread': str(config.publish_thread).lower(),
            **self._timing.summary(),
        })
        statuses.insert(0, engine_status(name, stats.batch_snapshot(), cameras, node_extras))
        return diagnostic_array(self.get_clock().now().to_msg(), statuses)


class _OutputThread:
    """Publishes results in FIFO order on its own thread, so that the next inference overlaps publishing.

    ``put`` blocks while ``depth`` results are waiting (back-pressure on the inference worker).
    """

    def __init__(self, publish, depth: int) -> None:
        self._publish = publish
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread = threading.Thread(target=self._run, name='metric3d-publish', daemon=True)
        self._thread.start()

    def put(self, job: Job, result) -> None:
        self._queue.put((job, result))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Publish what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._publish(*item)
            except Exception:  # noqa: BLE001 - one failed publish must not end the thread
                pass
            item = None  # release the result now (with the engine process it holds a shared-memory slot)


def _pairing_detail(reason: str, config: NodeConfig) -> str:
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


def _stamp_detail(reason: str, cam: _CameraInput, scheduler: BatchScheduler) -> str:
    if reason == reasons.DUPLICATE_STAMP:
        return 'same stamp as the previous image of this camera'
    if reason == reasons.OUT_OF_ORDER_STAMP:
        return 'stamp older than the previous image of this camera'
    if reason == reasons.STALE:
        return (f'older than max_input_age_ms={scheduler.config.max_input_age_ms:g} w.r.t. ROS time '
                '(clock skew between hosts, or use_sim_time mismatch?)')
    return reason


def _autostart(node: DepthNode) -> bool:
    """``node.autostart()``; False instead of rclpy's error when the context was shut down meanwhile (Ctrl-C
    during start-up: Jazzy's lifecycle state machine raises RCLError publishing the transition)."""
    try:
        return node.autostart()
    except Exception:
        if rclpy.ok():
            raise
        return False


def main(args: list[str] | None = None) -> int:
    """Console entry point ``depth_node``: ``depth_node --ros-args --params-file config/depth.yaml``."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = DepthNode()
        # SingleThreadedExecutor: callbacks only convert and enqueue; inference has its own thread.
        # (rclpy.experimental.EventsExecutor hung in our tests with this node; MultiThreadedExecutor is
        # slower for image traffic.)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.get_parameter('autostart').value and not _autostart(node):
            if rclpy.ok():
                node.get_logger().fatal('autostart: configure/activate failed (see the errors above); exit')
                code = 1
            else:  # Ctrl-C (or an external shutdown) during start-up: a requested exit, not a failure
                node.get_logger().info('shutdown requested during start-up; exiting')
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.release()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
