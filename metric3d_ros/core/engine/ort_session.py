"""ONNX Runtime sessions for Metric3D files: provider choice, session/provider options, file checks.

Providers are taken in the configured order (TensorRT, CUDA, CPU; short names 'tensorrt', 'cuda', 'cpu'
are accepted), each kept only if this onnxruntime build has it and it suits the device: on a 'cpu' device
the GPU providers are dropped; on a 'cuda' device at least one GPU provider must remain. The CPU provider is
always last, as the fallback for nodes the GPU providers do not take. Every decision is logged with its
reason, and after the session is built the providers it really enabled (``session.get_providers()``) are
logged and compared with the plan: ONNX Runtime silently drops a provider whose libraries (CUDA, cuDNN,
TensorRT) fail to load, which on a 'cuda' device is an error here.

Provider options: CUDA gets ``device_id``, ``cudnn_conv_algo_search`` ('EXHAUSTIVE' | 'HEURISTIC' |
'DEFAULT') and the caller's CUDA stream (``user_compute_stream``), so that ONNX Runtime runs on the stream
PyTorch fills the input on. TensorRT gets ``device_id``, ``trt_fp16_enable``, the engine and timing caches
(``trt_engine_cache_path``), the stream, and one optimization profile over the input
(``trt_profile_min_shapes`` / ``opt`` / ``max``, e.g. ``image:1x3x616x1064``), so that the engine is built
once for all batch sizes instead of once per new shape.

A file that is missing, empty, truncated or not an ONNX graph raises OnnxModelError naming it; so does one
without metric3d_export's metadata, of another variant, or whose input/outputs do not match the metadata.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from metric3d_ros.core.model.onnx_metadata import (
    INPUT_NAME,
    OUTPUT_NAMES,
    OnnxModelError,
    OnnxModelInfo,
)

LOG = logging.getLogger(__name__)

TENSORRT = 'TensorrtExecutionProvider'
CUDA = 'CUDAExecutionProvider'
CPU = 'CPUExecutionProvider'
GPU_PROVIDERS: tuple[str, ...] = (TENSORRT, CUDA)
PROVIDER_ALIASES: dict[str, str] = {
    'tensorrt': TENSORRT, 'trt': TENSORRT, 'cuda': CUDA, 'cpu': CPU,
}
CUDNN_CONV_ALGO_SEARCH: tuple[str, ...] = ('EXHAUSTIVE', 'HEURISTIC', 'DEFAULT')
GRAPH_OPTIMIZATION: dict[str, ort.GraphOptimizationLevel] = {
    'disable': ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_ORT_DTYPES = {'float32': 'tensor(float)', 'uint8': 'tensor(uint8)'}

Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class TrtProfile:
    """One TensorRT optimization profile over the (B, 3, H, W) input: min, opt and max shapes."""

    min_shape: Shape
    opt_shape: Shape
    max_shape: Shape

    def __post_init__(self) -> None:
        for a, b in ((self.min_shape, self.opt_shape), (self.opt_shape, self.max_shape)):
            if len(a) != 4 or len(b) != 4 or any(x > y for x, y in zip(a, b, strict=True)):
                raise ValueError(f'TensorRT profile needs min <= opt <= max (B, 3, H, W) shapes, got '
                                 f'{self.min_shape}, {self.opt_shape}, {self.max_shape}')

    @classmethod
    def for_engine(cls, max_batch_size: int, net_hw: tuple[int, int]) -> TrtProfile:
        """Batch 1..max_batch_size at one network size, tuned for the largest batch."""
        h, w = net_hw
        return cls((1, 3, h, w), (max_batch_size, 3, h, w), (max_batch_size, 3, h, w))

    def options(self) -> dict[str, str]:
        def text(shape: Shape) -> str:
            return f'{INPUT_NAME}:' + 'x'.join(str(int(v)) for v in shape)
        return {'trt_profile_min_shapes': text(self.min_shape),
                'trt_profile_opt_shapes': text(self.opt_shape),
                'trt_profile_max_shapes': text(self.max_shape)}


@dataclass(frozen=True)
class SessionSettings:
    """How to open a Metric3D ONNX file.

    model_path: the .onnx file.
    providers: execution providers in order of preference (full or short names).
    device_type: 'cpu' or 'cuda' (where the engine's tensors live); device_id: the CUDA device index.
    graph_optimization: 'disable' | 'basic' | 'extended' | 'all'.
    cudnn_conv_algo_search: 'EXHAUSTIVE' | 'HEURISTIC' | 'DEFAULT' (CUDA provider).
    cuda_tf32: allow TF32 tensor cores in the CUDA provider (faster, not conformant for fp32 files).
    trt_cache_dir: TensorRT engine and timing cache directory ('' = no cache, engines rebuilt each start).
    trt_fp16: let TensorRT use fp16 kernels (an fp32 file then runs in mixed precision).
    trt_profile: the input shapes TensorRT builds its engine for (None: TensorRT's own, rebuilt per shape).
    trt_max_workspace_bytes: TensorRT builder workspace (0 = provider default).
    intra_op_threads: CPU threads (0 = ONNX Runtime's default, one per physical core).
    cpu_spin: let idle CPU worker threads spin after a run (ONNX Runtime's default). Off here: the engine's
        PyTorch post-processing runs right after the network and would compete with the spinning threads.
    cuda_stream: cudaStream_t handle (int) for the GPU providers to run on; 0 = their own stream.
    """

    model_path: str
    providers: tuple[str, ...] = (CUDA, CPU)
    device_type: str = 'cpu'
    device_id: int = 0
    graph_optimization: str = 'all'
    cudnn_conv_algo_search: str = 'EXHAUSTIVE'
    cuda_tf32: bool = False
    trt_cache_dir: str = ''
    trt_fp16: bool = False
    trt_profile: TrtProfile | None = None
    trt_max_workspace_bytes: int = 0
    intra_op_threads: int = 0
    cpu_spin: bool = False
    cuda_stream: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, 'providers', tuple(canonical_provider(p) for p in self.providers))
        if not self.providers:
            raise ValueError('providers must name one execution provider or more (e.g. CPUExecutionProvider)')
        if self.device_type not in ('cpu', 'cuda'):
            raise ValueError(f"device_type must be 'cpu' or 'cuda', got {self.device_type!r}")
        if self.graph_optimization not in GRAPH_OPTIMIZATION:
            raise ValueError(f'graph_optimization must be one of {sorted(GRAPH_OPTIMIZATION)}, '
                             f'got {self.graph_optimization!r}')
        if self.cudnn_conv_algo_search not in CUDNN_CONV_ALGO_SEARCH:
            raise ValueError(f'cudnn_conv_algo_search must be one of {CUDNN_CONV_ALGO_SEARCH}, '
                             f'got {self.cudnn_conv_algo_search!r}')
        for name in ('device_id', 'intra_op_threads', 'trt_max_workspace_bytes', 'cuda_stream'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f'{name} must be an integer >= 0, got {value!r}')


@dataclass(frozen=True)
class ProviderPlan:
    """Which providers were asked for, which this build has, which will be requested, and why."""

    requested: tuple[str, ...]
    available: tuple[str, ...]
    chosen: tuple[str, ...]
    notes: tuple[tuple[str, str], ...]  # (provider, why it was skipped or added)


@dataclass(frozen=True)
class OpenedSession:
    """A session with its file metadata, the provider plan and the providers the session really uses."""

    session: ort.InferenceSession
    info: OnnxModelInfo
    plan: ProviderPlan
    used: tuple[str, ...]
    path: Path


def canonical_provider(name: str) -> str:
    """'cuda' -> 'CUDAExecutionProvider' etc.; full names pass through."""
    text = str(name).strip()
    return PROVIDER_ALIASES.get(text.lower(), text)


def plan_providers(requested: Sequence[str], available: Sequence[str], device_type: str) -> ProviderPlan:
    """Providers to request, in order (see the module docstring); raises ValueError when none fits."""
    requested = tuple(canonical_provider(p) for p in requested)
    chosen: list[str] = []
    notes: list[tuple[str, str]] = []
    for name in requested:
        if name in chosen:
            continue
        if name not in available:
            hint = ' (pip install onnxruntime-gpu for CUDA and TensorRT)' if name in GPU_PROVIDERS else ''
            notes.append((name, f'skipped: not in this onnxruntime build{hint}'))
        elif name in GPU_PROVIDERS and device_type == 'cpu':
            notes.append((name, "skipped: the engine device is 'cpu' (set device: cuda to use it)"))
        elif name not in (*GPU_PROVIDERS, CPU):
            notes.append((name, 'skipped: not supported by this backend (use TensorRT, CUDA or CPU)'))
        else:
            chosen.append(name)
    if device_type == 'cuda' and not any(p in GPU_PROVIDERS for p in chosen):
        reasons = '; '.join(f'{p} {why}' for p, why in notes) or 'none requested'
        raise ValueError(
            f"device 'cuda' needs TensorrtExecutionProvider or CUDAExecutionProvider, but none is usable "
            f'({reasons}); available in this build: {list(available)}. Install onnxruntime-gpu or set '
            "device: cpu")
    if CPU in chosen:
        chosen.remove(CPU)
    else:
        notes.append((CPU, 'added last, as the fallback for nodes no other provider takes'))
    chosen.append(CPU)
    return ProviderPlan(requested, tuple(available), tuple(chosen), tuple(notes))


def provider_options(name: str, settings: SessionSettings) -> dict[str, str]:
    """ONNX Runtime options (strings) for provider ``name``."""
    stream = {'has_user_compute_stream': '1', 'user_compute_stream': str(settings.cuda_stream)} \
        if settings.cuda_stream else {}
    if name == CUDA:
        # use_tf32 '0': ORT's CUDA provider enables TF32 by default, which moves an fp32 file's depth out of
        # the conformance criterion (measured on the H100: 31-48 % of depth elements within it vs torch fp32).
        return {'device_id': str(settings.device_id),
                'cudnn_conv_algo_search': settings.cudnn_conv_algo_search,
                'use_tf32': _flag(settings.cuda_tf32), **stream}
    if name == TENSORRT:
        options = {'device_id': str(settings.device_id), 'trt_fp16_enable': _flag(settings.trt_fp16),
                   **stream}
        if settings.trt_cache_dir:
            options.update({'trt_engine_cache_enable': '1', 'trt_engine_cache_path': settings.trt_cache_dir,
                            'trt_timing_cache_enable': '1', 'trt_timing_cache_path': settings.trt_cache_dir})
        if settings.trt_max_workspace_bytes:
            options['trt_max_workspace_size'] = str(settings.trt_max_workspace_bytes)
        if settings.trt_profile is not None:
            options.update(settings.trt_profile.options())
        return options
    return {}


def session_options(settings: SessionSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = GRAPH_OPTIMIZATION[settings.graph_optimization]
    if settings.intra_op_threads:
        options.intra_op_num_threads = settings.intra_op_threads
    options.add_session_config_entry('session.intra_op.allow_spinning', _flag(settings.cpu_spin))
    return options


def check_file(path: str | os.PathLike[str]) -> Path:
    """The path, if it names a non-empty file; OnnxModelError otherwise."""
    file = Path(path)
    if not str(path):
        raise OnnxModelError('no ONNX file configured: set onnx.model_path to a metric3d_export file')
    if not file.is_file():
        raise OnnxModelError(f'ONNX file {file} does not exist: export one with `metric3d_export --variant '
                             'small --weights FILE|synthetic --output FILE.onnx`')
    if file.stat().st_size == 0:
        raise OnnxModelError(f'ONNX file {file} is empty: re-export it with metric3d_export')
    return file


def open_session(settings: SessionSettings, variant: str | None = None,
                 input_dtypes: Sequence[str] = ('float32', 'uint8')) -> OpenedSession:
    """Open ``settings.model_path``, check its metadata against ``variant`` and the accepted input dtypes,
    and log the providers requested, available and used."""
    path = check_file(settings.model_path)
    available = tuple(ort.get_available_providers())
    plan = plan_providers(settings.providers, available, settings.device_type)
    LOG.info('onnxruntime %s for %s: requested providers %s; available in this build %s; requesting %s',
             ort.__version__, path, list(plan.requested), list(available), list(plan.chosen))
    for name, reason in plan.notes:
        LOG.info('provider %s %s', name, reason)
    try:
        session = ort.InferenceSession(
            str(path), sess_options=session_options(settings), providers=list(plan.chosen),
            provider_options=[provider_options(name, settings) for name in plan.chosen])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        kind = type(exc).__name__
        damaged = (kind in ('InvalidProtobuf', 'InvalidGraph', 'NoSuchFile')
                   or 'Protobuf parsing failed' in str(exc))
        advice = ('the file is truncated or not an ONNX graph; re-export it with metric3d_export' if damaged
                  else 'check the provider options and the onnxruntime installation')
        raise OnnxModelError(f'onnxruntime cannot load {path}: {kind}: {exc} ({advice})') from exc
    used = tuple(session.get_providers())
    LOG.info('onnxruntime session for %s uses providers %s', path, list(used))
    missing = [p for p in plan.chosen if p not in used]
    if missing:
        LOG.warning('providers %s were requested and are in this build but the session did not enable them '
                    '(their CUDA/cuDNN/TensorRT libraries failed to load? see onnxruntime\'s messages above)',
                    missing)
    if settings.device_type == 'cuda' and not any(p in GPU_PROVIDERS for p in used):
        raise OnnxModelError(f"device 'cuda' was configured but the session for {path} enabled only "
                             f'{list(used)}: the GPU providers failed to load (see the warning above)')
    info = read_info(session, path)
    check_info(info, session, path, variant=variant, input_dtypes=input_dtypes)
    LOG.info('%s: %s', path, info.describe())
    return OpenedSession(session=session, info=info, plan=plan, used=used, path=path)


def read_info(session: ort.InferenceSession, path: Path) -> OnnxModelInfo:
    """The file's :class:`OnnxModelInfo` from ``metadata_props``."""
    return OnnxModelInfo.from_props(session.get_modelmeta().custom_metadata_map, source=str(path))


def check_info(info: OnnxModelInfo, session: ort.InferenceSession, path: Path, *, variant: str | None,
               input_dtypes: Sequence[str]) -> None:
    """Raise OnnxModelError when the file does not fit the configuration or its own metadata."""
    if variant is not None and info.variant != variant:
        raise OnnxModelError(
            f'{path} holds Metric3D {info.variant!r} but variant {variant!r} is configured: set variant: '
            f'{info.variant} or export a {variant} file with metric3d_export --variant {variant}')
    if info.input_dtype not in input_dtypes:
        raise OnnxModelError(
            f'{path} takes {info.input_dtype} input; this backend accepts {list(input_dtypes)}')
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(inputs[0].shape) != 4:
        found = [(i.name, i.shape) for i in inputs]
        raise OnnxModelError(f'{path} must have one (B, 3, H, W) input named {INPUT_NAME!r}, found {found}')
    if inputs[0].type != _ORT_DTYPES[info.input_dtype]:
        raise OnnxModelError(f'{path}: metadata says input_dtype {info.input_dtype} but the graph input is '
                             f'{inputs[0].type}; the file was edited after export, re-export it')
    outputs = [o.name for o in session.get_outputs()]
    if tuple(outputs) != OUTPUT_NAMES:
        raise OnnxModelError(f'{path} must have outputs {list(OUTPUT_NAMES)}, found {outputs}')


def _flag(value: bool) -> str:
    return '1' if value else '0'
