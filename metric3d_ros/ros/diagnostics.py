"""/diagnostics messages of the depth node from the ROS-free statistics (``metric3d_ros.core.stats``).

One ``DiagnosticStatus`` per camera (name ``<node>: camera <cam>``), with input/output rates, drops by
reason, stamp-to-publish latency p50/p95/p99, inference time, batch sizes and an OK/WARN/ERROR level whose
message names the camera and the problem (e.g. ``camera right silent: no input for 4.2 s``), plus one
status for the node as a whole (``<node>: engine``) with the batch statistics and which cameras are silent
or failing.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from metric3d_ros.core.stats import BatchSnapshot, CameraSnapshot, Level


@dataclass(frozen=True)
class CameraExtras:
    """What the node knows about a camera beyond the statistics."""

    idle: bool = False
    """No output of the camera has a subscriber: frames are received but nothing is computed."""
    skipped_no_subscriber: int = 0
    last_error: str = ''
    info_warnings: tuple[str, ...] = ()
    subscribed: tuple[str, ...] = ()
    """Output keys ('depth', 'points', 'depth_info', ...) with at least one subscriber."""
    stamp_restarts: int = 0
    """Times the camera's stamp order restarted (a stamp far behind the last one: restarted driver)."""
    hint: str = ''
    """What may be wrong when the camera is silent although its image topic has a publisher."""


@dataclass(frozen=True)
class NodeExtras:
    """Node-wide facts for the engine status."""

    state: str = 'active'
    values: Mapping[str, str] = field(default_factory=dict)


def _is_silent(snap: CameraSnapshot) -> bool:
    return snap.level == Level.ERROR and snap.message.startswith('camera silent')


def _status_level(level: Level) -> bytes:
    return bytes([int(level)])


def camera_status(node_name: str, snap: CameraSnapshot, extras: CameraExtras) -> DiagnosticStatus:
    """The status of one camera."""
    level, message = snap.level, snap.message
    if extras.idle and level != Level.ERROR:
        level, message = Level.OK, 'idle: no subscriber on any output, nothing computed'
    elif level == Level.OK and extras.info_warnings:
        level, message = Level.WARN, extras.info_warnings[0]
    status = DiagnosticStatus()
    status.level = _status_level(level)
    status.name = f'{node_name}: camera {snap.camera_id}'
    status.hardware_id = snap.camera_id
    if _is_silent(snap) and level == Level.ERROR:
        status.message = f'camera {snap.camera_id} silent: {message[len("camera silent: "):]}'
    else:
        status.message = f'camera {snap.camera_id}: {message}'
    values = list(snap.key_values())
    values.append(('skipped_no_subscriber', str(extras.skipped_no_subscriber)))
    values.append(('idle', str(extras.idle).lower()))
    values.append(('subscribed_outputs', ','.join(extras.subscribed)))
    values.append(('stamp_restarts', str(extras.stamp_restarts)))
    if extras.last_error:
        values.append(('last_error', extras.last_error))
    if extras.hint:
        values.append(('hint', extras.hint))
    status.values = [KeyValue(key=k, value=v) for k, v in values]
    return status


def engine_status(
    node_name: str,
    batch: BatchSnapshot | None,
    cameras: Sequence[tuple[CameraSnapshot, CameraExtras]],
    extras: NodeExtras,
    failed: str = '',
) -> DiagnosticStatus:
    """The status of a camera group's engine (the node's, with one group): worst camera level, silent and
    failing cameras named, batch statistics; ERROR naming the group's failure when ``failed`` (e.g. its
    worker process died or its device failed)."""
    silent = [s.camera_id for s, _ in cameras if _is_silent(s)]
    failing = [s.camera_id for s, _ in cameras if s.level == Level.ERROR and s.camera_id not in silent]
    warned = [s.camera_id for s, e in cameras if s.level == Level.WARN and not e.idle]
    level = Level.OK
    parts = []
    if failed:
        level = Level.ERROR
        parts.append(failed)
    if silent:
        level = Level.ERROR
        parts.append(f'silent camera(s): {", ".join(silent)}')
    if failing:
        level = Level.ERROR
        parts.append(f'failing camera(s): {", ".join(failing)}')
    if warned:
        level = max(level, Level.WARN)
        parts.append(f'warning on camera(s): {", ".join(warned)}')
    status = DiagnosticStatus()
    status.level = _status_level(level)
    status.name = f'{node_name}: engine'
    status.hardware_id = node_name
    status.message = '; '.join(parts) if parts else f'{extras.state}, {len(cameras)} camera(s) ok'
    values = [('state', extras.state), ('silent_cameras', ','.join(silent))]
    if batch is not None:
        values.extend(batch.key_values())
    values.extend(sorted(extras.values.items()))
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values]
    return status


def status_line(snap: CameraSnapshot, extras: CameraExtras) -> str:
    """The periodic one-line status of a camera (``status_log_period_s``): rates, latency and drops over the
    diagnostics window, totals since activation, and the camera's state when it is not OK."""
    def num(value: float, spec: str) -> str:
        return 'n/a' if value is None or math.isnan(value) else format(value, spec)

    dropped = sum(snap.drops_window.values())
    reasons = ', '.join(f'{r} {n}' for r, n in sorted(snap.drops_window.items()) if n)
    line = (f'camera {snap.camera_id}: in {num(snap.input_rate_hz, ".1f")} Hz, out '
            f'{num(snap.output_rate_hz, ".1f")} Hz, latency p50 {num(snap.latency_p50_ms, ".0f")} ms p95 '
            f'{num(snap.latency_p95_ms, ".0f")} ms, dropped {dropped} of {snap.inputs_window}'
            f'{f" ({reasons})" if reasons else ""}; since activation {snap.inputs_total} in, '
            f'{snap.outputs_total} out, {sum(snap.drops_total.values())} dropped')
    if extras.idle:
        return f'{line}; idle: no subscriber on any output'
    if snap.level != Level.OK or extras.info_warnings:
        return f'{line}; {snap.message if snap.level != Level.OK else extras.info_warnings[0]}'
    return line


def diagnostic_array(stamp, statuses: Sequence[DiagnosticStatus]) -> DiagnosticArray:
    """A DiagnosticArray stamped ``stamp`` (builtin_interfaces/Time) holding ``statuses``."""
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = list(statuses)
    return msg
