"""The Metric3D v2 ViT variants (small, large, giant2): the one table of variant names, aliases, official
checkpoints (file, size, sha256) and architectures. Configuration (``EngineConfig.variant``), the weights
lookup, the checkpoint loader, export, the tools' ``--variant`` and the node's ``variant`` parameter all
derive from it; a new variant is one ``register_variant`` call.

Every number here is a fact of the official checkpoints (see ``../shared/reference/metric3d/keys_vit_*.tsv``)
or of the upstream configs (``mono/configs/HourglassDecoder/vit.raft5.*.py`` at YvanYin/Metric3D). The
network modules read nothing else, so a variant is fully described by its row.

This module imports no torch: the checkpoint loader uses it to detect variants from tensor shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MlpKind = Literal['gelu', 'swiglu']


@dataclass(frozen=True)
class EncoderSpec:
    """DINOv2-with-registers ViT encoder.

    ``feature_blocks`` are the 1-based numbers of the blocks whose outputs feed the decoder's four readouts
    (``read_0`` .. ``read_3``, in that order); ``feature_norm`` says whether the final LayerNorm is applied to
    them. Upstream inference code feeds the normed output of the last block to all four readouts.
    """

    embed_dim: int
    depth: int
    num_heads: int
    mlp: MlpKind
    feature_blocks: tuple[int, int, int, int]
    feature_norm: bool
    patch_size: int = 14
    num_register_tokens: int = 4
    pos_grid: int = 37  # pos_embed holds 1 + 37 * 37 entries (trained at 518 x 518)
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6
    interpolate_offset: float = 0.1

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f'embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}')
        if self.mlp not in ('gelu', 'swiglu'):
            raise ValueError(f"mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")
        if len(self.feature_blocks) != 4 or not all(1 <= b <= self.depth for b in self.feature_blocks):
            raise ValueError(
                f'feature_blocks must be 4 block numbers in 1..{self.depth}, got {self.feature_blocks}')

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden_dim(self) -> int:
        """Hidden width of the MLP; SwiGLU shrinks it by 2/3 and rounds up to a multiple of 8 (DINOv2)."""
        hidden = int(self.embed_dim * self.mlp_ratio)
        if self.mlp == 'swiglu':
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden


@dataclass(frozen=True)
class DecoderSpec:
    """RAFT-style DPT depth/normal decoder (upstream ``RAFTDepthNormalDPT5``).

    feature_channels: output channels of the token readouts at 1/4 (``read_0``) and 1/7 (``read_1``) of
        the input; the two 1/14 readouts keep the encoder width.
    fusion_channels: DPT fusion widths ``(c_1/4, c_1/7, c_1/14, c_1/14_in)``; the 1/4 fusion emits
        ``c_1/4 + 2`` channels (shared depth/normal features + depth and normal confidences).
    hidden_channels: width of the three ConvGRU levels (hidden state and context).
    gru_iters: number of update iterations.
    """

    feature_channels: tuple[int, int]
    fusion_channels: tuple[int, int, int, int]
    hidden_channels: int
    gru_iters: int
    depth_bins: int = 256
    min_depth: float = 0.1
    max_depth: float = 200.0
    regress_scale: float = 100.0
    upsample_factor: int = 4  # convex upsampling from 1/4 of the (padded) input
    gru_input_channels: int = 6  # depth, depth confidence, normal xyz, normal kappa


@dataclass(frozen=True)
class VariantSpec:
    """One Metric3D v2 ViT checkpoint family: the one place a variant is described.

    name: the canonical name ('small', 'large', 'giant2'); aliases: other accepted spellings (matched
    case-insensitively, e.g. 'vit_small', 'vit-s'); display_name: for messages ('ViT-S').
    checkpoint_file / checkpoint_bytes / checkpoint_sha256: the official checkpoint (file name in the cache
    and on the download server, exact size, lower-case sha256) that ``core.model.weights`` verifies.
    """

    name: str
    display_name: str
    aliases: tuple[str, ...]
    checkpoint_file: str
    checkpoint_bytes: int
    checkpoint_sha256: str
    encoder: EncoderSpec
    decoder: DecoderSpec

    def __post_init__(self) -> None:
        if self.decoder.fusion_channels[2] != self.encoder.embed_dim:
            raise ValueError('the 1/14 fusion width must equal the encoder width')
        if self.decoder.fusion_channels[1] != self.decoder.feature_channels[1]:
            raise ValueError('the 1/7 fusion width must equal the 1/7 readout width')


#: The variant table, by canonical name (``register_variant`` adds to it).
VARIANTS: dict[str, VariantSpec] = {}
_ALIASES: dict[str, str] = {}


def register_variant(spec: VariantSpec) -> None:
    """Add ``spec`` to ``VARIANTS``; ``ValueError`` when its name or an alias is taken."""
    keys = [spec.name.lower(), *(a.lower() for a in spec.aliases)]
    taken = sorted({k for k in keys if k in _ALIASES})
    if taken:
        raise ValueError(f'variant {spec.name!r}: name or alias {taken} already registered')
    VARIANTS[spec.name] = spec
    for key in keys:
        _ALIASES[key] = spec.name


def variant_names() -> tuple[str, ...]:
    """The canonical variant names, in table order."""
    return tuple(VARIANTS)


def resolve_variant(variant: str) -> str:
    """The canonical name for a name or alias (case-insensitive); ``ValueError`` naming the choices."""
    key = str(variant).strip().lower()
    if key not in _ALIASES:
        names = list(VARIANTS)
        choices = ', '.join(names[:-1]) + f' or {names[-1]}' if len(names) > 1 else names[0]
        example = next(iter(VARIANTS.values())).aliases[:1]
        raise ValueError(f'unknown Metric3D variant {variant!r}: use {choices}'
                         + (f' ({example[0]}, ... also accepted)' if example else ''))
    return _ALIASES[key]


def get_spec(variant: str) -> VariantSpec:
    """The spec of ``variant`` (a name or an alias, see ``resolve_variant``)."""
    return VARIANTS[resolve_variant(variant)]


register_variant(VariantSpec(
    name='small', display_name='ViT-S',
    aliases=('vit_small', 'vit-small', 'metric3d_vit_small', 'vit-s', 's'),
    checkpoint_file='metric_depth_vit_small_800k.pth', checkpoint_bytes=150_120_967,
    checkpoint_sha256='b34b2a2be9148054991cef7e417930e1320602ba7bc503b0ee4e7888543728f6',
    encoder=EncoderSpec(embed_dim=384, depth=12, num_heads=6, mlp='gelu',
                        feature_blocks=(12, 12, 12, 12), feature_norm=True),
    decoder=DecoderSpec(feature_channels=(96, 192), fusion_channels=(96, 192, 384, 384),
                        hidden_channels=48, gru_iters=4),
))
register_variant(VariantSpec(
    name='large', display_name='ViT-L',
    aliases=('vit_large', 'vit-large', 'metric3d_vit_large', 'vit-l', 'l'),
    checkpoint_file='metric_depth_vit_large_800k.pth', checkpoint_bytes=1_647_972_663,
    checkpoint_sha256='15328ffc42b528b95f188687418f6f03b3f123eb34ccdbd686c112abbea6d972',
    encoder=EncoderSpec(embed_dim=1024, depth=24, num_heads=16, mlp='gelu',
                        feature_blocks=(24, 24, 24, 24), feature_norm=True),
    decoder=DecoderSpec(feature_channels=(256, 512), fusion_channels=(256, 512, 1024, 1024),
                        hidden_channels=128, gru_iters=8),
))
register_variant(VariantSpec(
    name='giant2', display_name='ViT-giant2',
    aliases=('vit_giant2', 'vit-giant2', 'metric3d_vit_giant2', 'vit-g2'),
    checkpoint_file='metric_depth_vit_giant2_800k.pth', checkpoint_bytes=5_510_989_187,
    checkpoint_sha256='22d64c4dec098fa56eb17b6f22b1fb7d16b4742c66a9c8ee73e7dae61c0d2a1b',
    encoder=EncoderSpec(embed_dim=1536, depth=40, num_heads=24, mlp='swiglu',
                        feature_blocks=(10, 20, 30, 40), feature_norm=False),
    decoder=DecoderSpec(feature_channels=(384, 768), fusion_channels=(384, 768, 1536, 1536),
                        hidden_channels=192, gru_iters=8),
))
