"""Metric3D v2 ViT models (torch): network, spec table, checkpoint loading, weight resolution.

Public entry point::

    from metric3d_ros.core.model import load_metric3d
    net = load_metric3d('metric_depth_vit_small_800k.pth')          # variant detected from the tensors
    depth, confidence, normal = net(x)   # x: normalized (B, 3, H, W) float32

``resolve_weights(variant)`` (in :mod:`.weights`) finds or downloads the official file. Importing this
package imports no torch; :func:`load_metric3d` imports it when called.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ['load_metric3d']


def load_metric3d(
    weights: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    variant: str | None = None,
    device: str | torch.device = 'cpu',
    fill_aliases: bool = False,
    fused_attention: bool = False,
) -> nn.Module:
    """The Metric3D network with ``weights`` loaded strictly, on ``device``, in eval mode.

    weights: a checkpoint path (``.pth`` as published: ``{'model_state_dict': ...}``, a bare state dict, or
        either with ``module.`` prefixes) or a state dict. Read with ``torch.load(weights_only=True)``.
    variant: 'small', 'large' or 'giant2'; None detects it from the tensors. A configured variant that
        differs from the checkpoint raises CheckpointError saying which to set.
    fill_aliases: accept a checkpoint that holds only one of the two names of the shared
        ``norm3``/``downsample.1`` LayerNorm (the official files hold both).
    fused_attention: use ``scaled_dot_product_attention`` (faster) instead of the plain softmax attention
        of upstream (exact); switchable later with ``set_fused_attention``.

    The returned module's ``forward(x)`` maps the normalized (B, 3, H, W) float32 input to
    ``(depth, confidence, normal)`` shaped (B, 1, H', W'), (B, 1, H', W'), (B, 4, H', W'): canonical-camera
    depth, its confidence, and the unit normal xyz + kappa. Raises CheckpointError when the checkpoint
    cannot be read or does not fit.
    """
    from metric3d_ros.core.model.checkpoint import (
        check_variant,
        detect_variant,
        load_into,
        normalize_state_dict,
        read_checkpoint,
    )

    from_file = isinstance(weights, (str, os.PathLike))
    if from_file:
        source = os.fspath(weights)
        state = read_checkpoint(weights)
    elif isinstance(weights, Mapping):
        source = 'the given state dict'
        state = normalize_state_dict(weights, source=source)
    else:
        raise TypeError(f'weights must be a checkpoint path or a state dict, got {type(weights).__name__}; '
                        'use resolve_weights(variant) from metric3d_ros.core.model.weights to get the path')
    detected = detect_variant(state, source=source)
    check_variant(detected, variant, source=source)  # before building a network of the wrong size
    from metric3d_ros.core.model.network import build_network

    # The network is built on the meta device and the checkpoint tensors become its parameters: the weights
    # are held once (memory-mapped where the file allows). A caller's state dict is cloned first, so that
    # the network never shares tensors with it.
    if not from_file:
        state = {key: value.clone() for key, value in state.items()}
    network = build_network(detected, fused_attention=fused_attention, device='meta')
    load_into(network, state, variant=detected, fill_aliases=fill_aliases, source=source, assign=True)
    del state
    return network.to(device).eval()


def __getattr__(name: str) -> Any:
    """Lazy re-exports, so that importing the package stays free of torch."""
    lazy = {
        'CheckpointError': 'checkpoint', 'read_checkpoint': 'checkpoint', 'detect_variant': 'checkpoint',
        'WeightsError': 'weights', 'resolve_weights': 'weights', 'WeightFile': 'weights',
    }
    if name in lazy:
        import importlib
        return getattr(importlib.import_module(f'{__name__}.{lazy[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
