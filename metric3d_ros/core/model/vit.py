"""DINOv2-with-registers ViT encoder of Metric3D v2 (patch 14, 4 register tokens, LayerScale).

Module and parameter names follow the official checkpoints (``depth_model.encoder.*``): blocks live in one
chunk (``blocks.0.<i>``), the MLP is ``fc1``/``fc2`` (GELU) or the fused SwiGLU ``w12``/``w3``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metric3d_ros.core.model import gelu_linear
from metric3d_ros.core.model.resample import bicubic_pos_grid, is_exporting
from metric3d_ros.core.model.specs import EncoderSpec

_POS_CACHE_SIZE = 8


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, H/p * W/p, D)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        # True: one matmul over the unfolded patches (same function, other summation order): cuDNN runs
        # this 3-channel, stride-14 conv at a few % of the tensor cores' rate (H100: 0.46 ms for 8 frames)
        self.as_matmul = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.as_matmul:
            return self.proj(x).flatten(2).transpose(1, 2)
        p = self.patch_size
        # (B, C, h*p, w*p) -> (B, h*w, p*p*C) in (row, column, channel) order, a copy from NHWC memory
        patches = x.permute(0, 2, 3, 1).unflatten(1, (-1, p)).unflatten(3, (-1, p)).permute(0, 1, 3, 2, 4, 5)
        patches = patches.flatten(3).flatten(1, 2)
        weight = self.proj.weight.permute(0, 2, 3, 1).flatten(1)
        return F.linear(patches, weight, self.proj.bias)


class LayerScale(nn.Module):
    """Per-channel residual scale ``gamma``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    ``fused=False`` (default) computes plain softmax attention in upstream's operation order (query scaled
    first); ``fused=True`` uses ``F.scaled_dot_product_attention``, faster and within the conformance
    criterion but not bit-identical.
    """

    def __init__(self, dim: int, num_heads: int, fused: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Two-layer GELU MLP (ViT-S, ViT-L)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        # True: fc1 and a tanh-approximated GELU as one cuBLASLt call for bf16 CUDA tensors with bf16
        # weights (``gelu_linear``; the 'cast' scope of the fused network); the exact GELU otherwise
        self.gelu_epilogue = False

    def forward(self, x: Tensor) -> Tensor:
        if (self.gelu_epilogue and x.is_cuda and x.dtype == torch.bfloat16
                and self.fc1.weight.dtype == torch.bfloat16):
            return self.fc2(gelu_linear.linear_gelu_op(x, self.fc1.weight, self.fc1.bias))
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward with the gate and value projections fused in ``w12`` (giant2)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, spec: EncoderSpec, fused_attention: bool = False) -> None:
        super().__init__()
        dim = spec.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=spec.layer_norm_eps)
        self.attn = Attention(dim, spec.num_heads, fused=fused_attention)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=spec.layer_norm_eps)
        mlp_cls = Mlp if spec.mlp == 'gelu' else SwiGLUFFN
        self.mlp = mlp_cls(dim, spec.mlp_hidden_dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class BlockChunk(nn.ModuleList):
    """A run of blocks (upstream stores all blocks in a single chunk: ``blocks.0.<i>``)."""


class DinoVisionTransformer(nn.Module):
    """The encoder. ``forward`` returns the four decoder features and the token grid size.

    Each feature is (B, 1 + R + h*w, D): the class token, the R register tokens, then the patch tokens in
    row-major order, for the blocks and normalisation named by the spec.
    """

    def __init__(self, spec: EncoderSpec, fused_attention: bool = False) -> None:
        super().__init__()
        self.spec = spec
        dim = spec.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, spec.pos_grid ** 2 + 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, spec.num_register_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # training only; kept for the checkpoint layout
        self.patch_embed = PatchEmbed(spec.patch_size, dim)
        self.blocks = nn.ModuleList([BlockChunk([Block(spec, fused_attention) for _ in range(spec.depth)])])
        self.norm = nn.LayerNorm(dim, eps=spec.layer_norm_eps)
        self._pos_cache: OrderedDict[tuple, Tensor] = OrderedDict()

    def set_patch_matmul(self, enabled: bool) -> None:
        """True: the patch embedding as one matmul over unfolded patches (see ``PatchEmbed``)."""
        self.patch_embed.as_matmul = bool(enabled)

    def set_gelu_epilogue(self, enabled: bool) -> None:
        """True: fc1 + GELU of every GELU MLP as one cuBLASLt call for bf16 on CUDA (``Mlp``, torch 2.4+)."""
        enabled = bool(enabled) and gelu_linear.available()
        for block in self.blocks[0]:
            if isinstance(block.mlp, Mlp):
                block.mlp.gelu_epilogue = enabled

    def set_fused_attention(self, fused: bool) -> None:
        """Switch every block between plain softmax attention and ``scaled_dot_product_attention``."""
        for block in self.blocks[0]:
            block.attn.fused = fused

    # positional embedding ---------------------------------------------------------------------------

    def _interpolated_pos_embed(self, h_tokens: int, w_tokens: int) -> Tensor:
        """Upstream's interpolation: bicubic, scale_factor ((h + 0.1) / 37, (w + 0.1) / 37), no antialias."""
        spec = self.spec
        pos = self.pos_embed.float()
        if h_tokens == spec.pos_grid and w_tokens == spec.pos_grid:
            return pos
        grid = pos[:, 1:].reshape(1, spec.pos_grid, spec.pos_grid, -1).permute(0, 3, 1, 2)
        scale = ((h_tokens + spec.interpolate_offset) / spec.pos_grid,
                 (w_tokens + spec.interpolate_offset) / spec.pos_grid)
        grid = F.interpolate(grid, scale_factor=scale, mode='bicubic', antialias=False)
        if grid.shape[-2:] != (h_tokens, w_tokens):
            raise RuntimeError(
                f'positional grid came out {tuple(grid.shape[-2:])}, not ({h_tokens}, {w_tokens})')
        patch = grid.permute(0, 2, 3, 1).reshape(1, h_tokens * w_tokens, -1)
        return torch.cat((pos[:, :1], patch), dim=1)

    def _dynamic_pos_embed(self, h_tokens, w_tokens) -> Tensor:
        """The same numbers from tensor arithmetic only, for tracing/export with symbolic sizes."""
        spec = self.spec
        pos = self.pos_embed.float()
        grid = pos[:, 1:].reshape(1, spec.pos_grid, spec.pos_grid, -1).permute(0, 3, 1, 2)
        grid = bicubic_pos_grid(grid, h_tokens, w_tokens, spec.interpolate_offset)
        patch = grid.flatten(2).transpose(1, 2)
        return torch.cat((pos[:, :1], patch), dim=1)

    def pos_embed_for(self, h_tokens, w_tokens) -> Tensor:
        """Positional embedding (1, 1 + h*w, D) for an h x w token grid; cached per size in eager mode."""
        if is_exporting():
            return self._dynamic_pos_embed(h_tokens, w_tokens).to(self.pos_embed.dtype)
        pos = self.pos_embed
        if torch.is_grad_enabled() and pos.requires_grad:
            return self._interpolated_pos_embed(h_tokens, w_tokens).to(pos.dtype)
        # the key changes when the tensor is replaced, moved, cast or edited in place (inference tensors
        # carry no version counter; loading a state dict clears the cache, see _load_from_state_dict)
        version = -1 if pos.is_inference() else pos._version
        key = (h_tokens, w_tokens, pos.device, pos.dtype, pos.data_ptr(), version)
        cached = self._pos_cache.get(key)
        if cached is None:
            with torch.no_grad():
                cached = self._interpolated_pos_embed(h_tokens, w_tokens).to(pos.dtype)
            self._pos_cache[key] = cached
            while len(self._pos_cache) > _POS_CACHE_SIZE:
                self._pos_cache.popitem(last=False)
        return cached

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._pos_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    # forward ----------------------------------------------------------------------------------------

    def padded_size(self, height, width):
        """Upstream resizes inputs whose sides are not multiples of the patch size up to the next multiple."""
        p = self.spec.patch_size
        return (height + p - 1) // p * p, (width + p - 1) // p * p

    def forward(self, x: Tensor) -> tuple[list[Tensor], int, int]:
        spec = self.spec
        height, width = x.shape[-2], x.shape[-1]
        padded_h, padded_w = self.padded_size(height, width)
        if is_exporting():
            # bilinear to the same size is an exact copy, so the resize needs no shape branch here
            x = F.interpolate(x, size=(padded_h, padded_w), mode='bilinear', align_corners=False)
        elif (padded_h, padded_w) != (height, width):
            x = F.interpolate(x, size=(padded_h, padded_w), mode='bilinear', align_corners=False)
        h_tokens, w_tokens = padded_h // spec.patch_size, padded_w // spec.patch_size

        tokens = self.patch_embed(x)
        batch = tokens.shape[0]
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), tokens), dim=1)
        tokens = tokens + self.pos_embed_for(h_tokens, w_tokens)
        tokens = torch.cat((tokens[:, :1], self.register_tokens.expand(batch, -1, -1), tokens[:, 1:]), dim=1)

        wanted = sorted(set(spec.feature_blocks))
        taken: dict[int, Tensor] = {}
        for number, block in enumerate(self.blocks[0], start=1):
            tokens = block(tokens)
            if number in wanted:
                taken[number] = self.norm(tokens) if spec.feature_norm else tokens
            if number == wanted[-1]:
                break
        return [taken[b] for b in spec.feature_blocks], h_tokens, w_tokens

