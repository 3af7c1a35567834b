"""One Triton kernel per frame group for the default CUDA preprocessing (``'device_exact'``).

``Preprocessor.fill`` + ``normalize_`` build the network batch with a dozen torch kernels per group (row and
column gathers, int32 products, shifts, the mean-colour padding, then two passes for ``(x - mean) / std``);
on an H100 that costs ~1.5 ms for eight 720p frames. The kernel here computes the same numbers in one pass
that writes every batch element once: for each output pixel it reads the four uint8 source taps through the
same tap tables (``preprocess.ExactTables``), applies OpenCV's fixed-point INTER_LINEAR arithmetic of
``preprocess.resize_u8_exact`` and normalizes in float32 as ``(x - mean) / std``; padding pixels get the
normalized mean colour. The result is bit-identical to the torch path (checked on the GPU by
``scripts/gpu/fused_preprocess_check.py``; the tests run the torch path, CI has no GPU).

CUDA only: ``available(device)`` says whether Triton can run it; otherwise the engine keeps the torch path.
"""
from __future__ import annotations

import functools

import torch

from metric3d_ros.core.cuda_kernels import kernel_available

_BLOCK = 1024


@functools.lru_cache(maxsize=1)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def letterbox_normalize(src_ptr, out_ptr, rows_ptr, cols0_ptr, cols1_ptr, wx0_ptr, wx1_ptr, wy0_ptr,
                            wy1_ptr, src_h, src_w, net_h, net_w, res_h, res_w, top, left,
                            mean0, mean1, mean2, std0, std1, std2, pad0, pad1, pad2, total,
                            BLOCK: tl.constexpr):
        # one element of the (n, 3, net_h, net_w) float32 output per lane, in memory order
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        live = offs < total
        x = offs % net_w
        y = (offs // net_w) % net_h
        c = (offs // (net_w * net_h)) % 3
        frame = offs // (3 * net_w * net_h)
        yy = y - top
        xx = x - left
        inside = live & (yy >= 0) & (yy < res_h) & (xx >= 0) & (xx < res_w)
        yy = tl.where(inside, yy, 0)
        xx = tl.where(inside, xx, 0)
        r0 = tl.load(rows_ptr + yy, mask=inside, other=0)
        r1 = tl.load(rows_ptr + res_h + yy, mask=inside, other=0)
        c0 = tl.load(cols0_ptr + xx, mask=inside, other=0)
        c1 = tl.load(cols1_ptr + xx, mask=inside, other=0)
        wx0 = tl.load(wx0_ptr + xx, mask=inside, other=0)
        wx1 = tl.load(wx1_ptr + xx, mask=inside, other=0)
        wy0 = tl.load(wy0_ptr + yy, mask=inside, other=0)
        wy1 = tl.load(wy1_ptr + yy, mask=inside, other=0)
        base = frame * src_h * src_w * 3 + c
        p00 = tl.load(src_ptr + base + (r0 * src_w + c0) * 3, mask=inside, other=0).to(tl.int32)
        p01 = tl.load(src_ptr + base + (r0 * src_w + c1) * 3, mask=inside, other=0).to(tl.int32)
        p10 = tl.load(src_ptr + base + (r1 * src_w + c0) * 3, mask=inside, other=0).to(tl.int32)
        p11 = tl.load(src_ptr + base + (r1 * src_w + c1) * 3, mask=inside, other=0).to(tl.int32)
        s0 = p00 * wx0 + p01 * wx1
        s1 = p10 * wx0 + p11 * wx1
        v = ((((s0 >> 4) * wy0) >> 16) + (((s1 >> 4) * wy1) >> 16) + 2) >> 2
        v = tl.minimum(tl.maximum(v, 0), 255)
        pad = tl.where(c == 0, pad0, tl.where(c == 1, pad1, pad2))
        value = tl.where(inside, v.to(tl.float32), pad)
        mean = tl.where(c == 0, mean0, tl.where(c == 1, mean1, mean2))
        std = tl.where(c == 0, std0, tl.where(c == 1, std1, std2))
        tl.store(out_ptr + offs, tl.math.div_rn(value - mean, std), mask=live)

    return letterbox_normalize


@functools.cache
def available(device_type: str) -> bool:
    """True when the fused kernel can run on ``device_type`` (CUDA with Triton importable)."""
    return kernel_available(device_type, _kernel, 'fused preprocessing kernel')


def letterbox_normalize(out: torch.Tensor, images: torch.Tensor, tables, letterbox,
                        mean_rgb: tuple[float, float, float], std_rgb: tuple[float, float, float],
                        pad_rgb: tuple[int, int, int]) -> None:
    """Write ``((letterboxed images) - mean) / std`` into ``out``.

    out: (n, 3, net_h, net_w) float32, contiguous, on CUDA (a slice of the batch); images: (n, h, w, 3)
    uint8 contiguous on the same device; tables: ``preprocess.ExactTables`` for (h, w) -> the letterbox's
    resized size.
    """
    n, _, net_h, net_w = out.shape
    if not out.is_contiguous() or out.dtype != torch.float32:
        raise ValueError('the output must be a contiguous float32 (n, 3, H, W) tensor')
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] != n or not images.is_contiguous():
        raise ValueError(f'images must be a contiguous ({n}, h, w, 3) uint8 tensor, got '
                         f'{tuple(images.shape)} {images.dtype}')
    total = out.numel()
    if total == 0:
        return
    grid = ((total + _BLOCK - 1) // _BLOCK,)
    _kernel()[grid](
        images, out, tables.rows, tables.cols0, tables.cols1, tables.wx0, tables.wx1, tables.wy0, tables.wy1,
        images.shape[1], images.shape[2], net_h, net_w, letterbox.resized_height, letterbox.resized_width,
        letterbox.pad_top, letterbox.pad_left, *[float(v) for v in mean_rgb], *[float(v) for v in std_rgb],
        *[float(v) for v in pad_rgb], total, BLOCK=_BLOCK,
    )
