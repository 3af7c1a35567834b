"""Deterministic synthetic Metric3D weights, built from the network's own layout (no shared data needed).

The official checkpoints are large downloads; demos, tests and benchmarks on machines without them use
synthetic weights instead. The values follow the rules of the conformance references
(``../shared/reference/metric3d/synth_weights.py``), so a checkpoint written here equals the one the
references were computed with, tensor for tensor:

- seed = crc32(key); ``u`` ~ Uniform[-1, 1) from numpy's PCG64 (``Generator.random() * 2 - 1``, float64);
- ``...running_var`` -> ``1 + 0.1 |u|``; ``...num_batches_tracked`` -> 0 (int64);
- keys containing pos_embed, cls_token, register_tokens or mask_token -> ``0.02 sqrt(3) u``;
- tensors of 2+ dimensions -> ``sqrt(3) u / sqrt(fan_in)``, fan_in = prod(shape[1:]);
- 1-D keys ending in ``weight`` or ``gamma`` -> ``1 + 0.1 u``; anything else -> ``0.02 sqrt(3) u``;
- values are rounded to float32 last; a key naming the same tensor as an earlier key (the ``norm3`` /
  ``downsample.1`` LayerNorm) takes that key's values.

These weights make the network numerically chaotic; they prove loading and computation, not accuracy.
"""
from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from metric3d_ros.core.model.checkpoint import StateLayout

_TOKEN_NAMES = ('pos_embed', 'cls_token', 'register_tokens', 'mask_token')
_SQRT3 = math.sqrt(3.0)


def synthetic_tensor(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The synthetic values of one tensor (see the module docstring); float32, or int64 for counters."""
    if key.endswith('num_batches_tracked'):
        return np.zeros(shape, dtype=np.int64)
    count = math.prod(shape)
    u = np.random.Generator(np.random.PCG64(zlib.crc32(key.encode()))).random(count) * 2.0 - 1.0
    if key.endswith('running_var'):
        values = 1.0 + 0.1 * np.abs(u)
    elif any(name in key for name in _TOKEN_NAMES):
        values = 0.02 * _SQRT3 * u
    elif len(shape) >= 2:
        values = _SQRT3 * u / math.sqrt(math.prod(shape[1:]))
    elif key.endswith(('weight', 'gamma')):
        values = 1.0 + 0.1 * u
    else:
        values = 0.02 * _SQRT3 * u
    return values.astype(np.float32).reshape(shape)


def network_layout(variant: str) -> StateLayout:
    """The state-dict layout of ``build_network(variant)``, built on the meta device (no weight memory)."""
    from metric3d_ros.core.model.network import build_network

    return StateLayout.from_module(build_network(variant, device='meta'))


def synthetic_state_dict(layout: str | StateLayout) -> dict[str, torch.Tensor]:
    """Synthetic weights for a variant name ('small', 'large', 'giant2') or a layout, in layout order.

    Alias names share the tensor of the name they alias, as in a saved ``model.state_dict()``.
    """
    if isinstance(layout, str):
        layout = network_layout(layout)
    state: dict[str, torch.Tensor] = {}
    for key, shape in layout.shapes.items():
        target = layout.aliases.get(key)
        state[key] = state[target] if target is not None else torch.from_numpy(synthetic_tensor(key, shape))
    return state


def write_synthetic_checkpoint(path: str | os.PathLike[str], variant: str) -> Path:
    """Write synthetic weights for ``variant`` the way the official files are written:
    ``torch.save({'model_state_dict': state_dict}, path)``. Returns the path."""
    out = Path(path)
    torch.save({'model_state_dict': synthetic_state_dict(variant)}, out)
    return out
