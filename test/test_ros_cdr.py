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


def test_the_self_check_accepts_this_middleware():
    assert cdr.matches_middleware()
