"""codec/image.py: Image bytes and message objects <-> numpy, checked against rclpy's and rosbags' own
serializers (field for field) and by hand."""
from __future__ import annotations

import time

import numpy as np
import pytest

from metric3d_ros.codec.cdr import CdrError
from metric3d_ros.codec.image import (
    COLOUR_ENCODINGS,
    ENCODINGS,
    ImageConversionError,
    ImageData,
    depth_image_cdr,
    image_cdr,
    image_from_msg,
    image_to_array,
    image_to_depth_m,
    image_to_rgb8,
    read_image_cdr,
)

H, W = 5, 7
STAMP_NS = 1_234_567_999_999_999


def _random_pixels(encoding: str, rng: np.random.Generator, shape_hw=(H, W)) -> np.ndarray:
    info = ENCODINGS[encoding]
    shape = shape_hw if info.channels == 1 else (*shape_hw, info.channels)
    if info.dtype == np.float32:
        values = rng.uniform(-100.0, 100.0, size=shape).astype(np.float32)
        values.reshape(-1)[::5] = np.nan
        return values
    return rng.integers(0, np.iinfo(info.dtype).max, size=shape, endpoint=True, dtype=info.dtype)


def _assert_same_pixels(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype.newbyteorder('=')
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)  # NaN == NaN here


def _image(pixels: np.ndarray, encoding: str, pad_b: int = 0, big_endian: bool = False) -> ImageData:
    """An image built by hand: rows padded by ``pad_b`` bytes of 0xAB, elements in the given byte order."""
    info = ENCODINGS[encoding]
    wire = pixels.astype(info.dtype.newbyteorder('>' if big_endian else '<'))
    row_b = pixels.shape[1] * info.pixel_bytes
    rows = np.ascontiguousarray(wire).view(np.uint8).reshape(pixels.shape[0], row_b)
    padded = np.full((rows.shape[0], rows.shape[1] + pad_b), 0xAB, dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    return ImageData(0, '', pixels.shape[0], pixels.shape[1], encoding, big_endian, padded.shape[1],
                     padded.tobytes())


# ------------------------------------------------------------------------------------------ pure codec


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
def test_round_trip_through_the_bytes(encoding):
    pixels = _random_pixels(encoding, np.random.default_rng(1))
    image = read_image_cdr(image_cdr(pixels, encoding, STAMP_NS, 'cam0_optical'))
    assert (image.stamp_ns, image.frame_id) == (STAMP_NS, 'cam0_optical')
    assert (image.height, image.width, image.encoding, image.is_bigendian) == (H, W, encoding, False)
    assert image.step == W * ENCODINGS[encoding].pixel_bytes
    assert len(image.data) == image.step * H
    _assert_same_pixels(image_to_array(image), pixels)


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
@pytest.mark.parametrize('pad_b', [1, 3, 8])
@pytest.mark.parametrize('big_endian', [False, True])
def test_padded_step_and_byte_order_are_honoured(encoding, pad_b, big_endian):
    pixels = _random_pixels(encoding, np.random.default_rng(pad_b))
    image = _image(pixels, encoding, pad_b, big_endian)
    assert image.step == W * ENCODINGS[encoding].pixel_bytes + pad_b
    _assert_same_pixels(image_to_array(image), pixels)


def test_byte_layout_matches_hand_computed_values():
    mono16 = ImageData(0, '', 1, 2, 'mono16', False, 4, bytes([0x34, 0x12, 0xFF, 0x00]))
    np.testing.assert_array_equal(image_to_array(mono16), [[0x1234, 0x00FF]])
    mono16 = ImageData(0, '', 1, 2, 'mono16', True, 4, bytes([0x34, 0x12, 0xFF, 0x00]))
    np.testing.assert_array_equal(image_to_array(mono16), [[0x3412, 0xFF00]])
    depth = ImageData(0, '', 1, 1, '32FC1', True, 4, bytes([0x3F, 0xC0, 0x00, 0x00]))  # 1.5 big endian
    assert image_to_array(depth)[0, 0] == np.float32(1.5)
    rgb = ImageData(0, '', 2, 1, 'rgb8', False, 4, bytes([1, 2, 3, 99, 4, 5, 6, 99]))  # 1 padding byte/row
    np.testing.assert_array_equal(image_to_array(rgb), [[[1, 2, 3]], [[4, 5, 6]]])
    listed = ImageData(0, '', 1, 2, 'mono8', False, 2, [7, 8])  # a hand-built message's list of ints
    np.testing.assert_array_equal(image_to_array(listed), [[7, 8]])


def test_writer_stores_little_endian_bytes_even_from_big_endian_arrays():
    image = read_image_cdr(image_cdr(np.array([[0x1234]], dtype='>u2'), '16UC1', 0, ''))
    assert image.is_bigendian is False
    assert bytes(image.data) == bytes([0x34, 0x12])


def test_reading_bytes_copies_no_pixels():
    raw = image_cdr(np.zeros((H, W, 3), np.uint8), 'rgb8', 0, '')
    image = read_image_cdr(raw)
    assert isinstance(image.data, memoryview)
    backing = np.frombuffer(raw, np.uint8)
    assert np.shares_memory(image_to_array(image), backing)
    assert np.shares_memory(image_to_rgb8(image), backing)  # unpadded rgb8: a view
    assert not image_to_array(image).flags.writeable  # a view of immutable bytes


def test_single_channel_accepts_trailing_unit_axis():
    depth = np.arange(H * W, dtype=np.float32).reshape(H, W, 1)
    np.testing.assert_array_equal(image_to_array(read_image_cdr(image_cdr(depth, '32FC1', 0, ''))),
                                  depth[:, :, 0])


def test_empty_and_non_contiguous_arrays():
    empty = read_image_cdr(image_cdr(np.zeros((0, 4), np.float32), '32FC1', 0, 'x'))
    assert (empty.height, empty.width, empty.step, len(empty.data)) == (0, 4, 16, 0)
    assert image_to_array(empty).shape == (0, 4)
    arr = np.arange(48, dtype=np.float32).reshape(6, 8)[:, ::2]
    np.testing.assert_array_equal(image_to_array(read_image_cdr(image_cdr(arr, '32FC1', 0, 'x'))), arr)


@pytest.mark.parametrize('encoding', ['yuv422', 'bayer_rggb8', '16SC1', 'rgb16', ''])
def test_unsupported_encoding_is_rejected_by_name(encoding):
    with pytest.raises(ImageConversionError, match='unsupported image encoding'):
        image_to_array(ImageData(0, '', 1, 1, encoding, False, 8, bytes(8)))
    with pytest.raises(ImageConversionError, match='unsupported image encoding'):
        image_cdr(np.zeros((1, 1), np.uint8), encoding, 0, '')


def test_step_smaller_than_a_row_is_rejected():
    with pytest.raises(ImageConversionError, match='step 11 B is smaller than width 4 x 3 B'):
        image_to_array(ImageData(0, '', 2, 4, 'rgb8', False, 11, bytes(24)))


def test_short_data_is_rejected():
    with pytest.raises(ImageConversionError, match='holds 19 B but step 10 B x height 2 needs 20 B'):
        image_to_array(ImageData(0, '', 2, 4, 'mono16', False, 10, bytes(19)))


def test_bytes_that_are_not_an_image_are_rejected():
    raw = image_cdr(np.zeros((4, 4), np.float32), '32FC1', 0, 'x')
    with pytest.raises(CdrError, match='truncated'):
        read_image_cdr(raw[:-1])


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
def test_writer_rejects_wrong_arrays(arr, encoding, match):
    with pytest.raises(ImageConversionError, match=match):
        image_cdr(arr, encoding, 0, '')


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
        channels = np.concatenate([channels, np.full((H, W, 1), 7, np.uint8)], axis=-1)
    out = image_to_rgb8(_image(np.ascontiguousarray(channels), encoding, pad_b=2))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_image_to_rgb8_replicates_mono8():
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    out = image_to_rgb8(read_image_cdr(image_cdr(grey, 'mono8', 0, '')))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=-1))
    assert set(COLOUR_ENCODINGS) == {'rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8'}


@pytest.mark.parametrize('encoding', ['mono16', '16UC1', '32FC1', '8UC3', '8UC1'])
def test_image_to_rgb8_requires_a_colour_image(encoding):
    info = ENCODINGS[encoding]
    shape = (H, W) if info.channels == 1 else (H, W, info.channels)
    image = read_image_cdr(image_cdr(np.zeros(shape, info.dtype), encoding, 0, ''))
    with pytest.raises(ImageConversionError, match='a colour image is required'):
        image_to_rgb8(image)


def test_depth_32fc1_metres_nan_invalid():
    depth = np.array([[1.5, np.nan, 0.0], [-1.0, np.inf, 2.25]], dtype=np.float32)
    raw = depth_image_cdr(depth, STAMP_NS, 'f')
    stored = image_to_array(read_image_cdr(raw))
    assert read_image_cdr(raw).encoding == '32FC1'
    np.testing.assert_array_equal(stored, [[1.5, np.nan, np.nan], [np.nan, np.inf, 2.25]])  # REP 117
    got = image_to_depth_m(read_image_cdr(raw))
    assert got[0, 0] == 1.5 and got[1, 2] == 2.25
    assert np.isnan(got[[0, 0, 1, 1], [1, 2, 0, 1]]).all()  # NaN, 0, negative, inf: invalid
    assert not np.shares_memory(got, np.frombuffer(raw, np.uint8))


def test_depth_16uc1_millimetres_zero_invalid():
    raw = depth_image_cdr(np.array([[np.nan, 1.5], [65.535, 0.007]], np.float32), STAMP_NS, 'f',
                          encoding='16UC1')
    image = read_image_cdr(raw)
    assert image.encoding == '16UC1'
    np.testing.assert_array_equal(image_to_array(image), [[0, 1500], [65535, 7]])
    got = image_to_depth_m(image)
    assert np.isnan(got[0, 0]) and got.dtype == np.float32
    assert got[0, 1] == pytest.approx(1.5) and got[1, 0] == pytest.approx(65.535)
    mono16 = read_image_cdr(image_cdr(np.array([[0, 2000]], np.uint16), 'mono16', 0, ''))
    assert np.isnan(image_to_depth_m(mono16)[0, 0]) and image_to_depth_m(mono16)[0, 1] == pytest.approx(2.0)


def test_depth_bad_input_is_rejected():
    with pytest.raises(ImageConversionError, match='depth images must be'):
        image_to_depth_m(read_image_cdr(image_cdr(np.zeros((2, 2, 3), np.uint8), 'rgb8', 0, '')))
    with pytest.raises(ImageConversionError, match='depth encoding must be'):
        depth_image_cdr(np.zeros((2, 2), np.float32), 0, '', encoding='mono8')
    with pytest.raises(ImageConversionError, match=r'float \(H, W\)'):
        depth_image_cdr(np.zeros((2, 2, 1), np.float32), 0, '')


def test_full_hd_conversion_is_fast():
    """One copy of the pixels to write, none to read: milliseconds for a full-HD frame."""
    rgb = np.random.default_rng(0).integers(0, 255, size=(1080, 1920, 3), dtype=np.uint8)
    write_s, read_s = [], []
    for _ in range(3):
        start = time.perf_counter()
        raw = image_cdr(rgb, 'rgb8', STAMP_NS, 'cam')
        write_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        out = image_to_rgb8(read_image_cdr(raw))
        read_s.append(time.perf_counter() - start)
    np.testing.assert_array_equal(out, rgb)
    assert min(write_s) < 0.1, f'image_cdr took {min(write_s) * 1e3:.1f} ms for 1920x1080 rgb8'
    assert min(read_s) < 0.05, f'reading took {min(read_s) * 1e3:.1f} ms for 1920x1080 rgb8'


# ------------------------------------------------------------------------------------------ rosbags


def test_rosbags_reads_the_bytes_and_serializes_the_same():
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    pixels = _random_pixels('32FC3', np.random.default_rng(5))
    raw = image_cdr(pixels, '32FC3', 1_234_567_890_123_456_789, 'kamera_ö')
    msg = store.deserialize_cdr(raw, 'sensor_msgs/msg/Image')
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_234_567_890, 123_456_789)
    assert (msg.header.frame_id, msg.height, msg.width, msg.encoding) == ('kamera_ö', H, W, '32FC3')
    assert (msg.is_bigendian, msg.step) == (0, W * 12)
    assert bytes(store.serialize_cdr(msg, 'sensor_msgs/msg/Image')) == raw
    _assert_same_pixels(image_to_array(image_from_msg(msg)), pixels)


def test_rosbags_padded_big_endian_message_is_read():
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    values = np.array([[1, 258, 65535], [4, 5, 6]], dtype=np.uint16)
    padded = np.zeros((2, 8), dtype=np.uint8)
    padded[:, :6] = values.astype('>u2').view(np.uint8).reshape(2, 6)
    msg = store.deserialize_cdr(image_cdr(values, '16UC1', STAMP_NS, 'x'), 'sensor_msgs/msg/Image')
    msg.is_bigendian, msg.step, msg.data = 1, 8, padded.reshape(-1)
    image = image_from_msg(msg)
    assert (image.stamp_ns, image.frame_id, image.is_bigendian, image.step) == (STAMP_NS, 'x', True, 8)
    np.testing.assert_array_equal(image_to_array(image), values)
    np.testing.assert_array_equal(image_to_array(read_image_cdr(store.serialize_cdr(msg, msg.__msgtype__))),
                                  values)


# ------------------------------------------------------------------------------------------ rclpy


def _rclpy_image(pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str, pad_b: int = 0,
                 big_endian: bool = False):
    """The rclpy Image holding ``pixels`` (built field by field: the reference for the codec's bytes)."""
    from sensor_msgs.msg import Image

    image = _image(pixels, encoding, pad_b, big_endian)
    msg = Image(height=image.height, width=image.width, encoding=encoding, is_bigendian=int(big_endian),
                step=image.step)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.data = image.data
    return msg


@pytest.mark.parametrize('frame_id', ['', 'a', 'cam_front_optical_frame', 'kamera_ö'])
@pytest.mark.parametrize('encoding,shape,dtype', [
    ('32FC1', (7, 5), np.float32), ('16UC1', (3, 9), np.uint16), ('rgb8', (4, 6, 3), np.uint8),
    ('32FC3', (2, 3, 3), np.float32), ('mono8', (1, 1), np.uint8), ('32FC1', (0, 4), np.float32)])
@pytest.mark.ros
@pytest.mark.usefixtures('isolated_ros_env')
def test_rclpy_reads_the_bytes_field_for_field(frame_id, encoding, shape, dtype):
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    arr = (np.random.default_rng(1).random(shape) * 200).astype(dtype)
    raw = image_cdr(arr, encoding, STAMP_NS, frame_id)
    want = _rclpy_image(arr, encoding, STAMP_NS, frame_id)
    assert deserialize_message(raw, Image) == want
    assert len(raw) == len(serialize_message(want))


@pytest.mark.parametrize('frame_id', ['', 'cam', 'kamera_ö'])
@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
@pytest.mark.parametrize('pad_b', [0, 3])
@pytest.mark.parametrize('big_endian', [False, True])
@pytest.mark.ros
@pytest.mark.usefixtures('isolated_ros_env')
def test_rclpy_serialized_images_are_read(frame_id, encoding, pad_b, big_endian):
    """From rclpy's bytes (a raw subscription) and from the rclpy message object (duck-typed)."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    pixels = _random_pixels(encoding, np.random.default_rng(pad_b))
    raw = serialize_message(_rclpy_image(pixels, encoding, STAMP_NS, frame_id, pad_b, big_endian))
    for image in (read_image_cdr(raw), image_from_msg(deserialize_message(raw, Image))):
        assert (image.stamp_ns, image.frame_id, image.encoding) == (STAMP_NS, frame_id, encoding)
        assert (image.height, image.width, image.is_bigendian) == (H, W, big_endian)
        assert image.step == W * ENCODINGS[encoding].pixel_bytes + pad_b
        _assert_same_pixels(image_to_array(image), pixels)
        if encoding in COLOUR_ENCODINGS:
            assert image_to_rgb8(image).shape == (H, W, 3)
