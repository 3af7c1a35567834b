"""PointCloud2 in depth_image_proc's layout, checked byte by byte after real rclpy serialization."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from metric3d_ros.ros.cloud_conv import (
    POINT_STEP_XYZ_B,
    POINT_STEP_XYZRGB_B,
    CloudConversionError,
    pointcloud2_to_array,
    xyz_to_pointcloud2,
)

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('isolated_ros_env')]


H, W = 4, 6


def _wire(msg: PointCloud2) -> PointCloud2:
    return deserialize_message(serialize_message(msg), PointCloud2)


def _xyz() -> np.ndarray:
    rng = np.random.default_rng(3)
    xyz = rng.uniform(-5.0, 5.0, size=(H, W, 3)).astype(np.float32)
    xyz[1, 2] = np.nan  # an invalid pixel, as depth_image_proc writes it
    xyz[3, 0] = np.nan
    return xyz


def _rgb() -> np.ndarray:
    return np.random.default_rng(4).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _fields(msg: PointCloud2) -> list[tuple[str, int, int, int]]:
    return [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]


def _points(msg: PointCloud2) -> np.ndarray:
    """Raw bytes as (H, W, point_step)."""
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, msg.point_step)


def test_xyz_layout_matches_depth_image_proc():
    header = Header(frame_id='cam0_optical')
    header.stamp.sec = 7
    xyz = _xyz()
    msg = _wire(xyz_to_pointcloud2(xyz, header))
    f32 = PointField.FLOAT32
    assert _fields(msg) == [('x', 0, f32, 1), ('y', 4, f32, 1), ('z', 8, f32, 1)]
    assert msg.point_step == POINT_STEP_XYZ_B == 16
    assert (msg.height, msg.width) == (H, W)
    assert msg.row_step == 16 * W
    assert msg.is_dense is False and msg.is_bigendian is False
    assert len(msg.data) == H * W * 16
    assert msg.header.frame_id == 'cam0_optical' and msg.header.stamp.sec == 7
    raw = _points(msg)
    for axis, offset in enumerate((0, 4, 8)):
        values = raw[:, :, offset:offset + 4].copy().view('<f4')[:, :, 0]
        np.testing.assert_array_equal(values, xyz[:, :, axis])  # NaN where NaN
    assert np.isnan(raw[1, 2, 0:12].copy().view('<f4')).all()
    assert not raw[:, :, 12:16].any(), 'padding bytes must be zero'


def test_xyzrgb_layout_and_colour_bits():
    xyz, rgb = _xyz(), _rgb()
    rgb[0, 0] = (0x12, 0x34, 0x56)
    msg = _wire(xyz_to_pointcloud2(xyz, rgb=rgb))
    f32 = PointField.FLOAT32
    assert _fields(msg) == [('x', 0, f32, 1), ('y', 4, f32, 1), ('z', 8, f32, 1), ('rgb', 16, f32, 1)]
    assert msg.point_step == POINT_STEP_XYZRGB_B == 32
    assert msg.row_step == 32 * W
    assert len(msg.data) == H * W * 32
    raw = _points(msg)
    assert bytes(raw[0, 0, 16:20]) == bytes([0x56, 0x34, 0x12, 0x00]), 'rgb must be 0x00RRGGBB little-endian'
    bits = raw[:, :, 16:20].copy().view('<u4')[:, :, 0].astype(np.uint32)
    expected = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    np.testing.assert_array_equal(bits, expected)
    np.testing.assert_array_equal(raw[:, :, 0:12].copy().view('<f4').reshape(H, W, 3), xyz)
    assert not raw[:, :, 12:16].any() and not raw[:, :, 20:32].any(), 'padding bytes must be zero'


@pytest.mark.parametrize('with_rgb', [False, True])
def test_round_trip_to_arrays(with_rgb):
    xyz, rgb = _xyz(), (_rgb() if with_rgb else None)
    back = pointcloud2_to_array(_wire(xyz_to_pointcloud2(xyz, rgb=rgb)))
    assert back.xyz_m.dtype == np.float32 and back.xyz_m.shape == (H, W, 3)
    np.testing.assert_array_equal(back.xyz_m, xyz)
    if with_rgb:
        np.testing.assert_array_equal(back.rgb, rgb)
    else:
        assert back.rgb is None


def test_float64_points_are_stored_as_float32():
    xyz = _xyz().astype(np.float64)
    back = pointcloud2_to_array(xyz_to_pointcloud2(xyz))
    np.testing.assert_array_equal(back.xyz_m, xyz.astype(np.float32))


def test_reader_honours_offsets_row_padding_and_big_endian():
    """A foreign cloud: z, y, x order, rgb first, point_step 20, 4 padding bytes per row, big-endian."""
    xyz, rgb = _xyz(), _rgb()
    dtype = np.dtype({'names': ['rgb', 'z', 'y', 'x'], 'formats': ['>u4', '>f4', '>f4', '>f4'],
                      'offsets': [0, 4, 8, 12], 'itemsize': 20})
    points = np.zeros((H, W), dtype)
    points['x'], points['y'], points['z'] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    points['rgb'] = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    rows = np.zeros((H, W * 20 + 4), np.uint8)
    rows[:, : W * 20] = points.view(np.uint8).reshape(H, W * 20)
    msg = PointCloud2(height=H, width=W, point_step=20, row_step=W * 20 + 4, is_bigendian=True)
    msg.fields = [
        PointField(name='rgb', offset=0, datatype=PointField.UINT32, count=1),
        PointField(name='z', offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name='y', offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name='x', offset=12, datatype=PointField.FLOAT32, count=1),
    ]
    msg.data = rows.tobytes()
    back = pointcloud2_to_array(_wire(msg))
    np.testing.assert_array_equal(back.xyz_m, xyz)
    np.testing.assert_array_equal(back.rgb, rgb)


@pytest.mark.parametrize(
    ('xyz', 'rgb', 'error', 'match'),
    [
        (np.zeros((H, W), np.float32), None, CloudConversionError, r'shape \(H, W, 3\)'),
        (np.zeros((H, W, 4), np.float32), None, CloudConversionError, r'shape \(H, W, 3\)'),
        (np.zeros((H, W, 3), np.int32), None, CloudConversionError, 'must be a float array'),
        (np.zeros((H, W, 3), np.float32), np.zeros((H, W + 1, 3), np.uint8), CloudConversionError,
         'rgb must have shape'),
        (np.zeros((H, W, 3), np.float32), np.zeros((H, W, 3), np.float32), ValueError, 'uint8'),
    ],
)
def test_builder_rejects_bad_arrays(xyz, rgb, error, match):
    with pytest.raises(error, match=match):
        xyz_to_pointcloud2(xyz, rgb=rgb)


def test_reader_rejects_malformed_clouds():
    good = xyz_to_pointcloud2(_xyz())
    short = _wire(good)
    short.data = bytes(good.data)[:-1]
    with pytest.raises(CloudConversionError, match='needs'):
        pointcloud2_to_array(short)
    narrow = _wire(good)
    narrow.row_step = 16 * W - 1
    with pytest.raises(CloudConversionError, match='row_step .* is smaller'):
        pointcloud2_to_array(narrow)
    no_z = _wire(good)
    no_z.fields = list(good.fields)[:2]
    with pytest.raises(CloudConversionError, match=r"lacks field\(s\) \['z'\]"):
        pointcloud2_to_array(no_z)
    doubles = _wire(good)
    doubles.fields[0].datatype = PointField.FLOAT64
    with pytest.raises(CloudConversionError, match='FLOAT32'):
        pointcloud2_to_array(doubles)


def test_engine_style_padded_points_give_the_same_message():
    """A [..., :3] view of 16-byte points (what the engine returns) takes the one-copy path."""
    rng = np.random.default_rng(3)
    points = rng.normal(size=(5, 7, 4)).astype(np.float32)
    points[..., 3] = 0.0
    points[1, 2, :3] = np.nan
    fast = xyz_to_pointcloud2(points[..., :3])
    slow = xyz_to_pointcloud2(np.ascontiguousarray(points[..., :3]))
    for field in ('height', 'width', 'point_step', 'row_step', 'is_bigendian', 'is_dense'):
        assert getattr(fast, field) == getattr(slow, field)
    assert [(f.name, f.offset, f.datatype, f.count) for f in fast.fields] == \
        [(f.name, f.offset, f.datatype, f.count) for f in slow.fields]
    assert bytes(fast.data) == bytes(slow.data)
