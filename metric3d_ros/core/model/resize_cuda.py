"""Bilinear resizing with ``align_corners=True`` of channels_last tensors as one Triton kernel (CUDA, fused
decoder only).

The ConvGRU passes its hidden states between scales with ``F.interpolate(..., mode='bilinear',
align_corners=True)`` (``resample.resize_like``). Compiled by Inductor this is an index-gather kernel far
from the memory bandwidth: 75 us alone, 100 us inside the network, for a batch of eight 48-channel 88x152 ->
154x266 states on an H100 (PyTorch's own CUDA kernel: 143 us; docs/BENCHMARKS.md, 2026-11-22), where reading
and writing the data takes ~14 us. The kernel here gives each lane one output element of the NHWC tensor,
so neighbouring lanes load neighbouring channels of the same four source pixels and store contiguously.
The arithmetic follows PyTorch's kernel (float32 source index ``scale * dst`` with ``scale = (in - 1) /
(out - 1)`` in float32, truncated to the top-left tap, the weighted sum in float32, then rounded to the
tensor's dtype). Measured on the H100: at most 4.6e-5 from PyTorch's CUDA kernel on float32 values of unit
scale (more than the few ulps the formula alone explains; a replay of the formula in numpy matches the CPU
kernel within 1.4e-7 relative), and at most one bf16 step apart on bf16 tensors, as Inductor's version is.

``resize_op`` is a ``torch.library`` custom op (torch >= 2.4), so ``torch.compile`` keeps it as one opaque
call and CUDA graphs capture it. ``available(device)`` says whether it can run (it compiles and runs a probe);
``resize_like`` uses it for non-empty channels_last CUDA tensors whose input and output offsets fit in
int32, and ``resample.resize_like`` otherwise.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from metric3d_ros.core.cuda_kernels import kernel_available
from metric3d_ros.core.model.resample import resize_like as resize_like_torch

_BLOCK = 1024


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def resize_bilinear_nhwc_kernel(x_ptr, out_ptr, total, c, h, w, out_h, out_w, scale_h, scale_w,
                                    BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = offs < total
        ch = offs % c
        pixel = offs // c
        ox = pixel % out_w
        oy = (pixel // out_w) % out_h
        n = pixel // (out_w * out_h)
        sy = scale_h * oy.to(tl.float32)
        sx = scale_w * ox.to(tl.float32)
        y0 = sy.to(tl.int32)  # truncation = floor: the source index is never negative
        x0 = sx.to(tl.int32)
        wy = sy - y0.to(tl.float32)
        wx = sx - x0.to(tl.float32)
        y1 = tl.minimum(y0 + 1, h - 1)
        x1 = tl.minimum(x0 + 1, w - 1)
        top = (n * h + y0) * w
        bottom = (n * h + y1) * w
        v00 = tl.load(x_ptr + (top + x0) * c + ch, mask=live, other=0.0).to(tl.float32)
        v01 = tl.load(x_ptr + (top + x1) * c + ch, mask=live, other=0.0).to(tl.float32)
        v10 = tl.load(x_ptr + (bottom + x0) * c + ch, mask=live, other=0.0).to(tl.float32)
        v11 = tl.load(x_ptr + (bottom + x1) * c + ch, mask=live, other=0.0).to(tl.float32)
        value = (1.0 - wy) * ((1.0 - wx) * v00 + wx * v01) + wy * ((1.0 - wx) * v10 + wx * v11)
        tl.store(out_ptr + offs, value.to(out_ptr.dtype.element_ty), mask=live)

    return resize_bilinear_nhwc_kernel


def _fits(x: Tensor, out_h: int, out_w: int) -> bool:
    """Non-empty input, and input and output offsets (plus a block of lanes) within int32."""
    n, c, h, w = x.shape
    limit = 2 ** 31 - _BLOCK
    return h > 0 and w > 0 and x.numel() <= limit and n * c * out_h * out_w <= limit


def _scale(size_in: int, size_out: int) -> float:
    """PyTorch's align_corners scale: (in - 1) / (out - 1) divided in float32, 0 for a 1-pixel output."""
    return float(np.float32(size_in - 1) / np.float32(size_out - 1)) if size_out > 1 else 0.0


def _resize(x: Tensor, out_h: int, out_w: int) -> Tensor:
    """(N, C, H, W) channels_last -> (N, C, out_h, out_w) channels_last, same dtype."""
    if x.dim() != 4 or not x.is_cuda or not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f'resize_op needs a channels_last CUDA tensor, got {tuple(x.shape)} on {x.device}')
    n, c, h, w = x.shape
    out = torch.empty((n, c, out_h, out_w), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)
    total = out.numel()
    if not _fits(x, out_h, out_w):
        raise ValueError(f'resize_op: {tuple(x.shape)} -> ({out_h}, {out_w}) has an empty input or does not '
                         "fit the kernel's int32 indexing")
    if total:
        with torch.cuda.device(x.device):  # Triton launches on the current device
            _kernel()[((total + _BLOCK - 1) // _BLOCK,)](
                x, out, total, c, h, w, out_h, out_w, _scale(h, out_h), _scale(w, out_w), BLOCK=_BLOCK)
    return out


def _resize_shape(x: Tensor, out_h: int, out_w: int) -> Tensor:
    n, c = x.shape[:2]
    return x.new_empty((n, c, out_h, out_w)).contiguous(memory_format=torch.channels_last)


if hasattr(torch.library, 'custom_op'):  # torch >= 2.4; older versions keep the torch function
    resize_op = torch.library.custom_op('metric3d_ros::resize_bilinear_align_corners',
                                        mutates_args=())(_resize)
    resize_op.register_fake(_resize_shape)
else:
    resize_op = None


def resize_like(x: Tensor, ref: Tensor) -> Tensor:
    """``resample.resize_like`` (bilinear, align_corners=True, to ``ref``'s spatial size) with the kernel
    where it applies (see the module docstring)."""
    out_h, out_w = ref.shape[-2:]
    if (resize_op is None or x.dim() != 4 or not x.is_cuda or not _fits(x, out_h, out_w)
            or not x.is_contiguous(memory_format=torch.channels_last)):
        return resize_like_torch(x, ref)
    return resize_op(x, int(out_h), int(out_w))


@functools.cache
def available(device_type: str) -> bool:
    """True when the kernel can run on ``device_type`` (CUDA, Triton importable, torch >= 2.4)."""
    if resize_op is None:
        return False
    return kernel_available(device_type, _probe, 'bilinear resize kernel')


def _probe() -> None:
    """Compile and run the kernel once: a 2x2 ramp resized to 3x3 interpolates to the midpoints."""
    x = torch.tensor([[0.0, 2.0], [4.0, 6.0]], device='cuda').view(1, 1, 2, 2)
    out = _resize(x.contiguous(memory_format=torch.channels_last), 3, 3)
    expected = torch.tensor([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [4.0, 5.0, 6.0]])
    if not torch.equal(out.cpu().view(3, 3), expected):
        raise RuntimeError(f'probe gave {out.cpu().flatten().tolist()}, expected {expected.tolist()}')
