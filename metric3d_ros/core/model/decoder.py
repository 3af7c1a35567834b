"""RAFT-style DPT depth/normal decoder of Metric3D v2 (upstream ``RAFTDepthNormalDPT5``).

Flow of one forward pass:
1. readout of the four ViT features (patch tokens + projected class/register tokens) and resampling to
   1/14, 1/14, 1/7 and 1/4 of the padded input; DPT fusion up to 1/4;
2. initial depth as the expectation over 256 log-spaced bins in [0.1, 200] (canonical camera, metres),
   initial normal from a small MLP head, both with confidence channels;
3. ``gru_iters`` updates of a 3-scale ConvGRU (slow-fast schedule: the coarse levels are updated more often)
   that refine the 6-channel state (depth, depth confidence, normal xyz, kappa) at 1/4;
4. convex x4 upsampling of the final state.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metric3d_ros.core.model import convex_cuda, resize_cuda
from metric3d_ros.core.model.dpt import DecoderFeature, EncoderFeature
from metric3d_ros.core.model.gru import BasicMultiUpdateBlock, ContextFeatureEncoder, convex_upsample
from metric3d_ros.core.model.merged_convs import channel_slice, conv_aligned, shared_conv
from metric3d_ros.core.model.specs import VariantSpec

_MIN_KAPPA = 0.01


def norm_normalize(normal: Tensor) -> Tensor:
    """(N, 4, H, W) raw normal + kappa -> unit xyz, kappa = elu(k) + 1.01 (upstream ``norm_normalize``)."""
    x, y, z, kappa = torch.split(normal, 1, dim=1)
    norm = torch.sqrt(x ** 2.0 + y ** 2.0 + z ** 2.0) + 1e-10
    kappa = F.elu(kappa) + 1.0 + _MIN_KAPPA
    return torch.cat([x / norm, y / norm, z / norm, kappa], dim=1)


class RAFTDepthNormalDecoder(nn.Module):
    """Maps the encoder features to (depth, confidence, normal) at 4 * floor(3.5 * h) x 4 * floor(3.5 * w)."""

    def __init__(self, spec: VariantSpec) -> None:
        super().__init__()
        enc, dec = spec.encoder, spec.decoder
        self.embed_dim = enc.embed_dim
        self.num_register_tokens = enc.num_register_tokens
        self.hidden = dec.hidden_channels
        self.iters = dec.gru_iters
        self.depth_bins = dec.depth_bins
        self.min_depth = dec.min_depth
        self.max_depth = dec.max_depth
        self.regress_scale = dec.regress_scale
        self.upsample_factor = dec.upsample_factor
        c4 = dec.fusion_channels[0]

        self.token2feature = EncoderFeature(enc.embed_dim, dec.feature_channels, enc.num_register_tokens)
        self.decoder_mono = DecoderFeature(dec.fusion_channels)
        self.depth_regressor = nn.Sequential(
            nn.Conv2d(c4, dec.depth_bins, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(dec.depth_bins, dec.depth_bins, kernel_size=1),
        )
        self.normal_predictor = nn.Sequential(
            nn.Conv2d(c4, 128, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(128, 128, kernel_size=1), nn.ReLU(),
            nn.Conv2d(128, 128, kernel_size=1), nn.ReLU(),
            nn.Conv2d(128, 3, kernel_size=1),
        )
        self.context_feature_encoder = ContextFeatureEncoder(
            (dec.feature_channels[0], dec.feature_channels[1], enc.embed_dim), dec.hidden_channels)
        hidden = dec.hidden_channels
        self.context_zqr_convs = nn.ModuleList(
            [nn.Conv2d(hidden, 3 * hidden, kernel_size=3, padding=1) for _ in range(3)])
        self.update_block = BasicMultiUpdateBlock(dec.hidden_channels, dec.gru_input_channels,
                                                  dec.upsample_factor)
        self.fused = False  # see set_fused
        self.convex_kernel = False  # fused decoder on CUDA: the Triton convex upsampling (convex_cuda.py)

    def set_fused(self, fused: bool) -> None:
        """True: the fused decoder, the same function computed with fewer, wider convolutions.

        One gate convolution per ConvGRU update instead of three (``ConvGRU.fused_gates``), GRU inputs padded
        to a multiple of 8 channels, the two first convs of the depth and normal heads merged, the paired
        context heads and flow-head convs merged (``merged_convs``), the DPT 1x1 convs before the
        upsampling, and on CUDA (with Triton) the convex upsampling and the GRU states' bilinear resizes as
        one kernel each (``convex_cuda``, ``resize_cuda``). Other rounding than upstream's order of
        operations: the torch backend enables it for bf16/fp16 decoders; False keeps upstream's arithmetic.
        """
        self.fused = bool(fused)
        self.convex_kernel = self.fused and convex_cuda.available('cuda')
        self.update_block.resize_kernel = self.fused and resize_cuda.available('cuda')
        for block in (self.decoder_mono.upconv_1, self.decoder_mono.upconv_2, self.decoder_mono.upconv_3):
            block.conv_first = self.fused

    def clamp_depth(self, x: Tensor) -> Tensor:
        """Clamp to [min_depth, max_depth] with upstream's ReLU arithmetic (same rounding)."""
        y = F.relu(x - self.min_depth) + self.min_depth
        return self.max_depth - F.relu(self.max_depth - y)

    def bins(self, like: Tensor) -> Tensor:
        """The log-spaced depth bin centres, built on the input's device (float32, then the input dtype)."""
        log_bins = torch.linspace(math.log(self.min_depth), math.log(self.max_depth), self.depth_bins,
                                  device=like.device, dtype=torch.float32)
        return torch.exp(log_bins).to(like.dtype)

    def heads(self, shared: Tensor) -> tuple[Tensor, Tensor]:
        """Depth-bin logits and raw normal (xyz) of the shared 1/4 features."""
        if not self.fused:
            return self.depth_regressor(shared), self.normal_predictor(shared)
        depth_conv, _, depth_out = self.depth_regressor
        normal_conv, _, normal_1, _, normal_2, _, normal_out = self.normal_predictor
        y = F.relu(shared_conv(shared, depth_conv, normal_conv))
        logits = depth_out(channel_slice(y, 0, self.depth_bins))
        normal = F.relu(normal_2(F.relu(normal_1(channel_slice(y, self.depth_bins, None)))))
        return logits, conv_aligned(normal, normal_out.weight, normal_out.bias)

    def regress_depth(self, logits: Tensor) -> Tensor:
        """Initial depth from the bin logits, as the GRU state stores it: (clamped expectation - max_depth) /
        regress_scale. The softmax over the bins, the expectation and the clamp run in float32 whatever the
        logits' dtype.
        """
        prob = logits.float().softmax(dim=1)
        depth = torch.sum(prob * self.bins(prob).view(1, -1, 1, 1), dim=1, keepdim=True)
        return (self.clamp_depth(depth) - self.max_depth) / self.regress_scale

    def split_tokens(self, feature: Tensor, h_tokens, w_tokens) -> tuple[Tensor, Tensor]:
        """(B, 1 + R + h*w, D) -> patches (B, h, w, D) and class + registers (B, 1, 1, (1 + R) * D)."""
        batch, learned = feature.shape[0], 1 + self.num_register_tokens
        patches = feature[:, learned:].reshape(batch, h_tokens, w_tokens, self.embed_dim)
        return patches, feature[:, :learned].reshape(batch, 1, 1, learned * self.embed_dim)

    def forward(self, features: list[Tensor], h_tokens, w_tokens) -> tuple[Tensor, Tensor, Tensor]:
        tokens = [self.split_tokens(f, h_tokens, w_tokens) for f in features]
        f14a, f14b, f7, f4 = self.token2feature(tokens)
        fused = self.decoder_mono(f14a, f14b, f7)

        shared = channel_slice(fused, 0, -2) if self.fused else fused[:, :-2]
        depth_confidence = fused[:, -2:-1]
        normal_confidence = fused[:, -1:]
        depth_logits, normal_xyz = self.heads(shared)
        depth = self.regress_depth(depth_logits)
        # the 6-channel state (depth, confidence, normal, kappa) is float32 in every precision
        normal = norm_normalize(torch.cat([normal_xyz, normal_confidence], dim=1).float())
        state = torch.cat((depth, depth_confidence.float(), normal), dim=1)

        # Upstream's DPT residual units rectify their inputs in place, so the context encoder sees
        # relu() of the 1/7 and 1/14 readouts (the 1/4 readout is untouched).
        context = self.context_feature_encoder(f4, F.relu(f7), F.relu(f14b), fused=self.fused)
        net = [torch.tanh(hidden) for hidden, _ in context]
        # context pre-activations [cz, cr, cq] per level, (N, 3 * hidden, H, W)
        inp = [conv(F.relu(ctx)) for (_, ctx), conv in zip(context, self.context_zqr_convs, strict=True)]
        gates = None
        if self.fused:
            gates = self.update_block.fused_gates()
            inp = [c + g[1].to(c.dtype).view(1, -1, 1, 1) for c, g in zip(inp, gates, strict=True)]

        for _ in range(self.iters):
            self.update_block.step_coarse(net, inp, gates)
            self.update_block.step_mid(net, inp, gates)
            state = state + self.update_block.step_full(net, inp, state, gates)

        mask = self.update_block.upsample_mask(net)
        if self.convex_kernel and state.is_cuda:
            up = convex_cuda.convex_upsample_op(state, mask, self.upsample_factor)
        else:
            up = convex_upsample(state, mask, self.upsample_factor)
        depth = self.clamp_depth(up[:, :1] * self.regress_scale + self.max_depth)
        return depth, up[:, 1:2], norm_normalize(up[:, 2:])
