"""gelu_linear: the ViT MLP's fc1 and tanh-approximated GELU as one op (cuBLASLt GELU epilogue on CUDA), and
where the MLP uses it (bf16 CUDA tensors with bf16 weights, fused network only).

Tolerances (gelu_linear.py docstring, docs/BENCHMARKS.md 2026-11-22): the op is
``gelu(x @ W.T + b, approximate='tanh')``; in float32 within float32 round-off of it, in bf16 within one bf16
step (2^-7, relative or on unit-scale values) of the float32 result on the same inputs; the tanh
approximation is at most 4.7e-4 from the exact GELU, below bf16's rounding of the activations.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metric3d_ros.core.model import gelu_linear, load_metric3d
from metric3d_ros.core.model.synthetic import synthetic_state_dict
from metric3d_ros.core.model.vit import Mlp


def test_linear_gelu_op_is_fc1_with_the_tanh_gelu_and_only_replaces_bf16_cuda_calls():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 5, 8), torch.randn(16, 8), torch.randn(16)
    out = gelu_linear.linear_gelu_op(x, weight, bias)
    assert out.shape == (2, 5, 16)
    assert torch.allclose(out, F.gelu(x @ weight.T + bias, approximate='tanh'), atol=1e-6)
    assert not torch.allclose(out, F.gelu(x @ weight.T + bias), atol=1e-6)  # it is the approximation
    with pytest.raises(ValueError, match='do not match'):
        gelu_linear.linear_gelu_op(x, weight[:, :4], bias)
    mlp = Mlp(8, 16)
    plain = mlp(x)
    mlp.gelu_epilogue = True
    assert torch.equal(mlp(x), plain)  # CPU and float32: the exact GELU
    net = load_metric3d(synthetic_state_dict('small'), variant='small')
    net.set_fused(True)
    assert all(block.mlp.gelu_epilogue for block in net.depth_model.encoder.blocks[0])
    net.set_fused(False)
    assert not any(block.mlp.gelu_epilogue for block in net.depth_model.encoder.blocks[0])


def _vit_s_mlp_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ViT-S fc1 shapes (384 -> 1536) over 2 x 50 tokens, pre-activations of unit scale."""
    gen = torch.Generator(device='cuda').manual_seed(0)
    x = torch.randn(2, 50, 384, device='cuda', generator=gen)
    weight = torch.randn(1536, 384, device='cuda', generator=gen) / 384 ** 0.5
    bias = 0.1 * torch.randn(1536, device='cuda', generator=gen)
    return x.to(dtype), weight.to(dtype), bias.to(dtype)


@pytest.mark.cuda
@torch.no_grad()
def test_linear_gelu_op_on_cuda_float32_is_the_tanh_gelu_of_fc1(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
    x, weight, bias = _vit_s_mlp_inputs(torch.float32)
    out = gelu_linear.linear_gelu_op(x, weight, bias)
    pre = F.linear(x, weight, bias)
    assert out.shape == (2, 50, 1536) and out.dtype == torch.float32
    torch.testing.assert_close(out, F.gelu(pre, approximate='tanh'), rtol=1e-5, atol=1e-5)
    assert (out - F.gelu(pre)).abs().max() <= 4.74e-4 + 1e-5  # the approximation's largest: 4.73e-4 at 2.70


@pytest.mark.cuda
@torch.no_grad()
def test_linear_gelu_op_on_cuda_bf16_is_within_one_bf16_step():
    x, weight, bias = _vit_s_mlp_inputs(torch.bfloat16)
    out = gelu_linear.linear_gelu_op(x, weight, bias)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 50, 1536)
    want = F.gelu(F.linear(x.float(), weight.float(), bias.float()), approximate='tanh')
    # one bf16 step of the value, or of unit-scale values near zero (bf16 reductions inside the GEMM)
    torch.testing.assert_close(out.float(), want, rtol=2 ** -7, atol=2 ** -7)


@pytest.mark.cuda
@torch.no_grad()
def test_mlp_uses_the_epilogue_for_bf16_only_on_cuda():
    torch.manual_seed(0)
    mlp = Mlp(384, 1536).cuda()
    x = torch.randn(2, 50, 384, device='cuda')
    mlp_bf16 = Mlp(384, 1536).cuda().to(torch.bfloat16)
    mlp_bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in mlp.state_dict().items()})
    exact = mlp_bf16(x.to(torch.bfloat16))
    mlp_bf16.gelu_epilogue = True
    fused = mlp_bf16(x.to(torch.bfloat16))
    assert not torch.equal(fused, exact)  # the epilogue ran (the tanh approximation)
    rel = float((fused.double() - exact.double()).norm() / exact.double().norm())
    assert rel < 2 ** -7  # the approximation stays below bf16's rounding
    mlp_fp16 = Mlp(384, 1536).cuda().half()
    mlp_fp16.load_state_dict({k: v.half() for k, v in mlp.state_dict().items()})
    plain = mlp_fp16(x.half())
    mlp_fp16.gelu_epilogue = True
    assert torch.equal(mlp_fp16(x.half()), plain)  # fp16 keeps the exact GELU
