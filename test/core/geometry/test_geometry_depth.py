"""Canonical-to-metric depth, upstream's clamp, and the REP 117/118 depth encodings."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from metric3d_ros.core.geometry import (
    CANONICAL_FOCAL_PX,
    MAX_DEPTH_16UC1_M,
    Intrinsics,
    canonical_to_metric,
    clamp_depth,
    compute_letterbox,
    decode_depth_16uc1,
    encode_depth_16uc1,
    encode_depth_32fc1,
)

NAN = math.nan
INF = math.inf

# ---------------------------------------------------------------- canonical -> metric


def test_canonical_focal_is_1000_px():
    assert CANONICAL_FOCAL_PX == 1000.0


def test_canonical_to_metric_hand_computed():
    canonical = np.array([[2.0, 10.0], [0.5, 100.0]], dtype=np.float32)
    metric = canonical_to_metric(canonical, 500.0)
    assert metric.dtype == np.float32 and metric.shape == (2, 2)
    np.testing.assert_array_equal(metric, np.array([[1.0, 5.0], [0.25, 50.0]], dtype=np.float32))


def test_canonical_focal_is_a_parameter():
    metric = canonical_to_metric(np.array([3.0], dtype=np.float32), 600.0, canonical_focal_px=1200.0)
    assert metric[0] == np.float32(1.5)


def test_scaled_focal_from_the_letterbox():
    # NYU at 616x1064: fx * scale = 665.8676... px, so 10 canonical metres -> 6.658676 m.
    lb = compute_letterbox(480, 640, 616, 1064)
    fx_scaled = lb.scale_intrinsics(Intrinsics(518.8579, 519.46961, 325.58245, 253.73617)).fx_px
    metric = canonical_to_metric(np.array([10.0], dtype=np.float32), fx_scaled)
    assert metric[0] == pytest.approx(6.658676383333334, rel=1e-7)


def test_out_of_range_and_non_finite_become_nan_not_clamped():
    canonical = np.array([0.05, 0.1, 1.0, 200.0, 400.0, NAN, INF, -INF, -1.0], dtype=np.float32)
    metric = canonical_to_metric(canonical, 1000.0, min_depth_m=0.1, max_depth_m=200.0)
    expected = np.array([NAN, 0.1, 1.0, 200.0, NAN, NAN, NAN, NAN, NAN], dtype=np.float32)
    np.testing.assert_array_equal(metric, expected)  # NaNs compare equal in assert_array_equal


def test_saturated_canonical_values_become_nan():
    """Values at the ends of the network's canonical range are clamps, not measurements (issue 16)."""
    canonical = np.array([np.float32(0.1), 0.1000061, 1.0, 199.99, 200.0], dtype=np.float32)
    metric = canonical_to_metric(canonical, 4000.0, canonical_range=(0.1, 200.0))
    expected = np.array([NAN, 0.1000061 * 4, 4.0, 199.99 * 4, NAN], dtype=np.float32)
    np.testing.assert_allclose(metric, expected, rtol=1e-6)
    assert np.isnan(metric[[0, 4]]).all() and np.isfinite(metric[1:4]).all()
    assert np.isfinite(canonical_to_metric(canonical, 4000.0)).all()  # without the range: no check


def test_default_range_keeps_zero_and_rejects_negative():
    metric = canonical_to_metric(np.array([0.0, -0.001, 1e6], dtype=np.float64), 1000.0)
    assert metric[0] == 0.0 and math.isnan(metric[1]) and metric[2] == np.float32(1e6)
    assert metric.dtype == np.float32


def test_overflow_to_infinity_is_invalid():
    metric = canonical_to_metric(np.array([3e38], dtype=np.float32), 5000.0)
    assert math.isnan(metric[0])


def test_batched_focal_broadcasts():
    canonical = np.ones((2, 1, 2, 2), dtype=np.float32)
    fx = np.array([500.0, 2000.0]).reshape(2, 1, 1, 1)
    metric = canonical_to_metric(canonical, fx)
    assert metric.shape == (2, 1, 2, 2)
    assert np.all(metric[0] == 0.5) and np.all(metric[1] == 2.0)


def test_input_is_not_modified():
    canonical = np.array([1.0, 500.0], dtype=np.float32)
    canonical_to_metric(canonical, 1000.0, max_depth_m=10.0)
    np.testing.assert_array_equal(canonical, [1.0, 500.0])


@pytest.mark.parametrize('fx', [0.0, -500.0, NAN, INF, np.array([500.0, 0.0])])
def test_bad_focal_raises(fx):
    with pytest.raises(ValueError, match='fx_scaled_px'):
        canonical_to_metric(np.ones(2, dtype=np.float32), fx)


@pytest.mark.parametrize(('lo', 'hi'), [(-1.0, 10.0), (5.0, 5.0), (10.0, 1.0), (NAN, 10.0), (0.0, NAN)])
def test_bad_range_raises(lo, hi):
    with pytest.raises(ValueError, match='min_depth_m'):
        canonical_to_metric(np.ones(2, dtype=np.float32), 1000.0, min_depth_m=lo, max_depth_m=hi)


def test_integer_canonical_depth_raises():
    with pytest.raises(ValueError, match='floating-point'):
        canonical_to_metric(np.ones(2, dtype=np.int32), 1000.0)


def test_clamp_depth_reproduces_upstream():
    depth = np.array([-1.0, 0.0, 0.05, 299.9, 350.0, NAN], dtype=np.float32)
    clamped = clamp_depth(depth)
    np.testing.assert_array_equal(clamped, np.array([0.0, 0.0, 0.05, 299.9, 300.0, NAN], dtype=np.float32))
    assert clamped.dtype == np.float32
    np.testing.assert_array_equal(clamp_depth(np.array([0.05, 9.0]), 0.1, 5.0), np.float32([0.1, 5.0]))


def test_postprocessing_matches_upstream_metric_depth(shared_dir):
    """Stored canonical depth, unpadded, upsampled like upstream, times fx*scale/1000, clamped."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    ref_dir = shared_dir / 'reference' / 'metric3d'
    for name in ('ref_vit_small_b1_616x1064', 'ref_vit_small_b1_616x1064_kitti'):
        frame = json.loads((ref_dir / f'{name}.json').read_text())['frames'][0]
        data = np.load(ref_dir / f'{name}.npz')
        h, w = frame['orig_hw']
        lb = compute_letterbox(h, w, 616, 1064)
        canonical = np.ascontiguousarray(data['depth'][0, 0][lb.unpad_slices])
        with torch.no_grad():
            up = F.interpolate(torch.from_numpy(canonical)[None, None], (h, w), mode='bilinear')[0, 0].numpy()
        fx_scaled = lb.scale_intrinsics(Intrinsics(*frame['intrinsics'])).fx_px
        metric = clamp_depth(canonical_to_metric(up, fx_scaled))
        expected = data['metric_depth_0']
        assert metric.shape == expected.shape
        np.testing.assert_allclose(metric, expected, rtol=1e-4, atol=0.0, err_msg=name)


# ---------------------------------------------------------------- 32FC1


def test_encode_32fc1_keeps_metres_and_rep117_infinities():
    depth = np.array([1.5, NAN, INF, -INF, -1.0, 0.0, 1e-6], dtype=np.float64)
    out = encode_depth_32fc1(depth)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([1.5, NAN, INF, -INF, NAN, NAN, 1e-6], dtype=np.float32))
    assert depth[4] == -1.0  # a copy, the input is untouched


def test_encode_32fc1_rejects_integers():
    with pytest.raises(ValueError, match='floating-point'):
        encode_depth_32fc1(np.array([1000], dtype=np.uint16))


# ---------------------------------------------------------------- 16UC1


@pytest.mark.parametrize(
    ('depth_m', 'mm'),
    [
        (1.0, 1000),
        (0.001, 1),
        (65.535, 65535),  # the largest representable depth
        (65.5354, 65535),  # 65535.4 mm rounds down: still representable
        (65.5355, 0),  # 65535.5 mm rounds (half to even) to 65536: not representable -> invalid
        (65.536, 0),
        (70.0, 0),  # saturation to invalid, never clamped to 65535
        (0.0004, 0),  # 0.4 mm rounds to 0 -> invalid
        (0.0005, 0),  # 0.5 mm: half to even -> 0
        (0.0006, 1),
        (0.0015, 2),  # 1.5 mm: half to even -> 2
        (0.0625, 62),  # 62.5 mm exactly (dyadic): half to even -> 62 (half up would give 63)
        (0.1875, 188),  # 187.5 mm exactly: half to even -> 188
        (0.0, 0),
        (-0.5, 0),
        (NAN, 0),
        (INF, 0),
        (-INF, 0),
    ],
)
def test_encode_16uc1_cases(depth_m, mm):
    out = encode_depth_16uc1(np.array([depth_m], dtype=np.float64))
    assert out.dtype == np.uint16
    assert int(out[0]) == mm


def test_encode_16uc1_float32_input_at_the_limit():
    # float32(65.535) = 65.53500366..., 65535.0037 mm -> 65535
    out = encode_depth_16uc1(np.array([65.535, 1.234], dtype=np.float32))
    np.testing.assert_array_equal(out, [65535, 1234])
    assert MAX_DEPTH_16UC1_M == 65.535


def test_encode_16uc1_keeps_shape():
    out = encode_depth_16uc1(np.full((3, 4), 2.5, dtype=np.float32))
    assert out.shape == (3, 4) and np.all(out == 2500)


def test_encode_16uc1_rejects_integers():
    with pytest.raises(ValueError, match='floating-point'):
        encode_depth_16uc1(np.array([1], dtype=np.int64))


def test_decode_16uc1():
    out = decode_depth_16uc1(np.array([0, 1, 1000, 65535], dtype=np.uint16))
    assert out.dtype == np.float32
    assert math.isnan(out[0])
    assert out[1] == np.float32(1) * np.float32(0.001)
    assert out[2] == np.float32(1000) * np.float32(0.001)
    assert out[3] == np.float32(65535) * np.float32(0.001)
    assert out[3] == pytest.approx(65.535, rel=1e-7)


def test_decode_16uc1_rejects_other_dtypes():
    with pytest.raises(ValueError, match='uint16'):
        decode_depth_16uc1(np.array([1, 2], dtype=np.int32))


def test_16uc1_round_trip_is_exact_for_every_code():
    codes = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(encode_depth_16uc1(decode_depth_16uc1(codes)), codes)
