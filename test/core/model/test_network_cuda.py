"""Metric3DNet's fused path on CUDA, where the network runs the Triton kernels (convex upsampling, ConvGRU
resizes) and, in bf16, the fc1 + GELU epilogue: the same function as upstream's arithmetic.

Tolerances (docs/BENCHMARKS.md "Fused network" and "Reduced precision"; the CPU tests of the fused network in
test_model_reduced_precision.py use the same): float32 fused vs unfused within 1e-5 relative (strict float32:
TF32 off); bf16 'cast' within 0.1 relative of strict float32 (synthetic weights amplify bf16 rounding).
"""
from __future__ import annotations

import copy

import pytest
import torch

from metric3d_ros.core.engine.torch_backend import TorchBackend, tf32_mode
from metric3d_ros.core.model import convex_cuda, load_metric3d, resize_cuda
from metric3d_ros.core.model.synthetic import synthetic_state_dict

pytestmark = pytest.mark.cuda

NET_HW = (56, 84)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope='module')
def small_net():
    return load_metric3d(synthetic_state_dict('small'), variant='small', device='cuda', fused_attention=True)


def _batch(seed: int) -> torch.Tensor:
    gen = torch.Generator(device='cuda').manual_seed(seed)
    return torch.randn(2, 3, *NET_HW, device='cuda', generator=gen)


def _count_kernel_calls(monkeypatch) -> dict[str, int]:
    calls = {'convex': 0, 'resize': 0}

    def counted(name, op):
        def call(*args):
            calls[name] += 1
            return op(*args)
        return call

    monkeypatch.setattr(convex_cuda, 'convex_upsample_op', counted('convex', convex_cuda.convex_upsample_op))
    monkeypatch.setattr(resize_cuda, 'resize_op', counted('resize', resize_cuda.resize_op))
    return calls


def test_fused_float32_network_with_the_cuda_kernels_computes_upstream_arithmetic(small_net, monkeypatch):
    net = copy.deepcopy(small_net).to(memory_format=torch.channels_last)
    x = _batch(1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), tf32_mode(False):
        ref = net(x)
        net.set_fused(True)
        calls = _count_kernel_calls(monkeypatch)
        fused = net(x)
    assert calls['convex'] == 1 and calls['resize'] > 0  # the kernels ran in the fused forward
    for a, b in zip(fused, ref, strict=True):
        assert a.shape == b.shape and _rel(a, b) < 1e-5


def test_bf16_cast_network_with_the_cuda_kernels_stays_near_strict_float32(small_net, monkeypatch):
    x = _batch(2)
    with torch.inference_mode():
        strict = TorchBackend(copy.deepcopy(small_net), 'cuda', NET_HW, precision='fp32', max_batch_size=2,
                              cuda_graphs=False).module(x)
        backend = TorchBackend(copy.deepcopy(small_net), 'cuda', NET_HW, precision='bf16', max_batch_size=2,
                               cuda_graphs=False, autocast_scope='cast')
        net = backend.module.net
        assert net.depth_model.decoder.fused and net.depth_model.decoder.convex_kernel
        assert all(block.mlp.gelu_epilogue for block in net.depth_model.encoder.blocks[0])
        calls = _count_kernel_calls(monkeypatch)
        out = backend.module(x)
    assert calls['convex'] == 1 and calls['resize'] > 0
    for a, b in zip(out, strict, strict=True):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert _rel(a, b) < 0.1
