"""Engine configuration: typed, frozen, validated at construction (no torch import).

``EngineConfig`` says which network runs where and how (variant, backend, precision, device, network
input size, batching, CUDA graphs, ...). Every field is checked in ``__post_init__``; a bad value raises
``ValueError`` naming the field and the values it accepts. ``EngineConfig.from_mapping`` builds one from
plain keys (ROS parameters, YAML, command-line flags) and rejects unknown keys.

Network input size
------------------
``net_height_px`` x ``net_width_px`` defaults to 616 x 1064, the size the Metric3D v2 ViT models were
trained and evaluated at. Smaller sizes are selectable for speed (e.g. 280 x 504, 4.4x fewer pixels) but
they are NOT what the model was trained for: objects shrink to fewer patches, fine structures and far
depth degrade, and the metric scale (which the network infers from apparent object size in the canonical
camera) can drift by several percent. Measure on your own data before shipping a reduced size.

Both sides must be multiples of 28. The ViT encoder cuts the image into 14-pixel patches and the decoder
predicts at 1/4 resolution before its x4 convex upsampling; only when the side is divisible by both
(lcm(14, 4) = 28) is the output exactly as large as the input and pixel-aligned with it. Upstream accepts
other sizes but then silently returns a smaller map (height ``4 * floor(3.5 * H / 14)``) whose grid no
longer matches the letterbox's padding, so the un-padding and the intrinsics would be wrong. The engine
therefore refuses such sizes instead of producing subtly shifted depth.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from metric3d_ros.core.model.specs import resolve_variant, variant_names

Precision = Literal['fp32', 'tf32', 'bf16', 'fp16']
Preprocess = Literal['auto', 'device_exact', 'device', 'reference']
Attention = Literal['auto', 'sdpa', 'math']
CompileMode = Literal['none', 'default', 'max-autotune']
AutocastScope = Literal['encoder', 'all', 'cast']

#: Network input side lengths must be multiples of this (patch 14 and the decoder's 1/4 stage).
NET_SIZE_MULTIPLE_PX = 28
#: Default network input size (Metric3D v2 ViT training size).
DEFAULT_NET_HEIGHT_PX = 616
DEFAULT_NET_WIDTH_PX = 1064

PRECISIONS: tuple[str, ...] = ('fp32', 'tf32', 'bf16', 'fp16')
PREPROCESS_MODES: tuple[str, ...] = ('auto', 'device_exact', 'device', 'reference')
ATTENTION_MODES: tuple[str, ...] = ('auto', 'sdpa', 'math')
COMPILE_MODES: tuple[str, ...] = ('none', 'default', 'max-autotune')
AUTOCAST_SCOPES: tuple[str, ...] = ('encoder', 'all', 'cast')
GRAPH_OPTIMIZATIONS: tuple[str, ...] = ('disable', 'basic', 'extended', 'all')
#: Most batches in flight (``EngineConfig.pipeline_depth``).
MAX_PIPELINE_DEPTH = 4


def normalize_variant(variant: str) -> str:
    """The canonical variant name for any name or alias of the variant table
    (``metric3d_ros.core.model.specs``); ``ValueError`` naming the choices."""
    return resolve_variant(variant)


# ---------------------------------------------------------------------------------- option declarations
OPTION = 'metric3d_option'


@dataclass(frozen=True)
class OptionInfo:
    """How an ``EngineConfig`` / ``OnnxRuntimeOptions`` field is offered: the one declaration from which the
    node's ROS parameters (``metric3d_ros.ros.params``) and the tools' command-line flags
    (``add_engine_arguments``) are derived.

    description: one line, what the option does and its values.
    choices: allowed strings (after ``normalize``); int_range: (from, to, step) inclusive; float_range:
        (from, to) inclusive.
    normalize: maps accepted spellings to the canonical value (variant aliases) before ``choices``.
    node: exposed as a node parameter (under the field's name; 'onnx.<field>' for ONNX options).
    node_default: the node's default where it differs from the field's (None: the same).
    read_only: the node parameter can only be set at start-up (what configure loads).
    cli: offered as a command-line flag by ``add_engine_arguments``.
    """

    description: str
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int, int] | None = None
    float_range: tuple[float, float] | None = None
    normalize: Callable[[str], str] | None = None
    node: bool = True
    node_default: Any = None
    read_only: bool = True
    cli: bool = True


def _option(default: Any, description: str, **info: Any) -> Any:
    """A dataclass field with ``default`` and its ``OptionInfo``."""
    return field(default=default, metadata={OPTION: OptionInfo(description, **info)})


@dataclass(frozen=True)
class EngineOption:
    """One declared option, flattened: ``name`` is the field name ('onnx.model_path' for ONNX options)."""

    name: str
    default: Any
    type: type
    info: OptionInfo

    @property
    def node_default(self) -> Any:
        return self.default if self.info.node_default is None else self.info.node_default

    @property
    def flag(self) -> str:
        return '--' + self.name.replace('.', '-').replace('_', '-')

    @property
    def dest(self) -> str:
        return self.name.replace('.', '_')

    def check(self, value: Any) -> str | None:
        """What is wrong with ``value`` against choices and ranges (None when fine), saying what to use."""
        info = self.info
        if info.normalize is not None and isinstance(value, str):
            try:
                value = info.normalize(value)
            except ValueError as exc:
                return str(exc)
        if info.choices and value not in info.choices:
            return f'got {value!r}; use one of {", ".join(info.choices)}'
        if info.int_range is not None and isinstance(value, int):
            lo, hi, step = info.int_range
            if not lo <= value <= hi or (step > 1 and (value - lo) % step):
                return (f'got {value!r}; use an integer in [{lo}, {hi}]'
                        + (f' that is a multiple of {step}' if step > 1 else ''))
        if info.float_range is not None and isinstance(value, (int, float)):
            lo, hi = info.float_range
            if not lo <= value <= hi:
                return f'got {value!r}; use a number in [{lo:g}, {hi:g}]'
        return None


def check_net_size(net_height_px: int, net_width_px: int) -> tuple[int, int]:
    """``(h, w)`` as ints if both are positive multiples of 28, else ``ValueError`` suggesting valid sizes."""
    out = []
    for name, value in (('net_height_px', net_height_px), ('net_width_px', net_width_px)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f'{name} must be a positive integer, got {value!r}')
        if value % NET_SIZE_MULTIPLE_PX:
            lo = value // NET_SIZE_MULTIPLE_PX * NET_SIZE_MULTIPLE_PX
            hi = lo + NET_SIZE_MULTIPLE_PX
            hint = f'{lo} or {hi}' if lo else f'{hi}'
            raise ValueError(
                f'{name}={value} is not a multiple of {NET_SIZE_MULTIPLE_PX} (patch size 14 and the decoder '
                f'x4 stage): use e.g. {hint}; the default input is '
                f'{DEFAULT_NET_HEIGHT_PX}x{DEFAULT_NET_WIDTH_PX}'
            )
        out.append(int(value))
    return out[0], out[1]


def parse_net_size(text: str) -> tuple[int, int]:
    """``'616x1064'`` -> ``(616, 1064)``, checked like ``check_net_size``."""
    parts = str(text).lower().replace('*', 'x').split('x')
    if len(parts) != 2:
        raise ValueError(f'network size must look like HEIGHTxWIDTH (e.g. 616x1064), got {text!r}')
    try:
        h, w = int(parts[0]), int(parts[1])
    except ValueError as exc:
        raise ValueError(f'network size must look like HEIGHTxWIDTH (e.g. 616x1064), got {text!r}') from exc
    return check_net_size(h, w)


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """Options of the ONNX Runtime backend (used only when ``EngineConfig.backend == 'onnxruntime'``); each
    field's ``OptionInfo`` says what it does."""

    model_path: str = _option('', 'exported .onnx file (metric3d_export), for backend onnxruntime')
    providers: tuple[str, ...] = _option(
        ('CUDAExecutionProvider', 'CPUExecutionProvider'),
        'ONNX Runtime execution providers in order of preference; unavailable ones are skipped')
    trt_cache_dir: str = _option('', 'TensorRT engine cache directory (empty: none)')
    trt_fp16: bool = _option(False, 'TensorRT fp16')
    graph_optimization: str = _option('all', 'ONNX Runtime graph optimization level',
                                      choices=GRAPH_OPTIMIZATIONS, node=False)
    cudnn_exhaustive_search: bool = _option(False, 'cuDNN exhaustive algorithm search (CUDA provider)',
                                            node=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'providers', tuple(str(p) for p in self.providers))
        if self.graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise ValueError(
                f"onnx.graph_optimization must be 'disable', 'basic', 'extended' or 'all', "
                f'got {self.graph_optimization!r}'
            )


def batch_buckets(max_batch_size: int, explicit: Sequence[int] = ()) -> list[int]:
    """Batch sizes a graph-capturing backend prepares: ``explicit`` sizes (each <= the maximum) plus the
    maximum; without them the powers of two below the maximum, then the maximum."""
    if explicit:
        return sorted({int(b) for b in explicit if 1 <= int(b) < max_batch_size} | {int(max_batch_size)})
    sizes = []
    b = 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch_size)
    return sizes


@dataclass(frozen=True)
class EngineConfig:
    """What the depth engine runs and how.

    Every field is declared with an ``OptionInfo`` (description, choices, range, node/CLI exposure):
    ``engine_options()`` lists them, the node's parameters and the tools' flags derive from it.

    variant: a name of the variant table (``metric3d_ros.core.model.specs``: 'small' | 'large' | 'giant2');
        aliases like 'vit_small' are normalized.
    backend: 'torch' | 'onnxruntime' | a test backend ('fake') | any name registered with
        ``metric3d_ros.core.engine.backend.register_backend``.
    precision: 'fp32' (strict, conformant) | 'tf32' | 'bf16' | 'fp16' network arithmetic (see
        ``metric3d_ros.core.engine.torch_backend``); pre/post-processing is always float32.
    autocast_scope: with bf16/fp16, 'encoder' (ViT encoder in reduced precision, decoder in float32),
        'all' (whole network autocast) or 'cast' (weights cast to bf16/fp16 once, no autocast, the
        decoder's depth bins, state, normals and upsampling in float32: the fastest); see
        ``metric3d_ros.core.engine.torch_backend``.
    device: torch device string ('cpu', 'cuda', 'cuda:1'); 'auto' picks 'cuda' when available.
    net_height_px, net_width_px: network input size, multiples of 28 (see the module docstring).
    max_batch_size: frames per network call; longer inputs are split into chunks of this size.
    batch_buckets: batch sizes that get their own CUDA graph / torch.compile specialization (a batch of b
        runs in the smallest bucket >= b, padded); max_batch_size is always one. Empty (default): the powers
        of two below max_batch_size. Fewer buckets = shorter warm-up (torch.compile takes about a minute per
        bucket for ViT-S); e.g. ``(4,)`` for four synchronized cameras.
    preprocess: how the letterboxed batch is built (``metric3d_ros.core.engine.preprocess``):
        'device_exact' (batched integer re-implementation of OpenCV's uint8 INTER_LINEAR on the device,
        bit-identical to upstream), 'device' (batched float bilinear on the device, < 1 intensity level
        from upstream), 'reference' (upstream's cv2 code on the CPU, per frame), or 'auto' (default:
        'device_exact' on CUDA, 'reference' on the CPU, where cv2 is both exact and the fastest).
    cuda_graphs: capture one CUDA graph per batch-size bucket (CUDA only; ignored on CPU).
    channels_last: NHWC memory format for the network's convolutions (CUDA only; ignored on CPU).
    compile: 'none' | 'default' | 'max-autotune' torch.compile of the network (torch backend).
    attention: 'auto' (= 'sdpa') | 'sdpa' (fused scaled_dot_product_attention) | 'math' (upstream's plain
        softmax attention, bit-faithful); see ``metric3d_ros.core.engine.torch_backend``.
    weights: checkpoint path; 'synthetic' for deterministic synthetic weights (tests, benchmarks);
        '' to resolve the official checkpoint through the model package's cache / download.
    canonical_focal_px: focal length of Metric3D's canonical camera (1000 px). Metric depth is never
        clamped (upstream clamps to [0, 300] m): the engine marks saturated canonical values and depth
        outside each request's [min_depth_m, max_depth_m] invalid (``metric3d_ros.core.engine.postprocess``).
    warmup_iters: network calls per batch-size bucket at warm-up (before CUDA graph capture).
    pipeline_depth: batches the engine may have in flight at once (``DepthEngine.submit``), 1..4. 1
        (default): one batch at a time. 2: a batch's upload, pre- and postprocessing and download overlap
        the network of the batch before it, each batch in flight on its own CUDA stream with its own CUDA
        graphs and buffers (the network's activation memory once per lane). More throughput, not less
        latency. Needs a backend with lanes (torch); others run one batch at a time.
    onnx: ONNX Runtime options.
    """

    variant: str = _option('small', 'Metric3D v2 variant (aliases such as vit_small are accepted)',
                           choices=variant_names(), normalize=normalize_variant)
    backend: str = _option('torch', 'inference backend: torch, onnxruntime, or a registered test backend')
    precision: Precision = _option('fp32', 'network arithmetic (bf16/fp16: reduced precision, see '
                                   'autocast_scope)', choices=PRECISIONS)
    autocast_scope: AutocastScope = _option(
        'encoder', "reduced precision for the ViT 'encoder' only, 'all' (autocast of the whole network) or "
        "'cast' (weights cast once; fastest)", choices=AUTOCAST_SCOPES)
    device: str = _option('cpu', "torch device: 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1'",
                          node_default='auto')
    net_height_px: int = _option(DEFAULT_NET_HEIGHT_PX, 'network input height (multiple of 28; 616 is the '
                                 'training size)', int_range=(28, 2828, 28), cli=False)
    net_width_px: int = _option(DEFAULT_NET_WIDTH_PX, 'network input width (multiple of 28; 1064 is the '
                                'training size)', int_range=(28, 2828, 28), cli=False)
    max_batch_size: int = _option(8, 'most frames per network call (the node: per batch)',
                                  int_range=(1, 64, 1), node_default=4, read_only=False)
    batch_buckets: tuple[int, ...] = _option(
        (), 'batch sizes with their own CUDA graph / torch.compile specialization (max_batch_size always '
        'is one; empty: the powers of two below it)', node=False)
    preprocess: Preprocess = _option(
        'auto', "resize and pad: on the engine's device ('device', 'device_exact') or cv2 ('reference'); "
        "'auto' lets the engine choose", choices=PREPROCESS_MODES)
    cuda_graphs: bool = _option(True, 'capture CUDA graphs per batch size (CUDA only)')
    channels_last: bool = _option(True, 'NHWC convolutions (CUDA only)')
    compile: CompileMode = _option('none', 'torch.compile mode', choices=COMPILE_MODES)
    attention: Attention = _option('auto', 'attention kernel', choices=ATTENTION_MODES)
    weights: str = _option('', "checkpoint path; '' resolves the official checkpoint (cache, download); "
                           "'synthetic' = deterministic fake weights (meaningless depth, for tests)")
    canonical_focal_px: float = _option(1000.0, "focal length of Metric3D's canonical camera", node=False,
                                        cli=False)
    warmup_iters: int = _option(2, 'network calls per batch size at warm-up (0: no warm-up)',
                                int_range=(0, 100, 1))
    pipeline_depth: int = _option(
        1, 'batches in flight at once (1..4): with 2 a batch\'s upload, pre- and postprocessing and download '
        'overlap the network of the batch before it (torch backend; more throughput, not less latency)',
        int_range=(1, MAX_PIPELINE_DEPTH, 1))
    onnx: OnnxRuntimeOptions = field(default_factory=OnnxRuntimeOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'variant', normalize_variant(self.variant))
        if not isinstance(self.backend, str) or not self.backend:
            raise ValueError(f"backend must be a non-empty name such as 'torch', got {self.backend!r}")
        _one_of('precision', self.precision, PRECISIONS)
        _one_of('preprocess', self.preprocess, PREPROCESS_MODES)
        _one_of('autocast_scope', self.autocast_scope, AUTOCAST_SCOPES)
        _one_of('attention', self.attention, ATTENTION_MODES)
        _one_of('compile', self.compile, COMPILE_MODES)
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(
                f"device must be a torch device string ('cpu', 'cuda', 'auto'), got {self.device!r}"
            )
        check_net_size(self.net_height_px, self.net_width_px)
        _positive_int('max_batch_size', self.max_batch_size)
        buckets = self.batch_buckets
        if isinstance(buckets, (str, bytes)) or not isinstance(buckets, (tuple, list)):
            raise ValueError(f'batch_buckets must be a list of batch sizes, got {buckets!r}')
        for b in buckets:
            if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= self.max_batch_size:
                raise ValueError(
                    'batch_buckets: every size must be an integer in '
                    f'1..max_batch_size={self.max_batch_size}, got {list(buckets)}'
                )
        object.__setattr__(self, 'batch_buckets', tuple(sorted(set(buckets))))
        iters = self.warmup_iters
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
            raise ValueError(f'warmup_iters must be an integer >= 0, got {self.warmup_iters!r}')
        depth = self.pipeline_depth
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_PIPELINE_DEPTH:
            raise ValueError(f'pipeline_depth must be an integer in 1..{MAX_PIPELINE_DEPTH}, '
                             f'got {self.pipeline_depth!r}')
        for name in ('cuda_graphs', 'channels_last'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'{name} must be true or false, got {getattr(self, name)!r}')
        if not isinstance(self.weights, str):
            raise ValueError(f"weights must be a path string, 'synthetic' or '', got {self.weights!r}")
        focal = float(self.canonical_focal_px)
        if not (math.isfinite(focal) and focal > 0.0):
            raise ValueError(
                f'canonical_focal_px must be finite and positive, got {self.canonical_focal_px!r}'
            )
        object.__setattr__(self, 'canonical_focal_px', focal)
        if not isinstance(self.onnx, OnnxRuntimeOptions):
            raise ValueError(f'onnx must be an OnnxRuntimeOptions, got {type(self.onnx).__name__}')

    @property
    def buckets(self) -> list[int]:
        """The batch sizes prepared at warm-up (``batch_buckets`` plus max_batch_size, or the default)."""
        return batch_buckets(self.max_batch_size, self.batch_buckets)

    @property
    def net_hw(self) -> tuple[int, int]:
        """``(net_height_px, net_width_px)``."""
        return (self.net_height_px, self.net_width_px)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> EngineConfig:
        """An ``EngineConfig`` from plain keys; ``net_size: 'HxW'`` is accepted, ``onnx`` may be a mapping.

        Unknown keys raise ``ValueError`` listing the known ones (a misspelt option must not be ignored).
        """
        data = dict(values)
        known = {f.name for f in fields(cls)}
        if 'net_size' in data:
            h, w = parse_net_size(data.pop('net_size'))
            data.setdefault('net_height_px', h)
            data.setdefault('net_width_px', w)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f'unknown engine option(s) {unknown}: known are {sorted(known | {"net_size"})}')
        if isinstance(data.get('onnx'), Mapping):
            onnx = dict(data['onnx'])
            onnx_known = {f.name for f in fields(OnnxRuntimeOptions)}
            bad = sorted(set(onnx) - onnx_known)
            if bad:
                raise ValueError(f'unknown onnx option(s) {bad}: known are {sorted(onnx_known)}')
            if 'providers' in onnx:
                onnx['providers'] = tuple(onnx['providers'])
            data['onnx'] = OnnxRuntimeOptions(**onnx)
        return cls(**data)


def engine_options() -> tuple[EngineOption, ...]:
    """Every declared option of ``EngineConfig``, the ONNX Runtime ones flattened as 'onnx.<field>'."""
    out = []
    for f in fields(EngineConfig):
        if f.name == 'onnx':
            for g in fields(OnnxRuntimeOptions):
                info = g.metadata[OPTION]
                out.append(EngineOption(f'onnx.{g.name}', g.default, _field_type(g.default), info))
            continue
        out.append(EngineOption(f.name, f.default, _field_type(f.default), f.metadata[OPTION]))
    return tuple(out)


def _field_type(default: Any) -> type:
    return tuple if isinstance(default, tuple) else type(default)


def add_engine_arguments(parser: argparse.ArgumentParser, exclude: Sequence[str] = (),
                         defaults: Mapping[str, Any] | None = None, multi: Sequence[str] = (),
                         include: Sequence[str] | None = None) -> None:
    """Add a flag per declared engine option with ``cli`` (``--<name>``, dashes for '_' and '.'; booleans as
    ``--x`` / ``--no-x``; tuples as lists) plus ``--net-size HxW`` for the network input size, in a group
    'engine options'. ``include``: only these options (None: all); ``exclude``: options a tool sets itself
    ('net_size' for the size flag); ``defaults``: the tool's own defaults;
    ``multi``: options given as lists of values (a benchmark's sweep). Read them back with
    ``engine_values_from_args``."""
    defaults = dict(defaults or {})
    group = parser.add_argument_group('engine options (EngineConfig)')
    def wanted(name: str) -> bool:
        return name not in exclude and (include is None or name in include)

    if wanted('net_size'):
        size = defaults.get('net_size', f'{DEFAULT_NET_HEIGHT_PX}x{DEFAULT_NET_WIDTH_PX}')
        group.add_argument('--net-size', default=size, type=_net_size_arg, metavar='HxW',
                           help=f'network input HEIGHTxWIDTH, multiples of 28 (default {size})')
    for opt in engine_options():
        if not opt.info.cli or not wanted(opt.name):
            continue
        default = defaults.get(opt.name, opt.default)
        kwargs: dict[str, Any] = {'dest': opt.dest, 'default': default}
        help_text = opt.info.description
        if opt.info.choices:
            help_text += f' ({" | ".join(opt.info.choices)})'
        if opt.type is bool:
            kwargs['action'] = argparse.BooleanOptionalAction
        else:
            kwargs['type'] = (int if opt.type is tuple and opt.name == 'batch_buckets'
                              else str if opt.type is tuple else opt.type)
            if opt.info.normalize is not None:
                kwargs['type'] = _arg_type(opt.info.normalize)
            elif opt.info.int_range is not None or opt.info.float_range is not None:
                kwargs['type'] = _checked_type(opt)
            if opt.info.choices and opt.info.normalize is None:
                kwargs['choices'] = opt.info.choices
            if opt.type is tuple or opt.name in multi:
                kwargs['nargs'] = '*' if opt.type is tuple else '+'
                if opt.name in multi and not isinstance(default, (list, tuple)):
                    kwargs['default'] = [default]
        group.add_argument(opt.flag, help=f'{help_text} (default {kwargs["default"]!r})', **kwargs)


def _arg_type(normalize: Callable[[str], str]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        try:
            return normalize(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = normalize.__name__
    return convert


def _checked_type(opt: EngineOption) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = opt.type(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f'{opt.flag}: {exc}') from exc
        problem = opt.check(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    convert.__name__ = opt.type.__name__
    return convert


def _net_size_arg(text: str) -> str:
    try:
        parse_net_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def engine_values_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The options ``add_engine_arguments`` added, as a mapping for ``EngineConfig.from_mapping`` (ONNX
    options under 'onnx', the size as 'net_size'); options a tool excluded are simply absent."""
    values: dict[str, Any] = {}
    onnx: dict[str, Any] = {}
    if hasattr(args, 'net_size'):
        values['net_size'] = args.net_size
    for opt in engine_options():
        if not hasattr(args, opt.dest):
            continue
        value = getattr(args, opt.dest)
        if isinstance(value, list) and opt.type is tuple:
            value = tuple(value)
        if opt.name.startswith('onnx.'):
            onnx[opt.name.removeprefix('onnx.')] = value
        else:
            values[opt.name] = value
    if onnx:
        values['onnx'] = onnx
    return values


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {", ".join(map(repr, allowed))}, got {value!r}')


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return value
