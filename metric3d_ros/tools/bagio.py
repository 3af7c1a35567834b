"""rosbag2 reading and writing (sqlite3 and mcap) with the pure-Python ``rosbags`` library, without rclpy.

Messages are ``rosbags`` message objects of a ROS 2 typestore (default Jazzy; sensor_msgs Image,
CompressedImage, CameraInfo and PointCloud2 are identical from Humble to Kilted, so their CDR bytes are
too). This module converts them to and from numpy:

- Image: rgb8, bgr8, rgba8, bgra8, mono8, 8UC1/3/4, mono16, 16UC1, 32FC1, 32FC3; ``step`` padding and
  ``is_bigendian`` honoured on reading; written unpadded little-endian.
- CompressedImage: jpeg / png, ``format`` as compressed_image_transport writes it ("rgb8; jpeg compressed
  bgr8"); decoded with OpenCV.
- Depth: 32FC1 metres (NaN, +-Inf and values <= 0 are invalid) or 16UC1 millimetres (0 invalid), read as
  float32 metres with NaN for invalid.
- CameraInfo <-> ``CameraInfoFields``; PointCloud2 xyz / xyzrgb in depth_image_proc's layout.

Bags are written with rosbag2 metadata version 8 (readable by ROS 2 Jazzy and newer ``ros2 bag``).
"""
from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from metric3d_ros.core.geometry.camera_info import CameraInfoFields, Roi
from metric3d_ros.core.geometry.cloud import pack_rgb_float
from metric3d_ros.core.geometry.depth import decode_depth_16uc1

Storage = Literal['sqlite3', 'mcap']
STORAGES: tuple[str, ...] = ('sqlite3', 'mcap')
_STORAGE_PLUGINS = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}
DISTROS: dict[str, Stores] = {
    'humble': Stores.ROS2_HUMBLE,
    'jazzy': Stores.ROS2_JAZZY,
    'kilted': Stores.ROS2_KILTED,
}
DEFAULT_DISTRO = 'jazzy'

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
POINT_CLOUD2 = 'sensor_msgs/msg/PointCloud2'
CLOCK = 'rosgraph_msgs/msg/Clock'

#: encoding -> (element dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    'rgb8': (np.dtype(np.uint8), 3),
    'bgr8': (np.dtype(np.uint8), 3),
    'rgba8': (np.dtype(np.uint8), 4),
    'bgra8': (np.dtype(np.uint8), 4),
    'mono8': (np.dtype(np.uint8), 1),
    '8UC1': (np.dtype(np.uint8), 1),
    '8UC3': (np.dtype(np.uint8), 3),
    '8UC4': (np.dtype(np.uint8), 4),
    'mono16': (np.dtype(np.uint16), 1),
    '16UC1': (np.dtype(np.uint16), 1),
    '32FC1': (np.dtype(np.float32), 1),
    '32FC3': (np.dtype(np.float32), 3),
}
_TO_RGB = {'rgb8': None, '8UC3': None, 'bgr8': cv2.COLOR_BGR2RGB, 'rgba8': cv2.COLOR_RGBA2RGB,
           'bgra8': cv2.COLOR_BGRA2RGB, 'mono8': cv2.COLOR_GRAY2RGB, '8UC1': cv2.COLOR_GRAY2RGB}


class BagFormatError(ValueError):
    """A bag, topic or message cannot be read or written as asked."""


def typestore(distro: str = DEFAULT_DISTRO):
    """The rosbags typestore of a ROS 2 distribution ('humble', 'jazzy', 'kilted')."""
    try:
        return get_typestore(DISTROS[distro])
    except KeyError:
        raise BagFormatError(f'unknown ROS distribution {distro!r}; use one of {sorted(DISTROS)}') from None


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise BagFormatError(f'unsupported image encoding {encoding!r}; supported: {", ".join(ENCODINGS)}')


# ---------------------------------------------------------------------------------------------------------
# Message construction


def make_header(store, stamp_ns: int, frame_id: str):
    """A std_msgs/Header with ``stamp_ns`` split into sec / nanosec."""
    if stamp_ns < 0:
        raise BagFormatError(f'stamps must be >= 0 ns, got {stamp_ns}')
    t = store.types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return t['std_msgs/msg/Header'](stamp=t['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec),
                                     frame_id=frame_id)


def header_stamp_ns(header: Any) -> int:
    """Nanoseconds of a header's stamp."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def image_msg(store, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    """A sensor_msgs/Image of ``array`` ((H, W) or (H, W, C) as ``encoding`` says), unpadded little-endian."""
    _check_encoding(encoding)
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(array)
    expected_ndim = 2 if channels == 1 else 3
    if arr.dtype != dtype or arr.ndim != expected_ndim or (channels > 1 and arr.shape[2] != channels):
        raise BagFormatError(
            f'{encoding} needs a {dtype} array with {channels} channel(s), got {arr.dtype} {arr.shape}'
        )
    height, width = arr.shape[:2]
    data = np.ascontiguousarray(arr, dtype=dtype.newbyteorder('<')).reshape(-1).view(np.uint8)
    return store.types[IMAGE](
        header=make_header(store, stamp_ns, frame_id), height=height, width=width, encoding=encoding,
        is_bigendian=0, step=width * channels * dtype.itemsize, data=data,
    )


def depth_msg(store, depth_m: np.ndarray, stamp_ns: int, frame_id: str):
    """A 32FC1 depth image in metres; non-finite and non-positive values are written as NaN (invalid)."""
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.ndim != 2:
        raise BagFormatError(f'depth must be (H, W), got shape {depth.shape}')
    out = depth.copy()
    with np.errstate(invalid='ignore'):
        out[~(np.isfinite(out) & (out > 0.0))] = np.nan
    return image_msg(store, out, '32FC1', stamp_ns, frame_id)


def compressed_image_msg(store, image_rgb: np.ndarray, stamp_ns: int, frame_id: str,
                         codec: str = 'jpeg', jpeg_quality: int = 95):
    """A sensor_msgs/CompressedImage of an RGB uint8 image, as compressed_image_transport writes it."""
    rgb = np.asarray(image_rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise BagFormatError(f'image_rgb must be (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}')
    if codec not in ('jpeg', 'png'):
        raise BagFormatError(f"codec must be 'jpeg' or 'png', got {codec!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if codec == 'jpeg' else []
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode('.jpg' if codec == 'jpeg' else '.png', bgr, params)
    if not ok:
        raise BagFormatError(f'OpenCV could not encode a {rgb.shape} image as {codec}')
    return store.types[COMPRESSED_IMAGE](
        header=make_header(store, stamp_ns, frame_id), format=f'rgb8; {codec} compressed bgr8',
        data=np.asarray(buf, dtype=np.uint8).reshape(-1),
    )


def camera_info_msg(store, info: CameraInfoFields, stamp_ns: int, frame_id: str):
    """A sensor_msgs/CameraInfo from ``CameraInfoFields``."""
    t = store.types
    roi = t['sensor_msgs/msg/RegionOfInterest'](
        x_offset=info.roi.x_offset, y_offset=info.roi.y_offset, height=info.roi.height,
        width=info.roi.width, do_rectify=info.roi.do_rectify,
    )
    return t[CAMERA_INFO](
        header=make_header(store, stamp_ns, frame_id), height=info.height, width=info.width,
        distortion_model=info.distortion_model, d=np.array(info.d, dtype=np.float64),
        k=np.array(info.k, dtype=np.float64), r=np.array(info.r, dtype=np.float64),
        p=np.array(info.p, dtype=np.float64), binning_x=info.binning_x, binning_y=info.binning_y, roi=roi,
    )


def pointcloud_msg(store, points_xyz_m: np.ndarray, stamp_ns: int, frame_id: str,
                   rgb: np.ndarray | None = None):
    """An organized PointCloud2 (depth_image_proc layout: xyz point_step 16, xyzrgb 32 with rgb at 16)."""
    xyz = np.asarray(points_xyz_m)
    if xyz.ndim != 3 or xyz.shape[2] != 3 or xyz.dtype.kind != 'f':
        raise BagFormatError(f'points must be a float (H, W, 3) array, got {xyz.dtype} {xyz.shape}')
    height, width = xyz.shape[:2]
    step_b = 16 if rgb is None else 32
    buf = np.zeros((height, width, step_b // 4), dtype='<f4')
    buf[:, :, :3] = xyz
    field_type = store.types['sensor_msgs/msg/PointField']
    fields = [field_type(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate('xyz')]
    if rgb is not None:
        colour = np.asarray(rgb)
        if colour.shape != (height, width, 3):
            raise BagFormatError(f'rgb must have shape {(height, width, 3)}, got {colour.shape}')
        buf.view('<u4')[:, :, 4] = pack_rgb_float(colour).view(np.uint32)
        fields.append(field_type(name='rgb', offset=16, datatype=7, count=1))
    return store.types[POINT_CLOUD2](
        header=make_header(store, stamp_ns, frame_id), height=height, width=width, fields=fields,
        is_bigendian=False, point_step=step_b, row_step=step_b * width,
        data=buf.reshape(-1).view(np.uint8), is_dense=False,
    )


def clock_msg(store, stamp_ns: int):
    """A rosgraph_msgs/Clock at ``stamp_ns``."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    t = store.types
    return t[CLOCK](clock=t['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec))


# ---------------------------------------------------------------------------------------------------------
# Message reading


def peek_stamp_ns(cdr: bytes | memoryview) -> int:
    """Header stamp (ns) of a serialized message that starts with a std_msgs/Header, without deserializing.

    CDR: 4 bytes of encapsulation header (second byte 1 = little-endian), then ``stamp.sec`` (int32) and
    ``stamp.nanosec`` (uint32). Image, CompressedImage, CameraInfo and PointCloud2 all start so.
    """
    raw = bytes(cdr[:12])
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        raise BagFormatError('not a CDR message starting with a std_msgs/Header')
    order = '<' if raw[1] == 1 else '>'
    sec = int(np.frombuffer(raw, dtype=f'{order}i4', count=1, offset=4)[0])
    nanosec = int(np.frombuffer(raw, dtype=f'{order}u4', count=1, offset=8)[0])
    return sec * 1_000_000_000 + nanosec


def image_to_array(msg: Any) -> np.ndarray:
    """Pixels of a sensor_msgs/Image as (H, W) or (H, W, C) in native byte order (a copy)."""
    _check_encoding(msg.encoding)
    dtype, channels = ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_b = width * channels * dtype.itemsize
    data = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if step < row_b or data.size < step * height:
        raise BagFormatError(
            f'Image {width}x{height} {msg.encoding}: step {step} B and {data.size} B of data do not hold '
            f'{height} rows of {row_b} B'
        )
    rows = data[: step * height].reshape(height, step)[:, :row_b]
    order = '>' if msg.is_bigendian else '<'
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).astype(dtype, copy=False)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return arr.reshape(shape).copy()


def image_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a colour or mono8 sensor_msgs/Image."""
    if msg.encoding not in _TO_RGB:
        raise BagFormatError(
            f'image encoding {msg.encoding!r} is not a colour image; use one of {", ".join(_TO_RGB)}'
        )
    arr = image_to_array(msg)
    code = _TO_RGB[msg.encoding]
    return arr if code is None else cv2.cvtColor(arr, code)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a jpeg / png sensor_msgs/CompressedImage."""
    fmt = str(msg.format)
    if 'compresseddepth' in fmt.lower():
        raise BagFormatError(f'CompressedImage format {fmt!r} is a depth stream, not a colour image')
    decoded = cv2.imdecode(np.frombuffer(memoryview(msg.data), dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise BagFormatError(f'CompressedImage ({fmt!r}, {len(msg.data)} B) could not be decoded')
    after = fmt.split('compressed', 1)[1].strip() if 'compressed' in fmt else ''
    rgb_order = after.startswith('rgb')
    return decoded if rgb_order else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def depth_to_metres(msg: Any) -> np.ndarray:
    """(H, W) float32 metres, NaN for invalid, from a 32FC1 (metres) or 16UC1/mono16 (millimetres) Image."""
    arr = image_to_array(msg)
    if msg.encoding == '32FC1':
        with np.errstate(invalid='ignore'):
            arr[~(np.isfinite(arr) & (arr > 0.0))] = np.nan
        return arr
    if msg.encoding in ('16UC1', 'mono16'):
        return decode_depth_16uc1(arr)
    raise BagFormatError(f'depth images must be 32FC1 (m) or 16UC1 (mm), got {msg.encoding!r}')


def camera_info_to_fields(msg: Any) -> CameraInfoFields:
    """``CameraInfoFields`` of a sensor_msgs/CameraInfo."""
    roi = msg.roi
    return CameraInfoFields(
        width=int(msg.width), height=int(msg.height), distortion_model=str(msg.distortion_model),
        d=tuple(np.asarray(msg.d, dtype=np.float64)), k=tuple(np.asarray(msg.k, dtype=np.float64)),
        r=tuple(np.asarray(msg.r, dtype=np.float64)), p=tuple(np.asarray(msg.p, dtype=np.float64)),
        binning_x=int(msg.binning_x), binning_y=int(msg.binning_y),
        roi=Roi(int(roi.x_offset), int(roi.y_offset), int(roi.height), int(roi.width), bool(roi.do_rectify)),
    )


def _cloud_points(msg: Any) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    offsets = {f.name: (int(f.offset), int(f.datatype)) for f in msg.fields}
    if any(name not in offsets or offsets[name][1] != 7 for name in 'xyz') or msg.is_bigendian:
        raise BagFormatError('PointCloud2 must have little-endian FLOAT32 x, y, z fields')
    height, width, step_b, row_b = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    data = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if step_b < 12 or row_b < width * step_b or data.size < row_b * height:
        raise BagFormatError(f'PointCloud2 {width}x{height}: point_step {step_b}, row_step {row_b} and '
                             f'{data.size} B of data are inconsistent')
    points = data[: row_b * height].reshape(height, row_b)[:, : width * step_b].reshape(height, width, step_b)
    return points, offsets


def _cloud_field(points: np.ndarray, offset_b: int, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(points[:, :, offset_b:offset_b + 4]).view(dtype)[:, :, 0]


def pointcloud_to_xyz(msg: Any) -> np.ndarray:
    """(H, W, 3) float32 x, y, z of a little-endian FLOAT32 PointCloud2 (any point_step / offsets)."""
    points, offsets = _cloud_points(msg)
    return np.stack([_cloud_field(points, offsets[n][0], '<f4') for n in 'xyz'], axis=-1).astype(np.float32)


def pointcloud_to_rgb(msg: Any) -> np.ndarray | None:
    """(H, W, 3) uint8 colours of a PointCloud2's packed ``rgb`` field (0x00RRGGBB), None without one."""
    points, offsets = _cloud_points(msg)
    if 'rgb' not in offsets:
        return None
    bits = _cloud_field(points, offsets['rgb'][0], '<u4')
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# Bags


def _prepare_output(path: Path, overwrite: bool) -> None:
    if path.exists():
        if not overwrite:
            raise BagFormatError(f'{path} exists; remove it or pass overwrite=True (--overwrite)')
        if not path.is_dir() or not ((path / 'metadata.yaml').exists() or not any(path.iterdir())):
            raise BagFormatError(f'{path} exists and is not a rosbag2 folder; refusing to overwrite it')
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)


class BagWriter:
    """Writes a rosbag2 (folder) in sqlite3 or mcap storage; a context manager.

    Every ``write_*`` method takes the message stamp; the log (receive) time defaults to the stamp, so a
    player reproduces the original timing. Connections are created on first use of a topic.
    """

    def __init__(self, path: str | Path, storage: str = 'sqlite3', distro: str = DEFAULT_DISTRO,
                 overwrite: bool = False) -> None:
        if storage not in _STORAGE_PLUGINS:
            raise BagFormatError(f'storage must be one of {STORAGES}, got {storage!r}')
        self.path = Path(path)
        self.storage = storage
        self.store = typestore(distro)
        _prepare_output(self.path, overwrite)
        self._writer = Writer(self.path, version=8, storage_plugin=_STORAGE_PLUGINS[storage])
        self._connections: dict[str, Any] = {}
        self._open = False

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if not self._open:
            self._writer.open()
            self._open = True

    def close(self) -> None:
        if self._open:
            self._writer.close()
            self._open = False

    def _connection(self, topic: str, msgtype: str):
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.store)
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagFormatError(f'topic {topic} already carries {conn.msgtype}, cannot also write {msgtype}')
        return conn

    def write_message(self, topic: str, msg: Any, log_time_ns: int) -> None:
        """Serialize ``msg`` (a message of this writer's typestore) to ``topic`` at ``log_time_ns``."""
        if not self._open:
            raise BagFormatError('BagWriter is not open: use it as a context manager or call open()')
        msgtype = msg.__msgtype__
        conn = self._connection(topic, msgtype)
        self._writer.write(conn, int(log_time_ns), self.store.serialize_cdr(msg, msgtype))

    def write_raw(self, topic: str, msgtype: str, log_time_ns: int, data: bytes | memoryview) -> None:
        """Write already serialized CDR bytes (e.g. copied from another bag)."""
        if not self._open:
            raise BagFormatError('BagWriter is not open: use it as a context manager or call open()')
        self._writer.write(self._connection(topic, msgtype), int(log_time_ns), data)

    def write_image(self, topic: str, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str,
                    log_time_ns: int | None = None) -> None:
        self.write_message(topic, image_msg(self.store, array, encoding, stamp_ns, frame_id),
                           stamp_ns if log_time_ns is None else log_time_ns)

    def write_compressed(self, topic: str, image_rgb: np.ndarray, stamp_ns: int, frame_id: str,
                         codec: str = 'jpeg', jpeg_quality: int = 95, log_time_ns: int | None = None) -> None:
        msg = compressed_image_msg(self.store, image_rgb, stamp_ns, frame_id, codec, jpeg_quality)
        self.write_message(topic, msg, stamp_ns if log_time_ns is None else log_time_ns)

    def write_depth(self, topic: str, depth_m: np.ndarray, stamp_ns: int, frame_id: str,
                    log_time_ns: int | None = None) -> None:
        self.write_message(topic, depth_msg(self.store, depth_m, stamp_ns, frame_id),
                           stamp_ns if log_time_ns is None else log_time_ns)

    def write_camera_info(self, topic: str, info: CameraInfoFields, stamp_ns: int, frame_id: str,
                          log_time_ns: int | None = None) -> None:
        self.write_message(topic, camera_info_msg(self.store, info, stamp_ns, frame_id),
                           stamp_ns if log_time_ns is None else log_time_ns)

    def write_points(self, topic: str, points_xyz_m: np.ndarray, stamp_ns: int, frame_id: str,
                     rgb: np.ndarray | None = None, log_time_ns: int | None = None) -> None:
        self.write_message(topic, pointcloud_msg(self.store, points_xyz_m, stamp_ns, frame_id, rgb),
                           stamp_ns if log_time_ns is None else log_time_ns)


@dataclass(frozen=True)
class BagMessage:
    """One stored message: topic, type, log time and its serialized CDR bytes."""

    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


class BagReader:
    """Reads a rosbag2 folder (sqlite3 or mcap, detected from its metadata); a context manager."""

    def __init__(self, path: str | Path, distro: str = DEFAULT_DISTRO) -> None:
        self.path = Path(path)
        if not (self.path / 'metadata.yaml').is_file():
            raise BagFormatError(f'{self.path} is not a rosbag2 folder (no metadata.yaml)')
        self.store = typestore(distro)
        self._reader = Reader(self.path)
        self._open = False

    def __enter__(self) -> BagReader:
        if not self._open:
            self._reader.open()
            self._open = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open:
            self._reader.close()
            self._open = False

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    @property
    def message_count(self) -> int:
        return int(self._reader.message_count)

    @property
    def storage(self) -> str:
        files = list(self.path.glob('*.mcap'))
        return 'mcap' if files else 'sqlite3'

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (all when None) in log-time order (ties in storage order)."""
        if not self._open:
            raise BagFormatError('BagReader is not open: use it as a context manager')
        wanted = None if topics is None else set(topics)
        conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        if wanted is not None:
            missing = wanted - {c.topic for c in conns}
            if missing:
                raise BagFormatError(
                    f'topics {sorted(missing)} are not in {self.path}; it has {sorted(self.topics)}'
                )
        if not conns:
            return
        for conn, log_time_ns, data in self._reader.messages(connections=conns):
            yield BagMessage(conn.topic, conn.msgtype, int(log_time_ns), bytes(data))

    def deserialize(self, message: BagMessage) -> Any:
        """The rosbags message object of a ``BagMessage``."""
        return self.store.deserialize_cdr(message.data, message.msgtype)
