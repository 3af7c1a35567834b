"""sensor_msgs/CompressedImage (jpeg, png): CDR bytes or message objects -> RGB, and RGB -> CDR bytes.

``format`` follows compressed_image_transport: ``"<original encoding>; <jpeg|png> compressed <encoding
passed to the encoder>"``, e.g. ``"rgb8; jpeg compressed bgr8"``. Older publishers and cameras write just
``"jpeg"`` or ``"png"``. The encoder (OpenCV ``imencode``) treats its 3-channel input as BGR, so the colour
order of the decoded pixels is the encoding after ``compressed``: bgr8 (the usual case, and the default when
the format names none) needs swapping to RGB, rgb8 does not. Depth streams (``compressedDepth``) are not
colour images and are rejected.

``compressed_size`` reads the width and height from the file's header (PNG IHDR, JPEG SOF) without decoding:
a receiver checks size limits before it decodes (a small PNG of zeros can describe a 20000x20000 image, 1.2 GB
once decoded).

Usage::

    data = read_compressed_cdr(raw)                             # or compressed_from_msg(msg)
    size = compressed_size(data)                                # (width, height), or None if not readable
    rgb = compressed_to_rgb8(data)
    raw = compressed_cdr(rgb, stamp_ns, 'cam_optical_frame', format='png')
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from metric3d_ros.codec.cdr import CdrReader, CdrWriter, as_uint8, stamp_ns_of
from metric3d_ros.codec.image import ImageConversionError

_CODECS = ('jpeg', 'png')
_RGB_ORDER = ('rgb8', 'rgba8', 'rgb16', 'rgba16')


@dataclass(frozen=True, eq=False)
class CompressedData:
    """The fields of one sensor_msgs/CompressedImage; ``data`` (the encoded file) is not copied."""

    stamp_ns: int
    frame_id: str
    format: str
    data: memoryview | bytes | np.ndarray


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


def read_compressed_cdr(raw: bytes | memoryview) -> CompressedData:
    """The fields of a serialized sensor_msgs/CompressedImage (``data`` a view into ``raw``); CdrError on
    bad bytes."""
    r = CdrReader(raw)
    stamp_ns, frame_id = r.header()
    fmt = r.string()
    return CompressedData(stamp_ns, frame_id, fmt, r.octets())


def compressed_from_msg(msg: object) -> CompressedData:
    """The fields of a sensor_msgs/CompressedImage message object (rclpy or rosbags; duck-typed)."""
    return CompressedData(stamp_ns_of(msg.header), str(msg.header.frame_id), str(msg.format), msg.data)


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...); not DHT, JPG, DAC."""
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
"""Markers without a length field (TEM, RSTn, SOI, EOI)."""


def compressed_size(c: CompressedData) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG or JPEG from its header (PNG IHDR, JPEG SOF), without decoding; None when
    the data is neither or the header does not say (a JPEG whose height comes later in a DNL marker). A JPEG's
    markers before its frame header are skipped by their lengths, not read."""
    data = as_uint8(c.data)
    head = bytes(data[:33])
    if head.startswith(_PNG_SIGNATURE):
        if len(head) < 24 or head[12:16] != b'IHDR':
            return None
        return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')
    if not head.startswith(b'\xff\xd8'):
        return None
    pos, size = 2, data.size
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return None
        marker = int(data[pos + 1])
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        length = int(data[pos + 2]) << 8 | int(data[pos + 3])
        if marker in _JPEG_SOF:
            if length < 7 or pos + 9 > size:
                return None
            height = int(data[pos + 5]) << 8 | int(data[pos + 6])
            width = int(data[pos + 7]) << 8 | int(data[pos + 8])
            return (width, height) if height > 0 else None
        if marker == 0xDA or length < 2:  # start of scan before any frame header, or a broken length
            return None
        pos += 2 + length
    return None


def compressed_to_rgb8(c: CompressedData) -> np.ndarray:
    """Decode jpeg/png to (H, W, 3) uint8 RGB (grey replicated to 3 channels, alpha dropped).

    Raises ``ImageConversionError`` for compressedDepth formats, empty or undecodable data, and images
    that do not decode to 8-bit channels.
    """
    fmt = parse_compressed_format(c.format)
    data = as_uint8(c.data)
    if data.size == 0:
        raise ImageConversionError(f'CompressedImage (format {c.format!r}) holds no data')
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageConversionError(
            f'could not decode {data.size} B of CompressedImage data (format {c.format!r}) as jpeg or png'
        )
    if pixels.dtype != np.uint8:
        raise ImageConversionError(
            f'CompressedImage (format {c.format!r}) decodes to {pixels.dtype} pixels; a colour '
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
        f'CompressedImage (format {c.format!r}) decodes to {channels} channels; expected 1, 3 or 4'
    )


def compressed_cdr(image_rgb: np.ndarray, stamp_ns: int, frame_id: str, format: str = 'jpeg',
                   jpeg_quality: int = 95) -> bytes:
    """A serialized sensor_msgs/CompressedImage of an (H, W, 3) uint8 RGB image, as
    compressed_image_transport writes it: the image encoded as BGR, format ``"rgb8; <format> compressed
    bgr8"``. ``format``: 'jpeg' (``jpeg_quality`` 0-100) or 'png'; ``ImageConversionError`` otherwise."""
    rgb = np.asarray(image_rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f'image_rgb must be (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}')
    if format not in _CODECS:
        raise ImageConversionError(f"format must be 'jpeg' or 'png', got {format!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if format == 'jpeg' else []
    ok, encoded = cv2.imencode('.jpg' if format == 'jpeg' else '.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               params)
    if not ok:
        raise ImageConversionError(f'OpenCV could not encode a {rgb.shape} image as {format}')
    w = CdrWriter()
    w.header(stamp_ns, frame_id)
    w.string(f'rgb8; {format} compressed bgr8')
    w.octets(encoded)
    return w.bytes()
