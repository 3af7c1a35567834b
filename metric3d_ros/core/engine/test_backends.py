"""Backends for tests and demos that need no weights: deterministic fake, replay, and a slow wrapper.

- ``FakeBackend``: per-pixel deterministic functions of the normalized input, no weights, any device.
  canonical depth = ``depth_offset + 3 tanh(x_r) + 2 tanh(x_g)`` (in ``depth_offset`` +- 5, clamped to
  [0.1, 200] like the network), confidence = ``sigmoid(x_b)``, normal = unit
  ``(tanh(x_r), tanh(x_g), -1 - |x_b|)`` (facing the camera) with kappa ``1 + |x_r|``. Being per pixel, it
  is exactly batch-invariant, and two frames with the same pixels give the same canonical depth, which
  makes the per-frame intrinsics scaling directly testable. ``EngineConfig(backend='fake')`` selects it.
- ``ReplayBackend``: returns given canonical outputs (e.g. a reference file's ``depth``) whatever the input,
  to test postprocessing in isolation.
- ``SlowBackend``: wraps another backend and sleeps ``delay_ms`` per ``run`` (plus ``per_frame_ms`` per
  frame), to test batching deadlines and back-pressure.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from metric3d_ros.core.engine.backend import Backend, FrameMeta, InputFormat, NetworkOutput

if TYPE_CHECKING:
    from metric3d_ros.core.config import EngineConfig


class FakeBackend:
    """Deterministic per-pixel stand-in for the network (module docstring)."""

    name = 'fake'

    def __init__(self, device: torch.device | str = 'cpu', depth_offset: float = 6.0,
                 input_format: InputFormat = 'normalized') -> None:
        if not 5.2 <= depth_offset <= 195.0:
            raise ValueError(f'depth_offset must lie in [5.2, 195], got {depth_offset}')
        self.device = torch.device(device)
        self.depth_offset = float(depth_offset)
        self.input_format: InputFormat = input_format
        self.calls: list[int] = []  # batch size of every run, for tests

    def run(self, batch: torch.Tensor, metas: Sequence[FrameMeta]) -> NetworkOutput:
        if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[0] != len(metas):
            raise ValueError(f'batch {tuple(batch.shape)} does not match {len(metas)} frame(s)')
        self.calls.append(int(batch.shape[0]))
        x = batch.float()
        if self.input_format == 'rgb255':
            mean = torch.tensor([123.675, 116.28, 103.53], device=x.device).view(1, 3, 1, 1)
            std = torch.tensor([58.395, 57.12, 57.375], device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        depth = (self.depth_offset + 3.0 * torch.tanh(r) + 2.0 * torch.tanh(g)).clamp(0.1, 200.0)
        confidence = torch.sigmoid(b)
        xyz = torch.cat([torch.tanh(r), torch.tanh(g), -1.0 - b.abs()], dim=1)
        normal = torch.cat([torch.nn.functional.normalize(xyz, dim=1), 1.0 + r.abs()], dim=1)
        return NetworkOutput(depth=depth, confidence=confidence, normal=normal)

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        return None

    def close(self) -> None:
        return None


class ReplayBackend:
    """Returns fixed canonical outputs (B, C, H, W), checking that the batch size matches."""

    name = 'replay'
    input_format: InputFormat = 'normalized'

    def __init__(self, depth: np.ndarray | torch.Tensor, confidence: np.ndarray | torch.Tensor | None = None,
                 normal: np.ndarray | torch.Tensor | None = None, device: torch.device | str = 'cpu') -> None:
        self.device = torch.device(device)
        self.depth = torch.as_tensor(np.asarray(depth, dtype=np.float32)).to(self.device)
        self.confidence = None if confidence is None else torch.as_tensor(
            np.asarray(confidence, dtype=np.float32)).to(self.device)
        self.normal = None if normal is None else torch.as_tensor(
            np.asarray(normal, dtype=np.float32)).to(self.device)
        if self.depth.ndim != 4 or self.depth.shape[1] != 1:
            raise ValueError(f'depth must be (B, 1, H, W), got {tuple(self.depth.shape)}')
        self.batches: list[torch.Tensor] = []  # copies of the batches seen, for tests

    def run(self, batch: torch.Tensor, metas: Sequence[FrameMeta]) -> NetworkOutput:
        if batch.shape[0] != self.depth.shape[0] or tuple(batch.shape[2:]) != tuple(self.depth.shape[2:]):
            raise ValueError(
                f'replay holds {tuple(self.depth.shape)} outputs but got a {tuple(batch.shape)} batch'
            )
        self.batches.append(batch.detach().clone())
        return NetworkOutput(self.depth, self.confidence, self.normal)

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        return None

    def close(self) -> None:
        return None


class SlowBackend:
    """Delegates to ``inner`` after sleeping ``delay_ms`` (+ ``per_frame_ms`` per frame) per run."""

    def __init__(self, inner: Backend, delay_ms: float, per_frame_ms: float = 0.0) -> None:
        if delay_ms < 0 or per_frame_ms < 0:
            raise ValueError(f'delays must be >= 0, got delay_ms={delay_ms}, per_frame_ms={per_frame_ms}')
        self.inner = inner
        self.delay_ms = float(delay_ms)
        self.per_frame_ms = float(per_frame_ms)
        self.name = f'slow({inner.name})'
        self.device = inner.device
        self.input_format = inner.input_format

    def run(self, batch: torch.Tensor, metas: Sequence[FrameMeta]) -> NetworkOutput:
        time.sleep((self.delay_ms + self.per_frame_ms * len(metas)) / 1e3)
        return self.inner.run(batch, metas)

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        self.inner.warmup(batch_sizes)

    def close(self) -> None:
        self.inner.close()


def create_fake_backend(config: EngineConfig, device: torch.device) -> FakeBackend:
    """Factory for ``EngineConfig(backend='fake')``."""
    return FakeBackend(device)
