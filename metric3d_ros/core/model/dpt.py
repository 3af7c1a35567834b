"""DPT part of the Metric3D decoder: token readout, token-to-feature resampling and feature fusion.

Names follow the checkpoint (``decoder.token2feature.read_<i>``, ``decoder.decoder_mono.upconv_<i>``).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from metric3d_ros.core.model.merged_convs import conv_aligned
from metric3d_ros.core.model.resample import bilinear_align_corners, nearest_upsample_3_5


class Readout(nn.Module):
    """Adds a projection of the class + register tokens to every projected patch token, then GELU."""

    def __init__(self, dim: int, num_register_tokens: int) -> None:
        super().__init__()
        self.project_patch = nn.Linear(dim, dim)
        self.project_learn = nn.Linear((1 + num_register_tokens) * dim, dim, bias=False)
        self.act = nn.GELU()

    def forward(self, patches: Tensor, learned: Tensor) -> Tensor:
        """patches: (B, h, w, D); learned: (B, 1, 1, (1 + R) * D) -> (B, h, w, D)."""
        return self.act(self.project_patch(patches) + self.project_learn(learned))


class Token2Feature(nn.Module):
    """Readout, then resampling of the token grid to the target scale.

    scale 1: identity; scale 2: 2x2 stride-2 transposed conv; scale 3.5: nearest x3.5 and a 1x1 conv.
    For scale 3.5 the 1x1 conv is applied before the nearest upsampling: nearest only repeats pixels, so
    the result equals upstream's order (upsample, then conv) at 1/12 of the cost.
    """

    def __init__(self, dim: int, out_channels: int, scale: float, num_register_tokens: int) -> None:
        super().__init__()
        self.scale = scale
        self.readoper = Readout(dim, num_register_tokens)
        if scale == 1:
            self.sample = nn.Identity()
        elif scale == 2:
            self.sample = nn.ConvTranspose2d(dim, out_channels, kernel_size=2, stride=2)
        elif scale == 3.5:
            self.sample = nn.Sequential(nn.Conv2d(dim, out_channels, kernel_size=1))
        else:
            raise ValueError(f'unsupported readout scale {scale}')

    def forward(self, patches: Tensor, learned: Tensor) -> Tensor:
        x = self.readoper(patches, learned).permute(0, 3, 1, 2).contiguous()
        x = self.sample(x)
        if self.scale == 3.5:
            x = nearest_upsample_3_5(x)
        return x


class EncoderFeature(nn.Module):
    """The four readouts: 1/14, 1/14, 1/7 and 1/4 of the padded input (``read_3`` .. ``read_0``)."""

    def __init__(self, dim: int, feature_channels: tuple[int, int], num_register_tokens: int) -> None:
        super().__init__()
        # registration order mirrors the checkpoint (read_3 first)
        self.read_3 = Token2Feature(dim, dim, 1, num_register_tokens)
        self.read_2 = Token2Feature(dim, dim, 1, num_register_tokens)
        self.read_1 = Token2Feature(dim, feature_channels[1], 2, num_register_tokens)
        self.read_0 = Token2Feature(dim, feature_channels[0], 3.5, num_register_tokens)

    def forward(self, tokens: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """tokens[i] = (patches, learned) for read_i; returns (1/14, 1/14, 1/7, 1/4) features."""
        return (self.read_3(*tokens[3]), self.read_2(*tokens[2]), self.read_1(*tokens[1]),
                self.read_0(*tokens[0]))


class ConvBlock(nn.Module):
    """DPT residual conv unit, as upstream computes it: ``relu(x) + conv2(relu(conv1(relu(x))))``.

    Upstream applies an in-place ReLU to its input before the residual sum, so the skip carries relu(x)
    (and the caller's tensor is rectified as a side effect, see :class:`DecoderFeature`).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FuseBlock(nn.Module):
    """DPT fusion: optional skip sum, residual unit, optional align-corners bilinear upsampling, 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, fuse: bool = True,
                 upsample: tuple[int, int] | None = (2, 1)) -> None:
        super().__init__()
        self.upsample = upsample
        # fused decoder: the 1x1 conv before the upsampling (both linear, bilinear weights sum to 1: the
        # same function at a fraction of the cost), output channels aligned to a multiple of 8
        self.conv_first = False
        self.way_trunk = ConvBlock(in_channels)
        self.way_branch = ConvBlock(in_channels) if fuse else None
        self.out_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            if self.way_branch is None:
                raise ValueError('this fusion block takes no skip input')
            x = x + self.way_branch(skip)
        x = self.way_trunk(x)
        if self.upsample is None:
            return self.out_conv(x)
        if self.conv_first:
            x = conv_aligned(x, self.out_conv.weight, self.out_conv.bias)
            return bilinear_align_corners(x, *self.upsample)
        return self.out_conv(bilinear_align_corners(x, *self.upsample))


class DecoderFeature(nn.Module):
    """Fuses the readouts from 1/14 up to 1/4: returns shared features + depth and normal confidences."""

    def __init__(self, fusion_channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        c4, c7, c14, c14_in = fusion_channels
        self.upconv_3 = FuseBlock(c14_in, c14, fuse=False, upsample=None)
        self.upconv_2 = FuseBlock(c14, c7, upsample=(2, 1))
        self.upconv_1 = FuseBlock(c7, c4 + 2, upsample=(7, 4))

    def forward(self, f14a: Tensor, f14b: Tensor, f7: Tensor) -> Tensor:
        x = self.upconv_3(f14a)
        x = self.upconv_2(x, f14b)
        return self.upconv_1(x, f7)
