"""Organized unprojection like depth_image_proc, decimation, range limits, and packed RGB floats."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from metric3d_ros.core.geometry import (
    Intrinsics,
    decimate,
    pack_rgb_float,
    unpack_rgb_float,
    unproject_organized,
)

NAN = math.nan


def test_hand_computed_2x3_cloud():
    depth = np.array([[1.0, 2.0, NAN], [4.0, 0.0, 3.0]], dtype=np.float32)
    intr = Intrinsics(fx_px=2.0, fy_px=4.0, cx_px=1.0, cy_px=0.5)
    cloud = unproject_organized(depth, intr)
    assert cloud.shape == (2, 3, 3) and cloud.dtype == np.float32
    expected = np.array(
        [
            [[-0.5, -0.125, 1.0], [0.0, -0.25, 2.0], [NAN, NAN, NAN]],
            [[-2.0, 0.5, 4.0], [NAN, NAN, NAN], [1.5, 0.375, 3.0]],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(cloud, expected)


def test_stride_samples_full_resolution_pixels_with_full_resolution_intrinsics():
    depth = np.arange(1, 36, dtype=np.float32).reshape(5, 7)
    intr = Intrinsics(fx_px=10.0, fy_px=20.0, cx_px=3.0, cy_px=2.0)
    cloud = unproject_organized(depth, intr, stride=2)
    assert cloud.shape == (3, 4, 3)
    # Row 1 / column 2 of the decimated cloud is pixel (u=4, v=2): z = depth[2, 4] = 19.
    z = 19.0
    np.testing.assert_array_equal(
        cloud[1, 2], np.array([(4 - 3.0) * z / 10.0, (2 - 2.0) * z / 20.0, z], dtype=np.float32)
    )
    np.testing.assert_array_equal(cloud, unproject_organized(depth, intr)[::2, ::2])
    assert unproject_organized(depth, intr, stride=3).shape == (2, 3, 3)
    assert unproject_organized(depth, intr, stride=10).shape == (1, 1, 3)


def test_range_limits_apply_to_z_inclusively():
    depth = np.array([[0.49, 0.5, 3.0, 10.0, 10.01]], dtype=np.float64)
    intr = Intrinsics(100.0, 100.0, 0.0, 0.0)
    cloud = unproject_organized(depth, intr, min_range_m=0.5, max_range_m=10.0)
    valid = ~np.isnan(cloud[0, :, 2])
    np.testing.assert_array_equal(valid, [False, True, True, True, False])
    # Invalid points are NaN in all three coordinates.
    assert np.all(np.isnan(cloud[0, [0, 4]]))
    # Range is z, not the Euclidean distance: an off-axis point with z = 10 m is kept.
    far_off_axis = unproject_organized(np.array([[10.0]]), Intrinsics(1.0, 1.0, -5.0, 0.0), max_range_m=10.0)
    assert far_off_axis[0, 0, 0] == 50.0 and far_off_axis[0, 0, 2] == 10.0


def test_non_finite_and_non_positive_depth_are_invalid():
    depth = np.array([[np.inf, -np.inf, -1.0, 0.0, 2.0]], dtype=np.float32)
    cloud = unproject_organized(depth, Intrinsics(1.0, 1.0, 0.0, 0.0))
    assert np.all(np.isnan(cloud[0, :4]))
    np.testing.assert_array_equal(cloud[0, 4], [8.0, 0.0, 2.0])


def test_reprojection_recovers_pixel_coordinates():
    rng = np.random.default_rng(7)
    depth = rng.uniform(0.3, 80.0, size=(37, 53)).astype(np.float32)
    intr = Intrinsics(fx_px=612.7, fy_px=598.2, cx_px=26.3, cy_px=17.9)
    for stride in (1, 4):
        cloud = unproject_organized(depth, intr, stride=stride).astype(np.float64)
        x, y, z = cloud[..., 0], cloud[..., 1], cloud[..., 2]
        u = intr.fx_px * x / z + intr.cx_px
        v = intr.fy_px * y / z + intr.cy_px
        rows = np.arange(0, 37, stride)
        cols = np.arange(0, 53, stride)
        np.testing.assert_allclose(u, np.broadcast_to(cols[None, :], u.shape), atol=1e-3)
        np.testing.assert_allclose(v, np.broadcast_to(rows[:, None], v.shape), atol=1e-3)
        np.testing.assert_array_equal(z, depth[::stride, ::stride])


def test_agrees_with_depth_image_proc_float32_arithmetic():
    """depth_image_proc: x = (u - cx) * depth * float(1 / fx), all in float32."""
    rng = np.random.default_rng(3)
    depth = rng.uniform(0.2, 60.0, size=(24, 32)).astype(np.float32)
    intr = Intrinsics(fx_px=518.8579, fy_px=519.46961, cx_px=325.58245 / 20, cy_px=253.73617 / 20)
    ours = unproject_organized(depth, intr)
    u = np.arange(32, dtype=np.float32)[None, :]
    v = np.arange(24, dtype=np.float32)[:, None]
    x = (u - np.float32(intr.cx_px)) * depth * np.float32(1.0 / intr.fx_px)
    y = (v - np.float32(intr.cy_px)) * depth * np.float32(1.0 / intr.fy_px)
    np.testing.assert_allclose(ours[..., 0], x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours[..., 1], y, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ours[..., 2], depth)


@pytest.mark.parametrize(
    ('depth', 'kwargs', 'match'),
    [
        (np.ones((2, 2, 1), np.float32), {}, '2-D'),
        (np.ones((2, 2), np.uint16), {}, 'decode_depth_16uc1'),
        (np.ones((2, 2), np.float32), {'stride': 0}, 'stride'),
        (np.ones((2, 2), np.float32), {'stride': 1.5}, 'stride'),
        (np.ones((2, 2), np.float32), {'min_range_m': -1.0}, 'range'),
        (np.ones((2, 2), np.float32), {'min_range_m': 5.0, 'max_range_m': 1.0}, 'range'),
    ],
)
def test_bad_inputs_raise(depth, kwargs, match):
    with pytest.raises(ValueError, match=match):
        unproject_organized(depth, Intrinsics(1.0, 1.0, 0.0, 0.0), **kwargs)


def test_intrinsics_type_is_checked():
    with pytest.raises(ValueError, match='Intrinsics'):
        unproject_organized(np.ones((2, 2), np.float32), (1.0, 1.0, 0.0, 0.0))  # type: ignore[arg-type]


def test_decimate_matches_cloud_sampling():
    rgb = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    sub = decimate(rgb, 2)
    assert sub.shape == (3, 4, 3)
    np.testing.assert_array_equal(sub[1, 2], rgb[2, 4])
    with pytest.raises(ValueError, match='stride'):
        decimate(rgb, 0)


# ---------------------------------------------------------------- packed colour


def test_pack_rgb_float_bit_layout_is_00rrggbb():
    packed = pack_rgb_float(np.array([[0x12, 0x34, 0x56], [255, 0, 0], [0, 0, 255]], dtype=np.uint8))
    assert packed.dtype == np.float32
    np.testing.assert_array_equal(packed.view(np.uint32), [0x00123456, 0x00FF0000, 0x000000FF])
    # The float32 value is the reinterpretation of those bits (little-endian as on the wire).
    assert packed[0].tobytes() == struct.pack('<I', 0x00123456)


def test_pack_unpack_round_trip_keeps_shape():
    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    packed = pack_rgb_float(rgb)
    assert packed.shape == (4, 5)
    copied = np.array(packed)  # copies must keep the bits
    np.testing.assert_array_equal(unpack_rgb_float(copied), rgb)


def test_pack_rejects_wrong_inputs():
    with pytest.raises(ValueError, match='uint8'):
        pack_rgb_float(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match='uint8'):
        pack_rgb_float(np.zeros((2, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match='float32'):
        unpack_rgb_float(np.zeros(3, dtype=np.float64))


def test_padded_xyz_recognizes_only_views_of_16_byte_points():
    from metric3d_ros.core.geometry.cloud import padded_xyz

    points = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    got = padded_xyz(points[..., :3])
    assert got is not None and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, points)
    assert padded_xyz(np.ascontiguousarray(points[..., :3])) is None  # plain (H, W, 3)
    assert padded_xyz(points[..., 1:4]) is None  # the 4th value would run past the buffer
    assert padded_xyz(points.astype('>f4')[..., :3]) is None
    assert padded_xyz(points.astype(np.float64)[..., :3]) is None
    assert padded_xyz(points[:, ::2, :3]) is None  # foreign strides
    assert padded_xyz(np.zeros((0, 3, 4), np.float32)[..., :3]) is None
