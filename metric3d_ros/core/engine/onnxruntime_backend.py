"""ONNX Runtime backend: runs a ``metric3d_export`` file on TensorRT, CUDA or the CPU.

Selected by configuration alone: ``EngineConfig(backend='onnxruntime', onnx=OnnxRuntimeOptions(
model_path='vit_s.onnx', providers=(...)))`` (ROS parameters ``backend`` and ``onnx.*``). The file folds
the normalization in, so the backend takes the engine's batch as RGB 0..255 (``input_format='rgb255'``).

- CPU device: the batch goes to ``session.run`` as a numpy view of the tensor (no copy); the outputs come
  back as numpy arrays wrapped as tensors.
- CUDA device: IOBinding with device pointers. The engine's input tensor is bound where it lies, and the
  outputs are written by ONNX Runtime into tensors preallocated here (one set per batch size, reused on the
  next call of that size, as the Backend contract allows), so nothing takes a host round trip. ONNX Runtime
  runs on PyTorch's current CUDA stream (``user_compute_stream``); if the caller later runs on another
  stream, that stream is synchronized before the call.
- uint8 files: the batch is rounded and converted on its device first (exact for the engine's upstream-exact
  preprocessing, whose values are integral).

Configuration (``EngineConfig``): ``onnx.model_path``, ``onnx.providers`` (order of preference),
``onnx.graph_optimization``, ``onnx.cudnn_exhaustive_search`` (True: cuDNN 'EXHAUSTIVE' algorithm search,
False: 'HEURISTIC'), ``onnx.trt_cache_dir``, ``onnx.trt_fp16``; the TensorRT shape profile is batch
1..``max_batch_size`` at ``net_height_px`` x ``net_width_px``. The file's variant must equal ``variant``.
The precision is the file's: ``precision`` other than the file's is logged and ignored.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from metric3d_ros.core.engine.backend import FrameMeta, InputFormat, NetworkOutput
from metric3d_ros.core.engine.ort_session import OpenedSession, SessionSettings, TrtProfile, open_session
from metric3d_ros.core.model.onnx_metadata import INPUT_NAME, OUTPUT_NAMES, OnnxModelInfo

if TYPE_CHECKING:
    from metric3d_ros.core.config import EngineConfig

LOG = logging.getLogger(__name__)

_OUTPUT_CHANNELS = (1, 1, 4)
_NP_DTYPES = {'float32': np.float32, 'uint8': np.uint8}


def network_output_hw(height_px: int, width_px: int) -> tuple[int, int]:
    """Output size of the network for an input size: 4 * floor(3.5 * ceil(side / 14)) (= side for multiples
    of 28)."""
    return tuple(4 * ((7 * -(-side // 14)) // 2) for side in (height_px, width_px))  # type: ignore[return-value]


class OnnxRuntimeBackend:
    """Runs an exported Metric3D graph (see the module docstring)."""

    name = 'onnxruntime'

    def __init__(self, settings: SessionSettings, *, variant: str | None, device: torch.device | str,
                 net_hw: tuple[int, int]) -> None:
        self.device = torch.device(device)
        if self.device.type not in ('cpu', 'cuda'):
            raise ValueError(f"the onnxruntime backend runs on 'cpu' or 'cuda', not {self.device}")
        if self.device.type == 'cuda' and settings.device_type != 'cuda':
            raise ValueError("settings.device_type must be 'cuda' for a CUDA device")
        self.net_hw = (int(net_hw[0]), int(net_hw[1]))
        self._opened: OpenedSession | None = open_session(settings, variant=variant)
        self.input_format: InputFormat = 'rgb255'
        self._stream = settings.cuda_stream
        self._outputs: dict[tuple[int, int, int], tuple[torch.Tensor, ...]] = {}

    @property
    def info(self) -> OnnxModelInfo:
        return self._session().info

    @property
    def providers(self) -> tuple[str, ...]:
        """The providers the session really uses, in order."""
        return self._session().used

    def _session(self) -> OpenedSession:
        if self._opened is None:
            raise RuntimeError('this onnxruntime backend was closed')
        return self._opened

    def run(self, batch: torch.Tensor, metas: Sequence[FrameMeta]) -> NetworkOutput:
        if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[0] != len(metas):
            raise ValueError(f'batch {tuple(batch.shape)} does not match {len(metas)} frame(s) of (3, H, W)')
        if batch.device != self.device and not (batch.device.type == self.device.type == 'cpu'):
            raise ValueError(f'batch is on {batch.device}, the backend on {self.device}')
        return self._run_tensor(batch)

    def _run_tensor(self, batch: torch.Tensor) -> NetworkOutput:
        opened = self._session()
        x = self._as_input(batch, opened.info.input_dtype)
        if self.device.type == 'cuda':
            return self._run_bound(x)
        arrays = opened.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        depth, confidence, normal = (torch.from_numpy(a) for a in arrays)
        return NetworkOutput(depth=depth, confidence=confidence, normal=normal)

    def _as_input(self, batch: torch.Tensor, input_dtype: str) -> torch.Tensor:
        if input_dtype == 'uint8':
            return batch.round().clamp_(0, 255).to(torch.uint8).contiguous()
        return batch.to(torch.float32).contiguous()

    def _output_buffers(self, b: int, h: int, w: int) -> tuple[torch.Tensor, ...]:
        key = (b, h, w)
        buffers = self._outputs.get(key)
        if buffers is None:
            oh, ow = network_output_hw(h, w)
            buffers = tuple(torch.empty((b, c, oh, ow), dtype=torch.float32, device=self.device)
                            for c in _OUTPUT_CHANNELS)
            self._outputs[key] = buffers
        return buffers

    def _run_bound(self, x: torch.Tensor) -> NetworkOutput:
        """IOBinding run: input and outputs bound as device pointers (CUDA, or CPU in tests)."""
        opened = self._session()
        b, _, h, w = x.shape
        outputs = self._output_buffers(b, h, w)
        kind = x.device.type
        index = (x.device.index or 0) if kind == 'cuda' else 0
        binding = opened.session.io_binding()
        binding.bind_input(INPUT_NAME, kind, index, _NP_DTYPES[opened.info.input_dtype], tuple(x.shape),
                           x.data_ptr())
        for name, tensor in zip(OUTPUT_NAMES, outputs, strict=True):
            binding.bind_output(name, kind, index, np.float32, tuple(tensor.shape), tensor.data_ptr())
        if kind == 'cuda' and torch.cuda.current_stream(x.device).cuda_stream != self._stream:
            torch.cuda.current_stream(x.device).synchronize()  # ONNX Runtime runs on another stream
        opened.session.run_with_iobinding(binding)
        return NetworkOutput(depth=outputs[0], confidence=outputs[1], normal=outputs[2])

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        """One run per batch size (TensorRT builds its engine and CUDA/cuDNN pick algorithms here)."""
        h, w = self.net_hw
        for b in batch_sizes:
            self._run_tensor(torch.full((int(b), 3, h, w), 128.0, dtype=torch.float32, device=self.device))
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        self._opened = None
        self._outputs.clear()


def settings_from_config(config: EngineConfig, device: torch.device) -> SessionSettings:
    """The session settings that ``config`` asks for on ``device``."""
    opts = config.onnx
    cuda = device.type == 'cuda'
    stream = torch.cuda.current_stream(device).cuda_stream if cuda else 0
    return SessionSettings(
        model_path=opts.model_path,
        providers=tuple(opts.providers),
        device_type=device.type,
        device_id=(device.index or 0) if cuda else 0,
        graph_optimization=opts.graph_optimization,
        cudnn_conv_algo_search='EXHAUSTIVE' if opts.cudnn_exhaustive_search else 'HEURISTIC',
        cuda_tf32=config.precision == 'tf32',
        trt_cache_dir=opts.trt_cache_dir,
        trt_fp16=opts.trt_fp16,
        trt_profile=TrtProfile.for_engine(config.max_batch_size, config.net_hw),
        cuda_stream=int(stream),
    )


def create_backend(config: EngineConfig, device: torch.device) -> OnnxRuntimeBackend:
    """Factory for ``EngineConfig(backend='onnxruntime')`` (see ``backend.create_backend``)."""
    backend = OnnxRuntimeBackend(settings_from_config(config, device), variant=config.variant, device=device,
                                 net_hw=config.net_hw)
    if config.precision != backend.info.precision and not (
            config.precision == 'tf32' and backend.info.precision == 'fp32'):
        LOG.warning('precision %r is configured but %s is an %s file: the file decides the precision of the '
                    'onnxruntime backend (export with or without --fp16, or use onnx.trt_fp16 on TensorRT)',
                    config.precision, config.onnx.model_path, backend.info.precision)
    return backend
