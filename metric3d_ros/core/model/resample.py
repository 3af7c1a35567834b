"""Resampling helpers that reproduce upstream's ``F.interpolate`` calls and stay export-friendly.

Upstream resamples with ``scale_factor`` arguments, whose source-index arithmetic differs from passing an
output size. The functions here compute the same source indices and weights as PyTorch's CPU kernels for
those calls, from tensor arithmetic only (no Python numbers taken from tensor shapes), so they trace and
export with dynamic input sizes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_CUBIC_A = -0.75  # PyTorch's bicubic convolution coefficient


def is_exporting() -> bool:
    """True while tracing, compiling or exporting (where shape-dependent Python branches must be avoided)."""
    exporting = getattr(torch.compiler, 'is_exporting', None)
    return bool(
        torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or (exporting is not None and exporting())
        or torch.onnx.is_in_onnx_export()
    )


def _cubic_near(x: Tensor) -> Tensor:
    """Cubic convolution kernel for |x| <= 1."""
    return ((_CUBIC_A + 2.0) * x - (_CUBIC_A + 3.0)) * x * x + 1.0


def _cubic_far(x: Tensor) -> Tensor:
    """Cubic convolution kernel for 1 < |x| < 2."""
    return ((_CUBIC_A * x - 5.0 * _CUBIC_A) * x + 8.0 * _CUBIC_A) * x - 4.0 * _CUBIC_A


def _cubic_taps(out_size, in_size: int, inv_scale: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Source indices and weights of the 4 taps of ``upsample_bicubic2d`` (align_corners=False), one axis.

    ``inv_scale`` is the float32 scalar tensor ``1 / scale_factor``. Returns 4 index tensors (int64) and 4
    weight tensors (float32), each of length ``out_size``; indices are clamped to the border like PyTorch.
    """
    dst = torch.arange(out_size, device=inv_scale.device, dtype=torch.float32)
    real = inv_scale * (dst + 0.5) - 0.5
    index = torch.clamp(torch.floor(real), max=in_size - 1)
    t = torch.clamp(real - index, 0.0, 1.0)
    weights = [_cubic_far(t + 1.0), _cubic_near(t), _cubic_near(1.0 - t), _cubic_far(2.0 - t)]
    base = index.to(torch.int64)
    indices = [torch.clamp(base + (k - 1), 0, in_size - 1) for k in range(4)]
    return indices, weights


def _inverse_scale(tokens, offset: float, grid: int, device: torch.device) -> Tensor:
    """float32(1 / ((tokens + offset) / grid)), computed in float64 like PyTorch's kernels do."""
    tokens_t = torch.ones((), dtype=torch.float64, device=device) * tokens
    return (1.0 / ((tokens_t + offset) / grid)).to(torch.float32)


def bicubic_pos_grid(grid: Tensor, h_tokens, w_tokens, offset: float) -> Tensor:
    """Resample a (1, D, G, G) positional grid to (1, D, h, w) as upstream DINOv2 does.

    Same numbers as ``F.interpolate(grid, scale_factor=((h + offset) / G, (w + offset) / G), mode='bicubic',
    antialias=False)``, whose output is (h, w); written with gathers so that ``h`` and ``w`` may be symbolic.
    The raw grid is returned unchanged when h == w == G (upstream skips the interpolation then); this is
    selected with arithmetic, not a Python branch.
    """
    size = grid.shape[-1]
    grid32 = grid.float()
    rows_idx, rows_w = _cubic_taps(h_tokens, size, _inverse_scale(h_tokens, offset, size, grid.device))
    cols_idx, cols_w = _cubic_taps(w_tokens, size, _inverse_scale(w_tokens, offset, size, grid.device))
    # inner (width) pass first, then the height pass, accumulating taps in order like the CPU kernel
    across = grid32.index_select(3, cols_idx[0]) * cols_w[0]
    for k in range(1, 4):
        across = across + grid32.index_select(3, cols_idx[k]) * cols_w[k]
    rows_w = [w.view(1, 1, -1, 1) for w in rows_w]
    out = across.index_select(2, rows_idx[0]) * rows_w[0]
    for k in range(1, 4):
        out = out + across.index_select(2, rows_idx[k]) * rows_w[k]
    # identity when the token grid already is G x G (upstream returns pos_embed as is)
    identity_h = torch.eye(h_tokens, size, device=grid.device, dtype=torch.float32)
    identity_w = torch.eye(w_tokens, size, device=grid.device, dtype=torch.float32)
    raw = torch.einsum('hi,bdij,wj->bdhw', identity_h, grid32, identity_w)
    is_native = (torch.ones((), device=grid.device) * h_tokens == size) & (
        torch.ones((), device=grid.device) * w_tokens == size)
    return torch.where(is_native, raw, out)


def nearest_upsample_3_5(x: Tensor) -> Tensor:
    """``F.interpolate(x, scale_factor=3.5, mode='nearest')`` written with index gathers.

    Output size is floor(3.5 * n) per axis; source index floor(dst * float32(1 / 3.5)), clamped, exactly
    as PyTorch's nearest kernel computes it when given a scale factor.
    """
    h, w = x.shape[-2], x.shape[-1]
    inv = torch.full((), 1.0 / 3.5, dtype=torch.float32, device=x.device)
    rows = torch.clamp(torch.floor(torch.arange((7 * h) // 2, device=x.device, dtype=torch.float32) * inv),
                       max=h - 1).to(torch.int64)
    cols = torch.clamp(torch.floor(torch.arange((7 * w) // 2, device=x.device, dtype=torch.float32) * inv),
                       max=w - 1).to(torch.int64)
    return x.index_select(2, rows).index_select(3, cols)


def bilinear_align_corners(x: Tensor, numerator: int, denominator: int) -> Tensor:
    """``F.interpolate(x, scale_factor=numerator / denominator, mode='bilinear', align_corners=True)``.

    With align_corners the kernel ignores the scale factor and uses (in - 1) / (out - 1), so passing the
    output size floor(n * numerator / denominator) is exact.
    """
    h, w = x.shape[-2], x.shape[-1]
    size = ((h * numerator) // denominator, (w * numerator) // denominator)
    return F.interpolate(x, size=size, mode='bilinear', align_corners=True)


def resize_like(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinear (align_corners=True) resize of ``x`` to the spatial size of ``ref`` (upstream ``interp``)."""
    return F.interpolate(x, size=ref.shape[-2:], mode='bilinear', align_corners=True)
