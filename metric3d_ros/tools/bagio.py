"""rosbag2 reading and writing (sqlite3 and mcap) with the pure-Python ``rosbags`` library, without rclpy.

Messages are stored and returned as serialized CDR bytes; ``metric3d_ros.codec`` builds and reads them
(sensor_msgs Image, CompressedImage, CameraInfo and PointCloud2 are identical from Humble to Kilted, so
their CDR bytes are too). The typestore of a ROS 2 distribution (default Jazzy) supplies the message
definitions recorded in the bag. Reading::

    with BagReader(path) as reader:
        for message in reader.messages(['/cam/image']):
            rgb = image_to_rgb8(read_image_cdr(message.data))        # metric3d_ros.codec.image

Bags are written with rosbag2 metadata version 8 (readable by ROS 2 Jazzy and newer ``ros2 bag``).
"""
from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from metric3d_ros.codec.camera_info import camera_info_cdr
from metric3d_ros.codec.cloud import pointcloud2_cdr
from metric3d_ros.codec.compressed import compressed_cdr
from metric3d_ros.codec.image import depth_image_cdr, image_cdr
from metric3d_ros.core.geometry.camera_info import CameraInfoFields

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


class BagFormatError(ValueError):
    """A bag or topic cannot be read or written as asked."""


def typestore(distro: str = DEFAULT_DISTRO):
    """The rosbags typestore of a ROS 2 distribution ('humble', 'jazzy', 'kilted')."""
    try:
        return get_typestore(DISTROS[distro])
    except KeyError:
        raise BagFormatError(f'unknown ROS distribution {distro!r}; use one of {sorted(DISTROS)}') from None


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

    ``write_raw`` stores serialized CDR bytes; the ``write_<kind>`` methods serialize arrays with
    ``metric3d_ros.codec`` and take the message stamp, the log (receive) time defaulting to it so that a
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

    def write_raw(self, topic: str, msgtype: str, log_time_ns: int, data: bytes | memoryview) -> None:
        """Write serialized CDR bytes of ``msgtype`` (``metric3d_ros.codec``'s, or another bag's)."""
        if not self._open:
            raise BagFormatError('BagWriter is not open: use it as a context manager or call open()')
        self._writer.write(self._connection(topic, msgtype), int(log_time_ns), data)

    def write_image(self, topic: str, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str,
                    log_time_ns: int | None = None) -> None:
        """An Image of ``array`` (``codec.image.image_cdr``)."""
        self.write_raw(topic, IMAGE, _log_time(stamp_ns, log_time_ns),
                       image_cdr(array, encoding, stamp_ns, frame_id))

    def write_compressed(self, topic: str, image_rgb: np.ndarray, stamp_ns: int, frame_id: str,
                         codec: str = 'jpeg', jpeg_quality: int = 95, log_time_ns: int | None = None) -> None:
        """A CompressedImage of an RGB image (``codec.compressed.compressed_cdr``; ``codec``: jpeg or png)."""
        self.write_raw(topic, COMPRESSED_IMAGE, _log_time(stamp_ns, log_time_ns),
                       compressed_cdr(image_rgb, stamp_ns, frame_id, format=codec, jpeg_quality=jpeg_quality))

    def write_depth(self, topic: str, depth_m: np.ndarray, stamp_ns: int, frame_id: str,
                    log_time_ns: int | None = None) -> None:
        """A 32FC1 depth image in metres (``codec.image.depth_image_cdr``: values <= 0 become NaN)."""
        self.write_raw(topic, IMAGE, _log_time(stamp_ns, log_time_ns),
                       depth_image_cdr(depth_m, stamp_ns, frame_id))

    def write_camera_info(self, topic: str, info: CameraInfoFields, stamp_ns: int, frame_id: str,
                          log_time_ns: int | None = None) -> None:
        """A CameraInfo (``codec.camera_info.camera_info_cdr``)."""
        self.write_raw(topic, CAMERA_INFO, _log_time(stamp_ns, log_time_ns),
                       camera_info_cdr(info, stamp_ns, frame_id))

    def write_points(self, topic: str, points_xyz_m: np.ndarray, stamp_ns: int, frame_id: str,
                     rgb: np.ndarray | None = None, log_time_ns: int | None = None) -> None:
        """An organized PointCloud2 (``codec.cloud.pointcloud2_cdr``)."""
        self.write_raw(topic, POINT_CLOUD2, _log_time(stamp_ns, log_time_ns),
                       pointcloud2_cdr(points_xyz_m, stamp_ns, frame_id, rgb=rgb))


def _log_time(stamp_ns: int, log_time_ns: int | None) -> int:
    return stamp_ns if log_time_ns is None else log_time_ns


@dataclass(frozen=True)
class BagMessage:
    """One stored message: topic, type, log time and its serialized CDR bytes."""

    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


class BagReader:
    """Reads a rosbag2 folder (sqlite3 or mcap, detected from its metadata); a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / 'metadata.yaml').is_file():
            raise BagFormatError(f'{self.path} is not a rosbag2 folder (no metadata.yaml)')
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
