"""Upstream-exact pre- and post-processing (CPU, per frame), for conformance and as a CPU fallback.

This is what upstream Metric3D (``hubconf.py`` at eb5b6fac) does around the network, step for step:

preprocessing (``reference_letterbox_u8`` + ``reference_normalize``):
  1. ``scale = min(net_h / h, net_w / w)``; ``cv2.resize`` of the uint8 RGB image to
     ``(int(w * scale), int(h * scale))`` with ``INTER_LINEAR`` (OpenCV's fixed-point uint8 bilinear);
  2. ``cv2.copyMakeBorder`` constant padding with the mean colour (123.675, 116.28, 103.53), which OpenCV
     rounds to (124, 116, 104) in uint8; top = pad_h // 2, left = pad_w // 2;
  3. float32 ``(rgb - mean) / std``, laid out NCHW.
  The uint8 result of steps 1-2 is the reference files' ``input_u8``.

postprocessing (``reference_postprocess``):
  un-pad with pad_info, ``F.interpolate(..., size=(h, w), mode='bilinear')`` (align_corners False) to
  the original size, times ``fx * scale / canonical_focal_px`` (the letterbox-scaled fx), clamp [0, 300].

The engine's device path (``preprocess='device'``) differs only in step 1 (float bilinear resize on the
device, rounded to integers): see ``metric3d_ros.core.engine.preprocess``.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from metric3d_ros.core.engine.backend import MEAN_RGB, STD_RGB
from metric3d_ros.core.geometry.letterbox import PADDING_RGB, Letterbox, compute_letterbox


def reference_letterbox_u8(image_rgb: np.ndarray, net_height_px: int, net_width_px: int
                           ) -> tuple[np.ndarray, Letterbox]:
    """``(input_u8 (net_h, net_w, 3) uint8, letterbox)``: upstream's cv2 resize and mean-colour padding."""
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image_rgb must be (H, W, 3) uint8, got {image.dtype} {image.shape}')
    lb = compute_letterbox(image.shape[0], image.shape[1], net_height_px, net_width_px)
    resized = cv2.resize(image, (lb.resized_width, lb.resized_height), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(
        resized, lb.pad_top, lb.pad_bottom, lb.pad_left, lb.pad_right, cv2.BORDER_CONSTANT,
        value=list(PADDING_RGB),
    )
    return padded, lb


def reference_normalize(input_u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float32 NCHW ``(rgb - mean) / std`` of (H, W, 3) or (B, H, W, 3) uint8, computed as upstream does."""
    x = torch.as_tensor(input_u8)
    if x.dtype != torch.uint8 or x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(f'input_u8 must be (H, W, 3) or (B, H, W, 3) uint8, got {x.dtype} {tuple(x.shape)}')
    if x.ndim == 3:
        x = x[None]
    x = x.permute(0, 3, 1, 2).float()
    mean = torch.tensor(MEAN_RGB, dtype=torch.float32, device=x.device)[None, :, None, None]
    std = torch.tensor(STD_RGB, dtype=torch.float32, device=x.device)[None, :, None, None]
    return torch.div(x - mean, std).contiguous()


def reference_postprocess(
    canonical_depth: torch.Tensor,
    letterbox: Letterbox,
    network_fx_px: float,
    canonical_focal_px: float = 1000.0,
    clamp_m: tuple[float, float] = (0.0, 300.0),
) -> torch.Tensor:
    """Metric depth (h, w) float32 at the source resolution from (H, W) / (1, 1, H, W) canonical depth.

    ``network_fx_px`` is the letterbox-scaled fx (``fx * letterbox.scale``), as upstream's
    ``intrinsic[0]`` after its rescale. The clamp is upstream's; the engine clamps nothing and marks clamped
    and saturated pixels invalid instead (``metric3d_ros.core.engine.postprocess``), equal to this wherever
    this is not a clamp.
    """
    depth = canonical_depth.squeeze()
    if depth.ndim != 2 or tuple(depth.shape) != (letterbox.net_height, letterbox.net_width):
        raise ValueError(
            f'canonical_depth must be ({letterbox.net_height}, {letterbox.net_width}) after squeezing, '
            f'got {tuple(canonical_depth.shape)}'
        )
    top, bottom, left, right = letterbox.pad_info
    depth = depth[top:depth.shape[0] - bottom, left:depth.shape[1] - right]
    depth = F.interpolate(
        depth[None, None].float(), (letterbox.src_height, letterbox.src_width), mode='bilinear'
    ).squeeze()
    depth = depth * (network_fx_px / canonical_focal_px)
    return torch.clamp(depth, clamp_m[0], clamp_m[1])
