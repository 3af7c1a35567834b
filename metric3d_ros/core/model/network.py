"""The Metric3D v2 ViT network: ``build_network(variant)`` -> :class:`Metric3DNet`.

The module tree mirrors the official checkpoints: ``state_dict()`` keys are exactly
``checkpoint['model_state_dict']`` keys (``depth_model.encoder.*``, ``depth_model.decoder.*``), including
``depth_model.encoder.mask_token`` and the ``norm3``/``downsample.1`` aliases of the context encoder.

Input sizes: the network takes any H, W >= 14. Sides that are not multiples of 14 are first resized
(bilinear) up to the next multiple, as upstream does; with h = ceil(H / 14) tokens the outputs are
4 * floor(3.5 * h) high (and likewise wide), which equals H when H is a multiple of 28 and may differ
otherwise (e.g. H = 154 -> 152). Callers should pad to multiples of 28 (upstream uses 616 x 1064).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from metric3d_ros.core.model.decoder import RAFTDepthNormalDecoder
from metric3d_ros.core.model.resample import is_exporting
from metric3d_ros.core.model.specs import VariantSpec, get_spec
from metric3d_ros.core.model.vit import DinoVisionTransformer


class DepthModel(nn.Module):
    """Encoder + decoder (upstream ``DensePredModel``; the ``depth_model`` level of the checkpoint keys)."""

    def __init__(self, spec: VariantSpec, fused_attention: bool = False) -> None:
        super().__init__()
        self.encoder = DinoVisionTransformer(spec.encoder, fused_attention=fused_attention)
        self.decoder = RAFTDepthNormalDecoder(spec)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features, h_tokens, w_tokens = self.encoder(x)
        return self.decoder(features, h_tokens, w_tokens)


class Metric3DNet(nn.Module):
    """Normalized image -> canonical-camera depth, confidence and normal.

    ``forward(x)``: x is (B, 3, H, W) floating point, ``(rgb_uint8 - mean) / std`` with mean
    (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375). Returns
    ``(depth, confidence, normal)`` shaped (B, 1, H', W'), (B, 1, H', W'), (B, 4, H', W'):
    depth in metres for a camera of focal length 1000 px, clamped to [0.1, 200] (upstream ``prediction``);
    confidence as upstream's ``confidence``; normal = unit xyz (camera frame) + kappa
    (upstream ``prediction_normal``). See the module docstring for H', W'.

    The pass is export-clean: no data-dependent Python checks, no device constants, no state that depends
    on the batch size; only the positional embedding is cached per token grid size in eager mode.
    """

    def __init__(self, spec: VariantSpec, fused_attention: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.depth_model = DepthModel(spec, fused_attention=fused_attention)

    @property
    def variant(self) -> str:
        return self.spec.name

    def set_fused_attention(self, fused: bool) -> None:
        """True: ``scaled_dot_product_attention`` (faster); False: plain softmax (upstream-exact)."""
        self.depth_model.encoder.set_fused_attention(fused)

    def set_fused(self, fused: bool) -> None:
        """True: the same function with fewer, wider kernels (a reduced-precision option, other rounding):
        the patch embedding as a matmul (``PatchEmbed``), for bf16 on CUDA the MLPs' first linear layer
        with a tanh-approximated GELU in its epilogue (``gelu_linear``), and the fused decoder
        (``RAFTDepthNormalDecoder.set_fused``); False (default): upstream's arithmetic."""
        self.depth_model.encoder.set_patch_matmul(fused)
        self.depth_model.encoder.set_gelu_epilogue(fused)
        self.depth_model.decoder.set_fused(fused)

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f'expected a torch.Tensor, got {type(x).__name__}')
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'expected a (B, 3, H, W) tensor, got shape {tuple(x.shape)}')
        if not x.is_floating_point():
            raise TypeError(f'expected a normalized floating point tensor, got {x.dtype}: '
                            'convert with (rgb - mean) / std first')
        patch = self.spec.encoder.patch_size
        if x.shape[2] < patch or x.shape[3] < patch:
            raise ValueError(f'input {x.shape[2]}x{x.shape[3]} is smaller than one {patch}x{patch} patch')

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not is_exporting():
            self._check_input(x)
        return self.depth_model(x)


def build_network(variant: str, *, fused_attention: bool = False,
                  device: str | torch.device = 'cpu') -> Metric3DNet:
    """An untrained :class:`Metric3DNet` of ``variant`` in eval mode (fp32), parameters on ``device``.

    ``device='meta'`` builds it without allocating memory, for ``load_state_dict(..., assign=True)``.
    Parameters are zero-filled placeholders (no random initialisation, which takes seconds for giant2):
    load a checkpoint before use.
    """
    spec = get_spec(variant)
    with torch.device('meta'):
        net = Metric3DNet(spec, fused_attention=fused_attention)
    if torch.device(device).type != 'meta':
        net = net.to_empty(device=device)
        with torch.no_grad():
            for tensor in net.state_dict().values():
                tensor.zero_()
    return net.eval()
