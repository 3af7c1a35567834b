"""sensor_msgs/Image <-> numpy without cv_bridge.

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

Reading honours ``step`` (rows padded beyond ``width * pixel size``) and ``is_bigendian`` (multi-byte
data is converted to native byte order). Writing produces unpadded, little-endian data.

Speed: rclpy hands ``msg.data`` over as ``array.array('B')``. Reading wraps it with ``np.frombuffer``
(no copy). Writing fills an ``array.array('B')`` from the array's memory in one copy; assigning an
ndarray (or a memoryview) to ``msg.data`` instead iterates element by element and costs hundreds of ms
for a full-HD frame.
"""
from __future__ import annotations

import array
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from metric3d_ros.ros.cdr import image_cdr


class ImageConversionError(ValueError):
    """An Image message (or an array to publish) cannot be converted: unsupported or malformed."""


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

# Colour encodings accepted as network input, with the OpenCV conversion to RGB (None: already RGB).
_TO_RGB: dict[str, int | None] = {
    'rgb8': None,
    'bgr8': cv2.COLOR_BGR2RGB,
    'rgba8': cv2.COLOR_RGBA2RGB,
    'bgra8': cv2.COLOR_BGRA2RGB,
    'mono8': cv2.COLOR_GRAY2RGB,
}


def encoding_info(encoding: str) -> EncodingInfo:
    """Layout of ``encoding``; raises ``ImageConversionError`` naming the supported encodings."""
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageConversionError(
            f'unsupported image encoding {encoding!r}; supported: {", ".join(ENCODINGS)}'
        ) from None


def data_as_uint8(data: object) -> np.ndarray:
    """msg.data as a flat uint8 array, without a copy for buffer objects (array.array, bytes)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        # A plain list of ints (messages built by hand without field conversion).
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_to_array(msg: Image) -> np.ndarray:
    """The pixels of ``msg`` as (H, W) or (H, W, C) in native byte order (see the module table).

    Returns a view of ``msg.data`` when no conversion is needed (little-endian data on a little-endian
    host, 1-byte encodings): copy it before changing it if the message is still in use. Padded rows
    give a non-contiguous view; call ``np.ascontiguousarray`` where contiguity matters.
    """
    info = encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * info.pixel_bytes
    if step < row_bytes:
        raise ImageConversionError(
            f'Image step {step} B is smaller than width {width} x {info.pixel_bytes} B per pixel '
            f'({msg.encoding}) = {row_bytes} B'
        )
    buf = data_as_uint8(msg.data)
    needed = step * height
    if buf.size < needed:
        raise ImageConversionError(
            f'Image data holds {buf.size} B but step {step} B x height {height} needs {needed} B'
        )
    rows = buf[:needed].reshape(height, step)[:, :row_bytes]
    wire = info.dtype.newbyteorder('>' if msg.is_bigendian else '<')
    # A view even for odd steps: numpy handles unaligned rows; a byte swap below copies anyway.
    pixels = rows if info.dtype.itemsize == 1 else rows.view(wire)
    if not wire.isnative:
        pixels = pixels.astype(info.dtype)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    return pixels.reshape(shape)


def _little_endian(arr: np.ndarray) -> np.ndarray:
    """``arr`` with little-endian elements (no copy when it already is)."""
    return arr.astype(arr.dtype.newbyteorder('<'), copy=False)


def array_bytes(arr: np.ndarray) -> array.array:
    """The memory of ``arr`` (C order) as ``array.array('B')``, the type rclpy stores in uint8[] fields."""
    contiguous = np.ascontiguousarray(arr)
    out = array.array('B')
    out.frombytes(memoryview(contiguous.reshape(-1)).cast('B'))
    return out


def _image_layout(arr: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """``arr`` checked against ``encoding`` and made little endian, and the row step in bytes."""
    info = encoding_info(encoding)
    arr = np.asarray(arr)
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
    arr = _little_endian(arr)
    return arr, int(arr.shape[1]) * info.pixel_bytes


def array_to_image(arr: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """An Image message holding ``arr`` with ``encoding`` (unpadded rows, ``is_bigendian`` 0).

    ``arr`` must already have the encoding's element type (no silent casts): uint8 for 8-bit
    encodings, uint16 for mono16/16UC1, float32 for 32FC1/32FC3; shape (H, W) or (H, W, 1) for one channel,
    (H, W, C) otherwise. ``header`` is copied into the message (default: an empty header).
    """
    arr, step = _image_layout(arr, encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = array_bytes(arr)
    return msg


def array_to_image_cdr(arr: np.ndarray, encoding: str, header: Header) -> bytes:
    """``array_to_image`` as serialized bytes (``cdr.image_cdr``: one copy of the pixels), for
    ``Publisher.publish(bytes)``."""
    arr, step = _image_layout(arr, encoding)
    return image_cdr(header, int(arr.shape[0]), int(arr.shape[1]), encoding, step, arr)


def image_to_rgb8(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB for the network from an rgb8, bgr8, rgba8, bgra8 or mono8 image.

    For unpadded rgb8 the result is a view of ``msg.data``; otherwise it is a new contiguous array.
    """
    if msg.encoding not in _TO_RGB:
        raise ImageConversionError(
            f'a colour image is required (one of {", ".join(_TO_RGB)}), got encoding {msg.encoding!r}; '
            'depth (16UC1, 32FC1), 16-bit and generic 8UCn images have no known colour order'
        )
    pixels = image_to_array(msg)
    code = _TO_RGB[msg.encoding]
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)
