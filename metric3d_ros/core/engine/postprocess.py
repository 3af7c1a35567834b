"""Batched postprocessing on the device: un-pad, resize, de-canonical scale, validity, normals, clouds.

Frames are processed in groups of consecutive batch rows that share the source size and the output request
(``PostGroup``); every operation of a group is one batched torch call. Per group of n frames:

depth (upstream's order of operations, so the result equals upstream's to float rounding):
  1. un-pad: rows ``top : H - bottom``, columns ``left : W - right`` of the canonical depth;
  2. output resolution ``'camera'``: bilinear resize to the source (h, w), ``align_corners=False``;
     ``'network'``: no resize, the output is the un-padded (rh, rw) = (int(h * scale), int(w * scale));
  3. times ``network_fx_px / canonical_focal_px`` per frame (float32), ``network_fx_px = fx * scale``;
  4. clamp into the engine's [min_depth_m, max_depth_m] (upstream: [0, 300]);
  5. NaN where the depth is not finite, <= 0, or outside the request's [min_depth_m, max_depth_m].
confidence: steps 1-2. normals: xyz channels, steps 1-2, then divided by their length (unit vectors).
cloud: the final depth (with its NaNs) sampled at rows/columns 0, s, 2s, ... and unprojected with the
  output intrinsics: ``x = (u - cx) * z / fx``, ``y = (v - cy) * z / fy`` (pixel centres at integers),
  as ``metric3d_ros.core.geometry.cloud.unproject_organized`` does, in float32.

All arithmetic is float32 whatever the network precision was.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metric3d_ros.core.engine.backend import NetworkOutput
from metric3d_ros.core.engine.types import OutputRequest
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.geometry.letterbox import Letterbox


@dataclass(frozen=True)
class PostGroup:
    """Batch rows ``start:stop`` sharing a source size (so a letterbox) and an output request.

    network_fx_px / output_intrinsics: one entry per row of the group.
    """

    start: int
    stop: int
    letterbox: Letterbox
    request: OutputRequest
    network_fx_px: tuple[float, ...]
    output_intrinsics: tuple[Intrinsics, ...]

    @property
    def output_hw(self) -> tuple[int, int]:
        """(h, w) of this group's outputs."""
        lb = self.letterbox
        if self.request.resolution == 'network':
            return (lb.resized_height, lb.resized_width)
        return (lb.src_height, lb.src_width)


def _unpad_resize(x: torch.Tensor, group: PostGroup) -> torch.Tensor:
    """(n, C, h, w) float32: rows of ``x`` (B, C, H, W) un-padded and resized to the group's output size."""
    rows, cols = group.letterbox.unpad_slices
    x = x[group.start:group.stop, :, rows, cols]
    if x.dtype != torch.float32:
        x = x.float()
    if group.request.resolution == 'camera':
        x = F.interpolate(x, size=group.output_hw, mode='bilinear', align_corners=False)
    return x


def _per_row(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """(n, 1, 1, 1) float32 on ``device`` (values rounded to float32 once, like a Python scalar multiply)."""
    t = torch.tensor(values, dtype=torch.float32)
    if device.type == 'cuda':
        t = t.pin_memory().to(device, non_blocking=True)
    return t.view(-1, 1, 1, 1)


def postprocess_depth(
    out: NetworkOutput, group: PostGroup, canonical_focal_px: float, clamp_m: tuple[float, float]
) -> torch.Tensor:
    """(n, h, w) float32 metric depth of the group, NaN where invalid (module docstring, steps 1-5)."""
    depth = _unpad_resize(out.depth, group)
    scale = _per_row(tuple(fx / canonical_focal_px for fx in group.network_fx_px), depth.device)
    depth = torch.clamp(depth * scale, clamp_m[0], clamp_m[1])
    req = group.request
    valid = torch.isfinite(depth) & (depth > 0.0) & (depth >= req.min_depth_m) & (depth <= req.max_depth_m)
    depth = torch.where(valid, depth, torch.full((), float('nan'), device=depth.device))
    return depth[:, 0]


def postprocess_confidence(out: NetworkOutput, group: PostGroup) -> torch.Tensor:
    """(n, h, w) float32 confidence at the output resolution."""
    if out.confidence is None:
        raise RuntimeError('confidence was requested but the backend returned none')
    conf = _unpad_resize(out.confidence, group)[:, 0]
    # at network resolution this is still a view of the backend's (reused) output buffer
    return conf.clone() if group.request.resolution == 'network' else conf


def postprocess_normals(out: NetworkOutput, group: PostGroup) -> torch.Tensor:
    """(n, h, w, 3) float32 unit normals (camera optical frame) at the output resolution."""
    if out.normal is None:
        raise RuntimeError('normals were requested but the backend returned none')
    normal = _unpad_resize(out.normal[:, :3], group)
    normal = F.normalize(normal, p=2.0, dim=1, eps=1e-12)
    return normal.permute(0, 2, 3, 1).contiguous()


def unproject_group(depth: torch.Tensor, group: PostGroup) -> torch.Tensor:
    """(n, hc, wc, 4) float32 organized cloud (x, y, z, 0) from (n, h, w) metric depth (NaN stays NaN).

    Four values per point: depth_image_proc's 16-byte point layout, so the PointCloud2 needs one copy of
    the downloaded buffer (``FrameResult.points_xyz`` is its ``[..., :3]`` view).
    """
    stride = group.request.cloud_stride
    z = depth[:, ::stride, ::stride]
    dev = depth.device
    h, w = depth.shape[1], depth.shape[2]
    intr = group.output_intrinsics
    params = torch.tensor([[k.fx_px, k.fy_px, k.cx_px, k.cy_px] for k in intr], dtype=torch.float32)
    if dev.type == 'cuda':
        params = params.pin_memory().to(dev, non_blocking=True)
    fx, fy, cx, cy = (params[:, i].view(-1, 1, 1) for i in range(4))
    u = torch.arange(0, w, stride, device=dev, dtype=torch.float32).view(1, 1, -1)
    v = torch.arange(0, h, stride, device=dev, dtype=torch.float32).view(1, -1, 1)
    x = (u - cx) * z / fx
    y = (v - cy) * z / fy
    return torch.stack([x, y, z, torch.zeros_like(z)], dim=-1)


def decimated_rgb_network(batch_255: torch.Tensor, group: PostGroup) -> torch.Tensor:
    """(n, hc, wc, 3) uint8 colours of a network-resolution cloud, from the un-normalized (0..255) batch."""
    rows, cols = group.letterbox.unpad_slices
    stride = group.request.cloud_stride
    x = batch_255[group.start:group.stop, :, rows, cols][:, :, ::stride, ::stride]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
