"""Monocular depth metrics (numpy only): the standard Eigen/KITTI set on the valid ground-truth pixels.

For one frame, with ``p`` the predicted and ``g`` the ground-truth depth in metres over the evaluated
pixels (``n`` of them):

- ``abs_rel = mean(|p - g| / g)``
- ``sq_rel = mean((p - g)^2 / g)``
- ``rmse_m = sqrt(mean((p - g)^2))``
- ``rmse_log = sqrt(mean((ln p - ln g)^2))``
- ``log10 = mean(|log10 p - log10 g|)``
- ``silog = 100 * sqrt(mean(d^2) - mean(d)^2)`` with ``d = ln p - ln g`` (the KITTI benchmark's
  scale-invariant log error, lambda = 1, times 100)
- ``delta1/2/3`` = fraction of pixels with ``max(p / g, g / p) < 1.25, 1.25^2, 1.25^3``
- ``scale_ratio = median(p / g)``: the global scale bias (1 for an unbiased metric prediction)

Evaluated pixels: ground truth finite and inside ``[min_depth_m, max_depth_m]`` (0 and NaN are holes, so
dense and sparse LiDAR depth images are handled alike). A prediction that is not finite or not positive at
such a pixel cannot enter the log metrics: it is left out and counted in ``coverage`` (the fraction of valid
ground-truth pixels that had a usable prediction). With ``clamp_prediction`` (the common protocol) the
prediction is clamped to the evaluation range first.

Median scaling (``median_scaled=True``) multiplies the prediction by ``median(g) / median(p)`` per frame
before the metrics: it removes the global scale error and is reported separately from the metric numbers.

Predictions at another resolution than the ground truth (the node's ``output_resolution: network``) are
scored at the ground truth's pixels through both images' intrinsics (``depth_at_camera_pixels``): each
camera pixel's ray is looked up in the prediction where the prediction's CameraInfo puts it.

Aggregation over frames (``aggregate``) is the mean of the per-frame values (each frame weighs the same,
the usual protocol), computed in float64 in a fixed order so that it is deterministic.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from metric3d_ros.core.geometry.intrinsics import Intrinsics

#: Metric names in report order.
METRIC_NAMES: tuple[str, ...] = (
    'abs_rel', 'sq_rel', 'rmse_m', 'rmse_log', 'log10', 'silog', 'delta1', 'delta2', 'delta3'
)
#: True where larger is better (delta thresholds); the other metrics are errors.
HIGHER_IS_BETTER: dict[str, bool] = {name: name.startswith('delta') for name in METRIC_NAMES}


@dataclass(frozen=True)
class MetricsConfig:
    """Which pixels are evaluated and how the prediction is treated.

    min_depth_m / max_depth_m: ground-truth depths outside this closed range are not evaluated.
    clamp_prediction: clamp finite positive predictions into the range before the metrics.
    """

    min_depth_m: float = 1e-3
    max_depth_m: float = 80.0
    clamp_prediction: bool = True

    def __post_init__(self) -> None:
        lo, hi = float(self.min_depth_m), float(self.max_depth_m)
        if not (math.isfinite(lo) and lo > 0.0):
            raise ValueError(f'min_depth_m must be finite and > 0 (log metrics), got {self.min_depth_m!r}')
        if not (hi > lo):
            raise ValueError(f'max_depth_m must be greater than min_depth_m={lo}, got {self.max_depth_m!r}')
        object.__setattr__(self, 'min_depth_m', lo)
        object.__setattr__(self, 'max_depth_m', hi)


@dataclass(frozen=True)
class DepthMetrics:
    """Metrics of one frame (or a mean over frames, see ``aggregate``).

    n_pixels: evaluated pixels (summed over frames for an aggregate); coverage: evaluated / valid GT pixels
    (NaN for a frame without valid ground truth).
    scale_ratio: median(p / g), a diagnostic beside the metrics (not in ``METRIC_NAMES``).
    """

    abs_rel: float
    sq_rel: float
    rmse_m: float
    rmse_log: float
    log10: float
    silog: float
    delta1: float
    delta2: float
    delta3: float
    n_pixels: int
    coverage: float
    scale_ratio: float = float('nan')

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _check_pair(pred_m: np.ndarray, gt_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred_m)
    gt = np.asarray(gt_m)
    if pred.shape != gt.shape:
        raise ValueError(
            f'prediction shape {pred.shape} differs from ground truth shape {gt.shape}: resample the '
            'prediction to the ground-truth resolution first'
        )
    if pred.ndim != 2:
        raise ValueError(f'depth maps must be 2-D (H, W), got shape {pred.shape}')
    return pred.astype(np.float64, copy=False), gt.astype(np.float64, copy=False)


def valid_gt_mask(gt_m: np.ndarray, config: MetricsConfig) -> np.ndarray:
    """Ground-truth pixels that are evaluated: finite and inside ``[min_depth_m, max_depth_m]``."""
    gt = np.asarray(gt_m, dtype=np.float64)
    with np.errstate(invalid='ignore'):
        return np.isfinite(gt) & (gt >= config.min_depth_m) & (gt <= config.max_depth_m)


def _metrics_from_values(p: np.ndarray, g: np.ndarray, n_valid_gt: int) -> DepthMetrics:
    n = int(p.size)
    coverage = n / n_valid_gt if n_valid_gt else float('nan')
    if n == 0:
        nan = float('nan')
        return DepthMetrics(nan, nan, nan, nan, nan, nan, nan, nan, nan, 0, coverage)
    diff = p - g
    log_diff = np.log(p) - np.log(g)
    ratio = np.maximum(p / g, g / p)
    silog_var = max(float(np.mean(log_diff**2) - np.mean(log_diff) ** 2), 0.0)
    return DepthMetrics(
        abs_rel=float(np.mean(np.abs(diff) / g)),
        sq_rel=float(np.mean(diff**2 / g)),
        rmse_m=float(np.sqrt(np.mean(diff**2))),
        rmse_log=float(np.sqrt(np.mean(log_diff**2))),
        log10=float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        silog=float(100.0 * np.sqrt(silog_var)),
        delta1=float(np.mean(ratio < 1.25)),
        delta2=float(np.mean(ratio < 1.25**2)),
        delta3=float(np.mean(ratio < 1.25**3)),
        n_pixels=n,
        coverage=float(coverage),
        scale_ratio=float(np.median(p / g)),
    )


def evaluated_values(
    pred_m: np.ndarray, gt_m: np.ndarray, config: MetricsConfig, median_scaled: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(p, g, n_valid_gt)``: float64 prediction and ground truth at the evaluated pixels (row-major order).

    ``p`` is median-scaled (``median_scaled``) then clamped (``config.clamp_prediction``) as in
    ``compute_metrics``.
    """
    pred, gt = _check_pair(pred_m, gt_m)
    gt_ok = valid_gt_mask(gt, config)
    with np.errstate(invalid='ignore'):
        pred_ok = np.isfinite(pred) & (pred > 0.0)
    mask = gt_ok & pred_ok
    p = pred[mask]
    g = gt[mask]
    if median_scaled and p.size:
        p = p * (float(np.median(g)) / float(np.median(p)))
    if config.clamp_prediction:
        p = np.clip(p, config.min_depth_m, config.max_depth_m)
    return p, g, int(np.count_nonzero(gt_ok))


def compute_metrics(
    pred_m: np.ndarray, gt_m: np.ndarray, config: MetricsConfig | None = None, median_scaled: bool = False
) -> DepthMetrics:
    """Metrics of one predicted depth map against its ground truth (same shape, metres, NaN/0 = hole).

    A frame without any evaluated pixel gives NaN metrics with ``n_pixels == 0``; ``aggregate`` skips it.
    """
    cfg = config or MetricsConfig()
    p, g, n_valid = evaluated_values(pred_m, gt_m, cfg, median_scaled)
    return _metrics_from_values(p, g, n_valid)


def aggregate(per_frame: Sequence[DepthMetrics]) -> DepthMetrics:
    """Mean over frames of each metric (frames with no evaluated pixel are skipped); ``n_pixels`` is summed.

    ``scale_ratio`` is the mean of the per-frame values of the frames that count. ``coverage`` is the mean
    over every frame with valid ground truth, including those whose prediction was unusable everywhere
    (coverage 0, metrics skipped). No frame that counts: NaN metrics.
    """
    covered = [m.coverage for m in per_frame if math.isfinite(m.coverage)]
    coverage = math.fsum(covered) / len(covered) if covered else 0.0
    frames = [m for m in per_frame if m.n_pixels > 0]
    if not frames:
        nan = float('nan')
        return DepthMetrics(nan, nan, nan, nan, nan, nan, nan, nan, nan, 0, coverage)
    values = {
        name: math.fsum(getattr(m, name) for m in frames) / len(frames)
        for name in (*METRIC_NAMES, 'scale_ratio')
    }
    return DepthMetrics(**values, n_pixels=sum(m.n_pixels for m in frames), coverage=coverage)


def depth_at_camera_pixels(depth_m: np.ndarray, depth_intrinsics: Intrinsics, camera_intrinsics: Intrinsics,
                           width: int, height: int) -> np.ndarray:
    """(height, width) float32: ``depth_m`` (an image of the same camera described by ``depth_intrinsics``,
    e.g. the network-resolution depth with its published CameraInfo) at the pixels of the camera image
    described by ``camera_intrinsics``, for scoring against ground truth at the camera resolution.

    Camera pixel (u, v) has the ray ((u - cx) / fx, (v - cy) / fy); the depth image holds it at
    x = fx' (u - cx) / fx + cx', y likewise, and its depth there (the same point in the same optical frame
    has the same z) is interpolated bilinearly, coordinates clamped to the image (the rule of the engine's own
    resize: with the network-resolution CameraInfo this is x = (u + 0.5) * sx - 0.5, the resize of the
    camera-resolution output). A NaN among the four neighbours makes the pixel NaN (not evaluated), as
    invalid depth never leaks into valid pixels in the engine.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2 or depth.size == 0:
        raise ValueError(f'depth must be a non-empty (H, W) array, got shape {depth.shape}')
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f'camera image size must be positive, got {width}x{height}')
    d, c = depth_intrinsics, camera_intrinsics
    h, w = depth.shape
    xs = np.clip(d.fx_px * (np.arange(int(width)) - c.cx_px) / c.fx_px + d.cx_px, 0.0, w - 1)
    ys = np.clip(d.fy_px * (np.arange(int(height)) - c.cy_px) / c.fy_px + d.cy_px, 0.0, h - 1)
    x0 = np.minimum(np.floor(xs).astype(np.int64), w - 1)
    y0 = np.minimum(np.floor(ys).astype(np.int64), h - 1)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    wx, wy = (xs - x0)[None, :], (ys - y0)[:, None]
    top = depth[y0][:, x0] * (1.0 - wx) + depth[y0][:, x1] * wx
    bottom = depth[y1][:, x0] * (1.0 - wx) + depth[y1][:, x1] * wx
    return (top * (1.0 - wy) + bottom * wy).astype(np.float32)
