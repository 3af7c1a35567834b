"""Batched postprocessing on the device: un-pad, resize, de-canonical scale, validity, normals, clouds.

Frames are processed in groups of consecutive batch rows that share the source size and the output request
(``PostGroup``); every operation of a group is one batched torch call. Per group of n frames:

depth (upstream's order of operations, so every valid value equals upstream's to float rounding):
  1. un-pad: rows ``top : H - bottom``, columns ``left : W - right`` of the canonical depth;
  2. saturation: a canonical value at or beyond the network's canonical range (``PostContext.
     canonical_range``, the decoder's [0.1, 200] clamp; non-finite too) is a clamp, not a measurement: a
     0/1 mask of those pixels is stacked onto the depth as a second channel (torch, on the device, in the
     same resize call: no extra pass, nothing copied to the host);
  3. output resolution ``'camera'``: bilinear resize (depth and mask) to the source (h, w),
     ``align_corners=False``; ``'network'``: no resize, the output is the un-padded (rh, rw) =
     (int(h * scale), int(w * scale));
  4. times ``network_fx_px / canonical_focal_px`` per frame (float32), ``network_fx_px = fx * scale``;
  5. NaN where the resized mask is > 0 (some interpolation weight fell on a saturated pixel: the value mixes
     in a clamp), where the depth is not finite or <= 0, or outside the request's [min_depth_m,
     max_depth_m]. Nothing is clamped (upstream clamps metric depth to [0, 300] m after step 4; here a
     value beyond the request's range is invalid instead, so ``max_depth_m`` above 300 m is honoured).
confidence: steps 1-2. normals: xyz channels, steps 1-2, then divided by their length (unit vectors).
cloud: the final depth (with its NaNs) sampled at rows/columns 0, s, 2s, ... and unprojected with the
  output intrinsics: ``x = (u - cx) * z / fx``, ``y = (v - cy) * z / fy`` (pixel centres at integers),
  as ``metric3d_ros.core.geometry.cloud.unproject_organized`` does, in float32.

All arithmetic is float32 whatever the network precision was.

The per-output functions are the ``postprocess`` entries of the output catalogue
(``metric3d_ros.core.outputs``): ``fn(ctx: PostContext) -> torch.Tensor``. Importing this module loads no
torch (the catalogue is read by torch-free processes); the functions import it when they run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from metric3d_ros.core.engine.types import OutputRequest
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.geometry.letterbox import Letterbox

if TYPE_CHECKING:
    import torch

    from metric3d_ros.core.engine.backend import NetworkOutput


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


@dataclass(frozen=True)
class PostContext:
    """What an output's postprocess function gets for one ``PostGroup`` (``metric3d_ros.core.outputs``).

    network: the backend's outputs for the whole batch (the group's rows are ``group.start:group.stop``).
    computed: device tensors this group has computed so far, keyed by ``OutputSpec.array`` (the outputs
        named in the spec's ``requires`` are there); the engine adds each result after the call.
    canonical_focal_px: ``EngineConfig.canonical_focal_px``.
    canonical_range: (lo, hi) of the network's canonical depth (the variant's decoder clamp, [0.1, 200]):
        a canonical value <= lo or >= hi is saturated and never becomes a valid depth.
    """

    network: NetworkOutput
    group: PostGroup
    computed: dict[str, torch.Tensor]
    canonical_focal_px: float
    canonical_range: tuple[float, float]


def _unpad(x: torch.Tensor, group: PostGroup) -> torch.Tensor:
    """(n, C, rh, rw) float32 rows of ``x`` (B, C, H, W) without the letterbox padding (a view if float32)."""
    import torch

    rows, cols = group.letterbox.unpad_slices
    x = x[group.start:group.stop, :, rows, cols]
    return x if x.dtype == torch.float32 else x.float()


def _resize(x: torch.Tensor, group: PostGroup) -> torch.Tensor:
    """(n, C, h, w): un-padded ``x`` resized to the group's output size (unchanged at network resolution)."""
    import torch.nn.functional as F

    if group.request.resolution == 'camera':
        x = F.interpolate(x, size=group.output_hw, mode='bilinear', align_corners=False)
    return x


def _unpad_resize(x: torch.Tensor, group: PostGroup) -> torch.Tensor:
    """(n, C, h, w) float32: rows of ``x`` (B, C, H, W) un-padded and resized to the group's output size."""
    return _resize(_unpad(x, group), group)


def _per_row(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """(n, 1, 1, 1) float32 on ``device`` (values rounded to float32 once, like a Python scalar multiply)."""
    import torch

    t = torch.tensor(values, dtype=torch.float32)
    if device.type == 'cuda':
        t = t.pin_memory().to(device, non_blocking=True)
    return t.view(-1, 1, 1, 1)


def postprocess_depth(ctx: PostContext) -> torch.Tensor:
    """(n, h, w) float32 metric depth of the group, NaN where invalid (module docstring, steps 1-5)."""
    import torch

    group = ctx.group
    canonical = _unpad(ctx.network.depth, group)
    lo, hi = ctx.canonical_range
    saturated = (canonical <= lo) | (canonical >= hi) | ~torch.isfinite(canonical)
    both = _resize(torch.cat([canonical, saturated.to(torch.float32)], dim=1), group)
    depth, touched = both[:, :1], both[:, 1:] > 0.0
    scale = _per_row(tuple(fx / ctx.canonical_focal_px for fx in group.network_fx_px), depth.device)
    depth = depth * scale
    req = group.request
    valid = (~touched & torch.isfinite(depth) & (depth > 0.0) & (depth >= req.min_depth_m)
             & (depth <= req.max_depth_m))
    depth = torch.where(valid, depth, torch.full((), float('nan'), device=depth.device))
    return depth[:, 0]


def postprocess_confidence(ctx: PostContext) -> torch.Tensor:
    """(n, h, w) float32 confidence at the output resolution."""
    out, group = ctx.network, ctx.group
    if out.confidence is None:
        raise RuntimeError('confidence was requested but the backend returned none')
    conf = _unpad_resize(out.confidence, group)[:, 0]
    # at network resolution this is still a view of the backend's (reused) output buffer
    return conf.clone() if group.request.resolution == 'network' else conf


def postprocess_normals(ctx: PostContext) -> torch.Tensor:
    """(n, h, w, 3) float32 unit normals (camera optical frame) at the output resolution."""
    import torch.nn.functional as F

    out, group = ctx.network, ctx.group
    if out.normal is None:
        raise RuntimeError('normals were requested but the backend returned none')
    normal = _unpad_resize(out.normal[:, :3], group)
    normal = F.normalize(normal, p=2.0, dim=1, eps=1e-12)
    return normal.permute(0, 2, 3, 1).contiguous()


def unproject_group(ctx: PostContext) -> torch.Tensor:
    """(n, hc, wc, 4) float32 organized cloud (x, y, z, 0) from the group's (n, h, w) metric depth
    (``ctx.computed['depth_m']``; NaN stays NaN).

    Four values per point: depth_image_proc's 16-byte point layout, so the PointCloud2 needs one copy of
    the downloaded buffer (``FrameResult.arrays['points_xyz']`` is its ``[..., :3]`` view).
    """
    import torch

    depth, group = ctx.computed['depth_m'], ctx.group
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
    import torch

    rows, cols = group.letterbox.unpad_slices
    stride = group.request.cloud_stride
    x = batch_255[group.start:group.stop, :, rows, cols][:, :, ::stride, ::stride]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
