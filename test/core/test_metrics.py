"""Depth metrics against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from metric3d_ros.core.metrics import (
    METRIC_NAMES,
    DepthMetrics,
    MetricsConfig,
    aggregate,
    compute_metrics,
    valid_gt_mask,
)

# Three evaluated pixels g = 1, 2, 4 with p = 1.5, 2, 2.2, plus a GT hole (0) and a NaN GT pixel.
GT = np.array([[1.0, 2.0, 4.0], [0.0, np.nan, 0.0]], dtype=np.float32)
PRED = np.array([[1.5, 2.0, 2.2], [7.0, 7.0, 7.0]], dtype=np.float32)
CFG = MetricsConfig(min_depth_m=0.1, max_depth_m=10.0, clamp_prediction=False)


def _p():
    return np.array([1.5, 2.0, 2.2], dtype=np.float32).astype(np.float64)


def test_every_metric_by_hand():
    m = compute_metrics(PRED, GT, CFG)
    p1, _, p3 = _p()
    assert m.n_pixels == 3
    assert m.coverage == 1.0
    # |p - g| / g = 0.5, 0, 0.45
    assert m.abs_rel == pytest.approx((abs(p1 - 1) / 1 + 0 + abs(p3 - 4) / 4) / 3, rel=1e-12)
    assert m.abs_rel == pytest.approx(0.95 / 3, rel=1e-6)
    # (p - g)^2 / g = 0.25, 0, 3.24 / 4
    assert m.sq_rel == pytest.approx((0.25 + 3.24 / 4) / 3, rel=1e-6)
    assert m.rmse_m == pytest.approx(math.sqrt((0.25 + 3.24) / 3), rel=1e-6)
    d = [math.log(1.5), 0.0, math.log(2.2 / 4.0)]
    assert m.rmse_log == pytest.approx(math.sqrt((d[0] ** 2 + d[2] ** 2) / 3), rel=1e-6)
    assert m.log10 == pytest.approx((math.log10(1.5) + abs(math.log10(0.55))) / 3, rel=1e-6)
    mean_d = sum(d) / 3
    mean_d2 = sum(x * x for x in d) / 3
    assert m.silog == pytest.approx(100 * math.sqrt(mean_d2 - mean_d**2), rel=1e-6)
    # max ratios 1.5, 1.0, 1.818: only the middle pixel is < 1.25; < 1.5625 adds 1.5; < 1.953 all.
    assert m.delta1 == pytest.approx(1 / 3)
    assert m.delta2 == pytest.approx(2 / 3)
    assert m.delta3 == pytest.approx(1.0)
    assert m.scale_ratio == pytest.approx(1.0)  # ratios 1.5, 1.0, 0.55: median 1.0


def test_delta2_counts_ratio_between_thresholds():
    gt = np.array([[1.0, 1.0, 1.0, 1.0]])
    pred = np.array([[1.1, 1.4, 1.9, 2.5]])  # ratios 1.1, 1.4, 1.9, 2.5
    m = compute_metrics(pred, gt, CFG)
    assert (m.delta1, m.delta2, m.delta3) == (0.25, 0.5, 0.75)


def test_perfect_prediction_is_zero_error():
    gt = np.linspace(0.5, 9.0, 20).reshape(4, 5)
    m = compute_metrics(gt.copy(), gt, CFG)
    for name in ('abs_rel', 'sq_rel', 'rmse_m', 'rmse_log', 'log10', 'silog'):
        assert getattr(m, name) == pytest.approx(0.0, abs=1e-12), name
    assert (m.delta1, m.delta2, m.delta3) == (1.0, 1.0, 1.0)


def test_silog_ignores_global_scale_and_abs_rel_does_not():
    gt = np.array([[1.0, 2.0, 3.0, 5.0]])
    m = compute_metrics(gt * 2.0, gt, CFG)
    assert m.silog == pytest.approx(0.0, abs=1e-6)
    assert m.abs_rel == pytest.approx(1.0)
    assert m.rmse_log == pytest.approx(math.log(2.0))
    assert m.log10 == pytest.approx(math.log10(2.0))
    assert m.scale_ratio == pytest.approx(2.0)


def test_invalid_prediction_lowers_coverage_and_is_left_out():
    gt = np.array([[1.0, 2.0, 4.0, 8.0]])
    pred = np.array([[1.0, np.nan, 0.0, 8.0]])
    m = compute_metrics(pred, gt, CFG)
    assert m.n_pixels == 2
    assert m.coverage == 0.5
    assert m.abs_rel == 0.0


def test_valid_range_excludes_ground_truth_outside():
    gt = np.array([[0.05, 1.0, 20.0, np.inf]])
    assert valid_gt_mask(gt, CFG).tolist() == [[False, True, False, False]]
    m = compute_metrics(np.array([[9.0, 1.5, 9.0, 9.0]]), gt, CFG)
    assert m.n_pixels == 1
    assert m.abs_rel == pytest.approx(0.5)


def test_clamp_prediction_into_range():
    gt = np.array([[5.0]])
    pred = np.array([[1000.0]])
    clamped = compute_metrics(pred, gt, MetricsConfig(min_depth_m=0.1, max_depth_m=10.0))
    assert clamped.abs_rel == pytest.approx(1.0)  # 10 vs 5
    raw = compute_metrics(pred, gt, CFG)
    assert raw.abs_rel == pytest.approx(199.0)


def test_median_scaling_removes_global_scale():
    gt = np.array([[1.0, 2.0, 3.0, 6.0, 7.0]])
    pred = gt * 3.0
    pred[0, 0] = 6.0  # one outlier pixel: 2x instead of 3x; medians 3 vs 9 give factor 1/3
    m = compute_metrics(pred, gt, CFG, median_scaled=True)
    assert m.abs_rel == pytest.approx(((6.0 / 3.0 - 1.0) / 1.0) / 5)
    assert m.delta1 == pytest.approx(0.8)


def test_aggregate_is_mean_over_frames_and_skips_empty_ones():
    a = compute_metrics(np.array([[2.0]]), np.array([[1.0]]), CFG)  # abs_rel 1
    b = compute_metrics(np.array([[1.0, 1.0]]), np.array([[1.0, 1.0]]), CFG)  # abs_rel 0
    empty = compute_metrics(np.array([[1.0]]), np.array([[0.0]]), CFG)
    assert empty.n_pixels == 0 and math.isnan(empty.abs_rel)
    agg = aggregate([a, b, empty])
    assert agg.abs_rel == pytest.approx(0.5)
    assert agg.delta1 == pytest.approx(0.5)
    assert agg.n_pixels == 3
    assert math.isnan(aggregate([empty]).rmse_m)
    assert set(METRIC_NAMES) <= set(agg.as_dict())
    assert isinstance(agg, DepthMetrics)


def test_bad_input_raises():
    with pytest.raises(ValueError, match='shape'):
        compute_metrics(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match='2-D'):
        compute_metrics(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match='min_depth_m'):
        MetricsConfig(min_depth_m=0.0)
    with pytest.raises(ValueError, match='max_depth_m'):
        MetricsConfig(min_depth_m=5.0, max_depth_m=1.0)


def test_aggregate_coverage_counts_frames_whose_prediction_is_all_invalid():
    # a frame with valid ground truth but no usable prediction has coverage 0: the aggregate coverage must
    # show it (its metrics are still skipped); a frame without valid ground truth says nothing about it.
    good = compute_metrics(np.array([[2.0]]), np.array([[2.0]]), CFG)
    blind = compute_metrics(np.array([[np.nan, 0.0]]), np.array([[1.0, 2.0]]), CFG)
    no_gt = compute_metrics(np.array([[1.0]]), np.array([[0.0]]), CFG)
    assert blind.n_pixels == 0 and blind.coverage == 0.0
    assert math.isnan(no_gt.coverage)
    agg = aggregate([good, blind, no_gt])
    assert agg.coverage == pytest.approx(0.5)
    assert agg.abs_rel == 0.0 and agg.n_pixels == 1


def test_depth_at_camera_pixels_follows_the_intrinsics():
    from metric3d_ros.core.geometry.intrinsics import Intrinsics
    from metric3d_ros.core.metrics import depth_at_camera_pixels

    camera = Intrinsics(100.0, 100.0, 31.5, 23.5)
    depth = np.arange(48 * 64, dtype=np.float32).reshape(48, 64)
    # the same intrinsics and size: the image itself
    assert np.array_equal(depth_at_camera_pixels(depth, camera, camera, 64, 48), depth)
    # a depth image at half the size (resampled intrinsics): camera pixel u reads x = (u + 0.5) / 2 - 0.5
    half = np.tile(np.arange(32, dtype=np.float32), (24, 1))
    got = depth_at_camera_pixels(half, camera.resampled(0.5), camera, 64, 48)
    xs = np.clip((np.arange(64) + 0.5) / 2 - 0.5, 0, 31)
    assert np.allclose(got, np.tile(xs, (48, 1)), atol=1e-5)
    # a NaN reaches only the pixels that interpolate from it
    half[10, 10] = np.nan
    got = depth_at_camera_pixels(half, camera.resampled(0.5), camera, 64, 48)
    assert 0 < np.isnan(got).sum() <= 16 and np.isnan(got[20, 20])
