"""One Triton kernel per frame group for the default CUDA preprocessing (``'device_exact'``).

``Preprocessor.fill`` + ``normalize_`` build the network batch with a dozen torch kernels per group (row and
column gathers, int32 products, shifts, the mean-colour padding, then two passes for ``(x - mean) / std``);
on an H100 that costs ~1.5 ms for eight 720p frames. The kernel here computes the same numbers in one pass
that writes every batch element once: for each output pixel it reads the four uint8 source taps through the
same tap tables (``preprocess.ExactTables``), applies OpenCV's fixed-point INTER_LINEAR arithmetic of
``preprocess.resize_u8_exact`` and normalizes in float32 as ``(x - mean) / std``; padding pixels get the
normalized mean colour. The result is bit-identical to the torch path (checked by
test/core/engine/test_fused_preprocess.py, marked ``cuda``: it runs on a GPU machine; CI has none).

CUDA only: ``available(device)`` says whether Triton can run it (it compiles and runs a probe); otherwise,
or if a launch fails later, the engine keeps the torch path.
"""
from __future__ import annotations

import functools

import torch

from metric3d_ros.core.cuda_kernels import kernel_available

_BLOCK = 1024


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    # sizes are runtime values: a camera of a new size must not trigger a new compilation
    @triton.jit(do_not_specialize=['src_h', 'src_w', 'net_h', 'net_w', 'res_h', 'res_w', 'top', 'left',
                                   'total'])
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


def _probe() -> None:
    """Compile and run the kernel once on a 1x1 frame (a missing C compiler or an unsupported GPU fails
    here, not in the first batch)."""
    from types import SimpleNamespace

    def table(*values, dtype=torch.int32):
        return torch.tensor(values, dtype=dtype, device='cuda')

    index = torch.int64
    tables = SimpleNamespace(rows=table(0, 0, dtype=index), cols0=table(0, dtype=index),
                             cols1=table(0, dtype=index), wx0=table(2048), wx1=table(0), wy0=table(2048),
                             wy1=table(0))
    box = SimpleNamespace(src_height=1, src_width=1, resized_height=1, resized_width=1, pad_top=0, pad_left=0)
    out = torch.empty((1, 3, 1, 1), dtype=torch.float32, device='cuda')
    letterbox_normalize(out, torch.full((1, 1, 1, 3), 255, dtype=torch.uint8, device='cuda'), tables, box,
                        (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0, 0, 0))
    if out.cpu().flatten().tolist() != [255.0, 255.0, 255.0]:
        raise RuntimeError(f'probe gave {out.cpu().flatten().tolist()}, expected [255, 255, 255]')


@functools.cache
def available(device_type: str) -> bool:
    """True when the fused kernel runs on ``device_type`` (CUDA, Triton importable, a probe launch passes)."""
    return kernel_available(device_type, _probe, 'fused preprocessing kernel')


def letterbox_normalize(out: torch.Tensor, images: torch.Tensor, tables, letterbox,
                        mean_rgb: tuple[float, float, float], std_rgb: tuple[float, float, float],
                        pad_rgb: tuple[int, int, int]) -> None:
    """Write ``((letterboxed images) - mean) / std`` into ``out``.

    out: (n, 3, net_h, net_w) float32, contiguous, on CUDA (a slice of the batch); images: (n, h, w, 3)
    uint8 contiguous on the same device; tables: ``preprocess.ExactTables`` for (h, w) -> the letterbox's
    resized size.
    """
    n, channels, net_h, net_w = out.shape
    if not out.is_contiguous() or out.dtype != torch.float32 or channels != 3 or out.device.type != 'cuda':
        raise ValueError('the output must be a contiguous float32 (n, 3, H, W) CUDA tensor')
    src_hw = (letterbox.src_height, letterbox.src_width)
    res_h, res_w = letterbox.resized_height, letterbox.resized_width
    if (images.dtype != torch.uint8 or tuple(images.shape) != (n, *src_hw, 3) or not images.is_contiguous()
            or images.device != out.device):
        raise ValueError(f'images must be a contiguous ({n}, {src_hw[0]}, {src_hw[1]}, 3) uint8 tensor on '
                         f'{out.device}, got {tuple(images.shape)} {images.dtype} on {images.device}')
    if (letterbox.pad_top + res_h > net_h or letterbox.pad_left + res_w > net_w
            or tables.rows.numel() != 2 * res_h or tables.cols0.numel() != res_w):
        raise ValueError(f'letterbox {res_w}x{res_h} at (left {letterbox.pad_left}, top '
                         f'{letterbox.pad_top}) and its tables do not fit the {net_w}x{net_h} output')
    total = out.numel()
    if total == 0:
        return
    grid = ((total + _BLOCK - 1) // _BLOCK,)
    with torch.cuda.device(out.device):  # Triton launches on the current device
        _kernel()[grid](
            images, out, tables.rows, tables.cols0, tables.cols1, tables.wx0, tables.wx1, tables.wy0,
            tables.wy1, src_hw[0], src_hw[1], net_h, net_w, res_h, res_w, letterbox.pad_top,
            letterbox.pad_left, *[float(v) for v in mean_rgb], *[float(v) for v in std_rgb],
            *[float(v) for v in pad_rgb], total, BLOCK=_BLOCK,
        )
