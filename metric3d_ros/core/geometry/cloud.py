"""Organized point clouds from metric depth, exactly as depth_image_proc's point_cloud_xyz computes them.

For a depth image with intrinsics (fx, fy, cx, cy) *of its own resolution* and pixel (u, v) (column, row,
pixel centres at integers): ``x = (u - cx) * z / fx``, ``y = (v - cy) * z / fy``, ``z = depth``, in the
REP 103 optical frame (x right, y down, z forward). Invalid pixels give NaN for x, y and z and the cloud
stays organized (row-major, one point per sampled pixel).

Colour for an xyzrgb cloud is packed like PCL / depth_image_proc: a uint32 ``0x00RRGGBB`` whose bits are
reinterpreted as float32.
"""
from __future__ import annotations

import math

import numpy as np

from metric3d_ros.core.geometry.intrinsics import Intrinsics


def _check_stride(stride: int) -> int:
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f'stride must be an integer >= 1, got {stride!r}')
    return int(stride)


def decimate(image: np.ndarray, stride: int) -> np.ndarray:
    """Rows ``0::stride`` and columns ``0::stride`` of an (H, W, ...) image: what a strided cloud samples."""
    stride = _check_stride(stride)
    arr = np.asarray(image)
    if arr.ndim < 2:
        raise ValueError(f'image must have at least 2 dimensions (H, W, ...), got shape {arr.shape}')
    return arr[::stride, ::stride]


def unproject_organized(
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    stride: int = 1,
    min_range_m: float = 0.0,
    max_range_m: float = math.inf,
) -> np.ndarray:
    """(H', W', 3) float32 organized XYZ cloud (metres) from an (H, W) float depth image in metres.

    - ``intrinsics`` are those of ``depth_m``'s own resolution; with ``stride`` s > 1 the cloud samples
      rows 0, s, 2s, ... and columns 0, s, 2s, ... and uses those full-resolution pixel indices as (u, v),
      so H' = ceil(H / s), W' = ceil(W / s).
    - Range is z (depth along the optical axis), as depth_image_proc uses it. A pixel is valid when z is
      finite, z > 0 and ``min_range_m <= z <= max_range_m``; otherwise x, y, z are all NaN.
      (depth_image_proc accepts any finite float depth; a depth <= 0 is not a measurement and is dropped.)
    - Arithmetic is done in float64 and rounded once to float32.
    """
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise ValueError(f'depth_m must be a 2-D (H, W) image, got shape {depth.shape}')
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(
            f'depth_m must be float metres, got dtype {depth.dtype}; decode 16UC1 millimetres with '
            'decode_depth_16uc1 first'
        )
    if not isinstance(intrinsics, Intrinsics):
        raise ValueError(f'intrinsics must be an Intrinsics, got {type(intrinsics).__name__}')
    if math.isnan(min_range_m) or math.isnan(max_range_m) or min_range_m < 0.0 or max_range_m < min_range_m:
        raise ValueError(
            f'range must satisfy 0 <= min_range_m <= max_range_m, got [{min_range_m}, {max_range_m}]'
        )
    stride = _check_stride(stride)
    z = decimate(depth, stride).astype(np.float64)
    rows = np.arange(0, depth.shape[0], stride, dtype=np.float64)
    cols = np.arange(0, depth.shape[1], stride, dtype=np.float64)
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(z) & (z > 0.0) & (z >= min_range_m) & (z <= max_range_m)
    z = np.where(valid, z, np.nan)
    x = (cols[None, :] - intrinsics.cx_px) * z / intrinsics.fx_px
    y = (rows[:, None] - intrinsics.cy_px) * z / intrinsics.fy_px
    return np.stack([x, y, z], axis=-1).astype(np.float32)


def pack_rgb_float(rgb: np.ndarray) -> np.ndarray:
    """float32 array (...) whose bits are ``0x00RRGGBB`` from a uint8 (..., 3) array in R, G, B order."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim < 1 or arr.shape[-1] != 3:
        raise ValueError(
            f'rgb must be a uint8 array of shape (..., 3) in RGB order, got {arr.dtype} {arr.shape}'
        )
    c = arr.astype(np.uint32)
    packed = (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
    return np.ascontiguousarray(packed, dtype=np.uint32).view(np.float32)


def unpack_rgb_float(packed: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) RGB from float32 values carrying ``0x00RRGGBB`` bits; inverse of ``pack_rgb_float``."""
    arr = np.asarray(packed)
    if arr.dtype != np.float32:
        raise ValueError(f'packed colour must be float32, got {arr.dtype}')
    bits = np.ascontiguousarray(arr).view(np.uint32)
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1).astype(np.uint8)


try:  # numpy >= 2.0
    from numpy.lib.array_utils import byte_bounds as _byte_bounds
except ImportError:  # pragma: no cover - numpy 1.x (ROS Humble's)
    _byte_bounds = np.byte_bounds


def padded_xyz(xyz: np.ndarray) -> np.ndarray | None:
    """The (H, W, 4) float32 array whose first three channels are ``xyz``, when ``xyz`` is such a view.

    The engine returns organized clouds as ``[..., :3]`` views of (H, W, 4) float32 points (x, y, z, 0):
    16-byte points, the layout of depth_image_proc's PointCloud2, so a message needs one contiguous copy
    instead of a zero-filled buffer and a strided one. Returns None for any other array (a plain (H, W, 3)
    array, another dtype or byte order, foreign strides, or memory that does not extend over the 4th value).
    """
    if (not isinstance(xyz, np.ndarray) or xyz.ndim != 3 or xyz.shape[2] != 3
            or xyz.dtype != np.dtype('<f4') or xyz.size == 0):
        return None
    h, w = xyz.shape[:2]
    if xyz.strides != (16 * w, 16, 4):
        return None
    root = xyz
    while isinstance(root.base, np.ndarray):
        root = root.base
    low, high = _byte_bounds(root)
    start = xyz.__array_interface__['data'][0]
    if start < low or start + 16 * h * w > high:
        return None
    return np.lib.stride_tricks.as_strided(xyz, shape=(h, w, 4), strides=(16 * w, 16, 4), writeable=False)
