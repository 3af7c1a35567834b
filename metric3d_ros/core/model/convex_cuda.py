"""Convex upsampling as one Triton kernel (CUDA, fused decoder only).

``gru.convex_upsample`` is a softmax over 9 neighbours per output pixel and a weighted sum of the 3x3
neighbourhood of the coarse state. Compiled by Inductor it becomes one reduction kernel whose stores follow
the coarse layout (N, D, fy, fx, H, W) and are transposed into the fine image: 1.0 ms for a batch of eight
616x1064 outputs on an H100, 4 % of the whole ViT-S network. The kernel here gives each lane one fine
pixel (all D channels): it reads the 9 logits of its sub-pixel and the 3x3 neighbourhood, and its stores are
contiguous rows of the output. Same function (the normalization is applied after the weighted sum instead
of before it: other rounding, within float32 round-off; test/core/model/test_convex_cuda.py compares it
with the torch function on the GPU).

``convex_upsample_op`` is a ``torch.library`` custom op (torch >= 2.4), so ``torch.compile`` treats it as one
opaque call and CUDA graphs capture it. ``available(device)`` says whether it can run (it compiles and runs
a probe); the decoder uses the torch function otherwise (the CPU, exports, the float32 path).
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from metric3d_ros.core.cuda_kernels import kernel_available

_LANES = 256


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def convex_upsample_kernel(flow_ptr, mask_ptr, out_ptr, total, h, w, ms_n, ms_c, ms_h, ms_w,
                               D: tl.constexpr, DP: tl.constexpr, F: tl.constexpr, LANES: tl.constexpr):
        # one fine pixel per lane, all D channels: (LANES, DP) tiles, DP = D rounded up to a power of two
        offs = tl.program_id(0).to(tl.int64) * LANES + tl.arange(0, LANES)
        live = offs < total
        out_w = F * w
        out_h = F * h
        x = offs % out_w
        y = (offs // out_w) % out_h
        b = offs // (out_w * out_h)
        i = y // F
        j = x // F
        sub = (y % F) * F + (x % F)
        mask_base = b * ms_n + i * ms_h + j * ms_w + sub * ms_c
        ch = tl.arange(0, DP)
        ch_live = ch < D
        peak = tl.full((LANES,), float('-inf'), tl.float32)
        for k in tl.static_range(9):
            logit = tl.load(mask_ptr + mask_base + k * F * F * ms_c, mask=live, other=0.0).to(tl.float32)
            peak = tl.maximum(peak, logit)
        total_weight = tl.zeros((LANES,), tl.float32)
        acc = tl.zeros((LANES, DP), tl.float32)
        for k in tl.static_range(9):
            logit = tl.load(mask_ptr + mask_base + k * F * F * ms_c, mask=live, other=0.0).to(tl.float32)
            weight = tl.exp(logit - peak)
            total_weight += weight
            yy = i + (k // 3) - 1
            xx = j + (k % 3) - 1
            inside = live & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            src = ((b * D)[:, None] + ch[None, :]) * (h * w) + (yy * w + xx)[:, None]
            value = tl.load(flow_ptr + src, mask=inside[:, None] & ch_live[None, :], other=0.0)
            acc += weight[:, None] * value
        result = acc / total_weight[:, None]
        dst = ((b * D)[:, None] + ch[None, :]) * (out_h * out_w) + (y * out_w + x)[:, None]
        tl.store(out_ptr + dst, result, mask=live[:, None] & ch_live[None, :])

    return convex_upsample_kernel


def _convex_upsample(flow: Tensor, mask: Tensor, factor: int) -> Tensor:
    """(N, D, H, W) state, (N, 9 * factor**2, H, W) logits -> (N, D, factor * H, factor * W) float32."""
    flow = flow.float().contiguous()
    n, d, h, w = flow.shape
    out = torch.empty((n, d, factor * h, factor * w), dtype=torch.float32, device=flow.device)
    total = n * factor * h * factor * w
    if total:
        grid = ((total + _LANES - 1) // _LANES,)
        dp = 1 << max(0, (d - 1).bit_length())
        with torch.cuda.device(flow.device):  # Triton launches on the current device
            _kernel()[grid](flow, mask, out, total, h, w, *mask.stride(), D=d, DP=dp, F=factor, LANES=_LANES)
    return out


def _convex_upsample_shape(flow: Tensor, mask: Tensor, factor: int) -> Tensor:
    n, d, h, w = flow.shape
    return flow.new_empty((n, d, factor * h, factor * w), dtype=torch.float32)


if hasattr(torch.library, 'custom_op'):  # torch >= 2.4; older versions keep the torch function
    convex_upsample_op = torch.library.custom_op('metric3d_ros::convex_upsample', mutates_args=())(
        _convex_upsample)
    convex_upsample_op.register_fake(_convex_upsample_shape)
else:
    convex_upsample_op = None


@functools.cache
def available(device_type: str) -> bool:
    """True when the kernel can run on ``device_type`` (CUDA, Triton importable, torch >= 2.4)."""
    if convex_upsample_op is None:
        return False
    return kernel_available(device_type, _probe, 'convex upsampling kernel')


def _probe() -> None:
    """Compile and run the kernel once on a 1x1 state (a missing C compiler or an unsupported GPU fails here,
    not in the network's first forward): uniform logits average the zero-padded 3x3 neighbourhood."""
    flow = torch.ones((1, 1, 1, 1), device='cuda')
    out = _convex_upsample(flow, torch.zeros((1, 9 * 4, 1, 1), device='cuda'), 2)
    expected = torch.full((1, 1, 2, 2), 1.0 / 9.0)
    if not torch.allclose(out.cpu(), expected):
        raise RuntimeError(f'probe gave {out.cpu().flatten().tolist()}, expected 1/9 everywhere')
