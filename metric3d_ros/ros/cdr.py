"""Serialized (CDR) sensor_msgs/Image and PointCloud2 built straight from numpy arrays.

Publishing a message object makes rclpy fill a Python message (a copy of the array), convert it to a C
message (a copy) and serialize that (a copy) before the middleware copies the bytes into shared memory.
Here the serialized bytes are built from the array with one copy; ``Publisher.publish(bytes)`` (rclpy's raw
publishing, Humble and newer) then copies them into a ``std::string`` and the middleware into its payload
and shared memory, so the number of copies is about the same and the gain is the Python message building
and conversion: on the 2-core dev machine a 3.7 MB stride-2 cloud took 1.4 ms per publish instead of 1.7 ms,
a 720p 32FC1 depth image 2.5-2.7 ms either way (docs/NODE.md, scripts/bench_publish.py).

Format: plain CDR (XCDR1) little endian, the encapsulation ROS 2 middlewares use for ROS types: a 4-byte
header ``00 01 00 00``, then the fields in declaration order, each primitive aligned to its size relative
to the end of the header, strings as uint32 length (with the terminating NUL) + bytes + NUL, sequences as
uint32 count + elements. ``matches_middleware()`` checks the bytes against the middleware's own serializer
once (``rclpy.serialization.serialize_message``); the publishers fall back to message objects if they differ.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

_ENCAPSULATION_CDR_LE = b'\x00\x01\x00\x00'


class _Writer:
    """Collects the serialized pieces; ``bytes()`` joins them with one copy of the large buffers."""

    def __init__(self) -> None:
        self.parts: list = [_ENCAPSULATION_CDR_LE]
        self.offset = 0  # position relative to the end of the encapsulation header

    def _align(self, size: int) -> None:
        pad = -self.offset % size
        if pad:
            self.parts.append(b'\x00' * pad)
            self.offset += pad

    def u8(self, value: int) -> None:
        self.parts.append(struct.pack('<B', value))
        self.offset += 1

    def u32(self, value: int) -> None:
        self._align(4)
        self.parts.append(struct.pack('<I', value))
        self.offset += 4

    def i32(self, value: int) -> None:
        self._align(4)
        self.parts.append(struct.pack('<i', value))
        self.offset += 4

    def string(self, value: str) -> None:
        raw = value.encode('utf-8') + b'\x00'
        self.u32(len(raw))
        self.parts.append(raw)
        self.offset += len(raw)

    def octets(self, data) -> None:
        """A uint8[] sequence from a C-contiguous numpy array (or bytes)."""
        view = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))  # (also for empty arrays)
        self.u32(view.nbytes)
        self.parts.append(view)
        self.offset += view.nbytes

    def header(self, stamp_sec: int, stamp_nanosec: int, frame_id: str) -> None:
        self.i32(stamp_sec)
        self.u32(stamp_nanosec)
        self.string(frame_id)

    def bytes(self) -> bytes:
        return b''.join(self.parts)


def _contiguous(data: np.ndarray) -> np.ndarray:
    return data if data.flags.c_contiguous else np.ascontiguousarray(data)


def image_cdr(header, height: int, width: int, encoding: str, step: int, data: np.ndarray,
              is_bigendian: int = 0) -> bytes:
    """A serialized sensor_msgs/Image (``header``: a std_msgs/Header or anything with ``stamp.sec``,
    ``stamp.nanosec`` and ``frame_id``; ``data``: the pixel rows as a C-contiguous array)."""
    w = _Writer()
    w.header(int(header.stamp.sec), int(header.stamp.nanosec), str(header.frame_id))
    w.u32(height)
    w.u32(width)
    w.string(encoding)
    w.u8(is_bigendian)
    w.u32(step)
    w.octets(_contiguous(data))
    return w.bytes()


def pointcloud2_cdr(header, height: int, width: int, fields: Sequence[tuple[str, int, int, int]],
                    point_step: int, row_step: int, data: np.ndarray, is_dense: bool,
                    is_bigendian: bool = False) -> bytes:
    """A serialized sensor_msgs/PointCloud2; ``fields``: (name, offset, datatype, count) per PointField."""
    w = _Writer()
    w.header(int(header.stamp.sec), int(header.stamp.nanosec), str(header.frame_id))
    w.u32(height)
    w.u32(width)
    w.u32(len(fields))
    for name, offset, datatype, count in fields:
        w.string(name)
        w.u32(offset)
        w.u8(datatype)
        w.u32(count)
    w.u8(int(bool(is_bigendian)))
    w.u32(point_step)
    w.u32(row_step)
    w.octets(_contiguous(data))
    w.u8(int(bool(is_dense)))
    return w.bytes()


_MATCHES: bool | None = None


def matches_middleware() -> bool:
    """True when these serializers give the middleware's bytes for sample messages (checked once)."""
    global _MATCHES
    if _MATCHES is None:
        _MATCHES = _self_check()
    return _MATCHES


def _self_check() -> bool:
    """Sample messages serialized here must deserialize, with the middleware's own code, into the messages
    the message-object path builds, and have the middleware's length (padding bytes may differ: the
    middleware leaves them uninitialized)."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image, PointCloud2
    from std_msgs.msg import Header

    from metric3d_ros.ros.cloud_conv import xyz_to_pointcloud2, xyz_to_pointcloud2_cdr
    from metric3d_ros.ros.image_conv import array_to_image, array_to_image_cdr

    header = Header()
    header.stamp.sec, header.stamp.nanosec, header.frame_id = 1_700_000_000, 123_456_789, 'cam_optical_frame'
    points = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    colours = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    samples = [
        (Image, array_to_image(np.arange(15, dtype=np.float32).reshape(3, 5), '32FC1', header),
         array_to_image_cdr(np.arange(15, dtype=np.float32).reshape(3, 5), '32FC1', header)),
        (Image, array_to_image(np.arange(45, dtype=np.uint8).reshape(3, 5, 3), 'rgb8', header),
         array_to_image_cdr(np.arange(45, dtype=np.uint8).reshape(3, 5, 3), 'rgb8', header)),
        (PointCloud2, xyz_to_pointcloud2(points, header), xyz_to_pointcloud2_cdr(points, header)),
        (PointCloud2, xyz_to_pointcloud2(points, header, rgb=colours),
         xyz_to_pointcloud2_cdr(points, header, rgb=colours)),
    ]
    try:
        return all(deserialize_message(raw, kind) == msg and len(serialize_message(msg)) == len(raw)
                   for kind, msg, raw in samples)
    except Exception:  # noqa: BLE001 - any failure means: publish message objects
        return False


class CdrError(ValueError):
    """Serialized bytes that are not a little-endian CDR message of the expected type."""


class _Reader:
    def __init__(self, raw) -> None:
        self.raw = memoryview(raw).cast('B')
        if len(self.raw) < 4 or bytes(self.raw[:2]) != _ENCAPSULATION_CDR_LE[:2]:  # (options bytes vary)
            raise CdrError(f'not a little-endian CDR message (header {bytes(self.raw[:4]).hex()})')
        self.pos = 4

    def _take(self, size: int, align: int) -> int:
        self.pos += -(self.pos - 4) % align
        start = self.pos
        if start + size > len(self.raw):
            raise CdrError(f'message truncated at byte {start} ({len(self.raw)} bytes)')
        self.pos = start + size
        return start

    def u8(self) -> int:
        return self.raw[self._take(1, 1)]

    def u32(self) -> int:
        return struct.unpack_from('<I', self.raw, self._take(4, 4))[0]

    def i32(self) -> int:
        return struct.unpack_from('<i', self.raw, self._take(4, 4))[0]

    def string(self) -> str:
        size = self.u32()
        start = self._take(size, 1)
        if size == 0 or self.raw[start + size - 1] != 0:
            raise CdrError('malformed string')
        return bytes(self.raw[start:start + size - 1]).decode('utf-8', errors='replace')


class ImageHeader:
    """The fields of a serialized sensor_msgs/Image and where its pixel data lies (``parse_image_cdr``)."""

    __slots__ = ('stamp_sec', 'stamp_nanosec', 'frame_id', 'height', 'width', 'encoding', 'is_bigendian',
                 'step', 'data_offset', 'data_size')

    def __init__(self, **fields) -> None:
        for name, value in fields.items():
            setattr(self, name, value)


def parse_image_cdr(raw) -> ImageHeader:
    """Read a serialized sensor_msgs/Image without copying its pixels: the fields and the pixel data's byte
    range in ``raw``; raises ``CdrError`` for anything else (truncated, big-endian encapsulation)."""
    r = _Reader(raw)
    sec, nanosec, frame_id = r.i32(), r.u32(), r.string()
    height, width, encoding = r.u32(), r.u32(), r.string()
    is_bigendian, step = r.u8(), r.u32()
    size = r.u32()
    offset = r._take(size, 1)
    return ImageHeader(stamp_sec=sec, stamp_nanosec=nanosec, frame_id=frame_id, height=height, width=width,
                       encoding=encoding, is_bigendian=is_bigendian, step=step, data_offset=offset,
                       data_size=size)
