"""Image <-> ndarray conversions, checked through real rclpy serialization (CDR round trips)."""
from __future__ import annotations

import array
import time

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from metric3d_ros.ros.image_conv import (
    ENCODINGS,
    ImageConversionError,
    array_to_image,
    image_to_array,
    image_to_rgb8,
)

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('isolated_ros_env')]


H, W = 5, 7


def _wire(msg: Image) -> Image:
    """The message as a subscriber receives it: serialized to CDR and back."""
    return deserialize_message(serialize_message(msg), Image)


def _random_pixels(encoding: str, rng: np.random.Generator) -> np.ndarray:
    info = ENCODINGS[encoding]
    shape = (H, W) if info.channels == 1 else (H, W, info.channels)
    if info.dtype == np.float32:
        values = rng.uniform(-100.0, 100.0, size=shape).astype(np.float32)
        values.reshape(-1)[::5] = np.nan
        return values
    return rng.integers(0, np.iinfo(info.dtype).max, size=shape, endpoint=True, dtype=info.dtype)


def _assert_same_pixels(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype.newbyteorder('=')
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)  # NaN == NaN here


def _manual_image(pixels: np.ndarray, encoding: str, pad_b: int, big_endian: bool) -> Image:
    """An Image built by hand: rows padded by ``pad_b`` bytes of 0xAB, elements in the given byte order."""
    info = ENCODINGS[encoding]
    wire = pixels.astype(info.dtype.newbyteorder('>' if big_endian else '<'))
    rows = wire.reshape(pixels.shape[0], -1).view(np.uint8)
    padded = np.full((rows.shape[0], rows.shape[1] + pad_b), 0xAB, dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding)
    msg.is_bigendian = int(big_endian)
    msg.step = padded.shape[1]
    msg.data = padded.tobytes()
    return msg


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
def test_round_trip_through_serialization(encoding):
    pixels = _random_pixels(encoding, np.random.default_rng(1))
    header = Header(frame_id='cam0_optical')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = array_to_image(pixels, encoding, header)
    assert isinstance(msg.data, array.array)
    assert msg.step == W * ENCODINGS[encoding].pixel_bytes
    assert msg.is_bigendian == 0
    assert len(msg.data) == msg.step * H
    received = _wire(msg)
    assert (received.height, received.width, received.encoding) == (H, W, encoding)
    assert received.header.frame_id == 'cam0_optical'
    assert (received.header.stamp.sec, received.header.stamp.nanosec) == (12, 345)
    _assert_same_pixels(image_to_array(received), pixels)


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
@pytest.mark.parametrize('pad_b', [1, 3, 8])
@pytest.mark.parametrize('big_endian', [False, True])
def test_padded_step_and_byte_order_are_honoured(encoding, pad_b, big_endian):
    pixels = _random_pixels(encoding, np.random.default_rng(pad_b))
    received = _wire(_manual_image(pixels, encoding, pad_b, big_endian))
    assert received.step == W * ENCODINGS[encoding].pixel_bytes + pad_b
    _assert_same_pixels(image_to_array(received), pixels)


def test_byte_layout_matches_hand_computed_values():
    mono16 = Image(height=1, width=2, encoding='mono16', step=4, is_bigendian=0)
    mono16.data = bytes([0x34, 0x12, 0xFF, 0x00])
    np.testing.assert_array_equal(image_to_array(_wire(mono16)), [[0x1234, 0x00FF]])
    mono16.is_bigendian = 1
    np.testing.assert_array_equal(image_to_array(_wire(mono16)), [[0x3412, 0xFF00]])

    depth = Image(height=1, width=1, encoding='32FC1', step=4, is_bigendian=1)
    depth.data = bytes([0x3F, 0xC0, 0x00, 0x00])  # 1.5 as big-endian IEEE-754
    assert image_to_array(_wire(depth))[0, 0] == np.float32(1.5)

    rgb = Image(height=2, width=1, encoding='rgb8', step=4)
    rgb.data = bytes([1, 2, 3, 99, 4, 5, 6, 99])  # one padding byte per row
    np.testing.assert_array_equal(image_to_array(_wire(rgb)), [[[1, 2, 3]], [[4, 5, 6]]])


def test_array_to_image_writes_little_endian_bytes_even_from_big_endian_arrays():
    msg = array_to_image(np.array([[0x1234]], dtype='>u2'), '16UC1')
    assert msg.is_bigendian == 0
    assert bytes(msg.data) == bytes([0x34, 0x12])


def test_unpadded_read_is_a_view_of_the_message_data():
    msg = _wire(array_to_image(np.zeros((H, W, 3), np.uint8), 'rgb8'))
    pixels = image_to_array(msg)
    assert np.shares_memory(pixels, np.frombuffer(msg.data, np.uint8))


def test_single_channel_accepts_trailing_unit_axis():
    depth = np.arange(H * W, dtype=np.float32).reshape(H, W, 1)
    np.testing.assert_array_equal(image_to_array(array_to_image(depth, '32FC1')), depth[:, :, 0])


@pytest.mark.parametrize('encoding', ['yuv422', 'bayer_rggb8', '16SC1', 'rgb16', ''])
def test_unsupported_encoding_is_rejected_by_name(encoding):
    msg = Image(height=1, width=1, encoding=encoding, step=8)
    msg.data = bytes(8)
    with pytest.raises(ImageConversionError, match='unsupported image encoding'):
        image_to_array(msg)
    with pytest.raises(ImageConversionError, match='unsupported image encoding'):
        array_to_image(np.zeros((1, 1), np.uint8), encoding)


def test_step_smaller_than_a_row_is_rejected():
    msg = Image(height=2, width=4, encoding='rgb8', step=11)
    msg.data = bytes(24)
    with pytest.raises(ImageConversionError, match='step 11 B is smaller than width 4 x 3 B'):
        image_to_array(msg)


def test_short_data_is_rejected():
    msg = Image(height=2, width=4, encoding='mono16', step=10)
    msg.data = bytes(19)
    with pytest.raises(ImageConversionError, match='holds 19 B but step 10 B x height 2 needs 20 B'):
        image_to_array(msg)


@pytest.mark.parametrize(
    ('arr', 'encoding', 'match'),
    [
        (np.zeros((2, 2), np.float64), '32FC1', 'needs a float32 array, got float64'),
        (np.zeros((2, 2), np.int16), '16UC1', 'needs a uint16 array'),
        (np.zeros((2, 2), np.uint16), 'mono8', 'needs a uint8 array'),
        (np.zeros((2, 2, 4), np.uint8), 'rgb8', r'shape \(H, W, 3\)'),
        (np.zeros((2, 2), np.uint8), 'bgra8', r'shape \(H, W, 4\)'),
        (np.zeros((2, 2, 2), np.uint8), 'mono8', r'shape \(H, W\)'),
        (np.zeros(4, np.uint8), 'mono8', r'shape \(H, W\)'),
    ],
)
def test_array_to_image_rejects_wrong_arrays(arr, encoding, match):
    with pytest.raises(ImageConversionError, match=match):
        array_to_image(arr, encoding)


def _rgb_pattern() -> np.ndarray:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200  # red dominates, so a channel swap is visible
    rgb[..., 1] = np.arange(W, dtype=np.uint8)[None, :] * 10
    rgb[..., 2] = np.arange(H, dtype=np.uint8)[:, None] * 20
    return rgb


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_image_to_rgb8_gives_rgb_order(encoding):
    rgb = _rgb_pattern()
    channels = rgb if encoding.startswith('rgb') else rgb[..., ::-1]
    if encoding.endswith('a8'):
        alpha = np.full((H, W, 1), 7, np.uint8)
        channels = np.concatenate([channels, alpha], axis=-1)
    msg = _wire(_manual_image(np.ascontiguousarray(channels), encoding, pad_b=2, big_endian=False))
    out = image_to_rgb8(msg)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_image_to_rgb8_replicates_mono8():
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    out = image_to_rgb8(_wire(array_to_image(grey, 'mono8')))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=-1))


@pytest.mark.parametrize('encoding', ['mono16', '16UC1', '32FC1', '8UC3', '8UC1'])
def test_image_to_rgb8_requires_a_colour_image(encoding):
    info = ENCODINGS[encoding]
    shape = (H, W) if info.channels == 1 else (H, W, info.channels)
    msg = array_to_image(np.zeros(shape, info.dtype), encoding)
    with pytest.raises(ImageConversionError, match='a colour image is required'):
        image_to_rgb8(msg)


def test_full_hd_conversion_uses_the_fast_path():
    """Writing must fill an array.array in one copy: assigning an ndarray costs ~300 ms here."""
    rgb = np.random.default_rng(0).integers(0, 255, size=(1080, 1920, 3), dtype=np.uint8)
    to_msg_s, from_msg_s = [], []
    for _ in range(3):
        start = time.perf_counter()
        msg = array_to_image(rgb, 'rgb8')
        to_msg_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        out = image_to_rgb8(msg)
        from_msg_s.append(time.perf_counter() - start)
    np.testing.assert_array_equal(out, rgb)
    assert min(to_msg_s) < 0.1, f'array_to_image took {min(to_msg_s) * 1e3:.1f} ms for 1920x1080 rgb8'
    assert min(from_msg_s) < 0.05, f'image_to_rgb8 took {min(from_msg_s) * 1e3:.1f} ms for 1920x1080 rgb8'
