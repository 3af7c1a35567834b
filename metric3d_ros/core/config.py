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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

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

#: Variant names accepted, mapped to the model package's names ('small', 'large', 'giant2').
VARIANT_ALIASES: Mapping[str, str] = {
    'small': 'small', 'vit_small': 'small', 'metric3d_vit_small': 'small', 'vit-s': 'small', 's': 'small',
    'large': 'large', 'vit_large': 'large', 'metric3d_vit_large': 'large', 'vit-l': 'large', 'l': 'large',
    'giant2': 'giant2', 'vit_giant2': 'giant2', 'metric3d_vit_giant2': 'giant2', 'vit-g2': 'giant2',
}
PRECISIONS: tuple[str, ...] = ('fp32', 'tf32', 'bf16', 'fp16')
PREPROCESS_MODES: tuple[str, ...] = ('auto', 'device_exact', 'device', 'reference')
ATTENTION_MODES: tuple[str, ...] = ('auto', 'sdpa', 'math')
COMPILE_MODES: tuple[str, ...] = ('none', 'default', 'max-autotune')
AUTOCAST_SCOPES: tuple[str, ...] = ('encoder', 'all', 'cast')


def normalize_variant(variant: str) -> str:
    """The model package's variant name ('small', 'large', 'giant2') for any accepted alias."""
    key = str(variant).strip().lower()
    if key not in VARIANT_ALIASES:
        raise ValueError(
            f'unknown Metric3D variant {variant!r}: use small, large or giant2 (vit_small, ... also accepted)'
        )
    return VARIANT_ALIASES[key]


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
    """Options of the ONNX Runtime backend (used only when ``EngineConfig.backend == 'onnxruntime'``).

    model_path: the exported .onnx file (``metric3d_export``).
    providers: execution providers in order of preference; unavailable ones are skipped with a log line.
    trt_cache_dir: TensorRT engine cache directory ('' = no cache).
    graph_optimization: 'disable' | 'basic' | 'extended' | 'all'.
    """

    model_path: str = ''
    providers: tuple[str, ...] = ('CUDAExecutionProvider', 'CPUExecutionProvider')
    trt_cache_dir: str = ''
    trt_fp16: bool = False
    graph_optimization: str = 'all'
    cudnn_exhaustive_search: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, 'providers', tuple(str(p) for p in self.providers))
        if self.graph_optimization not in ('disable', 'basic', 'extended', 'all'):
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

    variant: 'small' | 'large' | 'giant2' (aliases like 'vit_small' are normalized).
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
    canonical_focal_px: focal length of Metric3D's canonical camera (1000 px).
    min_depth_m, max_depth_m: metric depth is clamped into this range as upstream does ([0, 300] m).
    warmup_iters: network calls per batch-size bucket at warm-up (before CUDA graph capture).
    pipeline_depth: batches the engine may have in flight at once (``DepthEngine.submit``), 1..4. 1
        (default): one batch at a time. 2: a batch's upload, pre- and postprocessing and download overlap
        the network of the batch before it, each batch in flight on its own CUDA stream with its own CUDA
        graphs and buffers (the network's activation memory once per lane). More throughput, not less
        latency. Needs a backend with lanes (torch); others run one batch at a time.
    onnx: ONNX Runtime options.
    """

    variant: str = 'small'
    backend: str = 'torch'
    precision: Precision = 'fp32'
    autocast_scope: AutocastScope = 'encoder'
    device: str = 'cpu'
    net_height_px: int = DEFAULT_NET_HEIGHT_PX
    net_width_px: int = DEFAULT_NET_WIDTH_PX
    max_batch_size: int = 8
    batch_buckets: tuple[int, ...] = ()
    preprocess: Preprocess = 'auto'
    cuda_graphs: bool = True
    channels_last: bool = True
    compile: CompileMode = 'none'
    attention: Attention = 'auto'
    weights: str = ''
    canonical_focal_px: float = 1000.0
    min_depth_m: float = 0.0
    max_depth_m: float = 300.0
    warmup_iters: int = 2
    pipeline_depth: int = 1
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
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 4:
            raise ValueError(f'pipeline_depth must be an integer in 1..4, got {self.pipeline_depth!r}')
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
        lo, hi = float(self.min_depth_m), float(self.max_depth_m)
        if math.isnan(lo) or math.isnan(hi) or lo < 0.0 or hi <= lo:
            raise ValueError(
                f'depth clamp must satisfy 0 <= min_depth_m < max_depth_m, got [{self.min_depth_m}, '
                f'{self.max_depth_m}]'
            )
        object.__setattr__(self, 'min_depth_m', lo)
        object.__setattr__(self, 'max_depth_m', hi)
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


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {", ".join(map(repr, allowed))}, got {value!r}')


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return value
