"""Ground-truth test backend: returns the canonical depth that recorded ground truth implies.

Instead of running a network, ``GroundTruthBackend`` looks up each frame's ground-truth metric depth (at the
source image's resolution) and builds what a perfect network would output for the letterboxed input:

1. holes (NaN, <= 0) are filled with the nearest valid ground-truth value (``cv2.distanceTransform`` labels,
   L2 with a 5x5 mask), so that no hole bleeds into its neighbours when resampled; filled pixels are never
   evaluated since metrics use valid ground-truth pixels only;
2. the filled map is resized to the letterbox's resized size (rw, rh): ``cv2.INTER_AREA`` when shrinking in
   both axes, else ``cv2.INTER_LINEAR`` (the pixel mapping of the image path, centres at integers);
3. it is padded to the network size (edge values replicated; the engine cuts the padding off again);
4. metric -> canonical: ``canonical = metric * canonical_focal_px / network_fx_px`` with the letterbox-scaled
   fx that the engine will use to go back. Values at or beyond the network's canonical range ([0.1, 200])
   are left as they are: the engine treats them as saturated, as it would a network's clamp, so ground
   truth farther than ``200 * network_fx_px / canonical_focal_px`` metres comes back invalid (NaN).

The engine then un-pads, resizes to the output resolution and rescales as for a real network, so comparing
its output with the ground truth measures only resampling error: a wrong intrinsic, letterbox offset,
scale or unprojection shows up as an error far above it. Sparse ground truth (LiDAR) loses detail in step
2 wherever neighbouring returns differ in depth, so its bound is looser than for dense ground truth.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from metric3d_ros.core.engine.backend import FrameMeta, NetworkOutput
from metric3d_ros.core.geometry.letterbox import Letterbox

#: Returns a frame's ground-truth metric depth (H, W) at its source resolution, or None when it has none.
GroundTruthLookup = Callable[[FrameMeta], 'np.ndarray | None']


class GroundTruthMissing(LookupError):
    """The lookup has no ground truth for a frame of the batch."""


def fill_nearest_valid(depth_m: np.ndarray) -> np.ndarray:
    """float32 copy of ``depth_m``, each invalid pixel (non-finite or <= 0) set to its nearest valid one."""
    depth = np.asarray(depth_m, dtype=np.float32)
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(depth) & (depth > 0.0)
    if not valid.any():
        raise ValueError('ground truth has no valid pixel (all NaN or <= 0)')
    if valid.all():
        return depth.copy()
    # distanceTransform measures the distance to the nearest zero pixel: zeros are the valid pixels.
    _, labels = cv2.distanceTransformWithLabels(
        (~valid).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    lut = np.zeros(int(labels.max()) + 1, dtype=np.float32)
    lut[labels[valid]] = depth[valid]
    return lut[labels]


def ground_truth_canvas(depth_m: np.ndarray, letterbox: Letterbox, network_fx_px: float,
                        canonical_focal_px: float = 1000.0) -> np.ndarray:
    """(net_h, net_w) float32 canonical depth that ``depth_m`` (metres, source resolution) implies."""
    depth = np.asarray(depth_m)
    if depth.shape != (letterbox.src_height, letterbox.src_width):
        raise ValueError(
            f'ground truth is {depth.shape} but the image is ({letterbox.src_height}, '
            f'{letterbox.src_width}): ground truth must be at the image resolution'
        )
    if not (math.isfinite(network_fx_px) and network_fx_px > 0 and canonical_focal_px > 0):
        raise ValueError(f'network_fx_px and canonical_focal_px must be positive, got {network_fx_px}, '
                         f'{canonical_focal_px}')
    filled = fill_nearest_valid(depth)
    shrink = letterbox.resized_width < letterbox.src_width and letterbox.resized_height < letterbox.src_height
    resized = cv2.resize(filled, (letterbox.resized_width, letterbox.resized_height),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(resized, letterbox.pad_top, letterbox.pad_bottom, letterbox.pad_left,
                                letterbox.pad_right, cv2.BORDER_REPLICATE)
    return (padded.astype(np.float64) * (canonical_focal_px / network_fx_px)).astype(np.float32)


class GroundTruthBackend:
    """A ``Backend`` whose "network output" is the canonical depth of recorded ground truth (see module doc).

    lookup: ground truth per frame (``FrameMeta.camera_id`` and ``stamp_ns`` identify it).
    confidence: constant confidence returned for every pixel. Normals are not produced (None).
    """

    name = 'gt'
    input_format = 'rgb255'

    def __init__(self, lookup: GroundTruthLookup, canonical_focal_px: float = 1000.0,
                 device: str | torch.device = 'cpu', confidence: float = 1.0) -> None:
        if not callable(lookup):
            raise ValueError('lookup must be a callable(FrameMeta) -> depth array or None')
        if not (math.isfinite(canonical_focal_px) and canonical_focal_px > 0):
            raise ValueError(f'canonical_focal_px must be positive, got {canonical_focal_px}')
        self.device = torch.device(device)
        self._lookup = lookup
        self._focal_px = float(canonical_focal_px)
        self._confidence = float(confidence)
        self.calls = 0

    def run(self, batch: torch.Tensor, metas: Sequence[FrameMeta]) -> NetworkOutput:
        if batch.ndim != 4 or batch.shape[0] != len(metas):
            raise ValueError(f'batch {tuple(batch.shape)} does not match {len(metas)} frame descriptions')
        net_h, net_w = int(batch.shape[2]), int(batch.shape[3])
        depth = np.empty((len(metas), 1, net_h, net_w), dtype=np.float32)
        for i, meta in enumerate(metas):
            gt = self._lookup(meta)
            if gt is None:
                raise GroundTruthMissing(
                    f'no ground truth for camera {meta.camera_id!r} at stamp {meta.stamp_ns}'
                )
            if (meta.letterbox.net_height, meta.letterbox.net_width) != (net_h, net_w):
                raise ValueError(f'letterbox of frame {i} targets {meta.letterbox.net_width}x'
                                 f'{meta.letterbox.net_height}, the batch is {net_w}x{net_h}')
            fx_px = meta.network_intrinsics.fx_px
            depth[i, 0] = ground_truth_canvas(gt, meta.letterbox, fx_px, self._focal_px)
        self.calls += 1
        depth_t = torch.from_numpy(depth).to(self.device)
        confidence = torch.full_like(depth_t, self._confidence)
        return NetworkOutput(depth=depth_t, confidence=confidence, normal=None)

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        """Nothing to prepare."""

    def close(self) -> None:
        """Nothing to release."""
