"""Organized sensor_msgs/PointCloud2 in depth_image_proc's layout, and back to numpy.

Layout (``PointCloud2Modifier::setPointCloud2FieldsByString`` as used by depth_image_proc's
point_cloud_xyz / point_cloud_xyzrgb nodes):

- xyz:    x, y, z FLOAT32 at offsets 0, 4, 8; 4 padding bytes; ``point_step`` 16.
- xyzrgb: x, y, z FLOAT32 at 0, 4, 8; ``rgb`` FLOAT32 at 16 whose bits are ``0x00RRGGBB``; 12 padding
  bytes; ``point_step`` 32.

The cloud is organized (``height`` = image rows, ``width`` = image columns), ``is_dense`` False
(invalid points are NaN), ``is_bigendian`` False, ``row_step = point_step * width``; padding bytes are 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from metric3d_ros.core.geometry.cloud import pack_rgb_float, padded_xyz, unpack_rgb_float
from metric3d_ros.ros.cdr import pointcloud2_cdr
from metric3d_ros.ros.image_conv import array_bytes, data_as_uint8

POINT_STEP_XYZ_B = 16
POINT_STEP_XYZRGB_B = 32
RGB_OFFSET_B = 16


class CloudConversionError(ValueError):
    """Arrays cannot be packed into, or a PointCloud2 cannot be read as, an organized xyz(rgb) cloud."""


def _cloud_layout(points_xyz_m: np.ndarray, rgb: np.ndarray | None) -> tuple[np.ndarray, list[tuple], int]:
    """The packed points (H, W, point_step / 4) float32, the fields (name, offset, datatype, count), the
    point step in bytes."""
    xyz = np.asarray(points_xyz_m)
    if xyz.ndim != 3 or xyz.shape[2] != 3 or xyz.dtype.kind != 'f':
        raise CloudConversionError(
            f'points_xyz_m must be a float array of shape (H, W, 3), got {xyz.dtype} {xyz.shape}'
        )
    height, width = xyz.shape[:2]
    point_step_b = POINT_STEP_XYZ_B if rgb is None else POINT_STEP_XYZRGB_B
    f32 = PointField.FLOAT32
    fields = [('x', 0, f32, 1), ('y', 4, f32, 1), ('z', 8, f32, 1)]
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
                f'rgb must have shape {(height, width, 3)} to match points_xyz_m, got {colour.shape}'
            )
        # Copy the packed bits as integers so no float conversion can touch them.
        buf.view('<u4')[:, :, RGB_OFFSET_B // 4] = pack_rgb_float(colour).view(np.uint32)
        fields.append(('rgb', RGB_OFFSET_B, PointField.FLOAT32, 1))
    return buf, fields, point_step_b


def xyz_to_pointcloud2(
    points_xyz_m: np.ndarray, header: Header | None = None, rgb: np.ndarray | None = None
) -> PointCloud2:
    """An organized PointCloud2 from (H, W, 3) float xyz in metres (NaN = invalid).

    ``rgb``: optional (H, W, 3) uint8 in R, G, B order; adds the packed ``rgb`` field (xyzrgb layout).
    ``header`` is copied into the message (default: an empty header).
    """
    buf, fields, point_step_b = _cloud_layout(points_xyz_m, rgb)
    height, width = buf.shape[:2]
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(height), int(width)
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]
    msg.is_bigendian = False
    msg.point_step = point_step_b
    msg.row_step = point_step_b * int(width)
    msg.is_dense = False
    msg.data = array_bytes(buf)
    return msg


def xyz_to_pointcloud2_cdr(points_xyz_m: np.ndarray, header: Header, rgb: np.ndarray | None = None) -> bytes:
    """``xyz_to_pointcloud2`` as serialized bytes (``cdr.pointcloud2_cdr``: one copy of the points), for
    ``Publisher.publish(bytes)``."""
    buf, fields, point_step_b = _cloud_layout(points_xyz_m, rgb)
    height, width = buf.shape[:2]
    return pointcloud2_cdr(header, int(height), int(width), fields, point_step_b, point_step_b * int(width),
                           buf, is_dense=False)


@dataclass(frozen=True)
class CloudArrays:
    """An organized cloud as arrays: xyz_m (H, W, 3) float32; rgb (H, W, 3) uint8 or None."""

    xyz_m: np.ndarray
    rgb: np.ndarray | None


def _field_values(points: np.ndarray, field: PointField, big_endian: bool, point_step_b: int) -> np.ndarray:
    if field.count != 1:
        raise CloudConversionError(f'field {field.name!r} has count {field.count}; only 1 is supported')
    if field.datatype == PointField.FLOAT32:
        dtype = np.dtype('>f4' if big_endian else '<f4')
    elif field.datatype == PointField.UINT32 and field.name in ('rgb', 'rgba'):
        dtype = np.dtype('>u4' if big_endian else '<u4')
    else:
        raise CloudConversionError(
            f'field {field.name!r} has datatype {field.datatype}; FLOAT32 ({PointField.FLOAT32}) is required'
        )
    if field.offset + 4 > point_step_b:
        raise CloudConversionError(
            f'field {field.name!r} at offset {field.offset} does not fit in point_step {point_step_b}'
        )
    raw = points[:, :, field.offset:field.offset + 4].view(dtype)[:, :, 0]
    return raw.astype(dtype.newbyteorder('='))


def pointcloud2_to_array(msg: PointCloud2) -> CloudArrays:
    """Read x, y, z (and rgb/rgba if present) of an organized or unorganized PointCloud2.

    Honours ``point_step``, ``row_step`` (padded rows), field offsets and ``is_bigendian``. An
    unorganized cloud (height 1) gives arrays of shape (1, N, ...). Colour comes from an ``rgb`` or
    ``rgba`` field read as ``0x00RRGGBB`` bits (alpha dropped).
    """
    height, width = int(msg.height), int(msg.width)
    point_step_b, row_step_b = int(msg.point_step), int(msg.row_step)
    if row_step_b < width * point_step_b:
        raise CloudConversionError(
            f'row_step {row_step_b} B is smaller than width {width} x point_step {point_step_b} B'
        )
    buf = data_as_uint8(msg.data)
    needed = row_step_b * height
    if buf.size < needed:
        raise CloudConversionError(
            f'PointCloud2 data holds {buf.size} B but row_step {row_step_b} B x height {height} '
            f'needs {needed} B'
        )
    points = buf[:needed].reshape(height, row_step_b)[:, :width * point_step_b].reshape(
        height, width, point_step_b
    )
    by_name = {field.name: field for field in msg.fields}
    missing = [name for name in ('x', 'y', 'z') if name not in by_name]
    if missing:
        raise CloudConversionError(f'PointCloud2 lacks field(s) {missing}; has {list(by_name)}')
    big = bool(msg.is_bigendian)
    xyz = np.stack([_field_values(points, by_name[n], big, point_step_b) for n in ('x', 'y', 'z')], axis=-1)
    colour_field = by_name.get('rgb', by_name.get('rgba'))
    rgb = None
    if colour_field is not None:
        bits = _field_values(points, colour_field, big, point_step_b)
        rgb = unpack_rgb_float(np.ascontiguousarray(bits).view(np.uint32).view(np.float32))
    return CloudArrays(xyz_m=xyz.astype(np.float32, copy=False), rgb=rgb)
