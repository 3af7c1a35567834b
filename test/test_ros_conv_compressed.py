"""CompressedImage (jpeg/png) decoding to RGB, through real rclpy serialization."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage

from metric3d_ros.ros.compressed_conv import CompressedFormat, compressed_to_rgb8, parse_compressed_format
from metric3d_ros.ros.image_conv import ImageConversionError

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('isolated_ros_env')]


H, W = 32, 48


def _rgb() -> np.ndarray:
    """Smooth pattern (survives jpeg) whose red channel clearly dominates blue."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 220
    rgb[..., 1] = (np.arange(W) * 4)[None, :]
    rgb[..., 2] = 20 + (np.arange(H))[:, None]
    return rgb


def _message(encoded_as: np.ndarray, ext: str, fmt: str) -> CompressedImage:
    ok, buf = cv2.imencode(ext, encoded_as)
    assert ok
    msg = CompressedImage(format=fmt)
    msg.header.frame_id = 'cam0_optical'
    msg.data = buf.tobytes()
    return deserialize_message(serialize_message(msg), CompressedImage)


@pytest.mark.parametrize(
    ('fmt', 'expected'),
    [
        ('rgb8; jpeg compressed bgr8', CompressedFormat('rgb8', 'jpeg', 'bgr8')),
        ('bgr8; png compressed rgb8', CompressedFormat('bgr8', 'png', 'rgb8')),
        ('mono8; jpeg compressed mono8', CompressedFormat('mono8', 'jpeg', 'mono8')),
        ('jpeg', CompressedFormat('', 'jpeg', '')),
        ('PNG', CompressedFormat('', 'png', '')),
        ('jpg', CompressedFormat('', 'jpeg', '')),
        ('', CompressedFormat('', '', '')),
        ('bgr8', CompressedFormat('bgr8', '', '')),
    ],
)
def test_format_parsing(fmt, expected):
    assert parse_compressed_format(fmt) == expected


def test_colour_order_follows_the_compressed_encoding():
    assert parse_compressed_format('rgb8; jpeg compressed bgr8').rgb_order is False
    assert parse_compressed_format('bgr8; png compressed rgb8').rgb_order is True
    assert parse_compressed_format('jpeg').rgb_order is False


@pytest.mark.parametrize('fmt', ['16UC1; compressedDepth png', '32FC1; compressedDepth'])
def test_compressed_depth_is_rejected(fmt):
    with pytest.raises(ImageConversionError, match='compressedDepth'):
        parse_compressed_format(fmt)


@pytest.mark.parametrize('fmt', ['rgb8; png compressed bgr8', 'bgr8; png compressed bgr8', 'png', ''])
def test_png_of_bgr_data_decodes_exactly_to_rgb(fmt):
    rgb = _rgb()
    out = compressed_to_rgb8(_message(rgb[..., ::-1], '.png', fmt))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


def test_png_of_rgb_data_is_not_swapped():
    rgb = _rgb()
    np.testing.assert_array_equal(compressed_to_rgb8(_message(rgb, '.png', 'bgr8; png compressed rgb8')), rgb)


@pytest.mark.parametrize('fmt', ['rgb8; jpeg compressed bgr8', 'jpeg'])
def test_jpeg_decodes_close_to_the_original_in_rgb_order(fmt):
    rgb = _rgb()
    out = compressed_to_rgb8(_message(rgb[..., ::-1], '.jpg', fmt))
    assert out.shape == (H, W, 3)
    error = np.abs(out.astype(np.int16) - rgb.astype(np.int16))
    assert error.mean() < 3.0, f'mean abs error {error.mean():.2f}'
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 80, 'red and blue swapped'


def test_grey_png_is_replicated_to_three_channels():
    grey = np.arange(H * W, dtype=np.uint32).reshape(H, W).astype(np.uint8)
    out = compressed_to_rgb8(_message(grey, '.png', 'mono8; png compressed mono8'))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=-1))


def test_bgra_png_drops_alpha():
    rgb = _rgb()
    bgra = np.concatenate([rgb[..., ::-1], np.full((H, W, 1), 9, np.uint8)], axis=-1)
    out = compressed_to_rgb8(_message(bgra, '.png', 'bgra8; png compressed bgra8'))
    np.testing.assert_array_equal(out, rgb)


def test_sixteen_bit_png_is_rejected():
    depth_mm = np.full((H, W), 1234, np.uint16)
    with pytest.raises(ImageConversionError, match='uint16 pixels; a colour image'):
        compressed_to_rgb8(_message(depth_mm, '.png', '16UC1; png compressed 16UC1'))


def test_undecodable_data_is_rejected():
    msg = CompressedImage(format='jpeg')
    msg.data = b'\xff\xd8 certainly not a jpeg'
    with pytest.raises(ImageConversionError, match=r"could not decode 23 B .*format 'jpeg'"):
        compressed_to_rgb8(msg)
    truncated = _message(_rgb()[..., ::-1], '.png', 'png')
    truncated.data = bytes(truncated.data)[:40]
    with pytest.raises(ImageConversionError, match='could not decode'):
        compressed_to_rgb8(truncated)


def test_empty_data_is_rejected():
    with pytest.raises(ImageConversionError, match='holds no data'):
        compressed_to_rgb8(CompressedImage(format='jpeg'))
