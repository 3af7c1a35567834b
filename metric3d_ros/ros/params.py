"""ROS parameters of the depth node: declarations with descriptors, and validation into typed configuration.

Every parameter is declared once, in ``PARAMETERS``, with a ``ParameterDescriptor`` (description, range,
``read_only`` for the model and backend choices). The engine's parameters are not listed here: they derive
from the engine-option declaration (``metric3d_ros.core.config.engine_options``: every ``EngineConfig``
field whose ``OptionInfo.node`` is set, under its field name, 'onnx.<field>' for ONNX Runtime options), so
a new engine option reaches the node, the tools and their validation at once.

``read_node_config`` reads the parameters at *configure* and builds a frozen ``NodeConfig``; anything
wrong raises ``ConfigError`` listing every problem with the parameter name and what to change. Parameters
are read only at configure: to change one, deactivate and clean up the node, set it, and configure again
(``read_only`` ones only through overrides at start-up).

A value given at start-up that rclpy itself refuses (wrong type, outside the declared range) does not
crash the constructor: the default is kept and the problem is reported at configure, which then fails.
"""
from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterNotDeclaredException,
    ParameterUninitializedException,
)
from rclpy.parameter import Parameter

from metric3d_ros.core.batching.config import SchedulerConfig
from metric3d_ros.core.batching.pairing import PairingConfig
from metric3d_ros.core.config import EngineConfig, EngineOption, engine_options
from metric3d_ros.core.geometry.fusion import FusionConfig, RigidTransform, read_rig_extrinsics
from metric3d_ros.core.stats import StatsConfig
from metric3d_ros.ros.qos import DURABILITIES, RELIABILITIES, QosSettings

OUTPUT_RESOLUTIONS = ('camera', 'network')
DEPTH_ENCODINGS = ('32FC1', '16UC1')
CAMERA_INFO_SOURCES = ('auto', 'rectified', 'raw')
INPUT_TRANSPORTS = ('raw', 'compressed')
#: 'in_process': everything in the node process; 'group_workers': one worker process per camera group.
PROCESS_LAYOUTS = ('in_process', 'group_workers')
#: Where the fused cloud's extrinsics come from: 'auto' (static when any is given, else tf), 'tf', 'static'.
EXTRINSICS_SOURCES = ('auto', 'tf', 'static')
#: Per-camera static extrinsics: ``extrinsics.<camera>.<field>`` (declared per camera of ``cameras``).
EXTRINSICS_FIELDS = ('parent_frame', 'translation_m', 'rotation_xyzw')
_NAME_TOKEN = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
_DEVICE = re.compile(r'^(cpu|auto|cuda(:\d+)?)$')


class ConfigError(ValueError):
    """The node's parameters are invalid; the message lists every problem and what to change."""


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: name, default (its type is the parameter's type), description and constraints.

    int_range: (from, to, step) inclusive; float_range: (from, to) inclusive; choices: allowed strings
    (listed in ``additional_constraints`` and checked at configure); normalize: maps accepted spellings to
    the canonical value before the choices are checked (variant aliases).
    """

    name: str
    default: Any
    description: str
    read_only: bool = False
    int_range: tuple[int, int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    normalize: Any = None

    def descriptor(self) -> ParameterDescriptor:
        """The rclpy descriptor: float parameters accept integers too (``dynamic_typing``)."""
        desc = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.choices:
            desc.additional_constraints = 'one of: ' + ', '.join(self.choices)
        if self.int_range is not None:
            lo, hi, step = self.int_range
            desc.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=step)]
        if self.float_range is not None:
            lo, hi = self.float_range
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi))]
        if isinstance(self.default, float):
            # A YAML "15" for a float parameter would otherwise be a type error at start-up; the range
            # still applies to floats, and configure checks integers.
            desc.dynamic_typing = True
        return desc


def _p(name, default, description, **kw) -> ParamSpec:
    return ParamSpec(name, default, description, **kw)


_RO = {'read_only': True}

_NODE_FIRST: tuple[ParamSpec, ...] = (
    # --- node
    _p('autostart', True, 'configure and activate at start-up (false: wait for a lifecycle manager)'),
    _p('cameras', ['camera'], 'camera names; per camera NAME the node reads NAME/image, NAME/camera_info'),
    _p('input_transport', 'raw', "'raw' (NAME/image, sensor_msgs/Image) or 'compressed' "
       '(NAME/image/compressed, sensor_msgs/CompressedImage)', choices=INPUT_TRANSPORTS),
    _p('max_image_megapixels', 50.0, 'images with more pixels (width x height / 1e6) are dropped '
       '(image_too_large) before any conversion', float_range=(0.001, 1000.0)),
)
_NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    _p('process_layout', 'in_process', "'in_process': everything in the node process (CPU, small rigs); "
       "'group_workers': each camera group in its own worker process that subscribes, pairs, batches, "
       'infers and publishes its cameras', choices=PROCESS_LAYOUTS, **_RO),
    _p('camera_groups', [], 'camera groups, one entry per group listing its cameras separated by spaces or '
       'commas; every camera in exactly one group. Empty: one group with every camera', **_RO),
    _p('group_devices', [], "one torch device per camera group ('cuda:0', 'cuda:1', 'cpu'); empty: every "
       'group on the engine device', **_RO),
    # --- pairing and batching
    _p('camera_info_source', 'auto', "intrinsics from P ('rectified'), K ('raw') or P when set ('auto')",
       choices=CAMERA_INFO_SOURCES),
    _p('info_tolerance_ms', 50.0, 'largest |image stamp - CameraInfo stamp| when no exact match; '
       '-1: the latest CameraInfo of any age (static CameraInfo publishers)', float_range=(-1.0, 1e5)),
    _p('info_wait_ms', 100.0, 'how long an image waits for its CameraInfo when none matches yet',
       float_range=(0.0, 1e4)),
    _p('pad_to_max_batch', False, 'run every batch padded to max_batch_size: one CUDA graph and '
       'torch.compile specialization instead of one per power of two (shorter warm-up; a lone frame costs '
       'a full batch)',
       **_RO),
    _p('max_wait_ms', 15.0, "a batch goes out this long after its first frame even if some camera's "
       'frame is missing', float_range=(0.0, 1e4)),
    _p('queue_depth', 1, 'frames kept per camera while waiting (newest kept, oldest dropped and counted)',
       int_range=(1, 16, 1)),
    _p('max_input_age_ms', 500.0, 'frames older than this (stamp vs ROS time) are dropped; -1: never',
       float_range=(-1.0, 1e6)),
    _p('max_future_ms', 1000.0, 'frames stamped later than ROS time by more than this are dropped '
       '(future_stamp) and never become the camera\'s last stamp; -1: never', float_range=(-1.0, 1e9)),
    _p('stamp_restart_ms', 1000.0, 'a frame stamped more than this before its camera\'s last frame '
       'restarts that camera\'s stamp order (restarted driver, clock jump back; counted as stamp_restarts) '
       'instead of being dropped as out_of_order_stamp; -1: never', float_range=(-1.0, 1e9)),
    _p('camera_timeout_ms', 1000.0, 'a camera silent this long is no longer waited for',
       float_range=(1.0, 1e6)),
    # --- outputs
    _p('output_resolution', 'camera', "depth, normals, confidence and cloud at the 'camera' image size or "
       "the 'network' size (image scaled into the network input, no padding)", choices=OUTPUT_RESOLUTIONS),
    _p('depth_encoding', '32FC1', "'32FC1' metres (NaN invalid) or '16UC1' millimetres (0 invalid)",
       choices=DEPTH_ENCODINGS),
    _p('min_depth_m', 0.0, 'depth below this is invalid (NaN / 0) in the depth image and cloud',
       float_range=(0.0, 1000.0)),
    _p('max_depth_m', 300.0, 'depth above this is invalid (NaN / 0) in the depth image and cloud',
       float_range=(0.0, 1000.0)),
    _p('cloud_stride', 1, 'point cloud decimation: every Nth row and column', int_range=(1, 64, 1)),
    _p('cloud_rgb', False, 'point cloud with the rgb field (xyzrgb) instead of xyz'),
    # --- fused multi-camera cloud (docs/NODE.md, Fused point cloud)
    _p('fused.enabled', False, 'publish fused_points: one unorganized cloud per batch of a camera group in '
       'fused.base_frame (computed only while it has a subscriber)'),
    _p('fused.base_frame', 'base_link', 'frame of fused_points; every camera is transformed into it at its '
       "image's stamp"),
    _p('fused.extrinsics_source', 'auto', "'tf' (tf2 lookups of each image's frame_id at its stamp), "
       "'static' (extrinsics.<camera>.* or fused.rig_file), 'auto' (static when any is given, else tf)",
       choices=EXTRINSICS_SOURCES),
    _p('fused.rig_file', '', "rig JSON with camera-to-base extrinsics (DDAD's rig.json layout: "
       'cameras.<name>.T_vehicle_camera {rotation_wxyz, translation_xyz}, optical frames); '
       'extrinsics.<camera>.* win'),
    _p('fused.tf_timeout_ms', 0.0, 'how long a tf2 lookup may wait for a transform (on the inference '
       'thread: keep it short)', float_range=(0.0, 1000.0)),
    _p('fused.stamp_tolerance_ms', 50.0, 'fused_points carries the batch\'s newest image stamp; a camera '
       'older than that by more is left out (counted as fused_stale)', float_range=(0.0, 1e4)),
    _p('fused.stride', 2, 'fused cloud decimation: every Nth row and column of each depth image',
       int_range=(1, 64, 1)),
    _p('fused.voxel_m', 0.0, 'voxel decimation in fused.base_frame: one point per cube of this edge; 0 = off',
       float_range=(0.0, 100.0)),
    _p('fused.min_range_m', 0.0, 'points nearer to their camera centre than this are left out',
       float_range=(0.0, 1000.0)),
    _p('fused.max_range_m', 100.0, 'points farther from their camera centre than this are left out',
       float_range=(0.0, 1000.0)),
    _p('fused.min_height_m', -1000.0, 'height band: points with z below this in fused.base_frame are left '
       'out', float_range=(-1000.0, 1000.0)),
    _p('fused.max_height_m', 1000.0, 'height band: points with z above this in fused.base_frame are left '
       'out', float_range=(-1000.0, 1000.0)),
    _p('fused.rgb', False, 'fused_points with the rgb field (x y z camera rgb)'),
    # --- QoS
    _p('qos.input.reliability', 'best_effort', 'image and CameraInfo subscriptions', choices=RELIABILITIES),
    _p('qos.input.depth', 1, 'image and CameraInfo subscriptions: keep last N', int_range=(1, 1000, 1)),
    _p('qos.output.reliability', 'reliable', 'all output publishers', choices=RELIABILITIES),
    _p('qos.output.depth', 10, 'all output publishers: keep last N (10: a sample whose fragments were lost '
       'is still repairable after the next frame; 1 only for best-effort consumers that want the newest; '
       'docs/NODE.md QoS)', int_range=(1, 1000, 1)),
    _p('qos.output.durability', 'volatile', 'all output publishers', choices=DURABILITIES),
    # --- diagnostics and logging
    _p('diagnostics.period_s', 1.0, '/diagnostics publishing period', float_range=(0.05, 60.0)),
    _p('diagnostics.window_s', 5.0, 'rolling window of rates, drops and latencies', float_range=(0.5, 600.0)),
    _p('diagnostics.silent_error_s', 3.0, 'ERROR for a camera without input this long',
       float_range=(0.1, 600.0)),
    _p('diagnostics.warn_drop_fraction', 0.05, 'WARN above this fraction of dropped inputs',
       float_range=(0.0, 1.0)),
    _p('diagnostics.warn_latency_p95_ms', 100.0, 'WARN above this stamp-to-publish latency p95',
       float_range=(0.1, 1e5)),
    _p('log_throttle_s', 5.0, 'at most one error log per kind and camera per this period',
       float_range=(0.0, 3600.0)),
    _p('status_log_period_s', 30.0, 'one INFO line per camera this often (rates, latency, drops, totals), on '
       'wall time; 0: off', float_range=(0.0, 86400.0)),
)


def _engine_param(opt: EngineOption) -> ParamSpec:
    """The node parameter of a declared engine option (``core.config.OptionInfo``)."""
    info = opt.info
    default = opt.node_default
    return ParamSpec(opt.name, list(default) if isinstance(default, tuple) else default, info.description,
                     read_only=info.read_only, int_range=info.int_range, float_range=info.float_range,
                     choices=info.choices or None, normalize=info.normalize)


#: The engine's parameters, derived from the engine-option declaration.
ENGINE_PARAMETERS: tuple[ParamSpec, ...] = tuple(_engine_param(o) for o in engine_options() if o.info.node)
#: Every parameter of the node.
PARAMETERS: tuple[ParamSpec, ...] = _NODE_FIRST + ENGINE_PARAMETERS + _NODE_PARAMETERS

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class OutputConfig:
    """What is published and how (independent of which outputs have subscribers)."""

    resolution: str = 'camera'
    depth_encoding: str = '32FC1'
    min_depth_m: float = 0.0
    max_depth_m: float = 300.0
    cloud_stride: int = 1
    cloud_rgb: bool = False

    def __post_init__(self) -> None:
        if self.resolution not in OUTPUT_RESOLUTIONS:
            raise ValueError(f'output_resolution must be in {OUTPUT_RESOLUTIONS}, got {self.resolution!r}')
        if self.depth_encoding not in DEPTH_ENCODINGS:
            raise ValueError(f'depth_encoding must be one of {DEPTH_ENCODINGS}, got {self.depth_encoding!r}')
        if not (0.0 <= self.min_depth_m < self.max_depth_m) or not math.isfinite(self.max_depth_m):
            raise ValueError(
                f'need 0 <= min_depth_m < max_depth_m (finite), got [{self.min_depth_m}, {self.max_depth_m}]'
            )
        stride = self.cloud_stride
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f'cloud_stride must be an integer >= 1, got {self.cloud_stride!r}')


@dataclass(frozen=True)
class FusedSettings:
    """The fused cloud (``fused.*``, ``extrinsics.<camera>.*``): what it holds and where the extrinsics come
    from.

    source: 'tf' or 'static' ('auto' resolved at configure). static: camera -> base-from-optical transform
    (every camera when ``source`` is 'static'; empty for 'tf'). camera_index: camera -> the index written
    into its points (its position in ``cameras``, the same in every group).
    """

    fusion: FusionConfig
    source: str
    tf_timeout_ms: float
    static: Mapping[str, RigidTransform]
    camera_index: Mapping[str, int]


@dataclass(frozen=True)
class GroupConfig:
    """One camera group: its cameras and the torch device of its engine.

    name: 'group0', 'group1', ... in ``camera_groups`` order.
    """

    name: str
    cameras: tuple[str, ...]
    device: str


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node reads from its parameters at configure (frozen, picklable: worker processes get
    it as it is).

    engine: the engine configuration (``device`` is the ``device`` parameter); ``engine_for(group)`` is a
        group's, on the group's device.
    process_layout: 'in_process' | 'group_workers' (``PROCESS_LAYOUTS``).
    groups: the camera groups (``camera_groups``, ``group_devices``); one group with every camera on the
        engine device by default. Every camera is in exactly one group.
    fused: the fused cloud's settings; None when ``fused.enabled`` is false.
    """

    cameras: tuple[str, ...]
    engine: EngineConfig
    pairing: PairingConfig
    scheduler: SchedulerConfig
    stats: StatsConfig
    outputs: OutputConfig
    input_qos: QosSettings
    output_qos: QosSettings
    groups: tuple[GroupConfig, ...]
    process_layout: str = 'in_process'
    camera_info_source: str = 'auto'
    info_wait_ms: float = 100.0
    input_transport: str = 'raw'
    max_image_megapixels: float = 50.0
    diagnostics_period_s: float = 1.0
    log_throttle_s: float = 5.0
    status_log_period_s: float = 30.0
    autostart: bool = True
    fused: FusedSettings | None = None

    def engine_for(self, group: GroupConfig) -> EngineConfig:
        """The engine configuration of ``group``: ``engine`` on the group's device."""
        if group not in self.groups:
            raise ValueError(f'{group.name} is not a camera group of this configuration '
                             f'({", ".join(g.name for g in self.groups)})')
        return replace(self.engine, device=group.device)


def declare_parameters(node) -> list[str]:
    """Declare every parameter of ``PARAMETERS`` on ``node``; returns start-up values rclpy refused.

    A refused override (wrong type, outside the range) keeps the default so that the node still starts;
    the returned messages are reported by ``read_node_config`` at configure. Empty string-array defaults
    are declared typed (``Parameter.Type.STRING_ARRAY``, unset until given): an empty list would otherwise
    be taken for a byte array and refuse the strings later given.
    """
    problems = []
    for spec in PARAMETERS:
        default = Parameter.Type.STRING_ARRAY if spec.default == [] else spec.default
        try:
            node.declare_parameter(spec.name, default, spec.descriptor())
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            problems.append(f'{spec.name}: the value given at start-up was refused ({exc}); {_hint(spec)}')
            node.declare_parameter(spec.name, default, spec.descriptor(), ignore_override=True)
    return problems


def unknown_overrides(node) -> list[str]:
    """Names given to ``node`` at start-up (params files, ``-p``, ``parameter_overrides``) that it did not
    declare: typos, or parameters of another version. rclpy ignores them silently; the node warns."""
    overrides = getattr(node, '_parameter_overrides', None) or {}  # rclpy keeps no public accessor
    return sorted(name for name in overrides if not node.has_parameter(name))


def _hint(spec: ParamSpec) -> str:
    if spec.choices:
        return f'use one of {", ".join(spec.choices)}'
    if spec.int_range is not None:
        lo, hi, step = spec.int_range
        return f'use an integer in [{lo}, {hi}]' + (f' that is a multiple of {step}' if step > 1 else '')
    if spec.float_range is not None:
        return f'use a number in [{spec.float_range[0]:g}, {spec.float_range[1]:g}]'
    if isinstance(spec.default, list):
        return 'use a list of strings'
    return f'use a {type(spec.default).__name__} like the default {spec.default!r}'


class _Reader:
    """Reads parameters by name, coercing numbers and collecting problems instead of stopping at the first."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.problems: list[str] = []

    def get(self, name: str) -> Any:
        spec = SPECS[name]
        value = self.values.get(name, spec.default)
        if value is UNDECLARED:
            self.problems.append(f'{name}: not declared on the node any more; restart the node (its '
                                 'parameters cannot be deleted)')
            return spec.default if not isinstance(spec.default, list) else tuple(spec.default)
        if value is None and spec.default == []:  # a typed list parameter that was never set: empty
            value = []
        elif value is None:
            self.problems.append(f'{name}: not set (an empty list or a null in a params file leaves a '
                                 f'parameter unset); give it a value like the default {spec.default!r}')
            return spec.default if not isinstance(spec.default, list) else tuple(spec.default)
        default = spec.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value
        if not ok:
            self.problems.append(f'{name}: got {value!r} ({type(value).__name__}); {_hint(spec)}')
            return default if not isinstance(default, list) else tuple(default)
        if spec.normalize is not None:
            try:
                value = spec.normalize(value)
            except ValueError as exc:
                self.problems.append(f'{name}: {exc}')
                return default
        if spec.choices and value not in spec.choices:
            self.problems.append(f'{name}: got {value!r}; {_hint(spec)}')
        if spec.float_range is not None and not (spec.float_range[0] <= value <= spec.float_range[1]):
            self.problems.append(f'{name}: got {value!r}; {_hint(spec)}')
        if spec.int_range is not None:
            lo, hi, step = spec.int_range
            if not (lo <= value <= hi) or (step > 1 and (value - lo) % step):
                self.problems.append(f'{name}: got {value!r}; {_hint(spec)}')
        return value

    def build(self, what: str, factory, **kwargs):
        try:
            return factory(**kwargs)
        except (TypeError, ValueError) as exc:
            self.problems.append(f'{what}: {exc}')
            return None


def validate_camera_names(names: Sequence[str]) -> list[str]:
    """Problems with the ``cameras`` parameter (empty list when fine)."""
    problems = []
    if not names:
        problems.append("cameras: the list is empty; name at least one camera, e.g. cameras: ['front']")
    for name in names:
        tokens = name.split('/')
        if not name or not all(_NAME_TOKEN.match(t) for t in tokens):
            problems.append(
                f'cameras: {name!r} is not a relative ROS name (letters, digits, _ and inner /, not starting '
                'with a digit); remap topics instead of putting absolute names here'
            )
    duplicates = sorted({n for n in names if list(names).count(n) > 1})
    if duplicates:
        problems.append(f'cameras: {duplicates} listed more than once; give every camera one unique name')
    return problems


def camera_groups(cameras: Sequence[str], entries: Sequence[str], devices: Sequence[str],
                  engine_device: str) -> tuple[tuple[GroupConfig, ...], list[str]]:
    """The camera groups of ``camera_groups`` / ``group_devices`` and the problems with them.

    No entries: one group 'group0' with every camera. No devices: every group on ``engine_device``.
    """
    problems: list[str] = []
    if entries:
        members = [tuple(c for c in re.split(r'[\s,]+', entry) if c) for entry in entries]
    else:
        members = [tuple(cameras)]
    known = set(cameras)
    where: dict[str, list[int]] = {}
    for i, group in enumerate(members):
        if not group:
            problems.append(f'camera_groups: entry {i} ({entries[i]!r}) names no camera; list its cameras '
                            "separated by spaces or commas, e.g. 'front left', or remove the entry")
        for camera in group:
            if camera not in known:
                problems.append(f'camera_groups: entry {i} names {camera!r}, which is not in cameras '
                                f'{list(cameras)}; use only names from the cameras parameter')
            where.setdefault(camera, []).append(i)
    for camera, groups in where.items():
        if len(groups) > 1 and camera in known:
            problems.append(f'camera_groups: camera {camera!r} is in entries {groups}; put every camera in '
                            'exactly one group')
    missing = [c for c in cameras if c not in where]
    if missing:
        problems.append(f'camera_groups: camera(s) {missing} are in no group; add each to one group (or '
                        'leave camera_groups empty: one group with every camera)')
    if devices and len(devices) != len(members):
        problems.append(f'group_devices: {len(devices)} device(s) for {len(members)} camera group(s); give '
                        'exactly one device per group, in camera_groups order (or leave group_devices empty: '
                        'every group on the device parameter)')
    for device in devices:
        if not _DEVICE.match(device):
            problems.append(f"group_devices: {device!r} is not a device; use 'cuda', 'cuda:N' (N = 0, 1, "
                            "...), 'cpu' or 'auto'")
    chosen = list(devices) if devices and len(devices) == len(members) else [engine_device] * len(members)
    groups = tuple(GroupConfig(f'group{i}', group, device)
                   for i, (group, device) in enumerate(zip(members, chosen, strict=True)))
    return groups, problems


def extrinsics_parameter(camera: str, field_name: str) -> str:
    """The name of a camera's static extrinsics parameter: ``extrinsics.<camera>.<field>`` ('/' in a camera
    name becomes '.')."""
    return f"extrinsics.{camera.replace('/', '.')}.{field_name}"


_EXTRINSICS_HELP = {
    'parent_frame': 'static extrinsics of camera {cam}: the frame translation_m and rotation_xyzw are given '
                    'in (must be fused.base_frame)',
    'translation_m': 'static extrinsics of camera {cam}: [x, y, z] metres of its optical frame in '
                     'parent_frame (floats: 0.0, not 0)',
    'rotation_xyzw': 'static extrinsics of camera {cam}: unit quaternion [x, y, z, w] of its optical frame '
                     '(x right, y down, z forward) in parent_frame',
}


def declare_extrinsics(node, cameras: Sequence[str]) -> None:
    """Declare ``extrinsics.<camera>.*`` of every camera in ``cameras`` not declared yet (unset until given;
    any type is accepted at start-up and checked at configure)."""
    for camera in cameras:
        if not isinstance(camera, str) or not camera:
            continue
        for field_name in EXTRINSICS_FIELDS:
            name = extrinsics_parameter(camera, field_name)
            if node.has_parameter(name):
                continue
            desc = ParameterDescriptor(description=_EXTRINSICS_HELP[field_name].format(cam=camera),
                                       dynamic_typing=True)
            try:
                node.declare_parameter(name, None, desc)
            except Exception:  # noqa: BLE001 - a camera name that makes no parameter name: configure says so
                continue


def extrinsics_values(node, cameras: Sequence[str]) -> dict[str, Any]:
    """Current ``extrinsics.<camera>.*`` values of ``cameras`` (None when unset or not declared)."""
    values = {}
    for camera in cameras:
        for field_name in EXTRINSICS_FIELDS:
            name = extrinsics_parameter(camera, field_name)
            try:
                values[name] = node.get_parameter(name).value
            except (ParameterUninitializedException, ParameterNotDeclaredException):
                values[name] = None
    return values


def _static_extrinsics(values: dict[str, Any], cameras: Sequence[str], rig_file: str, base_frame: str,
                       problems: list[str]) -> dict[str, RigidTransform]:
    """Camera -> base-from-optical from ``extrinsics.<camera>.*`` and ``fused.rig_file`` (parameters win)."""
    found: dict[str, RigidTransform] = {}
    if rig_file:
        try:
            rig = read_rig_extrinsics(rig_file)
        except (OSError, ValueError) as exc:
            problems.append(f'fused.rig_file: {exc}; give a readable rig JSON or leave it empty')
        else:
            found.update({cam: pose for cam, pose in rig.items() if cam in cameras})
    for camera in cameras:
        names = {f: extrinsics_parameter(camera, f) for f in EXTRINSICS_FIELDS}
        given = {f: values.get(n) for f, n in names.items() if values.get(n) is not None}
        if not given:
            continue
        missing = [names[f] for f in EXTRINSICS_FIELDS if f not in given]
        if missing:
            problems.append(f'{", ".join(missing)}: not set; give all three of {", ".join(names.values())}')
            continue
        parent = given['parent_frame']
        if parent != base_frame:
            problems.append(f'{names["parent_frame"]}: {parent!r} is not fused.base_frame {base_frame!r}; '
                            'static extrinsics are not chained: give the optical frame in fused.base_frame, '
                            'or use fused.extrinsics_source tf')
            continue
        try:
            found[camera] = RigidTransform(tuple(given['translation_m']), tuple(given['rotation_xyzw']))
        except (TypeError, ValueError) as exc:
            problems.append(f'{names["translation_m"]} / {names["rotation_xyzw"]}: {exc}; e.g. '
                            'translation_m [0.2, 0.0, 1.1] and rotation_xyzw [-0.5, 0.5, -0.5, 0.5] (a '
                            'forward-looking camera)')
    return found


def tf2_available() -> bool:
    """True when ``tf2_ros`` can be imported (any ROS 2 install; not the PyPI wheels)."""
    return importlib.util.find_spec('tf2_ros') is not None


def _fused_settings(r: _Reader, cameras: Sequence[str]) -> FusedSettings | None:
    """``FusedSettings`` of the ``fused.*`` parameters (None when disabled); problems go to ``r``."""
    names = ('fused.base_frame', 'fused.stride', 'fused.voxel_m', 'fused.min_range_m', 'fused.max_range_m',
             'fused.min_height_m', 'fused.max_height_m', 'fused.stamp_tolerance_ms', 'fused.rgb')
    fields = {name.removeprefix('fused.'): r.get(name) for name in names}
    source, rig_file, timeout_ms = r.get('fused.extrinsics_source'), r.get('fused.rig_file'), \
        r.get('fused.tf_timeout_ms')
    if not r.get('fused.enabled'):
        return None
    fusion = r.build('fused.*', FusionConfig, **fields)
    base_frame = fields['base_frame']
    static = _static_extrinsics(r.values, cameras, rig_file, base_frame, r.problems)
    if source == 'auto':
        source = 'static' if static or rig_file else 'tf'
    if source == 'tf' and not tf2_available():
        r.problems.append('fused.extrinsics_source: tf needs tf2_ros, which is not importable here (PyPI '
                          'wheels without tf2); give static extrinsics (extrinsics.<camera>.parent_frame, '
                          '.translation_m, .rotation_xyzw, or fused.rig_file) with extrinsics_source static')
    if source == 'static':
        missing = [c for c in cameras if c not in static]
        if missing:
            r.problems.append(
                f'extrinsics: no static extrinsics for camera(s) {missing}; set '
                f'extrinsics.<camera>.parent_frame ({base_frame!r}), .translation_m and .rotation_xyzw, or '
                'list them in fused.rig_file')
        static = {c: static[c] for c in cameras if c in static}
    else:
        static = {}
    if fusion is None:
        return None
    return FusedSettings(fusion, source, timeout_ms, static, {c: i for i, c in enumerate(cameras)})


UNDECLARED = object()
"""``parameter_values``'s value of a parameter of ``PARAMETERS`` that is not declared (any more)."""


def parameter_values(node) -> dict[str, Any]:
    """Current values of every parameter of ``PARAMETERS``: None for one that is unset (a typed one never
    set, or unset by an empty list in a params file), ``UNDECLARED`` for one not declared."""
    values = {}
    for spec in PARAMETERS:
        try:
            values[spec.name] = node.get_parameter(spec.name).value
        except ParameterUninitializedException:
            values[spec.name] = None
        except ParameterNotDeclaredException:
            values[spec.name] = UNDECLARED
    return values


def config_from_values(values: dict[str, Any], startup_problems: Sequence[str] = ()) -> NodeConfig:
    """A validated ``NodeConfig`` from parameter values; raises ``ConfigError`` listing every problem."""
    r = _Reader(values)
    r.problems.extend(startup_problems)
    cameras = r.get('cameras')
    r.problems.extend(validate_camera_names(cameras))
    engine_values: dict[str, Any] = {}
    onnx: dict[str, Any] = {}
    known_problems = len(r.problems)
    for spec in ENGINE_PARAMETERS:
        value = r.get(spec.name)
        if spec.name.startswith('onnx.'):
            onnx[spec.name.removeprefix('onnx.')] = value
        else:
            engine_values[spec.name] = value
    max_batch_size = engine_values['max_batch_size']
    if r.get('pad_to_max_batch') is True:
        engine_values['batch_buckets'] = (max_batch_size,)
    engine = None
    if len(r.problems) == known_problems:  # each bad engine parameter is reported once, by name
        engine = r.build('engine parameters', EngineConfig.from_mapping,
                         values={**engine_values, 'onnx': onnx})
    if engine is not None and engine.backend == 'onnxruntime' and not engine.onnx.model_path:
        r.problems.append('onnx.model_path: backend onnxruntime needs the exported .onnx (metric3d_export)')
    pairing = r.build('info_tolerance_ms', PairingConfig, info_tolerance_ms=r.get('info_tolerance_ms'))
    log_throttle_s = r.get('log_throttle_s')
    scheduler = r.build(
        'batching parameters', SchedulerConfig,
        max_batch_size=max_batch_size, max_wait_ms=r.get('max_wait_ms'), queue_depth=r.get('queue_depth'),
        max_input_age_ms=r.get('max_input_age_ms'), max_future_ms=r.get('max_future_ms'),
        stamp_restart_ms=r.get('stamp_restart_ms'), camera_timeout_ms=r.get('camera_timeout_ms'),
        error_log_period_s=log_throttle_s,
    )
    stats = r.build(
        'diagnostics.*', StatsConfig,
        window_s=r.get('diagnostics.window_s'), silent_error_s=r.get('diagnostics.silent_error_s'),
        warn_drop_fraction=r.get('diagnostics.warn_drop_fraction'),
        warn_latency_p95_ms=r.get('diagnostics.warn_latency_p95_ms'),
    )
    outputs = r.build(
        'output parameters', OutputConfig,
        resolution=r.get('output_resolution'), depth_encoding=r.get('depth_encoding'),
        min_depth_m=r.get('min_depth_m'), max_depth_m=r.get('max_depth_m'),
        cloud_stride=r.get('cloud_stride'), cloud_rgb=r.get('cloud_rgb'),
    )
    input_qos = r.build('qos.input.*', QosSettings, reliability=r.get('qos.input.reliability'),
                        depth=r.get('qos.input.depth'))
    output_qos = r.build('qos.output.*', QosSettings, reliability=r.get('qos.output.reliability'),
                         depth=r.get('qos.output.depth'), durability=r.get('qos.output.durability'))
    layout = r.get('process_layout')
    groups, group_problems = camera_groups(cameras, r.get('camera_groups'), r.get('group_devices'),
                                           engine_values['device'])
    r.problems.extend(group_problems)
    source = r.get('camera_info_source')
    info_wait_ms = r.get('info_wait_ms')
    transport = r.get('input_transport')
    max_image_megapixels = r.get('max_image_megapixels')
    period_s = r.get('diagnostics.period_s')
    status_log_period_s = r.get('status_log_period_s')
    autostart = r.get('autostart')
    fused = _fused_settings(r, cameras)
    if r.problems:
        raise ConfigError('invalid parameters:\n  - ' + '\n  - '.join(dict.fromkeys(r.problems)))
    return NodeConfig(
        cameras=tuple(cameras), engine=engine, pairing=pairing, scheduler=scheduler, stats=stats,
        outputs=outputs, input_qos=input_qos, output_qos=output_qos, groups=groups, process_layout=layout,
        camera_info_source=source, info_wait_ms=info_wait_ms, input_transport=transport,
        max_image_megapixels=max_image_megapixels,
        diagnostics_period_s=period_s, log_throttle_s=log_throttle_s, status_log_period_s=status_log_period_s,
        autostart=autostart, fused=fused,
    )


def read_node_config(node, startup_problems: Sequence[str] = ()) -> NodeConfig:
    """``config_from_values`` of ``node``'s current parameters (``extrinsics.<camera>.*`` of the cameras it
    names declared first, so that a camera added since start-up gets them)."""
    values = parameter_values(node)
    cameras = values.get('cameras')
    if isinstance(cameras, (list, tuple)) and all(isinstance(c, str) for c in cameras):
        declare_extrinsics(node, cameras)
        values.update(extrinsics_values(node, cameras))
    return config_from_values(values, startup_problems)
