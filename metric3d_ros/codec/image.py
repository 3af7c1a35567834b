"""sensor_msgs/Image: CDR bytes or message objects -> ``ImageData`` -> numpy, and numpy -> CDR bytes.

Supported encodings (REP 118 names and the generic OpenCV aliases):

=========  =======  ========  ===========================
encoding   dtype    channels  array shape
=========  =======  ========  ===========================
rgb8       uint8    3         (H, W, 3)
bgr8       uint8    3         (H, W, 3)
rgba8      uint8    4         (H, W, 4)
bgra8      uint8    4         (H, W, 4)
mono8      uint8    1         (H, W)
mono16     uint16   1         (H, W)
16UC1      uint16   1         (H, W)
32FC1      float32  1         (H, W)
32FC3      float32  3         (H, W, 3)
8UC1       uint8    1         (H, W)
8UC3       uint8    3         (H, W, 3)
8UC4       uint8    4         (H, W, 4)
=========  =======  ========  ===========================

Reading honours ``step`` (rows padded beyond ``width * pixel size``) and ``is_bigendian`` (multi-byte data
is converted to native byte order); writing produces unpadded little-endian rows. Colour input for the
network: ``COLOUR_ENCODINGS`` (``image_to_rgb8``); depth (REP 117/118): 32FC1 metres with NaN invalid or
16UC1 millimetres with 0 invalid (``depth_image_cdr``, ``image_to_depth_m``).

Usage::

    image = read_image_cdr(raw)            # a raw subscription's bytes or a bag record: no pixel copy
    image = image_from_msg(msg)            # an rclpy or rosbags sensor_msgs/Image
    rgb = image_to_rgb8(image)             # (H, W, 3) uint8 RGB
    raw = image_cdr(depth_m, '32FC1', stamp_ns, 'cam_optical_frame')   # for Publisher.publish(bytes)
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from metric3d_ros.codec.cdr import CdrReader, CdrWriter, as_uint8, stamp_ns_of
from metric3d_ros.core.geometry.depth import decode_depth_16uc1, encode_depth_16uc1, encode_depth_32fc1

COLOUR_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')
#: Depth encodings ``depth_image_cdr`` writes; ``image_to_depth_m`` also reads mono16 (millimetres).
DEPTH_ENCODINGS = ('32FC1', '16UC1')


class ImageConversionError(ValueError):
    """An image (message or array) cannot be converted: unsupported encoding, wrong array, malformed data."""


@dataclass(frozen=True)
class EncodingInfo:
    """Pixel layout of one encoding: element type (native byte order) and channels per pixel."""

    dtype: np.dtype
    channels: int

    @property
    def pixel_bytes(self) -> int:
        """Bytes per pixel."""
        return self.dtype.itemsize * self.channels


_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)
_F32 = np.dtype(np.float32)

ENCODINGS: dict[str, EncodingInfo] = {
    'rgb8': EncodingInfo(_U8, 3),
    'bgr8': EncodingInfo(_U8, 3),
    'rgba8': EncodingInfo(_U8, 4),
    'bgra8': EncodingInfo(_U8, 4),
    'mono8': EncodingInfo(_U8, 1),
    'mono16': EncodingInfo(_U16, 1),
    '16UC1': EncodingInfo(_U16, 1),
    '32FC1': EncodingInfo(_F32, 1),
    '32FC3': EncodingInfo(_F32, 3),
    '8UC1': EncodingInfo(_U8, 1),
    '8UC3': EncodingInfo(_U8, 3),
    '8UC4': EncodingInfo(_U8, 4),
}

# OpenCV conversion of each colour encoding to RGB (None: already RGB).
_TO_RGB: dict[str, int | None] = {
    'rgb8': None,
    'bgr8': cv2.COLOR_BGR2RGB,
    'rgba8': cv2.COLOR_RGBA2RGB,
    'bgra8': cv2.COLOR_BGRA2RGB,
    'mono8': cv2.COLOR_GRAY2RGB,
}


@dataclass(frozen=True, eq=False)
class ImageData:
    """The fields of one sensor_msgs/Image; ``data`` holds the pixel rows as given (a view into the
    serialized message, ``array.array`` of an rclpy message, uint8 array of a rosbags message): not copied,
    so it is valid while its source is."""

    stamp_ns: int
    frame_id: str
    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: memoryview | bytes | np.ndarray


def encoding_info(encoding: str) -> EncodingInfo:
    """Layout of ``encoding``; raises ``ImageConversionError`` naming the supported encodings."""
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageConversionError(
            f'unsupported image encoding {encoding!r}; supported: {", ".join(ENCODINGS)}'
        ) from None


def read_image_cdr(raw: bytes | memoryview) -> ImageData:
    """The fields of a serialized sensor_msgs/Image; ``data`` is a view into ``raw`` (no pixel copy).

    Raises ``CdrError`` for bytes that are not an Image (truncated, malformed, unknown encapsulation);
    pixel layout problems surface in ``image_to_array`` / ``image_to_rgb8`` as ``ImageConversionError``.
    """
    r = CdrReader(raw)
    stamp_ns, frame_id = r.header()
    height, width, encoding = r.u32(), r.u32(), r.string()
    is_bigendian, step = bool(r.u8()), r.u32()
    return ImageData(stamp_ns, frame_id, height, width, encoding, is_bigendian, step, r.octets())


def image_from_msg(msg: object) -> ImageData:
    """The fields of a sensor_msgs/Image message object (rclpy or rosbags; duck-typed); ``data`` is not
    copied."""
    return ImageData(
        stamp_ns=stamp_ns_of(msg.header), frame_id=str(msg.header.frame_id), height=int(msg.height),
        width=int(msg.width), encoding=str(msg.encoding), is_bigendian=bool(msg.is_bigendian),
        step=int(msg.step), data=msg.data,
    )


def image_to_array(image: ImageData) -> np.ndarray:
    """The pixels as (H, W) or (H, W, C) of the encoding's dtype in native byte order (module table).

    Returns a view of ``image.data`` when no conversion is needed (little-endian data on a little-endian
    host, or 1-byte elements): read-only when the source is ``bytes`` (a raw subscription's message),
    otherwise copy it before changing it while the source is in use; padded rows give a non-contiguous
    view. Raises ``ImageConversionError`` for unsupported encodings, a step smaller than a
    row, or too little data.
    """
    info = encoding_info(image.encoding)
    height, width, step = int(image.height), int(image.width), int(image.step)
    row_bytes = width * info.pixel_bytes
    if step < row_bytes:
        raise ImageConversionError(
            f'Image step {step} B is smaller than width {width} x {info.pixel_bytes} B per pixel '
            f'({image.encoding}) = {row_bytes} B'
        )
    buf = as_uint8(image.data)
    needed = step * height
    if buf.size < needed:
        raise ImageConversionError(
            f'Image data holds {buf.size} B but step {step} B x height {height} needs {needed} B'
        )
    rows = buf[:needed].reshape(height, step)[:, :row_bytes]
    wire = info.dtype.newbyteorder('>' if image.is_bigendian else '<')
    # A view even for odd steps: numpy handles unaligned rows; a byte swap below copies anyway.
    pixels = rows if info.dtype.itemsize == 1 else rows.view(wire)
    if not wire.isnative:
        pixels = pixels.astype(info.dtype)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    return pixels.reshape(shape)


def image_to_rgb8(image: ImageData) -> np.ndarray:
    """(H, W, 3) uint8 RGB for the network from an rgb8, bgr8, rgba8, bgra8 or mono8 image.

    Contiguous; for unpadded rgb8 a view of ``image.data`` (read-only when that is ``bytes``), otherwise
    a new array. Raises
    ``ImageConversionError`` for other encodings (depth, 16-bit and generic 8UCn have no known colour
    order) and malformed images.
    """
    if image.encoding not in _TO_RGB:
        raise ImageConversionError(
            f'a colour image is required (one of {", ".join(COLOUR_ENCODINGS)}), got encoding '
            f'{image.encoding!r}; depth (16UC1, 32FC1), 16-bit and generic 8UCn images have no known '
            'colour order'
        )
    pixels = np.ascontiguousarray(image_to_array(image))
    code = _TO_RGB[image.encoding]
    return pixels if code is None else cv2.cvtColor(pixels, code)


def image_to_depth_m(image: ImageData) -> np.ndarray:
    """(H, W) float32 metres (a new array), NaN for invalid, from a depth image: 32FC1 metres (NaN, +-Inf
    and values <= 0 become NaN) or 16UC1 / mono16 millimetres (0 becomes NaN). ``ImageConversionError``
    for other encodings."""
    if image.encoding == '32FC1':
        depth = np.array(image_to_array(image), dtype=np.float32)
        with np.errstate(invalid='ignore'):
            depth[~(np.isfinite(depth) & (depth > 0.0))] = np.nan
        return depth
    if image.encoding in ('16UC1', 'mono16'):
        return decode_depth_16uc1(image_to_array(image))
    raise ImageConversionError(
        f'depth images must be 32FC1 (metres) or 16UC1 / mono16 (millimetres), got {image.encoding!r}'
    )


def _image_layout(array: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """``array`` checked against ``encoding`` and made little endian, and the row step in bytes."""
    info = encoding_info(encoding)
    arr = np.asarray(array)
    if arr.dtype.kind != info.dtype.kind or arr.dtype.itemsize != info.dtype.itemsize:
        raise ImageConversionError(
            f'encoding {encoding} needs a {info.dtype.name} array, got {arr.dtype}; convert it first '
            f'(e.g. arr.astype(np.{info.dtype.name}))'
        )
    if info.channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    expected_ndim = 2 if info.channels == 1 else 3
    if arr.ndim != expected_ndim or (info.channels > 1 and arr.shape[2] != info.channels):
        want = '(H, W)' if info.channels == 1 else f'(H, W, {info.channels})'
        raise ImageConversionError(f'encoding {encoding} needs an array of shape {want}, got {arr.shape}')
    arr = arr.astype(arr.dtype.newbyteorder('<'), copy=False)
    return arr, int(arr.shape[1]) * info.pixel_bytes


def image_cdr(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> bytes:
    """A serialized sensor_msgs/Image of ``array`` (unpadded little-endian rows, one copy of the pixels),
    for ``Publisher.publish(bytes)`` or ``BagWriter.write_raw``.

    ``array`` must already have the encoding's element type (no silent casts; any byte order): uint8 for
    8-bit encodings, uint16 for mono16/16UC1, float32 for 32FC1/32FC3; shape (H, W) or (H, W, 1) for one
    channel, (H, W, C) otherwise. Raises ``ImageConversionError`` for other arrays, ``CdrError`` for a
    stamp outside [0, 2**31) s.
    """
    arr, step = _image_layout(array, encoding)
    w = CdrWriter()
    w.header(stamp_ns, frame_id)
    w.u32(arr.shape[0])
    w.u32(arr.shape[1])
    w.string(encoding)
    w.u8(0)
    w.u32(step)
    w.octets(arr)
    return w.bytes()


def depth_image_cdr(depth_m: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = '32FC1') -> bytes:
    """A serialized depth image from (H, W) float metres: 32FC1 (float32 metres; NaN invalid, values <= 0
    become NaN, +-Inf kept as REP 117 defines them) or 16UC1 (uint16 millimetres, 0 invalid; see
    ``core.geometry.depth.encode_depth_16uc1`` for rounding and range)."""
    if encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(f'depth encoding must be one of {DEPTH_ENCODINGS}, got {encoding!r}')
    depth = np.asarray(depth_m)
    if depth.ndim != 2 or depth.dtype.kind != 'f':
        raise ImageConversionError(f'depth_m must be a float (H, W) array, got {depth.dtype} {depth.shape}')
    pixels = encode_depth_32fc1(depth) if encoding == '32FC1' else encode_depth_16uc1(depth)
    return image_cdr(pixels, encoding, stamp_ns, frame_id)
