"""resize_cuda: the Triton bilinear (align_corners=True) resize of channels_last tensors against
``F.interpolate`` (PyTorch's own CUDA kernel), its fallback to the torch function, its capture in a CUDA
graph.

Tolerances (module docstring of resize_cuda.py, docs/BENCHMARKS.md 2026-11-22): float32 within float32
round-off of the source index (measured at most 4.6e-5 on values of unit scale: asserted at 2e-5 of the
largest value), bf16 at most one bf16 step (2^-7 of the largest value) from PyTorch's kernel on the same
input.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metric3d_ros.core.model import load_metric3d, resize_cuda
from metric3d_ros.core.model.resample import resize_like
from metric3d_ros.core.model.synthetic import synthetic_state_dict

# small and degenerate shapes (1-pixel inputs and outputs), then the fused ViT-S decoder's GRU states at
# batch 8 and 1 (48 channels, 1/7 and 1/14 of 616x1064 up to 1/4)
SHAPES = [((2, 48, 11, 19), (20, 34)), ((1, 3, 1, 5), (4, 9)), ((2, 8, 6, 6), (1, 1)),
          ((3, 16, 9, 13), (5, 7)), ((8, 48, 88, 152), (154, 266)), ((8, 48, 44, 76), (88, 152)),
          ((8, 48, 44, 76), (154, 266)), ((1, 48, 88, 152), (154, 266))]


def _interpolate(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode='bilinear', align_corners=True)


def test_resize_kernel_is_off_without_cuda_and_falls_back_to_interpolate():
    assert resize_cuda.available('cpu') is False
    assert resize_cuda._scale(11, 20) == pytest.approx(10 / 19) and resize_cuda._scale(6, 1) == 0.0
    x = torch.randn(2, 4, 5, 7).contiguous(memory_format=torch.channels_last)
    ref = torch.empty(1, 1, 9, 13)
    assert torch.equal(resize_cuda.resize_like(x, ref), resize_like(x, ref))
    with pytest.raises(ValueError, match='channels_last CUDA tensor'):
        resize_cuda.resize_op(x, 9, 13)
    net = load_metric3d(synthetic_state_dict('small'), variant='small')
    net.set_fused(True)
    assert net.depth_model.decoder.update_block.resize_kernel is torch.cuda.is_available()
    net.set_fused(False)
    assert net.depth_model.decoder.update_block.resize_kernel is False


@pytest.mark.cuda
@torch.no_grad()
@pytest.mark.parametrize('shape,size', SHAPES)
def test_resize_kernel_matches_interpolate_on_cuda(shape, size):
    assert resize_cuda.available('cuda')
    gen = torch.Generator(device='cuda').manual_seed(0)
    x = torch.randn(shape, device='cuda', generator=gen).contiguous(memory_format=torch.channels_last)
    ref_like = torch.empty((1, 1, *size))
    out = resize_cuda.resize_like(x, ref_like)
    expected = _interpolate(x, size)
    assert out.shape == expected.shape and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert (out - expected).abs().max() <= 2e-5 * expected.abs().max()
    bf16 = x.to(torch.bfloat16)
    got = resize_cuda.resize_op(bf16, *size)
    want = _interpolate(bf16, size)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
    assert (got.float() - want.float()).abs().max() <= 2 ** -7 * want.float().abs().max()  # one bf16 step


@pytest.mark.cuda
@torch.no_grad()
def test_resize_like_uses_the_torch_function_where_the_kernel_does_not_apply_on_cuda():
    x = torch.randn(2, 4, 5, 7, device='cuda')  # contiguous NCHW: not the kernel's layout
    ref = torch.empty(1, 1, 9, 13)
    assert torch.equal(resize_cuda.resize_like(x, ref), resize_like(x, ref))
    empty = torch.empty((1, 4, 0, 7), device='cuda').contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match='empty input'):
        resize_cuda.resize_op(empty, 3, 3)


@pytest.mark.cuda
@torch.no_grad()
def test_resize_kernel_replays_in_a_cuda_graph():
    x = torch.randn((2, 48, 44, 76), device='cuda').contiguous(memory_format=torch.channels_last)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        resize_cuda.resize_op(x, 88, 152)  # warm-up outside the capture (Triton compiles here)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = resize_cuda.resize_op(x, 88, 152)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, resize_cuda.resize_op(x, 88, 152))
