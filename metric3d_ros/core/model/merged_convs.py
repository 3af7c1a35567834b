"""Convolutions merged for speed, with the same function as the separate ones (the fused decoder).

cuDNN runs a convolution fastest when its channel counts are multiples of 8 and large enough to fill a
tensor-core tile; the RAFT decoder has many narrow ones (48 channels for ViT-S, 2- to 6-channel heads). The
helpers here merge convolutions that share an input (``shared_conv``), run two convolutions on the two halves
of one tensor as one block-diagonal convolution (``pair_conv``), and pad channel counts with zeros
(``pad_channels``, ``conv_aligned``). Each is the same function as the unmerged code up to floating-point
rounding (tests in test_model_reduced_precision.py). Merged weights are computed from the parameters in
the forward pass; under ``torch.compile`` with freezing they are folded into constants once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def memory_format_of(x: Tensor) -> torch.memory_format:
    """channels_last if ``x`` is stored so (and is not also plain contiguous), else contiguous_format."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def channel_slice(x: Tensor, start: int, stop: int | None) -> Tensor:
    """``x[:, start:stop]`` stored densely in ``x``'s memory format. A channel slice of a channels_last
    tensor is strided; a convolution over it makes cuDNN copy it with a slow generic kernel in every call
    (H100, ViT-S batch 8: three such copies, 0.40 ms). Written here, the copy is a compiled kernel that
    Inductor can fuse with the op producing ``x``."""
    return x[:, start:stop].contiguous(memory_format=memory_format_of(x))


def pad_channels(x: Tensor, pad: int) -> Tensor:
    """Append ``pad`` zero channels to an (N, C, H, W) tensor (a no-op for pad 0)."""
    return F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x


def channel_pad(channels: int, multiple: int = 8) -> int:
    """How many zero channels make ``channels`` a multiple of ``multiple`` (cuDNN's tensor-core alignment:
    convolutions over other channel counts pay a padding or float conversion kernel per call)."""
    return -channels % multiple


def conv_aligned(x: Tensor, weight: Tensor, bias: Tensor, stride=1, padding=0) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` computed with the output channels zero-padded to a
    multiple of 8, then sliced back (for the few-channel outputs of the heads; a plain conv when aligned)."""
    out_channels = weight.shape[0]
    pad = channel_pad(out_channels)
    if not pad:
        return F.conv2d(x, weight, bias, stride, padding)
    y = F.conv2d(x, F.pad(weight, (0, 0, 0, 0, 0, 0, 0, pad)), F.pad(bias, (0, pad)), stride, padding)
    return y[:, :out_channels]


def block_diagonal(first: Tensor, second: Tensor) -> Tensor:
    """Conv weights (o1, i1, k, k) and (o2, i2, k, k) -> (o1 + o2, i1 + i2, k, k), zero off the diagonal: one
    convolution computing ``first`` on input channels [:i1] and ``second`` on the rest."""
    o1, i1 = first.shape[:2]
    o2, i2 = second.shape[:2]
    top = torch.cat([first, first.new_zeros((o1, i2) + tuple(first.shape[2:]))], dim=1)
    bottom = torch.cat([second.new_zeros((o2, i1) + tuple(second.shape[2:])), second], dim=1)
    return torch.cat([top, bottom], dim=0)


def pair_conv(x: Tensor, first: nn.Conv2d, second: nn.Conv2d) -> Tensor:
    """``cat([first(x[:, :c]), second(x[:, c:])])`` as one block-diagonal convolution (same kernel size,
    stride and padding; c = first.in_channels), its outputs aligned as in ``conv_aligned``."""
    return conv_aligned(x, block_diagonal(first.weight, second.weight), torch.cat([first.bias, second.bias]),
                        first.stride, first.padding)


def shared_conv(x: Tensor, *convs: nn.Conv2d) -> Tensor:
    """``cat([conv(x) for conv in convs])`` as one convolution (same input, kernel size, stride, padding)."""
    weight = torch.cat([c.weight for c in convs])
    bias = torch.cat([c.bias for c in convs])
    return F.conv2d(x, weight, bias, convs[0].stride, convs[0].padding)


def pair_layer_norm(x: Tensor, first: nn.LayerNorm, second: nn.LayerNorm) -> Tensor:
    """``cat([first(x[:, :c]), second(x[:, c:])])`` for two channel LayerNorms of width c over one tensor."""
    width = first.normalized_shape[0]
    y = x.permute(0, 2, 3, 1).unflatten(-1, (2, width))
    y = F.layer_norm(y, (width,), None, None, first.eps)
    y = y * torch.stack([first.weight, second.weight]) + torch.stack([first.bias, second.bias])
    return y.flatten(-2).permute(0, 3, 1, 2).contiguous(memory_format=memory_format_of(x))
