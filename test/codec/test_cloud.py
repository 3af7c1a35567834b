"""codec/cloud.py: PointCloud2 in depth_image_proc's layout, checked byte by byte and through rclpy's and
rosbags' serializers."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from metric3d_ros.codec.cdr import CdrError
from metric3d_ros.codec.cloud import (
    FLOAT32,
    POINT_STEP_FUSED_B,
    POINT_STEP_FUSED_RGB_B,
    POINT_STEP_XYZ_B,
    POINT_STEP_XYZRGB_B,
    UINT32,
    CloudConversionError,
    pointcloud2_cdr,
    pointcloud2_from_msg,
    read_pointcloud2_cdr,
    unorganized_cloud_cdr,
)

H, W = 4, 6
STAMP_NS = 7_000_000_011
FLOAT64 = 8


def _xyz() -> np.ndarray:
    rng = np.random.default_rng(3)
    xyz = rng.uniform(-5.0, 5.0, size=(H, W, 3)).astype(np.float32)
    xyz[1, 2] = np.nan  # an invalid pixel, as depth_image_proc writes it
    xyz[3, 0] = np.nan
    return xyz


def _rgb() -> np.ndarray:
    return np.random.default_rng(4).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _store():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def _msg(raw: bytes):
    """The rosbags message of ``raw``: a reader independent of this codec."""
    return _store().deserialize_cdr(raw, 'sensor_msgs/msg/PointCloud2')


def _fields(msg) -> list[tuple[str, int, int, int]]:
    return [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]


def _points(msg) -> np.ndarray:
    """Raw bytes as (H, W, point_step)."""
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, msg.point_step)


def test_xyz_layout_matches_depth_image_proc():
    xyz = _xyz()
    msg = _msg(pointcloud2_cdr(xyz, STAMP_NS, 'cam0_optical'))
    assert _fields(msg) == [('x', 0, FLOAT32, 1), ('y', 4, FLOAT32, 1), ('z', 8, FLOAT32, 1)]
    assert msg.point_step == POINT_STEP_XYZ_B == 16
    assert (msg.height, msg.width) == (H, W)
    assert msg.row_step == 16 * W
    assert msg.is_dense is False and msg.is_bigendian is False
    assert len(msg.data) == H * W * 16
    assert msg.header.frame_id == 'cam0_optical'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (7, 11)
    raw = _points(msg)
    for axis, offset in enumerate((0, 4, 8)):
        values = raw[:, :, offset:offset + 4].copy().view('<f4')[:, :, 0]
        np.testing.assert_array_equal(values, xyz[:, :, axis])  # NaN where NaN
    assert np.isnan(raw[1, 2, 0:12].copy().view('<f4')).all()
    assert not raw[:, :, 12:16].any(), 'padding bytes must be zero'


def test_xyzrgb_layout_and_colour_bits():
    xyz, rgb = _xyz(), _rgb()
    rgb[0, 0] = (0x12, 0x34, 0x56)
    msg = _msg(pointcloud2_cdr(xyz, STAMP_NS, 'c', rgb=rgb))
    assert _fields(msg) == [('x', 0, FLOAT32, 1), ('y', 4, FLOAT32, 1), ('z', 8, FLOAT32, 1),
                            ('rgb', 16, FLOAT32, 1)]
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
    raw = pointcloud2_cdr(xyz, STAMP_NS, 'kamera_ö', rgb=rgb)
    store = _store()
    for back in (read_pointcloud2_cdr(raw), pointcloud2_from_msg(_msg(raw))):
        assert (back.stamp_ns, back.frame_id) == (STAMP_NS, 'kamera_ö')
        assert back.xyz.dtype == np.float32 and back.xyz.shape == (H, W, 3)
        np.testing.assert_array_equal(back.xyz, xyz)
        if with_rgb:
            np.testing.assert_array_equal(back.rgb, rgb)
        else:
            assert back.rgb is None
    assert bytes(store.serialize_cdr(_msg(raw), 'sensor_msgs/msg/PointCloud2')) == raw


def test_float64_points_are_stored_as_float32():
    xyz = _xyz().astype(np.float64)
    back = read_pointcloud2_cdr(pointcloud2_cdr(xyz, 0, ''))
    np.testing.assert_array_equal(back.xyz, xyz.astype(np.float32))


def _foreign_cloud(xyz: np.ndarray, rgb: np.ndarray) -> SimpleNamespace:
    """z, y, x order, rgb first (UINT32), point_step 20, 4 padding bytes per row, big-endian."""
    dtype = np.dtype({'names': ['rgb', 'z', 'y', 'x'], 'formats': ['>u4', '>f4', '>f4', '>f4'],
                      'offsets': [0, 4, 8, 12], 'itemsize': 20})
    points = np.zeros((H, W), dtype)
    points['x'], points['y'], points['z'] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    points['rgb'] = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    rows = np.zeros((H, W * 20 + 4), np.uint8)
    rows[:, : W * 20] = points.view(np.uint8).reshape(H, W * 20)
    fields = [SimpleNamespace(name=n, offset=o, datatype=d, count=1)
              for n, o, d in (('rgb', 0, UINT32), ('z', 4, FLOAT32), ('y', 8, FLOAT32), ('x', 12, FLOAT32))]
    header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=2), frame_id='f')
    return SimpleNamespace(header=header, height=H, width=W, fields=fields, is_bigendian=True, point_step=20,
                           row_step=W * 20 + 4, data=rows.tobytes(), is_dense=False)


def test_reader_honours_offsets_row_padding_and_big_endian():
    xyz, rgb = _xyz(), _rgb()
    back = pointcloud2_from_msg(_foreign_cloud(xyz, rgb))
    assert (back.stamp_ns, back.frame_id) == (1_000_000_002, 'f')
    np.testing.assert_array_equal(back.xyz, xyz)
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
        pointcloud2_cdr(xyz, 0, '', rgb=rgb)


def test_reader_rejects_malformed_clouds():
    raw = pointcloud2_cdr(_xyz(), 0, '')
    with pytest.raises(CdrError, match='truncated'):
        read_pointcloud2_cdr(raw[:-2])
    short = _msg(raw)
    short.data = short.data[:-1]
    with pytest.raises(CloudConversionError, match='needs'):
        pointcloud2_from_msg(short)
    narrow = _msg(raw)
    narrow.row_step = 16 * W - 1
    with pytest.raises(CloudConversionError, match='row_step .* is smaller'):
        pointcloud2_from_msg(narrow)
    no_z = _msg(raw)
    no_z.fields = list(no_z.fields)[:2]
    with pytest.raises(CloudConversionError, match=r"lacks field\(s\) \['z'\]"):
        pointcloud2_from_msg(no_z)
    doubles = _msg(raw)
    doubles.fields[0].datatype = FLOAT64
    with pytest.raises(CloudConversionError, match='FLOAT32'):
        pointcloud2_from_msg(doubles)
    with pytest.raises(CloudConversionError, match='FLOAT32'):
        read_pointcloud2_cdr(_store().serialize_cdr(doubles, 'sensor_msgs/msg/PointCloud2'))
    counted = _msg(raw)
    counted.fields[1].count = 2
    with pytest.raises(CloudConversionError, match='count 2'):
        pointcloud2_from_msg(counted)
    wide = _msg(raw)
    wide.fields[2].offset = 14
    with pytest.raises(CloudConversionError, match='does not fit'):
        pointcloud2_from_msg(wide)


@pytest.mark.parametrize('with_rgb', [False, True])
def test_unorganized_fused_cloud_layout_and_round_trip(with_rgb):
    rng = np.random.default_rng(8)
    n = 37
    xyz = rng.uniform(-20.0, 20.0, size=(n, 3)).astype(np.float32)
    index = rng.integers(0, 5, size=n).astype(np.uint32)
    rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8) if with_rgb else None
    raw = unorganized_cloud_cdr(xyz, STAMP_NS, 'base_link', camera_index=index, rgb=rgb)
    msg = _msg(raw)  # rosbags' reader
    step = POINT_STEP_FUSED_RGB_B if with_rgb else POINT_STEP_FUSED_B
    want = [('x', 0, FLOAT32, 1), ('y', 4, FLOAT32, 1), ('z', 8, FLOAT32, 1), ('camera', 12, UINT32, 1)]
    if with_rgb:
        want.append(('rgb', 16, FLOAT32, 1))
    assert _fields(msg) == want
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, n, step, step * n)
    assert msg.is_dense and not msg.is_bigendian and msg.header.frame_id == 'base_link'
    points = _points(msg)[0]
    np.testing.assert_array_equal(points[:, :12].copy().view('<f4'), xyz)
    np.testing.assert_array_equal(points[:, 12:16].copy().view('<u4')[:, 0], index)
    cloud = read_pointcloud2_cdr(raw)
    np.testing.assert_array_equal(cloud.xyz[0], xyz)
    np.testing.assert_array_equal(cloud.channels['camera'][0], index)
    if with_rgb:
        np.testing.assert_array_equal(cloud.rgb[0], rgb)
    empty = read_pointcloud2_cdr(unorganized_cloud_cdr(np.zeros((0, 3), np.float32), 0, 'b'))
    assert empty.xyz.shape == (1, 0, 3) and empty.channels['camera'].shape == (1, 0)
    with pytest.raises(CloudConversionError, match='camera_index'):
        unorganized_cloud_cdr(xyz, 0, 'b', camera_index=index[:3])
    with pytest.raises(CloudConversionError, match=r'\(N, 3\)'):
        unorganized_cloud_cdr(xyz[:, :2], 0, 'b')


def test_engine_style_padded_points_give_the_same_bytes():
    """A [..., :3] view of 16-byte points (what the engine returns) takes the one-copy path."""
    rng = np.random.default_rng(3)
    points = rng.normal(size=(5, 7, 4)).astype(np.float32)
    points[..., 3] = 0.0
    points[1, 2, :3] = np.nan
    fast = pointcloud2_cdr(points[..., :3], STAMP_NS, 'c')
    assert fast == pointcloud2_cdr(np.ascontiguousarray(points[..., :3]), STAMP_NS, 'c')


# ------------------------------------------------------------------------------------------ rclpy


def _rclpy_cloud(xyz: np.ndarray, rgb: np.ndarray | None, frame_id: str):
    """The rclpy PointCloud2 in depth_image_proc's layout, built field by field (the reference)."""
    from sensor_msgs.msg import PointCloud2, PointField

    step = 16 if rgb is None else 32
    buf = np.zeros((xyz.shape[0], xyz.shape[1], step // 4), '<f4')
    buf[..., :3] = xyz
    names = ['x', 'y', 'z'] + ([] if rgb is None else ['rgb'])
    if rgb is not None:
        c = rgb.astype(np.uint32)
        buf.view('<u4')[..., 4] = (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
    msg = PointCloud2(height=xyz.shape[0], width=xyz.shape[1], is_bigendian=False, point_step=step,
                      row_step=step * xyz.shape[1], is_dense=False)
    offsets = {'x': 0, 'y': 4, 'z': 8, 'rgb': 16}
    msg.fields = [PointField(name=n, offset=offsets[n], datatype=PointField.FLOAT32, count=1) for n in names]
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(STAMP_NS, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.data = buf.tobytes()
    return msg


@pytest.mark.ros
@pytest.mark.usefixtures('isolated_ros_env')
@pytest.mark.parametrize('rgb', [False, True])
@pytest.mark.parametrize('frame_id', ['', 'lidar', 'kamera_ö'])
def test_rclpy_reads_the_bytes_field_for_field(rgb, frame_id):
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2

    rng = np.random.default_rng(2)
    padded = rng.random((5, 7, 4)).astype(np.float32)
    padded[..., 3] = 0.0
    xyz = padded[..., :3]  # the engine's 16-byte points
    xyz[0, 0] = np.nan
    colours = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8) if rgb else None
    raw = pointcloud2_cdr(xyz, STAMP_NS, frame_id, rgb=colours)
    want = _rclpy_cloud(xyz, colours, frame_id)
    assert deserialize_message(raw, PointCloud2) == want
    assert len(raw) == len(serialize_message(want))


@pytest.mark.ros
@pytest.mark.usefixtures('isolated_ros_env')
def test_rclpy_serialized_foreign_cloud_is_read():
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2, PointField

    xyz, rgb = _xyz(), _rgb()
    foreign = _foreign_cloud(xyz, rgb)
    msg = PointCloud2(height=H, width=W, point_step=20, row_step=W * 20 + 4, is_bigendian=True)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1, 2
    msg.header.frame_id = 'f'
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=1)
                  for f in foreign.fields]
    msg.data = foreign.data
    raw = serialize_message(msg)
    for back in (read_pointcloud2_cdr(raw), pointcloud2_from_msg(deserialize_message(raw, PointCloud2))):
        assert (back.stamp_ns, back.frame_id) == (1_000_000_002, 'f')
        np.testing.assert_array_equal(back.xyz, xyz)
        np.testing.assert_array_equal(back.rgb, rgb)
