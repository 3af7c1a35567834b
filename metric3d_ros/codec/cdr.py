"""Plain CDR (XCDR1) of ROS 2 messages, without rclpy: a writer, a reader and ``read_header``.

Format, as ROS 2 middlewares (Fast DDS, Cyclone DDS, Zenoh) serialize ROS types: a 4-byte encapsulation header
(``00 01 00 00`` little endian; ``00 00 00 00`` big endian, read but never written), then the fields in
declaration order. Each primitive is aligned to its size (float64 to 8) relative to the end of the
encapsulation header; a string is a uint32 length that counts its terminating NUL, the UTF-8 bytes and the
NUL; a sequence is a uint32 count and the elements; a fixed array is its elements alone. A nested message
(Header, Time, RegionOfInterest, PointField) is its fields inline.

Every message type of this codec starts with a ``std_msgs/Header`` (``stamp.sec`` int32, ``stamp.nanosec``
uint32, ``frame_id`` string), so ``read_header`` gives the stamp and frame of any of them.

The writer builds the bytes with one copy of the large buffers (``b''.join`` of the pieces), for
``Publisher.publish(bytes)`` (rclpy's serialized publishing) and ``BagWriter.write_raw``. The reader takes
``bytes``, ``bytearray`` or a ``memoryview`` (a raw subscription's message, a bag record) and returns views
into it for byte sequences, never copies of them.
"""
from __future__ import annotations

import struct

import numpy as np

ENCAPSULATION_CDR_LE = b'\x00\x01\x00\x00'
_ENCAPSULATION_ORDER = {b'\x00\x01': '<', b'\x00\x00': '>'}
_NS_PER_S = 1_000_000_000
_INT32_MAX = 2**31 - 1


class CdrError(ValueError):
    """Bytes that are not a CDR message of the expected type (truncated, malformed, other encapsulation),
    or values a message cannot carry (e.g. a negative stamp)."""


def split_stamp_ns(stamp_ns: int) -> tuple[int, int]:
    """(sec, nanosec) of a ``builtin_interfaces/Time`` for ``stamp_ns``; CdrError outside 0 .. 2**31 - 1 s."""
    sec, nanosec = divmod(int(stamp_ns), _NS_PER_S)
    if stamp_ns < 0 or sec > _INT32_MAX:
        raise CdrError(f'stamps must be in [0, 2**31) s, got {stamp_ns} ns')
    return sec, nanosec


def as_uint8(data: object) -> np.ndarray:
    """A byte sequence as a flat uint8 array: a view of buffer objects (memoryview, bytes, array.array, a
    contiguous numpy array), a copy of anything else (a list of ints in a message built by hand)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)


class CdrWriter:
    """Collects a little-endian CDR message; ``bytes()`` joins the pieces (one copy of large buffers).

    Usage: ``w = CdrWriter(); w.header(stamp_ns, frame_id); w.u32(...); ...; raw = w.bytes()``.
    """

    def __init__(self) -> None:
        self.parts: list = [ENCAPSULATION_CDR_LE]
        self.offset = 0  # position relative to the end of the encapsulation header

    def _align(self, size: int) -> None:
        pad = -self.offset % size
        if pad:
            self.parts.append(b'\x00' * pad)
            self.offset += pad

    def _put(self, fmt: str, size: int, value) -> None:
        self._align(size)
        self.parts.append(struct.pack(fmt, value))
        self.offset += size

    def u8(self, value: int) -> None:
        """A uint8, byte, char or bool."""
        self._put('<B', 1, int(value))

    def u32(self, value: int) -> None:
        self._put('<I', 4, int(value))

    def i32(self, value: int) -> None:
        self._put('<i', 4, int(value))

    def string(self, value: str) -> None:
        raw = str(value).encode('utf-8') + b'\x00'
        self.u32(len(raw))
        self.parts.append(raw)
        self.offset += len(raw)

    def f64_array(self, values, sequence: bool) -> None:
        """float64 values: a sequence (count first) when ``sequence``, else a fixed array."""
        arr = np.ascontiguousarray(values, dtype='<f8').reshape(-1)
        if sequence:
            self.u32(arr.size)
        if arr.size:
            self._align(8)
            self.parts.append(arr.tobytes())
            self.offset += arr.nbytes

    def octets(self, data) -> None:
        """A uint8[] sequence holding the memory of ``data`` (a numpy array in C order, or bytes)."""
        view = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))  # (also for empty arrays)
        self.u32(view.nbytes)
        self.parts.append(view)
        self.offset += view.nbytes

    def header(self, stamp_ns: int, frame_id: str) -> None:
        """A std_msgs/Header."""
        sec, nanosec = split_stamp_ns(stamp_ns)
        self.i32(sec)
        self.u32(nanosec)
        self.string(frame_id)

    def bytes(self) -> bytes:
        return b''.join(self.parts)


class CdrReader:
    """Reads the fields of a CDR message in order; CdrError on truncated or malformed bytes."""

    def __init__(self, raw) -> None:
        try:
            self.raw = memoryview(raw).cast('B')
        except TypeError as exc:
            raise CdrError(f'CDR bytes must be a bytes-like object, got {type(raw).__name__}') from exc
        self.order = _ENCAPSULATION_ORDER.get(bytes(self.raw[:2]))  # (the options bytes vary)
        if len(self.raw) < 4 or self.order is None:
            raise CdrError(f'not a plain CDR message (encapsulation header {bytes(self.raw[:4]).hex()}; '
                           'expected 00010000 little endian or 00000000 big endian)')
        self.pos = 4

    @property
    def big_endian(self) -> bool:
        return self.order == '>'

    def take(self, size: int, align: int) -> int:
        """Offset in ``raw`` of the next ``size`` bytes aligned to ``align``; moves past them."""
        self.pos += -(self.pos - 4) % align
        start = self.pos
        if start + size > len(self.raw):
            raise CdrError(f'message truncated at byte {start} (needs {size} B more, has {len(self.raw)} B)')
        self.pos = start + size
        return start

    def u8(self) -> int:
        return self.raw[self.take(1, 1)]

    def u32(self) -> int:
        return struct.unpack_from(self.order + 'I', self.raw, self.take(4, 4))[0]

    def i32(self) -> int:
        return struct.unpack_from(self.order + 'i', self.raw, self.take(4, 4))[0]

    def string(self) -> str:
        size = self.u32()
        start = self.take(size, 1)
        if size == 0 or self.raw[start + size - 1] != 0:
            raise CdrError(f'malformed string at byte {start} (length {size} without a terminating NUL)')
        return bytes(self.raw[start:start + size - 1]).decode('utf-8', errors='replace')

    def f64_array(self, count: int | None = None) -> tuple[float, ...]:
        """A fixed float64 array of ``count`` values, or a sequence (count read first) when None."""
        if count is None:
            count = self.u32()
        if count == 0:
            return ()
        start = self.take(8 * count, 8)
        return struct.unpack_from(f'{self.order}{count}d', self.raw, start)

    def octets(self) -> memoryview:
        """A uint8[] sequence as a view into the message (no copy)."""
        size = self.u32()
        start = self.take(size, 1)
        return self.raw[start:start + size]

    def header(self) -> tuple[int, str]:
        """A std_msgs/Header as (stamp_ns, frame_id)."""
        sec, nanosec = self.i32(), self.u32()
        return sec * _NS_PER_S + nanosec, self.string()


def read_header(raw: bytes | memoryview) -> tuple[int, str]:
    """(stamp_ns, frame_id) of a serialized message whose first field is a std_msgs/Header (Image,
    CompressedImage, CameraInfo, PointCloud2, ...), without reading the rest; CdrError on bad bytes."""
    return CdrReader(raw).header()


def stamp_ns_of(header: object) -> int:
    """Nanoseconds of a message object's header stamp (rclpy or rosbags: ``stamp.sec``, ``stamp.nanosec``)."""
    return int(header.stamp.sec) * _NS_PER_S + int(header.stamp.nanosec)
