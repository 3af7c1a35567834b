"""Evaluation bounds of the ground-truth backend derived from an interpolation error model (issue 16).

The ground-truth backend (``metric3d_ros.core.engine.gt_backend``) hands the engine the canonical depth that
recorded ground truth implies; the engine resamples it back to the camera. What is left is interpolation
error, and its size follows from how the chain resamples:

1. holes of the ground truth are filled with the nearest valid value (``fill_nearest_valid``): ``f``;
2. ``f`` is resized to the letterbox's (rw, rh): ``cv2.INTER_AREA`` when shrinking along both axes (output
   pixel j averages the source box [j / s, (j + 1) / s) in corner coordinates), else ``cv2.INTER_LINEAR``
   (the two source pixels around ``(j + 0.5) / s - 0.5``); both are convex combinations;
3. the engine resizes the canvas back bilinearly (``align_corners=False``: the two canvas pixels around
   ``(u + 0.5) * s - 0.5``), another convex combination; the de-canonical factor undoes the backend's
   exactly up to float32 rounding (relative ``FLOAT_EPS``).

So every predicted pixel is a convex combination of values of ``f`` within the footprint of that pixel:
along an axis with factor s, a source pixel x can contribute to output pixel u only if
``|x - u| < 1 / s + 1`` (INTER_LINEAR) or ``|x - u| < 1.5 / s + 0.5`` (INTER_AREA), i.e. within
``radius = ceil(reach) - 1`` whole pixels. Hence, with ``lo``/``hi`` the minimum/maximum of ``f`` over the
(2 ry + 1) x (2 rx + 1) window around a pixel and g its ground truth:

- envelope: ``lo (1 - eps) <= pred <= hi (1 + eps)`` at every evaluated pixel (a per-pixel check; a 1 %
  scale error or a one-pixel shift of the canvas breaks it on every real frame);
- worst interpolation error of a pixel: ``max(hi - g, g - lo) / g``; AbsRel <= its mean;
- a pixel can miss delta1 (ratio >= 1.25) only within that radius of a depth edge whose jump is >= 25 %:
  delta1 >= 1 - (fraction of evaluated pixels with ``max(hi / g, g / lo) >= 1.25``);
- a pixel can only be left out (coverage) if its footprint holds a value the network cannot output (at or
  beyond the canonical range, which the engine treats as saturated): coverage >= 1 - that fraction.

The bounds are per frame and derived from the frame's own ground truth, not fitted to measured values, so
they hold for frames the tests have never seen.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from metric3d_ros.core.engine.gt_backend import fill_nearest_valid
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.geometry.letterbox import Letterbox
from metric3d_ros.core.metrics import MetricsConfig, valid_gt_mask
from metric3d_ros.tools.bag_builder import cameras_from_preset, read_depth_png, read_rgb

#: Relative float32 rounding of the canonical round trip and the interpolation weights.
FLOAT_EPS = 1e-5
#: delta1's ratio threshold.
DELTA1_RATIO = 1.25


#: Evaluated depth range per data set (metres), as the evaluation tests use them.
MAX_DEPTH_M = {'nyu': 10.0, 'kitti': 250.0, 'ddad': 250.0}


def shared_frames(data_root: Path) -> Iterator[tuple[str, str, str, np.ndarray, np.ndarray, Intrinsics]]:
    """(data set, camera, frame key, RGB image, ground truth in metres with NaN holes, intrinsics) of every
    frame of every data set under ``data_root`` (nyu, kitti, ddad), read in place."""
    for preset in MAX_DEPTH_M:
        for cam in cameras_from_preset(preset, data_root):
            for fp in cam.frames:
                yield (preset, cam.name, fp.frame_key, read_rgb(fp.image_path),
                       read_depth_png(fp.depth_path, cam.depth_scale), cam.intrinsics)


def footprint_radius_px(letterbox: Letterbox) -> tuple[int, int]:
    """(rx, ry): whole source pixels around an output pixel whose ground truth can enter its prediction."""
    sx, sy = letterbox.resize_factors
    shrink = sx < 1.0 and sy < 1.0  # gt_backend: INTER_AREA only when shrinking along both axes

    def radius(s: float) -> int:
        reach = 1.0 / s + (0.5 / s + 0.5 if shrink else 1.0)  # bilinear taps + the canvas resize's footprint
        return math.ceil(reach) - 1

    return radius(sx), radius(sy)


@dataclass(frozen=True)
class FrameBounds:
    """What the error model allows for one frame (module docstring)."""

    lo: np.ndarray  # (H, W) window minimum of the filled ground truth
    hi: np.ndarray  # (H, W) window maximum
    abs_rel_max: float
    delta1_min: float
    coverage_min: float

    def outside_envelope(self, pred_m: np.ndarray, gt_m: np.ndarray, config: MetricsConfig) -> float:
        """Fraction of evaluated pixels (valid ground truth, finite prediction) outside [lo, hi]."""
        ev = valid_gt_mask(gt_m, config) & np.isfinite(pred_m)
        p = pred_m[ev].astype(np.float64)
        inside = (p >= self.lo[ev] * (1.0 - FLOAT_EPS)) & (p <= self.hi[ev] * (1.0 + FLOAT_EPS))
        return float(1.0 - inside.mean())


def frame_bounds(gt_m: np.ndarray, letterbox: Letterbox, network_fx_px: float, config: MetricsConfig,
                 canonical_range: tuple[float, float] = (0.1, 200.0),
                 canonical_focal_px: float = 1000.0) -> FrameBounds:
    """The model's bounds for one frame; ``network_fx_px`` is fx * letterbox.scale (the de-canonical focal).

    Which pixels end up evaluated is not known in advance (saturable ones may drop out), so the per-pixel
    sums run over every valid ground-truth pixel and are divided by the fewest pixels that can be evaluated
    (n_valid * coverage_min): a mean over any evaluated subset cannot exceed that.
    """
    gt = np.asarray(gt_m, dtype=np.float32)
    filled = fill_nearest_valid(gt)
    rx, ry = footprint_radius_px(letterbox)
    kernel = np.ones((2 * ry + 1, 2 * rx + 1), np.uint8)
    lo = cv2.erode(filled, kernel, borderType=cv2.BORDER_REPLICATE).astype(np.float64)
    hi = cv2.dilate(filled, kernel, borderType=cv2.BORDER_REPLICATE).astype(np.float64)
    valid = valid_gt_mask(gt, config)
    n_valid = int(np.count_nonzero(valid))
    g = gt[valid].astype(np.float64)
    worst = np.maximum(hi[valid] - g, g - lo[valid]) / g
    edges = int(np.count_nonzero(np.maximum(hi[valid] / g, g / lo[valid]) >= DELTA1_RATIO))
    to_metric = network_fx_px / canonical_focal_px
    saturable = valid & ((hi >= canonical_range[1] * to_metric) | (lo <= canonical_range[0] * to_metric))
    coverage_min = 1.0 - np.count_nonzero(saturable) / n_valid
    n_min = n_valid * coverage_min
    return FrameBounds(
        lo=lo, hi=hi,
        abs_rel_max=float(worst.sum() / n_min) + FLOAT_EPS,
        delta1_min=float(1.0 - edges / n_min),
        coverage_min=float(coverage_min),
    )
