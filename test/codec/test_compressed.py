"""codec/compressed.py: CompressedImage (jpeg/png) decoding to RGB and writing, checked through rclpy's and
rosbags' serializers."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from node_support import jpeg_claiming, png_of_zeros

from metric3d_ros.codec.compressed import (
    CompressedData,
    CompressedFormat,
    compressed_cdr,
    compressed_from_msg,
    compressed_size,
    compressed_to_rgb8,
    parse_compressed_format,
    read_compressed_cdr,
)
from metric3d_ros.codec.image import ImageConversionError

H, W = 32, 48
STAMP_NS = 1_556_919_593_841_523_000


def _rgb() -> np.ndarray:
    """Smooth pattern (survives jpeg) whose red channel clearly dominates blue."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 220
    rgb[..., 1] = (np.arange(W) * 4)[None, :]
    rgb[..., 2] = 20 + (np.arange(H))[:, None]
    return rgb


def _data(encoded_as: np.ndarray, ext: str, fmt: str) -> CompressedData:
    ok, buf = cv2.imencode(ext, encoded_as)
    assert ok
    return CompressedData(STAMP_NS, 'cam0_optical', fmt, buf.tobytes())


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
    with pytest.raises(ImageConversionError, match='compressedDepth'):
        compressed_to_rgb8(_data(_rgb(), '.png', fmt))


@pytest.mark.parametrize('fmt', ['rgb8; png compressed bgr8', 'bgr8; png compressed bgr8', 'png', ''])
def test_png_of_bgr_data_decodes_exactly_to_rgb(fmt):
    rgb = _rgb()
    out = compressed_to_rgb8(_data(rgb[..., ::-1], '.png', fmt))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


def test_png_of_rgb_data_is_not_swapped():
    rgb = _rgb()
    np.testing.assert_array_equal(compressed_to_rgb8(_data(rgb, '.png', 'bgr8; png compressed rgb8')), rgb)


@pytest.mark.parametrize('fmt', ['rgb8; jpeg compressed bgr8', 'jpeg'])
def test_jpeg_decodes_close_to_the_original_in_rgb_order(fmt):
    rgb = _rgb()
    out = compressed_to_rgb8(_data(rgb[..., ::-1], '.jpg', fmt))
    assert out.shape == (H, W, 3)
    error = np.abs(out.astype(np.int16) - rgb.astype(np.int16))
    assert error.mean() < 3.0, f'mean abs error {error.mean():.2f}'
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 80, 'red and blue swapped'


def test_grey_png_is_replicated_to_three_channels():
    grey = np.arange(H * W, dtype=np.uint32).reshape(H, W).astype(np.uint8)
    out = compressed_to_rgb8(_data(grey, '.png', 'mono8; png compressed mono8'))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=-1))


def test_bgra_png_drops_alpha():
    rgb = _rgb()
    bgra = np.concatenate([rgb[..., ::-1], np.full((H, W, 1), 9, np.uint8)], axis=-1)
    np.testing.assert_array_equal(compressed_to_rgb8(_data(bgra, '.png', 'bgra8; png compressed bgra8')), rgb)


def test_sixteen_bit_png_is_rejected():
    depth_mm = np.full((H, W), 1234, np.uint16)
    with pytest.raises(ImageConversionError, match='uint16 pixels; a colour image'):
        compressed_to_rgb8(_data(depth_mm, '.png', '16UC1; png compressed 16UC1'))


def test_undecodable_data_is_rejected():
    with pytest.raises(ImageConversionError, match=r"could not decode 23 B .*format 'jpeg'"):
        compressed_to_rgb8(CompressedData(0, '', 'jpeg', b'\xff\xd8 certainly not a jpeg'))
    good = _data(_rgb()[..., ::-1], '.png', 'png')
    with pytest.raises(ImageConversionError, match='could not decode'):
        compressed_to_rgb8(CompressedData(0, '', 'png', bytes(good.data)[:40]))


def test_empty_data_is_rejected():
    with pytest.raises(ImageConversionError, match='holds no data'):
        compressed_to_rgb8(CompressedData(0, '', 'jpeg', b''))


def test_png_written_and_read_back_exactly():
    rgb = _rgb()
    raw = compressed_cdr(rgb, STAMP_NS, 'cam_ö', format='png')
    c = read_compressed_cdr(raw)
    assert (c.stamp_ns, c.frame_id, c.format) == (STAMP_NS, 'cam_ö', 'rgb8; png compressed bgr8')
    assert isinstance(c.data, memoryview) and bytes(c.data[:4]) == b'\x89PNG'
    np.testing.assert_array_equal(compressed_to_rgb8(c), rgb)


def test_jpeg_written_and_read_back_closely():
    smooth = np.zeros((32, 48, 3), dtype=np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 48)[None, :]
    smooth[..., 1] = 100
    smooth[..., 2] = np.linspace(255, 0, 32)[:, None]
    c = read_compressed_cdr(compressed_cdr(smooth, STAMP_NS, 'c', format='jpeg', jpeg_quality=98))
    assert c.format == 'rgb8; jpeg compressed bgr8' and bytes(c.data[:2]) == b'\xff\xd8'
    got = compressed_to_rgb8(c)
    assert np.abs(got.astype(int) - smooth).mean() < 2.0  # channel order right, lossy codec


def test_writer_rejects_bad_input():
    with pytest.raises(ImageConversionError, match=r'\(H, W, 3\) uint8'):
        compressed_cdr(np.zeros((4, 4), np.uint8), 0, '')
    with pytest.raises(ImageConversionError, match=r'\(H, W, 3\) uint8'):
        compressed_cdr(np.zeros((4, 4, 3), np.float32), 0, '')
    with pytest.raises(ImageConversionError, match="'jpeg' or 'png'"):
        compressed_cdr(np.zeros((4, 4, 3), np.uint8), 0, '', format='webp')


def test_rosbags_reads_the_bytes_and_serializes_the_same():
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    raw = compressed_cdr(_rgb(), STAMP_NS, 'cam', format='png')
    msg = store.deserialize_cdr(raw, 'sensor_msgs/msg/CompressedImage')
    assert msg.format == 'rgb8; png compressed bgr8' and msg.header.frame_id == 'cam'
    assert bytes(store.serialize_cdr(msg, 'sensor_msgs/msg/CompressedImage')) == raw
    c = compressed_from_msg(msg)
    assert (c.stamp_ns, c.frame_id) == (STAMP_NS, 'cam')
    np.testing.assert_array_equal(compressed_to_rgb8(c), _rgb())


@pytest.mark.ros
@pytest.mark.usefixtures('isolated_ros_env')
@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
@pytest.mark.parametrize('frame_id', ['', 'c', 'kamera_ö'])
def test_rclpy_reads_the_bytes_field_for_field(fmt, frame_id):
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage

    raw = compressed_cdr(_rgb(), STAMP_NS, frame_id, format=fmt)
    got = deserialize_message(raw, CompressedImage)
    want = CompressedImage(format=f'rgb8; {fmt} compressed bgr8')
    want.header.stamp.sec, want.header.stamp.nanosec = divmod(STAMP_NS, 1_000_000_000)
    want.header.frame_id = frame_id
    want.data = bytes(read_compressed_cdr(raw).data)
    assert got == want
    assert len(serialize_message(want)) == len(raw)


@pytest.mark.ros
@pytest.mark.usefixtures('isolated_ros_env')
def test_rclpy_serialized_messages_are_read():
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage

    ok, buf = cv2.imencode('.png', _rgb()[..., ::-1])
    msg = CompressedImage(format='bgr8; png compressed bgr8')
    msg.header.frame_id = 'cam0_optical'
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    msg.data = buf.tobytes()
    raw = serialize_message(msg)
    for c in (read_compressed_cdr(raw), compressed_from_msg(deserialize_message(raw, CompressedImage))):
        assert (c.stamp_ns, c.frame_id, c.format) == (12_000_000_345, 'cam0_optical', msg.format)
        np.testing.assert_array_equal(compressed_to_rgb8(c), _rgb())
    empty = CompressedImage(format='jpeg')
    with pytest.raises(ImageConversionError, match='holds no data'):
        compressed_to_rgb8(compressed_from_msg(empty))


def _encoded(image: np.ndarray, ext: str, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize('case', ['png_rgb', 'png_grey', 'png_bgra', 'png_16bit', 'jpeg', 'jpeg_grey',
                                  'jpeg_progressive', 'jpeg_comment'])
def test_size_from_the_header_matches_the_decoded_size(case):
    image = np.zeros((37, 53, 3), np.uint8)
    image[5:20, 7:30] = 200
    if case == 'png_rgb':
        data = _encoded(image, '.png')
    elif case == 'png_grey':
        data = _encoded(image[..., 0], '.png')
    elif case == 'png_bgra':
        data = _encoded(np.dstack([image, image[..., :1]]), '.png')
    elif case == 'png_16bit':
        data = _encoded(image[..., 0].astype(np.uint16) * 300, '.png')
    elif case == 'jpeg':
        data = _encoded(image, '.jpg')
    elif case == 'jpeg_grey':
        data = _encoded(image[..., 0], '.jpg')
    elif case == 'jpeg_progressive':
        data = _encoded(image, '.jpg', [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
        assert b'\xff\xc2' in data  # SOF2
    else:  # a comment and an application segment before the frame header are skipped by their lengths
        plain = _encoded(image, '.jpg')
        fake_sof = b'\xff\xc0\x00\x11\x08\x09\x09\x09\x09'  # inside the segment: not a frame header
        data = plain[:2] + b'\xff\xfe\x00\x07hello' + b'\xff\xe1\x00\x0b' + fake_sof + plain[2:]
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    size = compressed_size(CompressedData(0, '', 'x', data))
    assert size == (decoded.shape[1], decoded.shape[0]) == (53, 37)


def test_size_of_a_small_file_holding_a_huge_image_is_read_without_decoding():
    png = png_of_zeros(20000, 20000)
    assert len(png) < 100_000  # 1.2 GB once decoded as RGB
    assert compressed_size(CompressedData(0, '', 'png', png)) == (20000, 20000)
    assert compressed_size(CompressedData(0, '', 'jpeg', memoryview(jpeg_claiming(20000, 30000)))) == \
        (20000, 30000)


@pytest.mark.parametrize('data', [b'', b'not an image', b'\x89PNG\r\n\x1a\n\x00\x00',
                                  b'\xff\xd8\xff\xda\x00\x08', b'\xff\xd8\xff\xe0\x00',
                                  b'\xff\xd8\x00\x00\x00\x00'])
def test_size_is_none_when_the_header_does_not_say(data):
    assert compressed_size(CompressedData(0, '', 'jpeg', data)) is None
