"""RAFT part of the Metric3D decoder: context encoder, 3-scale ConvGRU update block, convex upsampling.

Names follow the checkpoint (``decoder.context_feature_encoder``, ``decoder.update_block``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metric3d_ros.core.model import resize_cuda
from metric3d_ros.core.model.merged_convs import (
    channel_pad,
    memory_format_of,
    pad_channels,
    pair_conv,
    pair_layer_norm,
    shared_conv,
)
from metric3d_ros.core.model.resample import resize_like


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (eps 1e-5, like upstream)."""

    def forward(self, x: Tensor) -> Tensor:
        # Same values as upstream's permute-contiguous-norm-permute-contiguous; the result keeps the input's
        # memory format (NCHW in, NCHW out as upstream; channels_last in, channels_last out without copies).
        y = super().forward(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2)
        return y.contiguous(memory_format=memory_format_of(x))


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

    def pair_forward(self, other: ResidualBlock, x: Tensor) -> Tensor:
        """``cat([self(x), other(x)])`` with the two blocks' convolutions merged (fused decoder)."""
        y = F.relu(pair_layer_norm(shared_conv(x, self.conv1, other.conv1), self.norm1, other.norm1))
        y = F.relu(pair_layer_norm(pair_conv(y, self.conv2, other.conv2), self.norm2, other.norm2))
        skip = shared_conv(x, self.downsample[0], other.downsample[0])
        skip = pair_layer_norm(skip, self.norm3, other.norm3)
        return F.relu(skip + y)


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
        # merging pays where the heads are narrow (ViT-S, 48 channels: 0.16 -> 0.04 ms per 3x3 conv pair at
        # 1/8, H100); block-diagonal convs double the work of wide heads (ViT-L/giant2), which stay separate
        self.merge_pairs = hidden < 64

    def forward(self, f4: Tensor, f8: Tensor, f16: Tensor,
                fused: bool = False) -> list[tuple[Tensor, Tensor]]:
        """(hidden, context) pre-activations per scale, finest first.

        ``fused`` (narrow heads only, see ``merge_pairs``): the two heads of a scale share their input, so
        their convolutions run merged (shared input: one conv with both weight sets; separate inputs: one
        block-diagonal conv); same function.
        """
        levels = ((self.outputs04, f4), (self.outputs08, f8), (self.outputs16, f16))
        if not (fused and self.merge_pairs):
            return [(heads[0](f), heads[1](f)) for heads, f in levels]
        out = []
        for heads, f in levels:
            y = heads[0][0].pair_forward(heads[1][0], f)
            y = pair_conv(y, heads[0][1], heads[1][1])
            hidden = heads[0][1].out_channels
            out.append((y[:, :hidden], y[:, hidden:]))
        return out


class ConvGRU(nn.Module):
    """Convolutional GRU cell with precomputed context biases.

    ``context`` is the (N, 3 * hidden, H, W) context pre-activation [cz, cr, cq] (or the tuple of its three
    parts). With ``gates`` (from :meth:`fused_gates`, reduced-precision path only) the z, r and the input
    part of q come from one convolution over [h, x] and the r*h part of q from a hidden -> hidden conv; the
    conv biases are then expected folded into ``context`` (see :meth:`fused_gates`). Same function, other
    rounding: the float32 path keeps upstream's three convolutions.
    """

    def __init__(self, hidden: int, input_dim: int) -> None:
        super().__init__()
        self.hidden = hidden
        # zero input channels the fused gate conv appends (cuDNN aligns channels to multiples of 8)
        self.input_pad = channel_pad(hidden + input_dim)
        # output channels the fused r*h conv is padded to (sliced back): cuDNN runs 48 -> 48 3x3 convs at
        # 1/8 resolution 2.6x slower than 48 -> 64 (H100, scripts/gpu/conv_shapes.py)
        self.qh_out_pad = channel_pad(hidden, 64) if hidden < 64 else 0
        self.convz = nn.Conv2d(hidden + input_dim, hidden, kernel_size=3, padding=1)
        self.convr = nn.Conv2d(hidden + input_dim, hidden, kernel_size=3, padding=1)
        self.convq = nn.Conv2d(hidden + input_dim, hidden, kernel_size=3, padding=1)

    def fused_gates(self) -> tuple[Tensor, Tensor, Tensor]:
        """(w_zrq, b_zrq, w_qh): w_zrq (3 * hidden, hidden + input + input_pad, 3, 3) is [Wz; Wr; [0 | Wq_x]]
        with ``input_pad`` zero input channels appended, b_zrq the three biases (to add to the context once
        per forward), w_qh = Wq_h (hidden + qh_out_pad, hidden, 3, 3) with zero rows appended."""
        hid = self.hidden
        wq = self.convq.weight
        w_qx = torch.cat([torch.zeros_like(wq[:, :hid]), wq[:, hid:]], dim=1)
        w_zrq = pad_channels(torch.cat([self.convz.weight, self.convr.weight, w_qx], dim=0), self.input_pad)
        b_zrq = torch.cat([self.convz.bias, self.convr.bias, self.convq.bias])
        w_qh = F.pad(wq[:, :hid], (0, 0, 0, 0, 0, 0, 0, self.qh_out_pad))
        w_qh = w_qh.contiguous(memory_format=memory_format_of(wq))
        return w_zrq.contiguous(memory_format=memory_format_of(wq)), b_zrq, w_qh

    def forward(self, h: Tensor, context: Tensor | tuple[Tensor, Tensor, Tensor], *inputs: Tensor,
                gates: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        if gates is not None:
            if not isinstance(context, Tensor):
                context = torch.cat(context, dim=1)
            hid = self.hidden
            w_zrq, _, w_qh = gates
            hx = pad_channels(torch.cat([h, *inputs], dim=1), self.input_pad)
            zrq = F.conv2d(hx, w_zrq, None, padding=1) + context
            z = torch.sigmoid(zrq[:, :hid])
            r = torch.sigmoid(zrq[:, hid:2 * hid])
            q = torch.tanh(F.conv2d(r * h, w_qh, None, padding=1)[:, :hid] + zrq[:, 2 * hid:])
            return (1 - z) * h + z * q
        cz, cr, cq = context.split(self.hidden, dim=1) if isinstance(context, Tensor) else context
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

    def forward(self, x: Tensor, fused: bool = False) -> Tensor:
        if fused:  # both first convs in one, both second convs in one block-diagonal conv (8 outputs)
            return pair_conv(F.relu(shared_conv(x, self.conv1d, self.conv1n)), self.conv2d, self.conv2n)
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
        # True (fused decoder on CUDA): the states' bilinear resizes as one Triton kernel each (resize_cuda)
        self.resize_kernel = False

    def fused_gates(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Fused gate weights of gru08, gru16, gru32 (finest first, like ``net``), see ConvGRU.fused_gates."""
        return [self.gru08.fused_gates(), self.gru16.fused_gates(), self.gru32.fused_gates()]

    def step_coarse(self, net: list[Tensor], inp: list[Tensor], gates: list | None = None) -> None:
        """Update the 1/16 state only."""
        net[2] = self.gru32(net[2], inp[2], pool2x(net[1]), gates=gates and gates[2])

    def _resize_like(self, x: Tensor, ref: Tensor) -> Tensor:
        return resize_cuda.resize_like(x, ref) if self.resize_kernel else resize_like(x, ref)

    def step_mid(self, net: list[Tensor], inp: list[Tensor], gates: list | None = None) -> None:
        """Update the 1/16 then the 1/8 state."""
        self.step_coarse(net, inp, gates)
        resize = self._resize_like
        net[1] = self.gru16(net[1], inp[1], resize(pool2x(net[0]), net[1]), resize(net[2], net[1]),
                            gates=gates and gates[1])

    def step_full(self, net: list[Tensor], inp: list[Tensor], flow: Tensor,
                  gates: list | None = None) -> Tensor:
        """Update all three states; return the delta of the flow.

        ``inp[i]`` is the context of level i, (N, 3 * hidden, H, W); ``flow`` enters the finest GRU in the
        dtype of its hidden state (a no-op in float32).
        """
        self.step_mid(net, inp, gates)
        net[0] = self.gru08(net[0], inp[0], flow.to(net[0].dtype), self._resize_like(net[1], net[0]),
                            gates=gates and gates[0])
        return self.flow_head(net[0], fused=gates is not None)

    def upsample_mask(self, net: list[Tensor]) -> Tensor:
        """Convex-upsampling mask logits from the finest hidden state.

        Upstream computes them after every update but uses only the last iteration's at inference; they
        depend on nothing but ``net[0]``, so computing them once after the last update gives the same numbers.
        """
        return 0.25 * self.mask(net[0])


def convex_upsample(flow: Tensor, mask: Tensor, factor: int) -> Tensor:
    """Upsample (N, D, H, W) by ``factor`` as softmax-weighted combinations of each 3x3 neighbourhood.

    Same numbers as RAFT's ``unfold``-based version; the neighbourhoods are gathered from a zero-padded copy.
    """
    n, d, h, w = flow.shape
    # float32 softmax and sums (no-ops in float32; reduced-precision masks are upcast here)
    weights = torch.softmax(mask.float().view(n, 1, 9, factor, factor, h, w), dim=2)
    padded = F.pad(flow, (1, 1, 1, 1))
    patches = torch.stack([padded[:, :, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], dim=2)
    up = torch.sum(weights * patches.view(n, d, 9, 1, 1, h, w), dim=2)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, d, factor * h, factor * w)
