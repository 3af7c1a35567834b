"""The ViT MLP's first linear layer and its GELU as one cuBLASLt call (CUDA, fused reduced-precision path).

Compiled by Inductor, ``gelu(fc1(x))`` is a cuBLAS GEMM with a bias epilogue followed by a separate
elementwise GELU pass over the (tokens x 4 * dim) activations, read and written once more: 1.05 ms of the
21.2 ms ViT-S batch-8 network on an H100. cuBLASLt can apply the GELU in the GEMM's epilogue
(``torch._addmm_activation(..., use_gelu=True)``), but only its tanh approximation,
0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))). It differs from upstream's exact (erf) GELU by at most
4.7e-4 (at x = 2.70, where GELU is 2.69: 1.8e-4 relative; at most 2.2e-3 relative where |GELU| > 0.1),
against bf16's rounding of the same activations of up to 2^-8 = 3.9e-3 relative: a reduced-precision
option of the fused network for bf16 tensors on CUDA only (``Mlp.gelu_epilogue``; not for fp16, whose
rounding, 4.9e-4, is finer than the approximation, and not under autocast, which has no rule for the op).

``linear_gelu_op`` is a ``torch.library`` custom op (torch >= 2.4) so that Inductor keeps the call whole
instead of decomposing ``_addmm_activation`` back into a GEMM and a GELU; on the CPU it computes the same
tanh-approximated function with ``F.linear`` and ``F.gelu``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _linear_gelu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """gelu_tanh(x @ weight.T + bias) for x (..., K), weight (N, K), bias (N,) -> (..., N)."""
    if weight.dim() != 2 or bias.shape != (weight.shape[0],) or x.shape[-1] != weight.shape[1]:
        raise ValueError(f'linear_gelu: x {tuple(x.shape)}, weight {tuple(weight.shape)} and bias '
                         f'{tuple(bias.shape)} do not match')
    if not x.is_cuda:
        return F.gelu(F.linear(x, weight, bias), approximate='tanh')
    flat = x.reshape(-1, x.shape[-1])
    out = torch._addmm_activation(bias, flat, weight.t(), use_gelu=True)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def _linear_gelu_shape(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


if hasattr(torch.library, 'custom_op'):  # torch >= 2.4; older versions keep fc1 and GELU apart
    linear_gelu_op = torch.library.custom_op('metric3d_ros::linear_gelu', mutates_args=())(_linear_gelu)
    linear_gelu_op.register_fake(_linear_gelu_shape)
else:
    linear_gelu_op = None


def available() -> bool:
    """True when the custom op exists (torch >= 2.4)."""
    return linear_gelu_op is not None
