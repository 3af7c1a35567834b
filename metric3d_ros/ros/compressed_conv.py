"""sensor_msgs/CompressedImage (jpeg, png) -> (H, W, 3) uint8 RGB for the network.

``format`` follows compressed_image_transport: ``"<original encoding>; <jpeg|png> compressed
<encoding passed to the encoder>"``, e.g. ``"rgb8; jpeg compressed bgr8"``. Older publishers and
cameras write just ``"jpeg"`` or ``"png"``. The encoder (OpenCV ``imencode``) treats its 3-channel
input as BGR, so the colour order of the decoded pixels is the encoding after ``compressed``: bgr8
(the usual case, and the default when the format names none) needs swapping to RGB, rgb8 does not.
Depth streams (``compressedDepth``) are not colour images and are rejected.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage

from metric3d_ros.ros.image_conv import ImageConversionError, data_as_uint8

_CODECS = ('jpeg', 'png')
_RGB_ORDER = ('rgb8', 'rgba8', 'rgb16', 'rgba16')


@dataclass(frozen=True)
class CompressedFormat:
    """Parsed ``CompressedImage.format``.

    original_encoding: encoding of the image before compression ('' when not stated).
    codec: 'jpeg', 'png' or '' when not stated (the decoder then detects it from the data).
    compressed_encoding: encoding handed to the encoder ('' when not stated: BGR order is assumed).
    """

    original_encoding: str
    codec: str
    compressed_encoding: str

    @property
    def rgb_order(self) -> bool:
        """True when decoded 3/4-channel pixels are already in R, G, B order."""
        return self.compressed_encoding in _RGB_ORDER


def parse_compressed_format(fmt: str) -> CompressedFormat:
    """Parse ``fmt`` (see the module docstring); raises ``ImageConversionError`` for depth formats."""
    text = fmt.strip()
    original = ''
    if ';' in text:
        original, text = (part.strip() for part in text.split(';', 1))
    words = text.split()
    if any(word.lower() == 'compresseddepth' for word in words):
        raise ImageConversionError(
            f'CompressedImage format {fmt!r} is a compressedDepth stream, not a colour image; '
            'subscribe to the colour image topic instead'
        )
    codec = ''
    compressed = ''
    for i, word in enumerate(words):
        lowered = word.lower()
        if lowered in _CODECS:
            codec = lowered
        elif lowered == 'jpg':
            codec = 'jpeg'
        elif lowered == 'compressed' and i + 1 < len(words):
            compressed = words[i + 1]
    if not original and not codec and len(words) == 1:
        # A bare encoding such as "bgr8" (no codec named).
        original = words[0]
    return CompressedFormat(original_encoding=original, codec=codec, compressed_encoding=compressed)


def compressed_to_rgb8(msg: CompressedImage) -> np.ndarray:
    """Decode a jpeg/png CompressedImage to (H, W, 3) uint8 RGB (grey images are replicated to 3 channels)."""
    fmt = parse_compressed_format(msg.format)
    data = data_as_uint8(msg.data)
    if data.size == 0:
        raise ImageConversionError(f'CompressedImage (format {msg.format!r}) holds no data')
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageConversionError(
            f'could not decode {data.size} B of CompressedImage data (format {msg.format!r}) '
            'as jpeg or png'
        )
    if pixels.dtype != np.uint8:
        raise ImageConversionError(
            f'CompressedImage (format {msg.format!r}) decodes to {pixels.dtype} pixels; a colour '
            'image with 8-bit channels is required'
        )
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels == 1:
        return cv2.cvtColor(pixels.reshape(pixels.shape[:2]), cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return pixels if fmt.rgb_order else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_RGBA2RGB if fmt.rgb_order else cv2.COLOR_BGRA2RGB)
    raise ImageConversionError(
        f'CompressedImage (format {msg.format!r}) decodes to {channels} channels; expected 1, 3 or 4'
    )
