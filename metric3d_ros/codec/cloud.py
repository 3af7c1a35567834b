"""sensor_msgs/PointCloud2: organized xyz / xyzrgb clouds in depth_image_proc's layout, unorganized fused
clouds, and back to numpy.

Layout written (``PointCloud2Modifier::setPointCloud2FieldsByString`` as used by depth_image_proc's
point_cloud_xyz / point_cloud_xyzrgb nodes):

- xyz:    x, y, z FLOAT32 at offsets 0, 4, 8; 4 padding bytes; ``point_step`` 16.
- xyzrgb: x, y, z FLOAT32 at 0, 4, 8; ``rgb`` FLOAT32 at 16 whose bits are ``0x00RRGGBB``; 12 padding
  bytes; ``point_step`` 32.

The cloud is organized (``height`` = image rows, ``width`` = image columns), ``is_dense`` False (invalid
points are NaN), ``is_bigendian`` False, ``row_step = point_step * width``; padding bytes are 0.

Unorganized clouds (``unorganized_cloud_cdr``, the fused multi-camera cloud): ``height`` 1, ``width`` N,
``is_dense`` True (no NaN point), x, y, z FLOAT32 at 0, 4, 8, ``camera`` UINT32 at 12 (the point's camera
index; 0 when no index is given), ``point_step`` 16; with colour ``rgb`` FLOAT32 (``0x00RRGGBB`` bits) at 16,
``point_step`` 20.

Reading accepts any FLOAT32 x, y, z (and ``rgb`` / ``rgba`` FLOAT32 or UINT32) fields at any offsets,
padded rows and big-endian data; other scalar fields (UINT8, UINT16, UINT32, INT32, FLOAT32) come back in
``CloudData.channels``.

Usage::

    raw = pointcloud2_cdr(points_xyz, stamp_ns, 'cam_optical_frame', rgb=colours)
    cloud = read_pointcloud2_cdr(raw)          # or pointcloud2_from_msg(msg)
    cloud.xyz, cloud.rgb
    raw = unorganized_cloud_cdr(xyz, stamp_ns, 'base_link', camera_index=index)   # fused cloud
    read_pointcloud2_cdr(raw).channels['camera']
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from metric3d_ros.codec.cdr import CdrReader, CdrWriter, as_uint8, stamp_ns_of
from metric3d_ros.core.geometry.cloud import pack_rgb_float, padded_xyz, unpack_rgb_float

POINT_STEP_XYZ_B = 16
POINT_STEP_XYZRGB_B = 32
RGB_OFFSET_B = 16
#: Unorganized (fused) clouds: x, y, z, camera; and with rgb.
POINT_STEP_FUSED_B = 16
POINT_STEP_FUSED_RGB_B = 20
CAMERA_FIELD = 'camera'
#: sensor_msgs/PointField datatypes used here.
UINT8 = 2
UINT16 = 4
INT32 = 5
UINT32 = 6
FLOAT32 = 7
_CHANNEL_DTYPES = {UINT8: 'u1', UINT16: 'u2', INT32: 'i4', UINT32: 'u4', FLOAT32: 'f4'}


class CloudConversionError(ValueError):
    """Arrays cannot be packed into, or a PointCloud2 cannot be read as, an xyz(rgb) cloud."""


@dataclass(frozen=True, eq=False)
class CloudData:
    """An organized cloud as arrays: xyz (H, W, 3) float32 metres (NaN invalid); rgb (H, W, 3) uint8 or None;
    channels: every other scalar field by name, (H, W) in its own dtype (e.g. ``camera`` of a fused cloud).
    An unorganized cloud (height 1) gives (1, N, ...)."""

    stamp_ns: int
    frame_id: str
    xyz: np.ndarray
    rgb: np.ndarray | None
    channels: Mapping[str, np.ndarray] = field(default_factory=dict)


def _cloud_layout(points_xyz: np.ndarray, rgb: np.ndarray | None) -> tuple[np.ndarray, list[tuple], int]:
    """The packed points (H, W, point_step / 4) float32, the fields (name, offset, datatype, count), the
    point step in bytes."""
    xyz = np.asarray(points_xyz)
    if xyz.ndim != 3 or xyz.shape[2] != 3 or xyz.dtype.kind != 'f':
        raise CloudConversionError(
            f'points_xyz must be a float array of shape (H, W, 3), got {xyz.dtype} {xyz.shape}'
        )
    height, width = xyz.shape[:2]
    point_step_b = POINT_STEP_XYZ_B if rgb is None else POINT_STEP_XYZRGB_B
    fields = [('x', 0, FLOAT32, 1), ('y', 4, FLOAT32, 1), ('z', 8, FLOAT32, 1)]
    padded = padded_xyz(xyz) if rgb is None else None
    if padded is not None:  # already 16-byte points (the engine's clouds): one copy into the message
        buf = padded
    else:
        buf = np.zeros((height, width, point_step_b // 4), dtype='<f4')
        buf[:, :, 0:3] = xyz
    if rgb is not None:
        colour = np.asarray(rgb)
        if colour.shape != (height, width, 3):
            raise CloudConversionError(
                f'rgb must have shape {(height, width, 3)} to match points_xyz, got {colour.shape}'
            )
        # Copy the packed bits as integers so no float conversion can touch them.
        buf.view('<u4')[:, :, RGB_OFFSET_B // 4] = pack_rgb_float(colour).view(np.uint32)
        fields.append(('rgb', RGB_OFFSET_B, FLOAT32, 1))
    return buf, fields, point_step_b


def pointcloud2_cdr(points_xyz: np.ndarray, stamp_ns: int, frame_id: str,
                    rgb: np.ndarray | None = None) -> bytes:
    """A serialized organized PointCloud2 from (H, W, 3) float xyz in metres (NaN = invalid; stored float32),
    one copy of the points. ``rgb``: optional (H, W, 3) uint8 in R, G, B order (xyzrgb layout).
    Raises ``CloudConversionError`` / ValueError for other arrays."""
    buf, fields, point_step_b = _cloud_layout(points_xyz, rgb)
    return _cloud_cdr(buf, fields, point_step_b, stamp_ns, frame_id, dense=False)


def _cloud_cdr(buf: np.ndarray, fields: list[tuple], point_step_b: int, stamp_ns: int, frame_id: str,
               dense: bool) -> bytes:
    """The serialized PointCloud2 of ``buf`` (height, width, point_step / 4) 4-byte words."""
    height, width = buf.shape[:2]
    w = CdrWriter()
    w.header(stamp_ns, frame_id)
    w.u32(height)
    w.u32(width)
    w.u32(len(fields))
    for name, offset, datatype, count in fields:
        w.string(name)
        w.u32(offset)
        w.u8(datatype)
        w.u32(count)
    w.u8(0)  # is_bigendian
    w.u32(point_step_b)
    w.u32(point_step_b * width)
    w.octets(buf)
    w.u8(1 if dense else 0)  # is_dense
    return w.bytes()


def unorganized_cloud_cdr(xyz: np.ndarray, stamp_ns: int, frame_id: str, *,
                          camera_index: np.ndarray | None = None, rgb: np.ndarray | None = None) -> bytes:
    """A serialized unorganized PointCloud2 (module docstring: x, y, z, camera [, rgb]) of (N, 3) float xyz
    in metres (finite), optional (N,) camera indices (non-negative integers) and (N, 3) uint8 colours.
    One copy of the points. Raises ``CloudConversionError`` for other arrays."""
    points = np.asarray(xyz)
    if points.ndim != 2 or points.shape[1] != 3 or points.dtype.kind != 'f':
        raise CloudConversionError(f'xyz must be a float array of shape (N, 3), got {points.dtype} '
                                   f'{points.shape}')
    n = points.shape[0]
    step_b = POINT_STEP_FUSED_B if rgb is None else POINT_STEP_FUSED_RGB_B
    buf = np.zeros((1, n, step_b // 4), dtype='<u4')
    buf.view('<f4')[0, :, 0:3] = points
    fields = [('x', 0, FLOAT32, 1), ('y', 4, FLOAT32, 1), ('z', 8, FLOAT32, 1), (CAMERA_FIELD, 12, UINT32, 1)]
    if camera_index is not None:
        index = np.asarray(camera_index)
        if index.shape != (n,) or index.dtype.kind not in 'ui' or (index.size and index.min() < 0):
            raise CloudConversionError(f'camera_index must be ({n},) non-negative integers, got '
                                       f'{index.dtype} {index.shape}')
        buf[0, :, 3] = index
    if rgb is not None:
        colour = np.asarray(rgb)
        if colour.shape != (n, 3):
            raise CloudConversionError(f'rgb must have shape {(n, 3)} to match xyz, got {colour.shape}')
        buf[0, :, 4] = pack_rgb_float(colour).view(np.uint32)
        fields.append(('rgb', RGB_OFFSET_B, FLOAT32, 1))
    return _cloud_cdr(buf, fields, step_b, stamp_ns, frame_id, dense=True)


def _field_values(points: np.ndarray, name: str, offset: int, datatype: int, count: int, big_endian: bool,
                  point_step_b: int) -> np.ndarray:
    if count != 1:
        raise CloudConversionError(f'field {name!r} has count {count}; only 1 is supported')
    order = '>' if big_endian else '<'
    if datatype == FLOAT32:
        dtype = np.dtype(order + 'f4')
    elif datatype == UINT32 and name in ('rgb', 'rgba'):
        dtype = np.dtype(order + 'u4')
    else:
        raise CloudConversionError(f'field {name!r} has datatype {datatype}; FLOAT32 ({FLOAT32}) is required')
    if offset + 4 > point_step_b:
        raise CloudConversionError(
            f'field {name!r} at offset {offset} does not fit in point_step {point_step_b}'
        )
    raw = points[:, :, offset:offset + 4].view(dtype)[:, :, 0]
    return raw.astype(dtype.newbyteorder('='))


def _cloud_arrays(height: int, width: int, fields: Sequence[tuple[str, int, int, int]], big_endian: bool,
                  point_step_b: int, row_step_b: int,
                  data: object) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    if row_step_b < width * point_step_b:
        raise CloudConversionError(
            f'row_step {row_step_b} B is smaller than width {width} x point_step {point_step_b} B'
        )
    buf = as_uint8(data)
    needed = row_step_b * height
    if buf.size < needed:
        raise CloudConversionError(
            f'PointCloud2 data holds {buf.size} B but row_step {row_step_b} B x height {height} '
            f'needs {needed} B'
        )
    points = buf[:needed].reshape(height, row_step_b)[:, :width * point_step_b].reshape(
        height, width, point_step_b
    )
    by_name = {field[0]: field for field in fields}
    missing = [name for name in ('x', 'y', 'z') if name not in by_name]
    if missing:
        raise CloudConversionError(f'PointCloud2 lacks field(s) {missing}; has {list(by_name)}')
    xyz = np.stack([_field_values(points, *by_name[n], big_endian, point_step_b) for n in ('x', 'y', 'z')],
                   axis=-1)
    colour_field = by_name.get('rgb', by_name.get('rgba'))
    rgb = None
    if colour_field is not None:
        bits = _field_values(points, *colour_field, big_endian, point_step_b)
        rgb = unpack_rgb_float(np.ascontiguousarray(bits).view(np.uint32).view(np.float32))
    channels = {}
    for name, offset, datatype, count in fields:
        if name in ('x', 'y', 'z', 'rgb', 'rgba') or datatype not in _CHANNEL_DTYPES or count != 1:
            continue
        size = int(_CHANNEL_DTYPES[datatype][1])
        if offset + size > point_step_b:
            raise CloudConversionError(f'field {name!r} at offset {offset} does not fit in point_step '
                                       f'{point_step_b}')
        dtype = np.dtype(('>' if big_endian else '<') + _CHANNEL_DTYPES[datatype])
        raw = np.ascontiguousarray(points[:, :, offset:offset + size]).view(dtype)[:, :, 0]
        channels[name] = raw.astype(dtype.newbyteorder('='))
    return xyz.astype(np.float32, copy=False), rgb, channels


def read_pointcloud2_cdr(raw: bytes | memoryview) -> CloudData:
    """x, y, z (and rgb / rgba if present, alpha dropped) of a serialized PointCloud2 (new arrays).

    Raises ``CdrError`` on bad bytes, ``CloudConversionError`` on clouds without FLOAT32 x, y, z or with
    inconsistent sizes.
    """
    r = CdrReader(raw)
    stamp_ns, frame_id = r.header()
    height, width = r.u32(), r.u32()
    fields = [(r.string(), r.u32(), r.u8(), r.u32()) for _ in range(r.u32())]
    big_endian, point_step_b, row_step_b = bool(r.u8()), r.u32(), r.u32()
    xyz, rgb, channels = _cloud_arrays(height, width, fields, big_endian, point_step_b, row_step_b,
                                       r.octets())
    return CloudData(stamp_ns, frame_id, xyz, rgb, channels)


def pointcloud2_from_msg(msg: object) -> CloudData:
    """``read_pointcloud2_cdr`` for a PointCloud2 message object (rclpy or rosbags; duck-typed)."""
    fields = [(str(f.name), int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields]
    xyz, rgb, channels = _cloud_arrays(int(msg.height), int(msg.width), fields, bool(msg.is_bigendian),
                                       int(msg.point_step), int(msg.row_step), msg.data)
    return CloudData(stamp_ns_of(msg.header), str(msg.header.frame_id), xyz, rgb, channels)
