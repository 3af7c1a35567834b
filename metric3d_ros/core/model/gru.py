"""RAFT part of the Metric3D decoder: context encoder, 3-scale ConvGRU update block, convex upsampling.

Names follow the checkpoint (``decoder.context_feature_encoder``, ``decoder.update_block``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metric3d_ros.core.model.resample import resize_like


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (eps 1e-5, like upstream)."""

    def forward(self, x: Tensor) -> Tensor:
        # contiguous copies as upstream: keeps the following convs on the same (NCHW) kernels
        return super().forward(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2).contiguous()


class ResidualBlock(nn.Module):
    """Two 3x3 convs with LayerNorm and a projected skip.

    The skip's LayerNorm is registered once as ``norm3`` and reused as ``downsample.1`` (one module under
    two names, as upstream does), so the state dict holds both keys for the same tensors.
    """

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
        self.norm1 = LayerNorm2d(planes)
        self.norm2 = LayerNorm2d(planes)
        self.norm3 = LayerNorm2d(planes)
        self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1), self.norm3)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        return F.relu(self.downsample(x) + y)


def _context_head(in_planes: int, planes: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(in_planes, planes),
                         nn.Conv2d(planes, planes, kernel_size=3, padding=1))


class ContextFeatureEncoder(nn.Module):
    """Per scale (1/4, 1/8 ~ 1/7, 1/16 ~ 1/14): one head for the initial hidden state, one for the context."""

    def __init__(self, in_channels: tuple[int, int, int], hidden: int) -> None:
        super().__init__()
        self.outputs04 = nn.ModuleList([_context_head(in_channels[0], hidden) for _ in range(2)])
        self.outputs08 = nn.ModuleList([_context_head(in_channels[1], hidden) for _ in range(2)])
        self.outputs16 = nn.ModuleList([_context_head(in_channels[2], hidden) for _ in range(2)])

    def forward(self, f4: Tensor, f8: Tensor, f16: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(hidden, context) pre-activations per scale, finest first."""
        return [(heads[0](f), heads[1](f)) for heads, f in
                ((self.outputs04, f4), (self.outputs08, f8), (self.outputs16, f16))]


class ConvGRU(nn.Module):
    """Convolutional GRU cell with precomputed context biases (cz, cr, cq)."""

    def __init__(self, hidden: int, input_dim: int) -> None:
        super().__init__()
        self.convz = nn.Conv2d(hidden + input_dim, hidden, kernel_size=3, padding=1)
        self.convr = nn.Conv2d(hidden + input_dim, hidden, kernel_size=3, padding=1)
        self.convq = nn.Conv2d(hidden + input_dim, hidden, kernel_size=3, padding=1)

    def forward(self, h: Tensor, context: tuple[Tensor, Tensor, Tensor], *inputs: Tensor) -> Tensor:
        cz, cr, cq = context
        x = torch.cat(inputs, dim=1)
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx) + cz)
        r = torch.sigmoid(self.convr(hx) + cr)
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)) + cq)
        return (1 - z) * h + z * q


class FlowHead(nn.Module):
    """Predicts the update of (depth, depth confidence) and of (normal xyz, kappa)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.conv1d = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1)
        self.conv2d = nn.Conv2d(hidden, 2, kernel_size=3, padding=1)
        self.conv1n = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1)
        self.conv2n = nn.Conv2d(hidden, 4, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        depth = self.conv2d(F.relu(self.conv1d(x)))
        normal = self.conv2n(F.relu(self.conv1n(x)))
        return torch.cat((depth, normal), dim=1)


def pool2x(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 3, stride=2, padding=1)


class BasicMultiUpdateBlock(nn.Module):
    """ConvGRUs at 1/4, 1/8 and 1/16 (named gru08/gru16/gru32 upstream), flow head and upsampling mask."""

    def __init__(self, hidden: int, input_channels: int, upsample_factor: int) -> None:
        super().__init__()
        self.gru08 = ConvGRU(hidden, input_channels + hidden)
        self.gru16 = ConvGRU(hidden, 2 * hidden)
        self.gru32 = ConvGRU(hidden, hidden)
        self.flow_head = FlowHead(hidden)
        self.mask = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, upsample_factor ** 2 * 9, kernel_size=1),
        )

    def step_coarse(self, net: list[Tensor], inp: list[tuple[Tensor, Tensor, Tensor]]) -> None:
        """Update the 1/16 state only."""
        net[2] = self.gru32(net[2], inp[2], pool2x(net[1]))

    def step_mid(self, net: list[Tensor], inp: list[tuple[Tensor, Tensor, Tensor]]) -> None:
        """Update the 1/16 then the 1/8 state."""
        self.step_coarse(net, inp)
        net[1] = self.gru16(net[1], inp[1], resize_like(pool2x(net[0]), net[1]), resize_like(net[2], net[1]))

    def step_full(self, net: list[Tensor], inp: list[tuple[Tensor, Tensor, Tensor]],
                  flow: Tensor) -> tuple[Tensor, Tensor]:
        """Update all three states; return (delta of the flow, upsampling mask logits)."""
        self.step_mid(net, inp)
        net[0] = self.gru08(net[0], inp[0], flow, resize_like(net[1], net[0]))
        return self.flow_head(net[0]), 0.25 * self.mask(net[0])


def convex_upsample(flow: Tensor, mask: Tensor, factor: int) -> Tensor:
    """Upsample (N, D, H, W) by ``factor`` as softmax-weighted combinations of each 3x3 neighbourhood.

    Same numbers as RAFT's ``unfold``-based version; the neighbourhoods are gathered from a zero-padded copy.
    """
    n, d, h, w = flow.shape
    weights = torch.softmax(mask.view(n, 1, 9, factor, factor, h, w), dim=2)
    padded = F.pad(flow, (1, 1, 1, 1))
    patches = torch.stack([padded[:, :, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], dim=2)
    up = torch.sum(weights * patches.view(n, d, 9, 1, 1, h, w), dim=2)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, d, factor * h, factor * w)
