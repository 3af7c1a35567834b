"""PyTorch backend: the Metric3D network in fp32, bf16 or fp16, with CUDA graphs per batch-size bucket.

Precision (``EngineConfig.precision``):
  ``'fp32'``: strict float32, TF32 forbidden for convolutions and matmuls (PyTorch allows it for cuDNN
  convolutions by default): the conformant path. ``'tf32'``: float32 tensors with TF32 tensor-core math
  (CUDA; identical to fp32 on the CPU).
  ``'bf16'`` / ``'fp16'``: ``torch.autocast`` with that dtype. ``EngineConfig.autocast_scope`` picks where:
  ``'encoder'`` (default) runs the ViT encoder (the bulk of the FLOPs) in reduced precision and the
  RAFT/DPT decoder in float32: the decoder's log-spaced depth bins, soft-argmax regression, iterative
  GRU updates and its interpolations are where reduced precision is unsafe (bf16 keeps 8 mantissa bits, so
  a depth near 100 m is quantized to ~0.4 m); ``'all'`` autocasts the decoder too (faster, less exact);
  ``'cast'`` casts the network's parameters to the reduced dtype once and runs without autocast (no
  per-forward weight casts, no float32 round trips between ops; the fastest): the decoder still computes its
  depth softmax over the bins, the expectation and clamp, the 6-channel GRU state, the normal normalization
  and the convex upsampling in float32, and bilinear resampling accumulates in float32. With 'all' and
  'cast' the network runs fused (``Metric3DNet.set_fused``: patch embedding as a matmul, one gate
  convolution per ConvGRU update, merged and channel-aligned convolutions; same function, other
  rounding). The float32 parts may use TF32. Outputs are returned as float32 and all pre/post-processing is
  float32. The measured deviation from fp32 is in docs/BENCHMARKS.md.

CUDA graphs (``cuda_graphs``, CUDA only): after ``warmup_iters`` eager passes per bucket on a side stream,
one graph is captured per batch-size bucket (powers of two up to ``max_batch_size`` and the maximum), all
sharing one memory pool and one static input buffer (``input_buffer(b)`` hands the engine a view of it, so
the engine's preprocessing writes straight into the graph's input). A batch of b frames replays the smallest
bucket >= b; rows past b hold stale data whose outputs are ignored. If capture fails (a network that syncs
with the host, an old driver), the backend logs why and stays eager. With bf16/fp16 the warm-up passes and
the capture run with ``torch.backends.cudnn.benchmark`` on (restored afterwards): cuDNN times its
algorithms per convolution shape and the graphs keep the fastest.

Lanes (``set_lanes(n)``, used by the engine's ``pipeline_depth``): lane i is a view of the backend
(``lane(i)``) with its own static input, its own graphs and memory pool, captured on its own stream (so
cuBLAS gives it its own workspace): batches of different lanes may run concurrently on different streams.
One lane (the default) is the backend as described above.

``channels_last`` (CUDA only): the network's 4-D weights and the input use NHWC, which the cuDNN convolutions
of the patch embedding and the decoder prefer on tensor-core GPUs. ``compile``: ``torch.compile`` of the
forward (mode 'default', with Inductor's weight freezing on CUDA, or 'max-autotune-no-cudagraphs'; our own
graphs capture the compiled code).
``attention``: 'sdpa' uses ``scaled_dot_product_attention`` (flash / memory-efficient kernels), 'math' the
plain softmax attention of upstream (exact), 'auto' = sdpa (within the agreement criterion of the
references: measured 100 % of elements in fp32 on the H100 and in the CPU end-to-end tests; 1.5x faster
than 'math' for ViT-S at 616x1064 on 2 CPU cores).

The same code runs on the CPU (no graphs, no channels_last; autocast on the CPU supports bf16 and fp16).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from metric3d_ros.core.engine.backend import FrameMeta, InputFormat, NetworkOutput, batch_buckets

if TYPE_CHECKING:
    from metric3d_ros.core.config import EngineConfig

LOG = logging.getLogger(__name__)

_DTYPES = {'fp32': torch.float32, 'tf32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 tensor-core math for float32 convolutions and matmuls inside the block.

    PyTorch allows TF32 for cuDNN convolutions by default; on a chaotic network (synthetic weights) its
    ~1e-3 relative rounding is enough to break the conformance criterion, so the 'fp32' precision forbids
    it. The flags are process-wide: the block sets them and restores the previous values.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        saved = (cudnn.allow_tf32, matmul.allow_tf32)
        cudnn.allow_tf32 = matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            cudnn.allow_tf32, matmul.allow_tf32 = saved


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark = enabled`` inside the block (process-wide; restored after it)."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


class _Forward(nn.Module):
    """The network's forward with the configured precision, memory format and float32 outputs."""

    def __init__(self, net: nn.Module, dtype: torch.dtype, scope: str, device: torch.device,
                 channels_last: bool, allow_tf32: bool) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.allow_tf32 = allow_tf32
        self.device_type = device.type
        self.channels_last = channels_last
        self.cast = scope == 'cast' and dtype != torch.float32
        depth_model = getattr(net, 'depth_model', None)
        self.split = (scope == 'encoder' and dtype != torch.float32 and depth_model is not None
                      and hasattr(depth_model, 'encoder') and hasattr(depth_model, 'decoder'))
        if scope == 'encoder' and dtype != torch.float32 and not self.split:
            LOG.warning('network has no depth_model.encoder/decoder: autocasting the whole forward')

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, cache_enabled=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.device_type != 'cuda':
            return self._forward(x)
        with tf32_mode(self.allow_tf32):
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.float32:
            outs = self.net(x)
        elif self.cast:
            outs = self.net(x.to(self.dtype))
        elif self.split:
            model = self.net.depth_model
            with self._autocast():
                features, h_tokens, w_tokens = model.encoder(x)
            outs = model.decoder([f.float() for f in features], h_tokens, w_tokens)
        else:
            with self._autocast():
                outs = self.net(x)
        depth, confidence, normal = outs
        return (depth.float().contiguous(), confidence.float().contiguous(), normal.float().contiguous())


class TorchBackend:
    """Runs a Metric3D ``nn.Module`` (see the module docstring for precision, graphs and options)."""

    name = 'torch'
    input_format: InputFormat = 'normalized'

    def __init__(
        self,
        net: nn.Module,
        device: torch.device | str,
        net_hw: tuple[int, int],
        precision: str = 'fp32',
        max_batch_size: int = 8,
        cuda_graphs: bool = True,
        channels_last: bool = True,
        compile_mode: str = 'none',
        autocast_scope: str = 'encoder',
        warmup_iters: int = 2,
        batch_bucket_sizes: Sequence[int] = (),
    ) -> None:
        if precision not in _DTYPES:
            raise ValueError(f"precision must be 'fp32', 'tf32', 'bf16' or 'fp16', got {precision!r}")
        if autocast_scope not in ('encoder', 'all', 'cast'):
            raise ValueError(f"autocast_scope must be 'encoder', 'all' or 'cast', got {autocast_scope!r}")
        self.device = torch.device(device)
        self.net_hw = (int(net_hw[0]), int(net_hw[1]))
        self.precision = precision
        self.max_batch_size = int(max_batch_size)
        cuda = self.device.type == 'cuda'
        self.use_graphs = bool(cuda_graphs and cuda)
        self.channels_last = bool(channels_last and cuda)
        self.warmup_iters = max(1, int(warmup_iters))
        self.buckets = batch_buckets(self.max_batch_size, batch_bucket_sizes)
        net = net.to(self.device).eval()
        reduced = _DTYPES[precision] != torch.float32
        # reduced precision with graphs: cuDNN times its algorithms for every convolution shape in the eager
        # warm-up passes and the capture records the fastest (H100, ViT-S bf16 cast batch 8: network
        # 20.13-20.28 -> 19.71 ms); fp32 keeps cuDNN's heuristics (the conformant path)
        self.cudnn_benchmark = reduced
        if reduced and autocast_scope == 'cast':
            net = net.to(_DTYPES[precision])
        if reduced and autocast_scope != 'encoder' and hasattr(net, 'set_fused'):
            net.set_fused(True)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.module = _Forward(net, _DTYPES[precision], autocast_scope, self.device, self.channels_last,
                               allow_tf32=precision != 'fp32')
        self._fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] = self.module
        if compile_mode == 'max-autotune':
            self._fn = torch.compile(self.module, mode='max-autotune-no-cudagraphs', dynamic=False)
        elif compile_mode != 'none':
            # Inductor freezing: the (inference-only) weights become constants, folded and laid out for the
            # kernels at compile time (H100, bf16 cast: ViT-S batch 8 25.56 -> 24.94 ms, ViT-L batch 4
            # 65.25 -> 64.27 ms; docs/BENCHMARKS.md)
            # (CUDA only: measured there; same peak memory, 0.78 / 1.63 GiB)
            options = {'freezing': True} if cuda else {}
            self._fn = torch.compile(self.module, dynamic=False, options=options)
        self.lanes = 1
        self._static_in: dict[int, torch.Tensor] = {}  # per lane
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]]] = {}
        self._pools: dict[int, object] = {}  # per lane
        self._side_streams: dict[int, torch.cuda.Stream] = {}  # per lane
        self._warm: set[int] = set()
        self.graph_error: str | None = None  # why graphs were disabled, if they were

    @classmethod
    def from_config(cls, config: EngineConfig, device: torch.device) -> TorchBackend:
        """Load the configured network: weights path, 'synthetic', or '' (official file, cache/download)."""
        from metric3d_ros.core.model import load_metric3d

        fused = config.attention in ('sdpa', 'auto')
        if config.weights == 'synthetic':
            from metric3d_ros.core.model.synthetic import synthetic_state_dict

            weights: object = synthetic_state_dict(config.variant)
        elif config.weights:
            weights = config.weights
        else:
            from metric3d_ros.core.model.weights import resolve_weights

            weights = resolve_weights(config.variant)
        net = load_metric3d(weights, variant=config.variant, device=device, fused_attention=fused)
        return cls(
            net, device, config.net_hw, precision=config.precision, max_batch_size=config.max_batch_size,
            cuda_graphs=config.cuda_graphs, channels_last=config.channels_last, compile_mode=config.compile,
            autocast_scope=config.autocast_scope, warmup_iters=config.warmup_iters,
            batch_bucket_sizes=config.batch_buckets,
        )

    # ------------------------------------------------------------------------------------------- buffers
    def _bucket(self, b: int) -> int:
        for size in self.buckets:
            if size >= b:
                return size
        raise ValueError(f'batch of {b} frames exceeds max_batch_size={self.max_batch_size}')

    def _static(self, lane: int = 0) -> torch.Tensor:
        static = self._static_in.get(lane)
        if static is None:
            h, w = self.net_hw
            with torch.inference_mode(False):  # a normal tensor: writable inside and outside inference mode
                static = torch.zeros((self.max_batch_size, 3, h, w), dtype=torch.float32, device=self.device)
            self._static_in[lane] = static
        return static

    def input_buffer(self, batch_size: int, lane: int = 0) -> torch.Tensor | None:
        """With CUDA graphs: a view of the lane's static graph input for the engine to fill in place; else
        None."""
        if not self.use_graphs:
            return None
        return self._static(lane)[:batch_size]

    # --------------------------------------------------------------------------------------------- lanes
    def set_lanes(self, count: int) -> int:
        """Prepare ``count`` lanes (see the module docstring); returns the number of lanes."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f'lane count must be an integer >= 1, got {count!r}')
        self.lanes = count
        return count

    def lane(self, index: int) -> TorchBackendLane:
        """The backend as lane ``index`` sees it (``run`` and ``input_buffer`` bound to that lane)."""
        self._check_lane(index)
        return TorchBackendLane(self, index)

    def _check_lane(self, index: int) -> None:
        if not 0 <= index < self.lanes:
            raise ValueError(f'lane {index} does not exist ({self.lanes} lane(s); see set_lanes)')

    # ------------------------------------------------------------------------------------------- warm-up
    def warmup(self, batch_sizes: Sequence[int]) -> None:
        """Eager passes per bucket (autotuning, lazy caches), then CUDA graph capture per bucket and lane."""
        buckets = sorted({self._bucket(int(b)) for b in batch_sizes}, reverse=True)
        with torch.inference_mode():
            for lane in range(self.lanes):
                for b in buckets:
                    self._ensure(b, lane)

    def _ensure(self, bucket: int, lane: int = 0) -> None:
        # A lane's graphs share its memory pool. That is safe because a lane's replays never overlap (the
        # engine runs one batch per lane at a time, in stream order, and consumes a graph's outputs before
        # the lane's next replay; a capture may reuse earlier intermediates). Lanes have separate pools.
        if (lane, bucket) in self._graphs or (not self.use_graphs and bucket in self._warm):
            return
        static = self._static(lane)[:bucket]
        if not self.use_graphs:
            # eager: one pass fills lazy caches (and runs torch.compile); more buys nothing on the CPU
            iters = self.warmup_iters if self.device.type == 'cuda' else 1
            for _ in range(iters):
                self._fn(static)
            self._warm.add(bucket)
            return
        side = self._side_streams.get(lane)
        if side is None:  # one side stream per lane for its captures: cuBLAS keeps a workspace per stream
            side = self._side_streams[lane] = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with cudnn_benchmark(self.cudnn_benchmark), torch.cuda.stream(side):
                for _ in range(self.warmup_iters):
                    self._fn(static)
            torch.cuda.current_stream(self.device).wait_stream(side)
            torch.cuda.synchronize(self.device)
            pool = self._pools.get(lane)
            if pool is None:
                pool = self._pools[lane] = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with cudnn_benchmark(self.cudnn_benchmark), torch.cuda.graph(graph, pool=pool, stream=side):
                outputs = self._fn(static)
            torch.cuda.synchronize(self.device)
            self._graphs[(lane, bucket)] = (graph, tuple(outputs))
            LOG.info('captured a CUDA graph for batch size %d (lane %d)', bucket, lane)
        except Exception as exc:  # noqa: BLE001 - fall back to eager, which is correct if slower
            self.graph_error = f'{type(exc).__name__}: {exc}'
            LOG.warning('CUDA graph capture failed for batch %d (%s): running eagerly', bucket,
                        self.graph_error)
            self.use_graphs = False
            self._graphs.clear()
            torch.cuda.synchronize(self.device)
            self._warm.add(bucket)

    # ----------------------------------------------------------------------------------------------- run
    def run(self, batch: torch.Tensor, metas: Sequence[FrameMeta], lane: int = 0) -> NetworkOutput:
        """Canonical depth, confidence and normal (float32, (B, C, H, W)) for the normalized batch, on the
        current stream (with graphs: the lane's graph; its outputs stay valid until the lane's next run)."""
        b = int(batch.shape[0])
        if b != len(metas) or batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f'batch {tuple(batch.shape)} does not match {len(metas)} frame(s)')
        if tuple(batch.shape[2:]) != self.net_hw:
            raise ValueError(f'batch is {tuple(batch.shape[2:])} but the backend was built for {self.net_hw}')
        self._check_lane(lane)
        if not self.use_graphs:
            depth, confidence, normal = self._fn(batch)
            return NetworkOutput(depth, confidence, normal)
        bucket = self._bucket(b)
        if (lane, bucket) not in self._graphs:
            self._ensure(bucket, lane)
            if not self.use_graphs:  # capture failed just now
                depth, confidence, normal = self._fn(batch)
                return NetworkOutput(depth, confidence, normal)
        static = self._static(lane)
        if batch.data_ptr() != static.data_ptr():
            static[:b].copy_(batch)
        graph, outputs = self._graphs[(lane, bucket)]
        graph.replay()
        depth, confidence, normal = (t[:b] for t in outputs)
        return NetworkOutput(depth, confidence, normal)

    def close(self) -> None:
        """Drop graphs, buffers and the network (device memory is returned to the caching allocator)."""
        self._graphs.clear()
        self._static_in.clear()
        self._pools.clear()
        self.module = None  # type: ignore[assignment]
        self._fn = None  # type: ignore[assignment]
        self._side_streams.clear()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            clear_workspaces = getattr(torch._C, '_cuda_clearCublasWorkspaces', None)
            if clear_workspaces is not None:  # cuBLAS workspaces of the capture streams (tens of MiB each)
                clear_workspaces()
            torch.cuda.empty_cache()


class TorchBackendLane:
    """Lane ``index`` of a ``TorchBackend`` (``TorchBackend.lane``): the backend interface bound to it."""

    def __init__(self, backend: TorchBackend, index: int) -> None:
        self.backend = backend
        self.index = index
        self.name = backend.name
        self.device = backend.device
        self.input_format = backend.input_format

    def input_buffer(self, batch_size: int) -> torch.Tensor | None:
        return self.backend.input_buffer(batch_size, self.index)

    def run(self, batch: torch.Tensor, metas: Sequence[FrameMeta]) -> NetworkOutput:
        return self.backend.run(batch, metas, self.index)

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        self.backend.warmup(batch_sizes)

    def close(self) -> None:
        """Nothing: the backend owns the lane's resources (``TorchBackend.close``)."""


def create_backend(config: EngineConfig, device: torch.device) -> TorchBackend:
    """Factory for ``EngineConfig(backend='torch')``."""
    return TorchBackend.from_config(config, device)
