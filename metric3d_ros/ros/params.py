"""ROS parameters of the depth node: declarations with descriptors, and validation into typed configuration.

Every parameter is declared once, in ``PARAMETERS``, with a ``ParameterDescriptor`` (description, range,
``read_only`` for the model and backend choices). ``read_node_config`` reads them at *configure* and
builds a frozen ``NodeConfig``; anything wrong raises ``ConfigError`` listing every problem with the
parameter name and what to change. Parameters are read only at configure: to change one, deactivate and
clean up the node, set it, and configure again (``read_only`` ones only through overrides at start-up).

A value given at start-up that rclpy itself refuses (wrong type, outside the declared range) does not
crash the constructor: the default is kept and the problem is reported at configure, which then fails.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

from metric3d_ros.core.batching.config import SchedulerConfig
from metric3d_ros.core.batching.pairing import PairingConfig
from metric3d_ros.core.config import (
    ATTENTION_MODES,
    AUTOCAST_SCOPES,
    COMPILE_MODES,
    PRECISIONS,
    PREPROCESS_MODES,
    EngineConfig,
    OnnxRuntimeOptions,
)
from metric3d_ros.core.stats import StatsConfig
from metric3d_ros.ros.qos import DURABILITIES, RELIABILITIES, QosSettings

OUTPUT_RESOLUTIONS = ('camera', 'network')
DEPTH_ENCODINGS = ('32FC1', '16UC1')
CAMERA_INFO_SOURCES = ('auto', 'rectified', 'raw')
INPUT_TRANSPORTS = ('raw', 'compressed')
PROCESS_LAYOUTS = ('in_process', 'group_workers')
_NAME_TOKEN = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


class ConfigError(ValueError):
    """The node's parameters are invalid; the message lists every problem and what to change."""


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: name, default (its type is the parameter's type), description and constraints.

    int_range: (from, to, step) inclusive; float_range: (from, to) inclusive; choices: allowed strings
    (listed in ``additional_constraints`` and checked at configure).
    """

    name: str
    default: Any
    description: str
    read_only: bool = False
    int_range: tuple[int, int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None

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

PARAMETERS: tuple[ParamSpec, ...] = (
    # --- node
    _p('autostart', True, 'configure and activate at start-up (false: wait for a lifecycle manager)'),
    _p('cameras', ['camera'], 'camera names; per camera NAME the node reads NAME/image, NAME/camera_info'),
    _p('input_transport', 'raw', "'raw' (NAME/image, sensor_msgs/Image) or 'compressed' "
       '(NAME/image/compressed, sensor_msgs/CompressedImage)', choices=INPUT_TRANSPORTS),
    # --- model and backend (read-only: they define what configure loads)
    _p('backend', 'torch', 'inference backend: torch, onnxruntime, or a registered test backend', **_RO),
    _p('variant', 'small', 'Metric3D v2 variant: small, large, giant2', **_RO),
    _p('weights', '', "checkpoint path; '' resolves the official checkpoint (cache, download); "
       "'synthetic' = deterministic fake weights (meaningless depth, for tests)", **_RO),
    _p('precision', 'fp32', 'network arithmetic (bf16/fp16: autocast, see autocast_scope)',
       choices=PRECISIONS, **_RO),
    _p('autocast_scope', 'encoder', "reduced precision for the ViT 'encoder' only, 'all' (autocast of the "
       "whole network) or 'cast' (weights cast once; fastest)", choices=AUTOCAST_SCOPES, **_RO),
    _p('device', 'auto', "torch device: 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1'", **_RO),
    _p('net_height_px', 616, 'network input height (multiple of 28; 616 is the training size)',
       int_range=(28, 2828, 28), **_RO),
    _p('net_width_px', 1064, 'network input width (multiple of 28; 1064 is the training size)',
       int_range=(28, 2828, 28), **_RO),
    _p('preprocess', 'auto', "resize and pad: on the engine's device ('device', 'device_exact') or cv2 "
       "('reference'); 'auto' lets the engine choose", choices=PREPROCESS_MODES, **_RO),
    _p('cuda_graphs', True, 'capture CUDA graphs per batch size (CUDA only)', **_RO),
    _p('channels_last', True, 'NHWC convolutions (CUDA only)', **_RO),
    _p('compile', 'none', 'torch.compile mode', choices=COMPILE_MODES, **_RO),
    _p('attention', 'auto', 'attention kernel', choices=ATTENTION_MODES, **_RO),
    _p('torch_threads', 0, 'CPU threads of torch (torch.set_num_threads, process-wide); 0 keeps torch\'s '
       'default. On a loaded CPU, 1 avoids OpenMP threads spinning against the ROS threads',
       int_range=(0, 256, 1), **_RO),
    _p('warmup_iters', 2, 'network calls per batch size at configure (0: no warm-up)',
       int_range=(0, 100, 1), **_RO),
    _p('onnx.model_path', '', 'exported .onnx file (backend onnxruntime)', **_RO),
    _p('onnx.providers', ['CUDAExecutionProvider', 'CPUExecutionProvider'],
       'ONNX Runtime execution providers in order of preference', **_RO),
    _p('onnx.trt_cache_dir', '', 'TensorRT engine cache directory (empty: none)', **_RO),
    _p('onnx.trt_fp16', False, 'TensorRT fp16', **_RO),
    # --- pairing and batching
    _p('camera_info_source', 'auto', "intrinsics from P ('rectified'), K ('raw') or P when set ('auto')",
       choices=CAMERA_INFO_SOURCES),
    _p('info_tolerance_ms', 50.0, 'largest |image stamp - CameraInfo stamp| when no exact match; '
       '-1: the latest CameraInfo of any age (static CameraInfo publishers)', float_range=(-1.0, 1e5)),
    _p('info_wait_ms', 100.0, 'how long an image waits for its CameraInfo when none matches yet',
       float_range=(0.0, 1e4)),
    _p('max_batch_size', 4, 'most frames per inference', int_range=(1, 64, 1)),
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
    # --- process layout
    _p('process_layout', 'in_process', "'in_process': every camera group in the node process (CPU, small "
       "rigs); 'group_workers': each camera group in its own worker process that receives, infers and "
       'publishes its cameras (many cameras, several GPUs)', choices=PROCESS_LAYOUTS, **_RO),
    _p('camera_groups', [''], "camera groups, one entry per group listing its cameras (spaces or commas); "
       "[''] = one group of every camera. Each group batches and infers on its own", **_RO),
    _p('group_devices', [''], "device of each camera group ('cuda:0', 'cuda:1', 'cpu'), one entry per "
       "group; [''] = every group on the 'device' parameter", **_RO),
    # --- QoS
    _p('qos.input.reliability', 'best_effort', 'image and CameraInfo subscriptions', choices=RELIABILITIES),
    _p('qos.input.depth', 1, 'image and CameraInfo subscriptions: keep last N', int_range=(1, 1000, 1)),
    _p('qos.output.reliability', 'reliable', 'all output publishers', choices=RELIABILITIES),
    _p('qos.output.depth', 1, 'all output publishers: keep last N', int_range=(1, 1000, 1)),
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
)

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
class GroupConfig:
    """One camera group: its cameras batch together on one engine on ``device``."""

    name: str
    cameras: tuple[str, ...]
    device: str


def camera_groups(cameras: Sequence[str], groups: Sequence[str], devices: Sequence[str],
                  default_device: str) -> tuple[tuple[GroupConfig, ...], list[str]]:
    """The ``GroupConfig``s of the ``camera_groups`` / ``group_devices`` parameters, and their problems."""
    problems = []
    entries = [g for g in groups if g.strip()]
    lists = [tuple(t for t in re.split(r'[\s,]+', g.strip()) if t) for g in entries] or [tuple(cameras)]
    seen: dict[str, int] = {}
    for index, members in enumerate(lists):
        for cam in members:
            if cam not in cameras:
                problems.append(f'camera_groups: group {index} names {cam!r}, which is not in cameras '
                                f'{list(cameras)}; list only configured cameras')
            elif cam in seen:
                problems.append(f'camera_groups: camera {cam!r} is in groups {seen[cam]} and {index}; '
                                'put every camera in exactly one group')
            else:
                seen[cam] = index
    missing = [cam for cam in cameras if cam not in seen]
    if missing and entries:
        problems.append(f'camera_groups: cameras {missing} are in no group; add them to one')
    device_list = [d.strip() for d in devices if d.strip()]
    if device_list and len(device_list) != len(lists):
        problems.append(f'group_devices: {len(device_list)} device(s) for {len(lists)} camera group(s); '
                        "give one device per group, or [''] to put every group on 'device'")
    for device in device_list:
        if not re.fullmatch(r'auto|cpu|cuda(:\d+)?', device):
            problems.append(f"group_devices: {device!r} is not a device; use 'cpu', 'cuda', 'cuda:N' "
                            "or 'auto'")
    if not device_list or len(device_list) != len(lists):
        device_list = [default_device] * len(lists)
    groups_out = tuple(GroupConfig(f'group{i}', members, device)
                       for i, (members, device) in enumerate(zip(lists, device_list, strict=True)))
    return groups_out, problems


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node reads from its parameters at configure."""

    cameras: tuple[str, ...]
    engine: EngineConfig
    pairing: PairingConfig
    scheduler: SchedulerConfig
    stats: StatsConfig
    outputs: OutputConfig
    input_qos: QosSettings
    output_qos: QosSettings
    camera_info_source: str = 'auto'
    info_wait_ms: float = 100.0
    input_transport: str = 'raw'
    diagnostics_period_s: float = 1.0
    log_throttle_s: float = 5.0
    autostart: bool = True
    torch_threads: int = 0
    process_layout: str = 'in_process'
    groups: tuple[GroupConfig, ...] = ()

    def engine_for(self, group: GroupConfig) -> EngineConfig:
        """The engine configuration of ``group`` (the engine options on the group's device)."""
        return replace(self.engine, device=group.device)


def declare_parameters(node) -> list[str]:
    """Declare every parameter of ``PARAMETERS`` on ``node``; returns start-up values rclpy refused.

    A refused override (wrong type, outside the range) keeps the default so that the node still starts;
    the returned messages are reported by ``read_node_config`` at configure.
    """
    problems = []
    for spec in PARAMETERS:
        try:
            node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            problems.append(f'{spec.name}: the value given at start-up was refused ({exc}); {_hint(spec)}')
            node.declare_parameter(spec.name, spec.default, spec.descriptor(), ignore_override=True)
    return problems


def _hint(spec: ParamSpec) -> str:
    if spec.choices:
        return f'use one of {", ".join(spec.choices)}'
    if spec.int_range is not None:
        lo, hi, step = spec.int_range
        return f'use an integer in [{lo}, {hi}]' + (f' that is a multiple of {step}' if step > 1 else '')
    if spec.float_range is not None:
        return f'use a number in [{spec.float_range[0]:g}, {spec.float_range[1]:g}]'
    return f'use a {type(spec.default).__name__} like the default {spec.default!r}'


class _Reader:
    """Reads parameters by name, coercing numbers and collecting problems instead of stopping at the first."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.problems: list[str] = []

    def get(self, name: str) -> Any:
        spec = SPECS[name]
        value = self.values.get(name, spec.default)
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


def parameter_values(node) -> dict[str, Any]:
    """Current values of every declared parameter of ``PARAMETERS``."""
    return {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}


def config_from_values(values: dict[str, Any], startup_problems: Sequence[str] = ()) -> NodeConfig:
    """A validated ``NodeConfig`` from parameter values; raises ``ConfigError`` listing every problem."""
    r = _Reader(values)
    r.problems.extend(startup_problems)
    cameras = r.get('cameras')
    r.problems.extend(validate_camera_names(cameras))
    onnx = r.build(
        'onnx.*', OnnxRuntimeOptions,
        model_path=r.get('onnx.model_path'), providers=r.get('onnx.providers'),
        trt_cache_dir=r.get('onnx.trt_cache_dir'), trt_fp16=r.get('onnx.trt_fp16'),
    )
    max_batch_size = r.get('max_batch_size')
    engine = r.build(
        'model parameters', EngineConfig,
        variant=r.get('variant'), backend=r.get('backend'), precision=r.get('precision'),
        autocast_scope=r.get('autocast_scope'),
        device=r.get('device'), net_height_px=r.get('net_height_px'), net_width_px=r.get('net_width_px'),
        max_batch_size=max_batch_size, preprocess=r.get('preprocess'), cuda_graphs=r.get('cuda_graphs'),
        channels_last=r.get('channels_last'), compile=r.get('compile'), attention=r.get('attention'),
        weights=r.get('weights'), warmup_iters=r.get('warmup_iters'),
        batch_buckets=(max_batch_size,) if r.get('pad_to_max_batch') is True else (),
        onnx=onnx if onnx is not None else OnnxRuntimeOptions(),
    )
    if engine is not None and engine.backend == 'onnxruntime' and not engine.onnx.model_path:
        r.problems.append('onnx.model_path: backend onnxruntime needs the exported .onnx (metric3d_export)')
    pairing = r.build('info_tolerance_ms', PairingConfig, info_tolerance_ms=r.get('info_tolerance_ms'))
    log_throttle_s = r.get('log_throttle_s')
    scheduler = r.build(
        'batching parameters', SchedulerConfig,
        max_batch_size=max_batch_size, max_wait_ms=r.get('max_wait_ms'), queue_depth=r.get('queue_depth'),
        max_input_age_ms=r.get('max_input_age_ms'), camera_timeout_ms=r.get('camera_timeout_ms'),
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
    source = r.get('camera_info_source')
    info_wait_ms = r.get('info_wait_ms')
    transport = r.get('input_transport')
    period_s = r.get('diagnostics.period_s')
    torch_threads = r.get('torch_threads')
    groups, group_problems = camera_groups(cameras, r.get('camera_groups'), r.get('group_devices'),
                                           engine.device if engine is not None else 'cpu')
    r.problems.extend(group_problems)
    autostart = r.get('autostart')
    if r.problems:
        raise ConfigError('invalid parameters:\n  - ' + '\n  - '.join(dict.fromkeys(r.problems)))
    return NodeConfig(
        cameras=tuple(cameras), engine=engine, pairing=pairing, scheduler=scheduler, stats=stats,
        outputs=outputs, input_qos=input_qos, output_qos=output_qos, camera_info_source=source,
        info_wait_ms=info_wait_ms, input_transport=transport, diagnostics_period_s=period_s,
        log_throttle_s=log_throttle_s, autostart=autostart,
        torch_threads=torch_threads, process_layout=r.get('process_layout'), groups=groups,
    )


def read_node_config(node, startup_problems: Sequence[str] = ()) -> NodeConfig:
    """``config_from_values`` of ``node``'s current parameters."""
    return config_from_values(parameter_values(node), startup_problems)
