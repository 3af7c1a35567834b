"""Serialized Image / PointCloud2 (ros/cdr.py): the middleware reads them back as the message objects."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header

from metric3d_ros.ros import cdr
from metric3d_ros.ros.cloud_conv import xyz_to_pointcloud2, xyz_to_pointcloud2_cdr
from metric3d_ros.ros.image_conv import array_to_image, array_to_image_cdr

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('isolated_ros_env')]


def _header(frame_id):
    header = Header()
    header.stamp.sec, header.stamp.nanosec, header.frame_id = 1_234_567, 999_999_999, frame_id
    return header


@pytest.mark.parametrize('frame_id', ['', 'a', 'cam_front_optical_frame', 'kamera_ö'])
@pytest.mark.parametrize('encoding,shape,dtype', [
    ('32FC1', (7, 5), np.float32), ('16UC1', (3, 9), np.uint16), ('rgb8', (4, 6, 3), np.uint8),
    ('32FC3', (2, 3, 3), np.float32), ('mono8', (1, 1), np.uint8)])
def test_images_round_trip_through_the_middleware(frame_id, encoding, shape, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.random(shape) * 200).astype(dtype)
    header = _header(frame_id)
    raw = array_to_image_cdr(arr, encoding, header)
    want = array_to_image(arr, encoding, header)
    assert deserialize_message(raw, Image) == want
    assert len(raw) == len(serialize_message(want))


@pytest.mark.parametrize('rgb', [False, True])
def test_clouds_round_trip_through_the_middleware(rgb):
    rng = np.random.default_rng(2)
    padded = rng.random((5, 7, 4)).astype(np.float32)
    padded[..., 3] = 0.0
    xyz = padded[..., :3]  # the engine's 16-byte points
    xyz[0, 0] = np.nan
    colours = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8) if rgb else None
    header = _header('lidar')
    raw = xyz_to_pointcloud2_cdr(xyz, header, rgb=colours)
    want = xyz_to_pointcloud2(xyz, header, rgb=colours)
    got = deserialize_message(raw, PointCloud2)
    assert got == want
    assert len(raw) == len(serialize_message(want))


def test_empty_images_serialize_like_message_objects():
    empty = np.zeros((0, 4), dtype=np.float32)
    raw = array_to_image_cdr(empty, '32FC1', _header('x'))
    assert deserialize_message(raw, Image) == array_to_image(empty, '32FC1', _header('x'))


def test_non_contiguous_arrays_are_serialized_by_value():
    arr = np.arange(48, dtype=np.float32).reshape(6, 8)[:, ::2]
    raw = array_to_image_cdr(arr, '32FC1', _header('x'))
    np.testing.assert_array_equal(
        np.frombuffer(bytes(deserialize_message(raw, Image).data), dtype=np.float32).reshape(6, 4), arr)


@pytest.mark.parametrize('frame_id', ['', 'cam', 'kamera_ö'])
def test_parsing_a_middleware_serialized_image_finds_its_fields_and_pixels(frame_id):
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    raw = serialize_message(array_to_image(pixels, 'bgr8', _header(frame_id)))
    got = cdr.parse_image_cdr(raw)
    assert (got.stamp_sec, got.stamp_nanosec, got.frame_id) == (1_234_567, 999_999_999, frame_id)
    assert (got.height, got.width, got.encoding, got.is_bigendian, got.step) == (5, 7, 'bgr8', 0, 21)
    data = np.frombuffer(raw, dtype=np.uint8, count=got.data_size, offset=got.data_offset)
    np.testing.assert_array_equal(data.reshape(5, 7, 3), pixels)


def test_parsing_rejects_truncated_and_foreign_bytes():
    raw = serialize_message(array_to_image(np.zeros((4, 4), np.float32), '32FC1', _header('x')))
    with pytest.raises(cdr.CdrError, match='truncated'):
        cdr.parse_image_cdr(raw[:-3])
    with pytest.raises(cdr.CdrError, match='little-endian'):
        cdr.parse_image_cdr(b'\x00\x00\x00\x00' + raw[4:])


def test_the_self_check_accepts_this_middleware():
    assert cdr.matches_middleware()
