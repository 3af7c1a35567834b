"""convex_cuda: the Triton convex x4 upsampling against ``gru.convex_upsample`` (the torch function the
decoder runs otherwise), inside ``torch.compile`` and a CUDA graph, and off without CUDA.

Inputs as the fused decoder produces them: a float32 6-channel state and bf16 channels_last logits.
Tolerance (convex_cuda.py docstring, docs/BENCHMARKS.md 2026-11-22): the same function with the normalization
after the weighted sum, within float32 round-off: relative difference below 1e-6 (measured 1.0e-7).
"""
from __future__ import annotations

import pytest
import torch

from metric3d_ros.core.model import convex_cuda, load_metric3d
from metric3d_ros.core.model.gru import convex_upsample
from metric3d_ros.core.model.synthetic import synthetic_state_dict


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _inputs(n: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device='cuda').manual_seed(seed)
    flow = torch.randn(n, 6, h, w, device='cuda', generator=gen)
    mask = torch.randn(n, 144, h, w, device='cuda', generator=gen).to(torch.bfloat16)
    return flow, mask.contiguous(memory_format=torch.channels_last)


def test_convex_kernel_is_off_without_cuda():
    assert convex_cuda.available('cpu') is False
    net = load_metric3d(synthetic_state_dict('small'), variant='small')
    net.set_fused(True)
    assert net.depth_model.decoder.convex_kernel is torch.cuda.is_available()
    net.set_fused(False)
    assert net.depth_model.decoder.convex_kernel is False


@pytest.mark.cuda
@torch.no_grad()
@pytest.mark.parametrize('n,h,w', [(2, 7, 10), (1, 1, 1), (8, 154, 266), (1, 154, 266)])
def test_convex_kernel_matches_the_torch_function_on_cuda(n, h, w):
    assert convex_cuda.available('cuda')
    flow, mask = _inputs(n, h, w)
    got = convex_cuda.convex_upsample_op(flow, mask, 4)
    ref = convex_upsample(flow, mask, 4)
    assert got.shape == ref.shape == (n, 6, 4 * h, 4 * w) and got.dtype == torch.float32
    assert _rel(got, ref) < 1e-6


@pytest.mark.cuda
@torch.no_grad()
def test_convex_kernel_inside_compile_and_a_cuda_graph_gives_the_eager_kernel_result():
    flow, mask = _inputs(2, 22, 38, seed=1)
    eager = convex_cuda.convex_upsample_op(flow, mask, 4)
    compiled = torch.compile(lambda f, m: convex_cuda.convex_upsample_op(f, m, 4) * 1.0, dynamic=False,
                             fullgraph=True)
    assert torch.equal(compiled(flow, mask), eager)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = convex_cuda.convex_upsample_op(flow, mask, 4)
    flow.mul_(-1.0)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, convex_cuda.convex_upsample_op(flow, mask, 4))
