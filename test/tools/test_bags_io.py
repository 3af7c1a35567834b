"""rosbag2 I/O with rosbags (tools/bagio.py): round trips of every message kind through sqlite3 and mcap,
read back with the codec, and bad input. (Message encoding itself: test/codec/.)"""
from __future__ import annotations

import numpy as np
import pytest

from metric3d_ros.codec.camera_info import read_camera_info_cdr
from metric3d_ros.codec.cdr import read_header
from metric3d_ros.codec.cloud import read_pointcloud2_cdr
from metric3d_ros.codec.compressed import compressed_to_rgb8, read_compressed_cdr
from metric3d_ros.codec.image import ImageConversionError, image_to_depth_m, image_to_rgb8, read_image_cdr
from metric3d_ros.core.geometry.camera_info import CameraInfoFields, Roi
from metric3d_ros.tools.bagio import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    POINT_CLOUD2,
    STORAGES,
    BagFormatError,
    BagReader,
    BagWriter,
    typestore,
)

STAMP = 1_556_919_593_841_523_000
RGB = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
INFO = CameraInfoFields(
    width=5, height=6, distortion_model='plumb_bob', d=(0.1, -0.2, 0.0, 0.0, 0.01),
    k=(4.0, 0.0, 2.5, 0.0, 4.5, 3.0, 0.0, 0.0, 1.0), r=(1, 0, 0, 0, 1, 0, 0, 0, 1),
    p=(4.0, 0.0, 2.5, 0.0, 0.0, 4.5, 3.0, 0.0, 0.0, 0.0, 1.0, 0.0), binning_x=2, binning_y=1,
    roi=Roi(1, 2, 3, 4, True),
)


def _write_all(path, storage):
    depth = np.array([[1.5, np.nan, 0.0], [-1.0, np.inf, 2.25]], dtype=np.float32)
    xyz = np.random.default_rng(1).standard_normal((2, 3, 3)).astype(np.float32)
    xyz[0, 1] = np.nan
    with BagWriter(path, storage) as w:
        for i in range(3):
            stamp = STAMP + i * 100_000_000
            w.write_camera_info('/cam/camera_info', INFO, stamp, 'cam_optical_frame')
            w.write_image('/cam/image', RGB, 'rgb8', stamp, 'cam_optical_frame')
            w.write_image('/cam/bgr', RGB[:, :, ::-1].copy(), 'bgr8', stamp, 'cam_optical_frame')
            w.write_compressed('/cam/image/compressed', RGB, stamp, 'cam_optical_frame', codec='png')
            w.write_depth('/cam/depth_gt', depth, stamp, 'cam_optical_frame')
            w.write_image('/cam/depth_mm', np.array([[0, 1500], [65535, 7]], dtype=np.uint16), '16UC1', stamp,
                          'cam_optical_frame')
            w.write_points('/cam/points', xyz, stamp, 'cam_optical_frame',
                           rgb=RGB[:2, :3].copy() if i else None)
    return depth, xyz


@pytest.mark.parametrize('storage', STORAGES)
def test_round_trip_every_message_kind(tmp_path, storage):
    path = tmp_path / f'bag_{storage}'
    depth, xyz = _write_all(path, storage)
    with BagReader(path) as r:
        assert r.storage == storage
        assert r.topics == {
            '/cam/camera_info': CAMERA_INFO, '/cam/image': IMAGE, '/cam/bgr': IMAGE,
            '/cam/image/compressed': COMPRESSED_IMAGE, '/cam/depth_gt': IMAGE, '/cam/depth_mm': IMAGE,
            '/cam/points': POINT_CLOUD2,
        }
        assert r.message_count == 21
        seen = {}
        for m in r.messages():
            stamp, frame_id = read_header(m.data)
            assert m.log_time_ns == stamp  # log time = stamp: players keep the original timing
            assert frame_id == 'cam_optical_frame'
            seen.setdefault(m.topic, []).append(stamp)
            if m.topic == '/cam/camera_info':
                assert read_camera_info_cdr(m.data)[2] == INFO
            elif m.topic in ('/cam/image', '/cam/bgr'):
                assert np.array_equal(image_to_rgb8(read_image_cdr(m.data)), RGB)
            elif m.topic == '/cam/image/compressed':
                c = read_compressed_cdr(m.data)
                assert c.format == 'rgb8; png compressed bgr8'
                assert np.array_equal(compressed_to_rgb8(c), RGB)
            elif m.topic == '/cam/depth_gt':
                image = read_image_cdr(m.data)
                assert image.encoding == '32FC1'
                got = image_to_depth_m(image)
                assert got[0, 0] == 1.5 and got[1, 2] == 2.25
                assert np.isnan(got[[0, 0, 1, 1], [1, 2, 0, 1]]).all()  # NaN, 0, negative, inf: invalid
            elif m.topic == '/cam/depth_mm':
                got = image_to_depth_m(read_image_cdr(m.data))
                assert np.isnan(got[0, 0])
                assert got[0, 1] == pytest.approx(1.5) and got[1, 0] == pytest.approx(65.535)
            elif m.topic == '/cam/points':
                cloud = read_pointcloud2_cdr(m.data)
                np.testing.assert_array_equal(cloud.xyz, xyz)
                assert cloud.xyz.shape == (2, 3, 3)
                point_step = typestore().deserialize_cdr(m.data, POINT_CLOUD2).point_step
                assert point_step == (16 if stamp == STAMP else 32)
                assert cloud.rgb is None if stamp == STAMP else np.array_equal(cloud.rgb, RGB[:2, :3])
        assert all(v == [STAMP, STAMP + 100_000_000, STAMP + 200_000_000] for v in seen.values())
    assert depth.dtype == np.float32


def test_sqlite3_and_mcap_hold_identical_messages(tmp_path):
    contents = []
    for storage in STORAGES:
        _write_all(tmp_path / storage, storage)
        with BagReader(tmp_path / storage) as r:
            contents.append(sorted((m.topic, m.log_time_ns, m.data) for m in r.messages()))
    assert contents[0] == contents[1]


def test_jpeg_round_trip_is_close(tmp_path):
    smooth = np.zeros((32, 48, 3), dtype=np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 48)[None, :]
    smooth[..., 1] = 100
    smooth[..., 2] = np.linspace(255, 0, 32)[:, None]
    with BagWriter(tmp_path / 'j', 'mcap') as w:
        w.write_compressed('/c/image/compressed', smooth, STAMP, 'c', codec='jpeg', jpeg_quality=98)
    with BagReader(tmp_path / 'j') as r:
        (m,) = list(r.messages())
        got = compressed_to_rgb8(read_compressed_cdr(m.data))
    assert np.abs(got.astype(int) - smooth).mean() < 2.0  # channel order right, lossy codec


def test_bad_input_raises(tmp_path):
    with pytest.raises(BagFormatError, match='storage'):
        BagWriter(tmp_path / 'x', storage='rosbag1')
    with pytest.raises(BagFormatError, match='distribution'):
        typestore('noetic2')
    with pytest.raises(BagFormatError, match='not a rosbag2 folder'):
        BagReader(tmp_path)
    _write_all(tmp_path / 'b', 'sqlite3')
    with pytest.raises(BagFormatError, match='exists'):
        BagWriter(tmp_path / 'b')
    (tmp_path / 'notabag').mkdir()
    (tmp_path / 'notabag' / 'keep.txt').write_text('precious')
    with pytest.raises(BagFormatError, match='not a rosbag2 folder'):
        BagWriter(tmp_path / 'notabag', overwrite=True)
    assert (tmp_path / 'notabag' / 'keep.txt').exists()
    with BagReader(tmp_path / 'b') as r, pytest.raises(BagFormatError, match='not in'):
        list(r.messages(['/nope']))
    with BagWriter(tmp_path / 'b', overwrite=True) as w:
        w.write_image('/t', RGB, 'rgb8', STAMP, 'f')
        with pytest.raises(BagFormatError, match='already carries'):
            w.write_camera_info('/t', INFO, STAMP, 'f')
        with pytest.raises(ImageConversionError, match='unsupported image encoding'):
            w.write_image('/u', RGB, 'yuv422', STAMP, 'f')
        with pytest.raises(ValueError, match='stamps'):
            w.write_image('/t', RGB, 'rgb8', -1, 'f')
    with pytest.raises(BagFormatError, match='not open'):
        w.write_image('/t', RGB, 'rgb8', STAMP, 'f')


@pytest.mark.ros
def test_bag_bytes_deserialize_with_rclpy(tmp_path):
    """The player publishes the stored CDR bytes as they are: they must be valid rclpy messages."""
    rclpy_serialization = pytest.importorskip('rclpy.serialization')
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    _write_all(tmp_path / 'b', 'mcap')
    types = {'/cam/image': Image, '/cam/camera_info': CameraInfo, '/cam/points': PointCloud2}
    with BagReader(tmp_path / 'b') as r:
        for m in r.messages(types):
            msg = rclpy_serialization.deserialize_message(m.data, types[m.topic])
            assert msg.header.frame_id == 'cam_optical_frame'
            if m.topic == '/cam/image':
                got = np.frombuffer(msg.data, dtype=np.uint8).reshape(6, 5, 3)
                assert np.array_equal(got, RGB)
            elif m.topic == '/cam/camera_info':
                assert list(msg.k) == list(INFO.k) and msg.roi.do_rectify
