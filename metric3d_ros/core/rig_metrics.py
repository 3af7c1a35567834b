"""Multi-camera consistency of metric depth on a rig with known extrinsics (numpy only, ROS-free).

Two figures, for one synchronized sample of several cameras (``RigView``: predicted depth, ground-truth
depth of the same size, intrinsics of that size, base-from-optical extrinsic):

**Cross-camera agreement** (``cross_camera_pairs``). Camera a's ground-truth points (its valid ground-truth
pixels, within the metrics' depth range) that project into camera b's image, in front of it, are a's
*overlap* with b. Each is matched to the same surface point seen by b: the nearest (in 3-D) of b's
ground-truth points whose pixels lie within ``window_px`` of the projection; the match holds when the two
ground-truth points are within ``match_rel`` of a's range of each other (the same LiDAR return, up to
pixel quantization, not a surface behind it). The correspondences therefore come from ground truth and
extrinsics alone. The figure is, per match, the 3-D distance between the two cameras' *predicted* points of
those pixels (each unprojected with its camera's predicted depth and moved into the base frame), relative
to the range from camera a: ``|p_a - p_b| / |g_a - c_a|``. A network whose cameras agree on a surface has a
small figure; a scale that differs between cameras, a wrong intrinsic or a wrong extrinsic makes it large.
``gt_rel`` (the same with ground-truth depth) is its floor: pixel quantization of the ground truth.

**Fused cloud against the ground truth** (``fused_lidar_errors``). The fused cloud (every camera's
predicted points in the base frame) is projected back into each camera; a point landing on a pixel with
ground truth gives ``|z - g| / g`` (z: the point's depth in that camera). Points from the camera itself
(``own``) measure its depth error; points from the other cameras (``other``) measure how the fused cloud
matches another camera's LiDAR view, occlusions between the viewpoints included.

``summarize`` gives the median, 90th percentile, mean and the fraction below 1 % and 5 % of such arrays.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.metrics import MetricsConfig, valid_gt_mask


@dataclass(frozen=True, eq=False)
class RigView:
    """One camera of a rig sample: depth images (h, w) in metres (NaN / <= 0 invalid), the intrinsics of
    that size, the (4, 4) base-from-optical extrinsic, and the index its fused points carry."""

    camera: str
    pred_m: np.ndarray
    gt_m: np.ndarray
    intrinsics: Intrinsics
    base_from_optical: np.ndarray
    index: int = 0

    def __post_init__(self) -> None:
        if np.shape(self.pred_m) != np.shape(self.gt_m) or np.ndim(self.pred_m) != 2:
            raise ValueError(f'camera {self.camera}: prediction {np.shape(self.pred_m)} and ground truth '
                             f'{np.shape(self.gt_m)} must be (h, w) images of the same size')
        if np.shape(self.base_from_optical) != (4, 4):
            raise ValueError(f'camera {self.camera}: base_from_optical must be a (4, 4) matrix')


@dataclass(frozen=True, eq=False)
class PairMatches:
    """Camera a's points matched in camera b (module docstring). Arrays have one entry per match.

    overlap: a's valid ground-truth points that project into b's image. pix_a / pix_b: (n, 2) (row, col).
    gt_rel / pred_rel: ground-truth and predicted 3-D distance over a's range (pred_rel NaN where either
    prediction is invalid). range_a_m: a's range of the point.
    """

    a: str
    b: str
    overlap: int
    pix_a: np.ndarray
    pix_b: np.ndarray
    gt_rel: np.ndarray
    pred_rel: np.ndarray
    range_a_m: np.ndarray


def _rays(pix: np.ndarray, k: Intrinsics) -> np.ndarray:
    """(n, 3) rays (x / z, y / z, 1) of (row, col) pixels."""
    rows, cols = pix[:, 0].astype(np.float64), pix[:, 1].astype(np.float64)
    return np.stack([(cols - k.cx_px) / k.fx_px, (rows - k.cy_px) / k.fy_px, np.ones_like(rows)], axis=1)


def _to(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _project(points_opt: np.ndarray, k: Intrinsics, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest pixels (n, 2) (row, col) of optical-frame points and which lie in front, inside the image."""
    z = points_opt[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        cols = np.rint(k.fx_px * points_opt[:, 0] / z + k.cx_px)
        rows = np.rint(k.fy_px * points_opt[:, 1] / z + k.cy_px)
    inside = (z > 0) & np.isfinite(cols) & np.isfinite(rows)
    inside &= (cols >= 0) & (cols <= hw[1] - 1) & (rows >= 0) & (rows <= hw[0] - 1)
    pix = np.zeros((len(z), 2), np.int64)
    pix[inside] = np.stack([rows[inside], cols[inside]], axis=1).astype(np.int64)
    return pix, inside


def cross_camera_pairs(a: RigView, b: RigView, config: MetricsConfig, window_px: int = 2,
                       match_rel: float = 0.01) -> PairMatches:
    """Camera a's overlap with b, its ground-truth matches and their predicted disagreement (module doc)."""
    valid_a = valid_gt_mask(a.gt_m, config)
    pix_a = np.argwhere(valid_a)
    g_a = a.gt_m[valid_a].astype(np.float64)
    opt_a = _rays(pix_a, a.intrinsics) * g_a[:, None]
    b_from_a = np.linalg.inv(b.base_from_optical) @ a.base_from_optical
    in_b = _to(b_from_a, opt_a)
    proj, inside = _project(in_b, b.intrinsics, b.gt_m.shape)
    overlap = int(inside.sum())
    pix_a, opt_a, in_b, proj = pix_a[inside], opt_a[inside], in_b[inside], proj[inside]
    range_a = np.linalg.norm(opt_a, axis=1)
    # b's ground-truth points (in b's optical frame) at the pixels within the window of each projection
    h, w = b.gt_m.shape
    valid_b = valid_gt_mask(b.gt_m, config)
    best = np.full(len(proj), np.inf)
    best_pix = np.zeros_like(proj)
    for dy in range(-window_px, window_px + 1):
        for dx in range(-window_px, window_px + 1):
            r, c = proj[:, 0] + dy, proj[:, 1] + dx
            ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            ok[ok] = valid_b[r[ok], c[ok]]
            cand = np.full((len(proj), 3), np.nan)
            pix = np.stack([r[ok], c[ok]], axis=1)
            cand[ok] = _rays(pix, b.intrinsics) * b.gt_m[r[ok], c[ok]].astype(np.float64)[:, None]
            dist = np.linalg.norm(cand - in_b, axis=1)
            better = np.isfinite(dist) & (dist < best)
            best[better] = dist[better]
            best_pix[better] = np.stack([r[better], c[better]], axis=1)
    matched = best <= match_rel * range_a
    pix_a, pix_b = pix_a[matched], best_pix[matched]
    range_a = range_a[matched]
    gt_rel = best[matched] / range_a
    # predicted points of the matched pixels, both in the base frame
    pred_a = a.pred_m[pix_a[:, 0], pix_a[:, 1]].astype(np.float64)
    pred_b = b.pred_m[pix_b[:, 0], pix_b[:, 1]].astype(np.float64)
    p_a = _to(a.base_from_optical, _rays(pix_a, a.intrinsics) * pred_a[:, None])
    p_b = _to(b.base_from_optical, _rays(pix_b, b.intrinsics) * pred_b[:, None])
    with np.errstate(invalid='ignore'):
        usable = np.isfinite(pred_a) & (pred_a > 0) & np.isfinite(pred_b) & (pred_b > 0)
    pred_rel = np.where(usable, np.linalg.norm(p_a - p_b, axis=1) / range_a, np.nan)
    return PairMatches(a.camera, b.camera, overlap, pix_a, pix_b, gt_rel, pred_rel, range_a)


def fused_lidar_errors(xyz_base: np.ndarray, camera_index: np.ndarray, views: Sequence[RigView],
                       config: MetricsConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(own, other)`` relative depth errors ``|z - g| / g`` of the fused cloud projected into every view
    (module docstring): points of the view's own camera, and of the other cameras."""
    points = np.asarray(xyz_base, dtype=np.float64)
    index = np.asarray(camera_index)
    own, other = [], []
    for view in views:
        opt = _to(np.linalg.inv(view.base_from_optical), points)
        pix, inside = _project(opt, view.intrinsics, view.gt_m.shape)
        valid = valid_gt_mask(view.gt_m, config)
        hit = inside.copy()
        hit[inside] = valid[pix[inside, 0], pix[inside, 1]]
        g = view.gt_m[pix[hit, 0], pix[hit, 1]].astype(np.float64)
        rel = np.abs(opt[hit, 2] - g) / g
        mine = index[hit] == view.index
        own.append(rel[mine])
        other.append(rel[~mine])
    return (np.concatenate(own) if own else np.zeros(0)), (np.concatenate(other) if other else np.zeros(0))


def summarize(values: np.ndarray) -> dict[str, float | int]:
    """count, median, p90, mean and the fractions below 1 % and 5 % of the finite ``values`` (NaN = left out,
    counted in ``invalid``)."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    out: dict[str, float | int] = {'count': int(finite.size), 'invalid': int(arr.size - finite.size)}
    if finite.size:
        out.update(median=float(np.median(finite)), p90=float(np.percentile(finite, 90)),
                   mean=float(finite.mean()), within_1pct=float((finite <= 0.01).mean()),
                   within_5pct=float((finite <= 0.05).mean()))
    return out
