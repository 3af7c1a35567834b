"""Fused multi-camera point clouds in a base frame: extrinsics, the stamp policy and the fusion math.

ROS-free. Importing this module loads no torch (the node process of ``group_workers`` reads the
configuration without it); ``fuse_depths`` imports torch and runs on the device it is given (the engine's:
on a GPU the batch's depth images are uploaded once, at the fused stride, and only the kept points come
back).

What ``fuse_depths`` computes from one batch's depth images (``CameraDepth``, one per camera):

1. per camera, rows/columns 0, s, 2s, ... of the depth (s = ``FusionConfig.stride``) unprojected with the
   depth image's own intrinsics, as the organized cloud is (``geometry.cloud``): ``x = (u - cx) z / fx``,
   ``y = (v - cy) z / fy``, ``z`` = depth, in the REP 103 optical frame, float32;
2. range crop, in the camera: a point is kept when its depth is finite and > 0 and its distance from the
   camera centre ``sqrt(x² + y² + z²)`` lies in ``[min_range_m, max_range_m]``;
3. into the base frame with the camera's extrinsic ``base_from_optical`` (p_base = R p + t, float32);
4. height band: kept when ``min_height_m <= z_base <= max_height_m`` (a costmap's obstacle band);
5. voxel decimation (``voxel_m`` > 0): one point per cube of the base frame's grid
   ``floor(p_base / voxel_m)``, the first one in fused order (cameras in the given order, pixels row-major):
   every fused point stays a real measurement of one camera, so its camera index is meaningful;
6. the points of the cameras concatenated in the given order, with each point's camera index (and colour
   when the cameras carry images).

Stamp policy (``select_cameras``): the fused cloud carries the batch's newest image stamp; a camera whose
image is older than that by more than ``stamp_tolerance_ms`` is left out (the caller counts it). Each
camera's points use the extrinsic at that camera's own image stamp.

Usage::

    config = FusionConfig(base_frame='base_link', stride=2, voxel_m=0.05, max_range_m=20.0)
    cams = [CameraDepth(0, depth_front, intrinsics_front, front_pose),
            CameraDepth(1, depth_left, intrinsics_left, left_pose)]
    cloud = fuse_depths(cams, config, device='cuda')   # cloud.xyz (N, 3), cloud.camera_index (N,)
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metric3d_ros.core.geometry.intrinsics import Intrinsics

#: The largest voxel index magnitude along an axis (voxel keys are packed into one int64, 21 bits an axis).
_VOXEL_KEY_LIMIT = 2 ** 20
_QUATERNION_NORM_TOLERANCE = 1e-3


def _floats(value: object, count: int, what: str) -> tuple[float, ...]:
    try:
        items = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{what} must be {count} numbers, got {value!r}') from exc
    if len(items) != count or not all(math.isfinite(v) for v in items):
        raise ValueError(f'{what} must be {count} finite numbers, got {value!r}')
    return items


@dataclass(frozen=True)
class RigidTransform:
    """A rigid transform ``parent_from_child``: a point p in the child frame is ``R p + t`` in the parent.

    translation_m: t (x, y, z) in metres. rotation_xyzw: the unit quaternion of R in ROS order (x, y, z, w),
    as geometry_msgs/Transform carries it; a norm within 1e-3 of 1 is accepted and normalized, anything else
    raises ``ValueError``.
    """

    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_xyzw: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        t = _floats(self.translation_m, 3, 'translation_m')
        q = _floats(self.rotation_xyzw, 4, 'rotation_xyzw (x, y, z, w)')
        norm = math.sqrt(sum(v * v for v in q))
        if abs(norm - 1.0) > _QUATERNION_NORM_TOLERANCE:
            raise ValueError(f'rotation_xyzw must be a unit quaternion (x, y, z, w), got {q} of norm '
                             f'{norm:.6g}')
        object.__setattr__(self, 'translation_m', t)
        object.__setattr__(self, 'rotation_xyzw', tuple(v / norm for v in q))

    def rotation_matrix(self) -> np.ndarray:
        """(3, 3) float64 R."""
        x, y, z, w = self.rotation_xyzw
        return np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ])

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.rotation_matrix()
        m[:3, 3] = self.translation_m
        return m

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) float64 points moved into the parent frame (float64 reference of the fused transform)."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.rotation_matrix().T + np.asarray(self.translation_m)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> RigidTransform:
        """The transform of a (4, 4) or (3, 4) matrix whose 3x3 block is a rotation (``ValueError`` else)."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape not in ((4, 4), (3, 4)) or not np.isfinite(m).all():
            raise ValueError(f'a rigid transform matrix must be finite (4, 4) or (3, 4), got {m.shape}')
        r = m[:3, :3]
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
            raise ValueError('the 3x3 block of the matrix is not a rotation (orthonormal, det +1)')
        return cls(tuple(m[:3, 3]), _quaternion_xyzw(r))

    @classmethod
    def from_wxyz(cls, translation_m: Sequence[float], rotation_wxyz: Sequence[float]) -> RigidTransform:
        """From a quaternion in (w, x, y, z) order (rig files such as DDAD's ``rig.json``)."""
        w, x, y, z = _floats(rotation_wxyz, 4, 'rotation_wxyz (w, x, y, z)')
        return cls(tuple(translation_m), (x, y, z, w))


def _quaternion_xyzw(r: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w) of a rotation matrix (Shepperd's method, w >= 0)."""
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0.0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = ((r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s)
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = (0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s)
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = ((r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = ((r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s)
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q)
    return tuple(float(v) for v in (q if q[3] >= 0.0 else -q))


def read_rig_extrinsics(path: Path | str) -> dict[str, RigidTransform]:
    """Camera name -> rig-from-optical transform of a rig file (DDAD's ``rig.json`` layout)::

        {"cameras": {"CAMERA_01": {"T_vehicle_camera": {"rotation_wxyz": [w, x, y, z],
                                                        "translation_xyz": [x, y, z]}, ...}, ...}}

    The camera frame is the OpenCV optical frame. ``ValueError`` naming the file and camera when it is
    malformed, ``OSError`` when it cannot be read.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path}: not JSON ({exc})') from exc
    cameras = data.get('cameras') if isinstance(data, dict) else None
    if not isinstance(cameras, dict) or not cameras:
        raise ValueError(f'{path}: needs a "cameras" object with one entry per camera')
    out = {}
    for name, entry in cameras.items():
        pose = entry.get('T_vehicle_camera') if isinstance(entry, dict) else None
        if not isinstance(pose, dict):
            raise ValueError(f'{path}: camera {name!r} has no "T_vehicle_camera" object '
                             '({"rotation_wxyz": [w, x, y, z], "translation_xyz": [x, y, z]})')
        try:
            out[str(name)] = RigidTransform.from_wxyz(pose.get('translation_xyz'), pose.get('rotation_wxyz'))
        except ValueError as exc:
            raise ValueError(f'{path}: camera {name!r}: {exc}') from exc
    return out


@dataclass(frozen=True)
class FusionConfig:
    """What the fused cloud holds (module docstring, steps 1-5). Lengths in metres.

    base_frame: the frame of the fused cloud (e.g. 'base_link'). stride: pixel decimation (1..64).
    voxel_m: voxel edge of the decimation, 0 = none (else 0.001 .. 100). min_range_m / max_range_m: distance
    from the camera centre (max at most 1000). min_height_m / max_height_m: z band in the base frame.
    stamp_tolerance_ms: cameras older than the batch's newest image by more are left out (>= 0).
    rgb: colour each point from its camera's image.
    """

    base_frame: str = 'base_link'
    stride: int = 2
    voxel_m: float = 0.0
    min_range_m: float = 0.0
    max_range_m: float = 100.0
    min_height_m: float = -1000.0
    max_height_m: float = 1000.0
    stamp_tolerance_ms: float = 50.0
    rgb: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.base_frame, str) or not self.base_frame or self.base_frame.startswith('/'):
            raise ValueError(f"base_frame must be a tf2 frame name without a leading '/', got "
                             f'{self.base_frame!r}')
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or not 1 <= self.stride <= 64:
            raise ValueError(f'stride must be an integer in [1, 64], got {self.stride!r}')
        if not (self.voxel_m == 0.0 or 0.001 <= self.voxel_m <= 100.0):
            raise ValueError(f'voxel_m must be 0 (no voxel decimation) or in [0.001, 100], got '
                             f'{self.voxel_m}')
        if not (0.0 <= self.min_range_m < self.max_range_m <= 1000.0):
            raise ValueError(f'need 0 <= min_range_m < max_range_m <= 1000, got [{self.min_range_m}, '
                             f'{self.max_range_m}]')
        if not (math.isfinite(self.min_height_m) and math.isfinite(self.max_height_m)
                and self.min_height_m < self.max_height_m):
            raise ValueError(f'need finite min_height_m < max_height_m, got [{self.min_height_m}, '
                             f'{self.max_height_m}]')
        if not (math.isfinite(self.stamp_tolerance_ms) and self.stamp_tolerance_ms >= 0.0):
            raise ValueError(f'stamp_tolerance_ms must be >= 0, got {self.stamp_tolerance_ms}')


def select_cameras(stamps_ns: Sequence[int], stamp_tolerance_ms: float) -> tuple[int, list[bool]]:
    """The stamp policy: ``(the fused stamp, which cameras are in)``. The fused stamp is the newest of
    ``stamps_ns``; a camera is in when its stamp is within ``stamp_tolerance_ms`` of it."""
    if not stamps_ns:
        raise ValueError('select_cameras needs at least one stamp')
    newest = max(int(s) for s in stamps_ns)
    tolerance_ns = round(stamp_tolerance_ms * 1e6)
    return newest, [newest - int(s) <= tolerance_ns for s in stamps_ns]


@dataclass(frozen=True, eq=False)
class CameraDepth:
    """One camera's contribution to a fused cloud.

    index: the camera index written into every point of this camera (its position in the node's camera
        list, say). depth_m: (h, w) float depth in metres, NaN / <= 0 invalid. intrinsics: of ``depth_m``'s
        own resolution. base_from_optical: the camera's extrinsic at the image's stamp. rgb: optional
        (H, W, 3) uint8 image of the same view, any resolution (sampled at the nearest pixel).
    """

    index: int
    depth_m: np.ndarray
    intrinsics: Intrinsics
    base_from_optical: RigidTransform
    rgb: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class FusedCloud:
    """A fused cloud on the host: xyz (N, 3) float32 in the base frame, camera_index (N,) uint32, rgb (N, 3)
    uint8 or None; points_per_camera: camera index -> points it contributed."""

    xyz: np.ndarray
    camera_index: np.ndarray
    rgb: np.ndarray | None = None
    points_per_camera: Mapping[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def _check_camera(cam: object, rgb_wanted: bool) -> None:
    if not isinstance(cam, CameraDepth):
        raise ValueError(f'fuse_depths takes CameraDepth entries, got {type(cam).__name__}')
    depth = cam.depth_m
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.dtype.kind != 'f':
        raise ValueError(f'camera {cam.index}: depth_m must be a 2-D float array, got '
                         f'{getattr(depth, "dtype", type(depth))} {getattr(depth, "shape", "")}')
    if not isinstance(cam.intrinsics, Intrinsics) or not isinstance(cam.base_from_optical, RigidTransform):
        raise ValueError(f'camera {cam.index}: needs Intrinsics and a RigidTransform base_from_optical')
    if isinstance(cam.index, bool) or not isinstance(cam.index, (int, np.integer)) or cam.index < 0:
        raise ValueError(f'camera index must be an integer >= 0, got {cam.index!r}')
    if rgb_wanted:
        rgb = cam.rgb
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f'camera {cam.index}: FusionConfig.rgb needs an (H, W, 3) uint8 rgb image')


def _sampled_rgb(rgb: np.ndarray, depth_hw: tuple[int, int], stride: int) -> np.ndarray:
    """(hc, wc, 3) uint8: the image pixel nearest to each sampled depth pixel's centre."""
    h, w = depth_hw
    H, W = rgb.shape[:2]  # noqa: N806 - image size vs depth size
    if (H, W) == (h, w):
        return np.ascontiguousarray(rgb[::stride, ::stride])
    rows = np.clip(np.floor((np.arange(0, h, stride) + 0.5) * (H / h)).astype(np.int64), 0, H - 1)
    cols = np.clip(np.floor((np.arange(0, w, stride) + 0.5) * (W / w)).astype(np.int64), 0, W - 1)
    return rgb[rows[:, None], cols[None, :]]


def fuse_depths(cameras: Sequence[CameraDepth], config: FusionConfig, device: object = 'cpu') -> FusedCloud:
    """The fused cloud of ``cameras`` (module docstring), computed with torch on ``device``.

    Raises ``ValueError`` for malformed inputs (the caller decides whether a camera is left out before).
    """
    import torch

    if not isinstance(config, FusionConfig):
        raise ValueError(f'config must be a FusionConfig, got {type(config).__name__}')
    for cam in cameras:
        _check_camera(cam, config.rgb)
    dev = torch.device(device)
    stride = config.stride
    xyz_parts, index_parts, rgb_parts = [], [], []
    with torch.inference_mode():
        for cam in cameras:
            h, w = cam.depth_m.shape
            z = torch.from_numpy(np.ascontiguousarray(cam.depth_m[::stride, ::stride], dtype=np.float32))
            z = z.to(dev, non_blocking=True)
            k = cam.intrinsics
            u = torch.arange(0, w, stride, device=dev, dtype=torch.float32).view(1, -1)
            v = torch.arange(0, h, stride, device=dev, dtype=torch.float32).view(-1, 1)
            x = (u - k.cx_px) * z / k.fx_px
            y = (v - k.cy_px) * z / k.fy_px
            points = torch.stack([x, y, z], dim=-1).reshape(-1, 3)
            zf = points[:, 2]
            distance = torch.linalg.vector_norm(points, dim=1)
            keep = (torch.isfinite(zf) & (zf > 0.0) & (distance >= config.min_range_m)
                    & (distance <= config.max_range_m))
            rotation = torch.tensor(cam.base_from_optical.rotation_matrix(), dtype=torch.float32, device=dev)
            translation = torch.tensor(cam.base_from_optical.translation_m, dtype=torch.float32, device=dev)
            base = points @ rotation.T + translation
            keep &= (base[:, 2] >= config.min_height_m) & (base[:, 2] <= config.max_height_m)
            xyz_parts.append(base[keep])
            index_parts.append(torch.full((xyz_parts[-1].shape[0],), int(cam.index), dtype=torch.int64,
                                          device=dev))
            if config.rgb:
                colours = torch.from_numpy(_sampled_rgb(cam.rgb, (h, w), stride).reshape(-1, 3)).to(dev)
                rgb_parts.append(colours[keep])
        if xyz_parts:
            xyz = torch.cat(xyz_parts)
            index = torch.cat(index_parts)
            rgb = torch.cat(rgb_parts) if config.rgb else None
        else:
            xyz = torch.zeros((0, 3), dtype=torch.float32, device=dev)
            index = torch.zeros((0,), dtype=torch.int64, device=dev)
            rgb = torch.zeros((0, 3), dtype=torch.uint8, device=dev) if config.rgb else None
        if config.voxel_m > 0.0 and xyz.shape[0] > 0:
            first = _first_per_voxel(xyz, config.voxel_m)
            xyz, index = xyz[first], index[first]
            rgb = rgb[first] if rgb is not None else None
        xyz_host = xyz.cpu().numpy()
        index_host = index.to(torch.int64).cpu().numpy().astype(np.uint32)
        rgb_host = rgb.cpu().numpy() if rgb is not None else None
    counts = np.bincount(index_host, minlength=0) if index_host.size else np.zeros(0, dtype=np.int64)
    per_camera = {int(cam.index): int(counts[cam.index]) if cam.index < counts.size else 0 for cam in cameras}
    return FusedCloud(np.ascontiguousarray(xyz_host, dtype=np.float32), index_host, rgb_host, per_camera)


def _first_per_voxel(xyz, voxel_m: float):
    """(N,) bool mask of the first point of every occupied voxel of ``xyz`` (N, 3), on its device."""
    import torch

    keys = torch.floor(xyz.double() / voxel_m).to(torch.int64)
    keys = keys.clamp_(-_VOXEL_KEY_LIMIT + 1, _VOXEL_KEY_LIMIT - 1) + _VOXEL_KEY_LIMIT
    packed = (keys[:, 0] << 42) | (keys[:, 1] << 21) | keys[:, 2]
    _, inverse = torch.unique(packed, return_inverse=True)
    n = xyz.shape[0]
    order = torch.arange(n, device=xyz.device)
    first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.int64, device=xyz.device)
    first.scatter_reduce_(0, inverse, order, reduce='amin')
    keep = torch.zeros(n, dtype=torch.bool, device=xyz.device)
    keep[first] = True  # ascending without a sort
    return keep
