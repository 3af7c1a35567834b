"""A camera group's fused multi-camera cloud ``fused_points``: extrinsics (tf2 or static), the stamp policy,
counting and publishing. The math is ``core.geometry.fusion`` (torch, on the group engine's device).

Once per batch (``BatchScheduler``'s ``on_batch``: on the group's inference thread, after the batch's
per-camera outputs), ``FusedOutput.publish_batch``:

1. does nothing while ``fused_points`` has no subscriber (and then the group asks the engine for no depth on
   its behalf: a camera without its own subscribers costs no inference);
2. leaves out a camera whose frame has no depth (its inference failed, or it was submitted before the
   subscriber came): ``fused_no_depth``;
3. applies the stamp policy (``fusion.select_cameras``): the cloud carries the batch's newest image stamp;
   a camera older than that by more than ``fused.stamp_tolerance_ms`` is left out: ``fused_stale``;
4. looks up each camera's extrinsic at its image's stamp: tf2 (``base_frame`` <- the image's frame_id) or
   the static extrinsics; a missing one leaves the camera out: ``transform_missing``, with an error logged
   at most once per ``log_throttle_s`` per camera;
5. fuses the rest, in camera index order (the position in ``cameras``), and publishes one unorganized
   PointCloud2 (x y z camera [rgb], ``codec.cloud``) in ``fused.base_frame``.

A camera left out of the fused cloud is not a dropped frame of that camera (its own outputs were published):
the omissions are counted here, by reason and camera, and reported in the group's /diagnostics status
(``fused_published``, ``fused_points_last``, ``fused_omitted_<reason>``, ``fused_omitted``).
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from metric3d_ros.codec.cloud import unorganized_cloud_cdr
from metric3d_ros.core.batching import reasons
from metric3d_ros.core.batching.clock import ClockNs, monotonic_ns
from metric3d_ros.core.batching.throttle import Throttle
from metric3d_ros.core.engine.types import OutputRequest
from metric3d_ros.core.geometry.fusion import CameraDepth, RigidTransform, fuse_depths, select_cameras
from metric3d_ros.ros.params import FusedSettings, OutputConfig

#: Topic of the fused cloud, relative to the node's namespace (``<group>/fused_points`` with several groups).
FUSED_TOPIC = 'fused_points'


class ExtrinsicMissing(LookupError):
    """No extrinsic for a camera at an image's stamp (the message says why)."""


class StaticExtrinsics:
    """Fixed base-from-optical transforms per camera (``extrinsics.<camera>.*``, ``fused.rig_file``)."""

    def __init__(self, transforms: Mapping[str, RigidTransform]) -> None:
        self._transforms = dict(transforms)

    def lookup(self, camera_id: str, frame_id: str, stamp_ns: int) -> RigidTransform:
        try:
            return self._transforms[camera_id]
        except KeyError:
            raise ExtrinsicMissing(f'no static extrinsics for camera {camera_id!r}') from None


class TfExtrinsics:
    """Base-from-optical transforms from a tf2 buffer at each image's stamp.

    buffer: anything with tf2_ros.Buffer's ``lookup_transform(target_frame, source_frame, time, timeout)``
        returning a geometry_msgs/TransformStamped (tests pass a stand-in).
    missing_errors: the exceptions that mean "no such transform now" (default: tf2_ros.TransformException,
        the base of its lookup, connectivity and extrapolation errors).
    """

    def __init__(self, buffer, base_frame: str, timeout_ms: float = 0.0,
                 missing_errors: tuple[type[BaseException], ...] | None = None) -> None:
        if missing_errors is None:
            import tf2_ros

            missing_errors = (tf2_ros.TransformException,)
        self._buffer = buffer
        self._base_frame = base_frame
        self._timeout_ns = round(timeout_ms * 1e6)
        self._missing = tuple(missing_errors)

    def lookup(self, camera_id: str, frame_id: str, stamp_ns: int) -> RigidTransform:
        from rclpy.duration import Duration
        from rclpy.time import Time

        if not frame_id:
            raise ExtrinsicMissing(f'camera {camera_id!r}: the image has an empty frame_id, so tf2 cannot '
                                   'place it; set the driver\'s frame_id')
        try:
            msg = self._buffer.lookup_transform(self._base_frame, frame_id, Time(nanoseconds=stamp_ns),
                                                Duration(nanoseconds=self._timeout_ns))
        except self._missing as exc:
            raise ExtrinsicMissing(f'no transform {self._base_frame} <- {frame_id} at stamp '
                                   f'{stamp_ns / 1e9:.6f}: {exc} (is it on /tf or /tf_static?)') from exc
        t, q = msg.transform.translation, msg.transform.rotation
        try:
            return RigidTransform((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
        except ValueError as exc:
            raise ExtrinsicMissing(f'transform {self._base_frame} <- {frame_id} is invalid: {exc}') from exc


def make_extrinsics(node, settings: FusedSettings):
    """``(extrinsics, listener)`` for ``settings``: static ones, or a tf2 buffer filled by a
    TransformListener on ``node`` (keep the listener alive while the output exists; None for static)."""
    if settings.source == 'static':
        return StaticExtrinsics(settings.static), None
    import tf2_ros

    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer, node, spin_thread=False)
    return TfExtrinsics(buffer, settings.fusion.base_frame, settings.tf_timeout_ms), listener


def with_depth(request: OutputRequest | None, outputs: OutputConfig) -> OutputRequest:
    """``request`` with the depth the fused cloud needs (a depth-only request when the camera's own outputs
    want nothing)."""
    if request is None:
        return OutputRequest(outputs=frozenset({'depth'}), resolution=outputs.resolution,
                             min_depth_m=outputs.min_depth_m, max_depth_m=outputs.max_depth_m)
    if 'depth' in request.outputs:
        return request
    return replace(request, outputs=request.outputs | {'depth'})


class FusedOutput:
    """A group's ``fused_points`` (module docstring).

    publisher: the PointCloud2 publisher (anything with ``publish(bytes)`` and ``get_subscription_count()``);
        the group sets it to None when it destroys it (deactivate).
    extrinsics: ``StaticExtrinsics`` / ``TfExtrinsics`` (``lookup(camera_id, frame_id, stamp_ns)``).
    device: where the fusion runs (the group engine's device).
    log_error / log_warning: receive messages, at most one per ``log_throttle_s`` per reason and camera
        (on the ``monotonic_ns`` clock).
    """

    def __init__(self, publisher, settings: FusedSettings, extrinsics, device, *,
                 log_error: Callable[[str], None], log_warning: Callable[[str], None],
                 log_throttle_s: float, topic: str = FUSED_TOPIC,
                 monotonic_ns: ClockNs = monotonic_ns) -> None:
        self.publisher = publisher
        self._settings = settings
        self._extrinsics = extrinsics
        self._device = device
        self._log_error = log_error
        self._log_warning = log_warning
        self._throttle = Throttle(log_throttle_s, monotonic_ns)
        self.topic = topic
        self._lock = threading.Lock()
        self._omitted: Counter[tuple[str, str]] = Counter()
        self._published = 0
        self._points_last = 0
        self._errors = 0

    def wanted(self) -> bool:
        """True while ``fused_points`` has a subscriber."""
        publisher = self.publisher
        return publisher is not None and publisher.get_subscription_count() > 0

    def _omit(self, camera_id: str, reason: str, detail: str, error: bool) -> None:
        with self._lock:
            self._omitted[(camera_id, reason)] += 1
        suppressed = self._throttle.poll((reason, camera_id))
        if suppressed is None:
            return
        more = f' [{suppressed} similar not logged]' if suppressed else ''
        (self._log_error if error else self._log_warning)(
            f'camera {camera_id}: left out of {self.topic}, {reason}: {detail}{more}')

    def publish_batch(self, items: Sequence, results: Sequence) -> None:
        """Fuse and publish one batch (module docstring); ``items`` are the scheduler's (frame, job)."""
        if not self.wanted():
            return
        fusion = self._settings.fusion
        entries = []
        for (frame, job), result in zip(items, results, strict=True):
            depth = result.arrays.get('depth_m') if result.ok else None
            if depth is None or result.intrinsics is None:
                why = result.error if not result.ok else 'the frame was inferred without depth (the ' \
                    'subscriber came after it was submitted)'
                self._omit(job.camera_id, reasons.FUSED_NO_DEPTH, why, error=False)
                continue
            entries.append((frame, job, result))
        if not entries:
            return
        newest_ns, kept = select_cameras([job.stamp_ns for _, job, _ in entries], fusion.stamp_tolerance_ms)
        cameras = []
        for (frame, job, result), inside in zip(entries, kept, strict=True):
            if not inside:
                self._omit(job.camera_id, reasons.FUSED_STALE,
                           f'stamp {job.stamp_ns / 1e9:.6f} is {(newest_ns - job.stamp_ns) / 1e6:.1f} ms '
                           f'before the batch\'s newest image, more than fused.stamp_tolerance_ms='
                           f'{fusion.stamp_tolerance_ms:g}', error=False)
                continue
            try:
                pose = self._extrinsics.lookup(job.camera_id, job.frame_id, job.stamp_ns)
            except ExtrinsicMissing as exc:
                self._omit(job.camera_id, reasons.TRANSFORM_MISSING, str(exc), error=True)
                continue
            cameras.append(CameraDepth(self._settings.camera_index[job.camera_id], result.arrays['depth_m'],
                                       result.intrinsics, pose, frame.image_rgb if fusion.rgb else None))
        if not cameras:
            return
        cameras.sort(key=lambda cam: cam.index)  # the same order whatever order the batch had
        try:
            cloud = fuse_depths(cameras, fusion, self._device)
            data = unorganized_cloud_cdr(cloud.xyz, newest_ns, fusion.base_frame,
                                         camera_index=cloud.camera_index, rgb=cloud.rgb)
            publisher = self.publisher
            if publisher is None:  # deactivated meanwhile
                return
            publisher.publish(data)
        except Exception as exc:  # noqa: BLE001 - counted and logged, never fatal
            with self._lock:
                self._errors += 1
            if self._throttle.poll(('fused_error',)) is not None:
                self._log_error(f'{self.topic}: fusing or publishing a batch failed: {exc!r}')
            return
        with self._lock:
            self._published += 1
            self._points_last = len(cloud)

    def report(self) -> dict[str, str]:
        """Counters for /diagnostics (keys ``fused_*``)."""
        with self._lock:
            by_reason: Counter[str] = Counter()
            for (_, reason), count in self._omitted.items():
                by_reason[reason] += count
            out = {'fused_topic': self.topic, 'fused_subscribed': str(self.wanted()).lower(),
                   'fused_published': str(self._published),
                   'fused_points_last': str(self._points_last), 'fused_errors': str(self._errors)}
            for reason in (reasons.FUSED_NO_DEPTH, reasons.FUSED_STALE, reasons.TRANSFORM_MISSING):
                out[f'fused_omitted_{reason}'] = str(by_reason[reason])
            out['fused_omitted'] = ','.join(f'{cam}:{reason}={count}'
                                            for (cam, reason), count in sorted(self._omitted.items()))
        return out

    def omitted(self) -> dict[tuple[str, str], int]:
        """(camera, reason) -> cameras left out of the fused cloud so far."""
        with self._lock:
            return dict(self._omitted)
