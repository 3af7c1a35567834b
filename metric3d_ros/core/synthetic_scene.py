"""Synthetic multi-camera scene: a textured room with boxes, ray-cast with exact depth (numpy only, ROS-free).

The world frame is REP 103 (x forward, y left, z up), metres. The scene is the inside of an axis-aligned
room (floor at z = 0) holding boxes that stand on the floor, each turned about the vertical by its own
yaw. Every surface carries a procedural texture (chequerboard, stripes and value noise over a per-surface
colour, with Lambert shading) so that a depth network has something to see.

Cameras sit on a rig that moves slowly through the room (constant velocity and yaw rate). Each camera has
its own resolution, pinhole intrinsics and heading on the rig; its images use the OpenCV optical frame
(x right, y down, z forward), so the depth of a pixel is the z of the hit point in that frame. Pixel
centres are at integer coordinates: pixel (u, v) looks along ``((u - cx) / fx, (v - cy) / fy, 1)``.

Everything is deterministic for a given ``SceneConfig`` (numpy ``default_rng(seed)``) and vectorized.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from metric3d_ros.core.geometry.intrinsics import Intrinsics

#: Rotation from the optical frame (x right, y down, z forward) to the body frame (x fwd, y left, z up).
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class CameraSpec:
    """One camera on the rig.

    yaw_deg: heading relative to the rig's forward axis (positive turns left); pitch_deg: positive looks
    down. offset_m: position on the rig in the rig frame (x forward, y left, z up).
    """

    name: str
    width_px: int
    height_px: int
    intrinsics: Intrinsics
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if not self.name or '/' in self.name or ' ' in self.name:
            raise ValueError(
                f'camera name must be a non-empty ROS name part without "/" or spaces, got {self.name!r}'
            )
        for attr in ('width_px', 'height_px'):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f'CameraSpec.{attr} must be a positive integer, got {value!r}')
        if not isinstance(self.intrinsics, Intrinsics):
            got = type(self.intrinsics).__name__
            raise ValueError(f'CameraSpec.intrinsics must be an Intrinsics, got {got}')

    @property
    def frame_id(self) -> str:
        return f'{self.name}_optical_frame'


def default_cameras() -> tuple[CameraSpec, ...]:
    """Three cameras of different resolutions and intrinsics looking around the room (front, left, right)."""
    return (
        CameraSpec('front', 640, 480, Intrinsics(500.0, 500.0, 317.5, 242.0), yaw_deg=0.0, pitch_deg=5.0,
                   offset_m=(0.10, 0.0, 0.0)),
        CameraSpec('left', 960, 540, Intrinsics(620.0, 618.0, 484.0, 266.5), yaw_deg=120.0, pitch_deg=8.0,
                   offset_m=(-0.05, 0.09, 0.0)),
        CameraSpec('right', 1280, 720, Intrinsics(900.0, 900.0, 636.0, 362.0), yaw_deg=-120.0, pitch_deg=3.0,
                   offset_m=(-0.05, -0.09, 0.02)),
    )


@dataclass(frozen=True)
class SceneConfig:
    """Room, boxes and rig motion. Lengths in metres, angles in degrees, times in seconds/nanoseconds."""

    seed: int = 0
    room_size_m: tuple[float, float, float] = (10.0, 8.0, 3.0)
    n_boxes: int = 10
    rig_height_m: float = 1.3
    rig_start_xy_m: tuple[float, float] = (-1.0, 0.0)
    rig_velocity_mps: tuple[float, float] = (0.3, 0.05)
    rig_yaw_start_deg: float = 0.0
    rig_yaw_rate_dps: float = 4.0
    rate_hz: float = 10.0
    start_stamp_ns: int = 1_700_000_000_000_000_000
    cameras: tuple[CameraSpec, ...] = field(default_factory=default_cameras)

    def __post_init__(self) -> None:
        if len(self.room_size_m) != 3 or min(self.room_size_m) <= 0.0:
            raise ValueError(f'room_size_m must be three positive lengths, got {self.room_size_m!r}')
        if not 0.0 < self.rig_height_m < self.room_size_m[2]:
            raise ValueError(f'rig_height_m must lie between floor and ceiling, got {self.rig_height_m}')
        if not (self.rate_hz > 0.0 and math.isfinite(self.rate_hz)):
            raise ValueError(f'rate_hz must be positive, got {self.rate_hz}')
        if self.n_boxes < 0:
            raise ValueError(f'n_boxes must be >= 0, got {self.n_boxes}')
        if not self.cameras:
            raise ValueError('SceneConfig needs at least one camera')
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f'camera names must be unique, got {names}')
        if self.start_stamp_ns < 0:
            raise ValueError(f'start_stamp_ns must be >= 0, got {self.start_stamp_ns}')


@dataclass(frozen=True)
class Box:
    """A box standing on the floor: centre (x, y, z), full size (sx, sy, sz), yaw about z, surface id."""

    center_m: tuple[float, float, float]
    size_m: tuple[float, float, float]
    yaw_rad: float
    surface_id: int


@dataclass(frozen=True)
class Scene:
    """The room (interior of an axis-aligned box from (−x/2, −y/2, 0) to (x/2, y/2, z)), boxes and colours."""

    room_size_m: tuple[float, float, float]
    boxes: tuple[Box, ...]
    colours: np.ndarray  # (n_surfaces, 3) float in [0, 1]; 0..5 are the room's faces, then one per box


@dataclass(frozen=True)
class RenderedView:
    """One camera image with its exact depth. depth_m: (H, W) float32 metres (z in the optical frame)."""

    camera: str
    frame_id: str
    frame_index: int
    stamp_ns: int
    intrinsics: Intrinsics
    image_rgb: np.ndarray
    depth_m: np.ndarray
    T_world_camera: np.ndarray  # (4, 4) optical frame -> world


def _rot_z(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_y(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rig_path(config: SceneConfig, n_frames: int) -> np.ndarray:
    t_s = np.arange(max(n_frames, 1)) / config.rate_hz
    x = config.rig_start_xy_m[0] + config.rig_velocity_mps[0] * t_s
    y = config.rig_start_xy_m[1] + config.rig_velocity_mps[1] * t_s
    return np.stack([x, y], axis=1)


def _distance_to_polyline(point: np.ndarray, path: np.ndarray) -> float:
    if len(path) == 1:
        return float(np.linalg.norm(point - path[0]))
    a, b = path[0], path[-1]  # the rig moves on a straight line
    ab = b - a
    t = float(np.clip(np.dot(point - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(point - (a + t * ab)))


def build_scene(config: SceneConfig, n_frames: int = 8) -> Scene:
    """Boxes placed at random (seeded) inside the room, clear of the rig's path over ``n_frames`` frames."""
    rng = np.random.default_rng(config.seed)
    lx, ly, _ = config.room_size_m
    path = _rig_path(config, n_frames)
    boxes: list[Box] = []
    attempts = 0
    while len(boxes) < config.n_boxes and attempts < 200 * max(config.n_boxes, 1):
        attempts += 1
        # One angular sector per box around the rig's start, so that every camera heading sees some.
        angle = 2.0 * math.pi * (len(boxes) + rng.uniform()) / config.n_boxes
        size = rng.uniform([0.4, 0.4, 0.3], [1.6, 1.6, 2.0])
        distance = rng.uniform(1.8, 0.5 * math.hypot(lx, ly))
        cx = path[0, 0] + distance * math.cos(angle)
        cy = path[0, 1] + distance * math.sin(angle)
        radius = 0.5 * math.hypot(size[0], size[1])
        inside = abs(cx) + radius < lx / 2 - 0.05 and abs(cy) + radius < ly / 2 - 0.05
        if not inside or _distance_to_polyline(np.array([cx, cy]), path) < radius + 0.8:
            continue
        boxes.append(Box((float(cx), float(cy), float(size[2] / 2)), tuple(float(s) for s in size),
                         float(rng.uniform(0.0, math.pi)), 6 + len(boxes)))
    colours = rng.uniform(0.25, 0.95, size=(6 + len(boxes), 3))
    return Scene(tuple(float(v) for v in config.room_size_m), tuple(boxes), colours)


def rig_pose(config: SceneConfig, frame_index: int) -> tuple[np.ndarray, np.ndarray]:
    """``(R_world_rig, t_world_rig_m)`` of the rig at ``frame_index``."""
    t_s = frame_index / config.rate_hz
    yaw = math.radians(config.rig_yaw_start_deg + config.rig_yaw_rate_dps * t_s)
    pos = np.array([
        config.rig_start_xy_m[0] + config.rig_velocity_mps[0] * t_s,
        config.rig_start_xy_m[1] + config.rig_velocity_mps[1] * t_s,
        config.rig_height_m,
    ])
    return _rot_z(yaw), pos


def camera_pose(config: SceneConfig, camera: CameraSpec, frame_index: int) -> np.ndarray:
    """4x4 ``T_world_camera`` (optical frame to world) of ``camera`` at ``frame_index``."""
    r_rig, t_rig = rig_pose(config, frame_index)
    r_body = r_rig @ _rot_z(math.radians(camera.yaw_deg)) @ _rot_y(math.radians(camera.pitch_deg))
    pose = np.eye(4)
    pose[:3, :3] = r_body @ R_BODY_OPTICAL
    pose[:3, 3] = t_rig + r_rig @ np.asarray(camera.offset_m, dtype=np.float64)
    return pose


def _safe(d: np.ndarray) -> np.ndarray:
    """Direction components with exact zeros nudged so that slab divisions stay finite."""
    return np.where(np.abs(d) < 1e-12, 1e-12, d)


def _intersect_room(origin: np.ndarray, d: tuple[np.ndarray, ...], room: tuple[float, float, float]):
    """Distance along each ray (z-normalised) to the room's inside, and which of the 6 faces it hits.

    Faces: 0 / 1 the -x / +x walls, 2 / 3 the -y / +y walls, 4 the floor, 5 the ceiling.
    """
    lo = (-room[0] / 2, -room[1] / 2, 0.0)
    hi = (room[0] / 2, room[1] / 2, room[2])
    t_best = np.full(d[0].shape, np.inf)
    face = np.zeros(d[0].shape, dtype=np.int64)
    for axis in range(3):
        da = _safe(d[axis])
        positive = da > 0
        t_axis = (np.where(positive, hi[axis], lo[axis]) - origin[axis]) / da
        closer = t_axis < t_best
        t_best = np.where(closer, t_axis, t_best)
        face = np.where(closer, 2 * axis + positive, face)
    return t_best, face


def _box_pixel_window(box: Box, T_world_camera: np.ndarray, camera: CameraSpec) -> tuple[slice, slice] | None:
    """Rows and columns that can see ``box`` (its projected corners' bounding rectangle), None if none can.

    When a corner lies behind the camera the whole image is returned (the projection is not bounded).
    """
    rot_box = _rot_z(box.yaw_rad)
    half = np.asarray(box.size_m) / 2
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    corners_world = np.asarray(box.center_m) + (signs * half) @ rot_box.T
    corners_cam = (corners_world - T_world_camera[:3, 3]) @ T_world_camera[:3, :3]
    h, w = camera.height_px, camera.width_px
    if np.any(corners_cam[:, 2] <= 1e-3):
        if np.all(corners_cam[:, 2] <= 1e-3):
            return None
        return slice(0, h), slice(0, w)
    k = camera.intrinsics
    u = k.fx_px * corners_cam[:, 0] / corners_cam[:, 2] + k.cx_px
    v = k.fy_px * corners_cam[:, 1] / corners_cam[:, 2] + k.cy_px
    u0, u1 = max(int(math.floor(u.min())) - 1, 0), min(int(math.ceil(u.max())) + 2, w)
    v0, v1 = max(int(math.floor(v.min())) - 1, 0), min(int(math.ceil(v.max())) + 2, h)
    if u0 >= u1 or v0 >= v1:
        return None
    return slice(v0, v1), slice(u0, u1)


def _intersect_box(origin: np.ndarray, d: tuple[np.ndarray, ...], box: Box):
    """Entry distance of each ray into ``box`` (inf where it misses) and the local axis of the face hit."""
    rot = _rot_z(box.yaw_rad)
    rel = origin - np.asarray(box.center_m)
    half = np.asarray(box.size_m) / 2
    t_enter = np.full(d[0].shape, -np.inf)
    t_exit = np.full(d[0].shape, np.inf)
    axis_hit = np.zeros(d[0].shape, dtype=np.int64)
    for axis in range(3):
        # Local coordinate along this box axis: rot[:, axis] . (world vector).
        col = rot[:, axis]
        o_local = float(rel @ col)
        d_local = _safe(d[0] * col[0] + d[1] * col[1] + d[2] * col[2])
        t1 = (-half[axis] - o_local) / d_local
        t2 = (half[axis] - o_local) / d_local
        t_near = np.minimum(t1, t2)
        later = t_near > t_enter
        t_enter = np.where(later, t_near, t_enter)
        axis_hit = np.where(later, axis, axis_hit)
        t_exit = np.minimum(t_exit, np.maximum(t1, t2))
    hit = (t_exit >= t_enter) & (t_enter > 1e-6)
    return np.where(hit, t_enter, np.inf), axis_hit


def _hash2(i: np.ndarray, j: np.ndarray, salt: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) per integer lattice cell."""
    x = np.sin(i * 12.9898 + j * 78.233 + salt * 37.719) * 43758.5453
    return x - np.floor(x)


def _value_noise(s: np.ndarray, t: np.ndarray, salt: np.ndarray, cell_m: float) -> np.ndarray:
    u, v = s / cell_m, t / cell_m
    i0, j0 = np.floor(u), np.floor(v)
    fu, fv = u - i0, v - j0
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    n00 = _hash2(i0, j0, salt)
    n10 = _hash2(i0 + 1, j0, salt)
    n01 = _hash2(i0, j0 + 1, salt)
    n11 = _hash2(i0 + 1, j0 + 1, salt)
    return (n00 * (1 - fu) + n10 * fu) * (1 - fv) + (n01 * (1 - fu) + n11 * fu) * fv


def _shade(s: np.ndarray, t: np.ndarray, normal: np.ndarray, surface: np.ndarray, colours: np.ndarray):
    """Procedural texture in surface coordinates (s, t) metres, with Lambert shading from a fixed light."""
    salt = surface.astype(np.float64)
    checker = ((np.floor(s / 0.5) + np.floor(t / 0.5)) % 2).astype(np.float64)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (s * (1.3 + 0.1 * (salt % 5)) + t * 0.7))
    noise = 0.6 * _value_noise(s, t, salt, 0.15) + 0.4 * _value_noise(s, t, salt + 17.0, 0.04)
    pattern = 0.55 + 0.2 * checker + 0.1 * stripes + 0.25 * (noise - 0.5)
    light = np.array([0.35, 0.25, 0.9])
    light = light / np.linalg.norm(light)
    lambert = 0.55 + 0.45 * np.abs(normal @ light)
    rgb = colours[surface] * (pattern * lambert)[:, None]
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_view(
    scene: Scene, camera: CameraSpec, T_world_camera: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(image_rgb uint8 (H, W, 3), depth_m float32 (H, W))`` of ``camera`` at pose ``T_world_camera``."""
    h, w = camera.height_px, camera.width_px
    k = camera.intrinsics
    rot = np.asarray(T_world_camera, dtype=np.float64)[:3, :3]
    origin = np.asarray(T_world_camera, dtype=np.float64)[:3, 3]
    lo = np.array([-scene.room_size_m[0] / 2, -scene.room_size_m[1] / 2, 0.0])
    hi = np.array([scene.room_size_m[0] / 2, scene.room_size_m[1] / 2, scene.room_size_m[2]])
    if np.any(origin <= lo) or np.any(origin >= hi):
        raise ValueError(f'camera {camera.name} at {origin.tolist()} is outside the room {scene.room_size_m}')
    x_opt = ((np.arange(w, dtype=np.float64) - k.cx_px) / k.fx_px)[None, :]
    y_opt = ((np.arange(h, dtype=np.float64) - k.cy_px) / k.fy_px)[:, None]
    # World ray directions, scaled so that their optical z is 1: the ray parameter t is the depth.
    d = tuple(rot[i, 0] * x_opt + rot[i, 1] * y_opt + rot[i, 2] for i in range(3))
    depth, surface = _intersect_room(origin, d, scene.room_size_m)
    box_axis = np.full((h, w), -1, dtype=np.int64)
    for box in scene.boxes:
        window = _box_pixel_window(box, T_world_camera, camera)
        if window is None:
            continue
        d_win = tuple(c[window] for c in d)
        t_box, axis = _intersect_box(origin, d_win, box)
        closer = t_box < depth[window]
        depth[window] = np.where(closer, t_box, depth[window])
        surface[window] = np.where(closer, box.surface_id, surface[window])
        box_axis[window] = np.where(closer, axis, box_axis[window])
    hit = [origin[i] + d[i] * depth for i in range(3)]
    s, t, normal = _surface_frame(scene, hit, surface, box_axis)
    rgb = _shade(s.ravel(), t.ravel(), normal.reshape(-1, 3), surface.ravel(), scene.colours)
    return rgb.reshape(h, w, 3), depth.astype(np.float32)


def _surface_frame(scene: Scene, hit: list[np.ndarray], surface: np.ndarray, box_axis: np.ndarray):
    """Texture coordinates (s, t) in metres and world unit normals of the surfaces hit."""
    s = np.empty(surface.shape)
    t = np.empty(surface.shape)
    normal = np.zeros((*surface.shape, 3))
    in_plane = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
    for face in range(6):
        sel = surface == face
        axis = face // 2
        a, b = in_plane[axis]
        s[sel] = hit[a][sel]
        t[sel] = hit[b][sel]
        normal[sel, axis] = -1.0 if face % 2 else 1.0
    for box in scene.boxes:
        sel = surface == box.surface_id
        if not np.any(sel):
            continue
        rot = _rot_z(box.yaw_rad)
        rel = np.stack([hit[i][sel] for i in range(3)], axis=1) - np.asarray(box.center_m)
        local = rel @ rot
        ax = box_axis[sel]
        rows = np.arange(len(ax))
        n_local = np.zeros_like(local)
        n_local[rows, ax] = np.sign(local[rows, ax])
        normal[sel] = n_local @ rot.T
        s[sel] = local[rows, np.where(ax == 0, 1, 0)]
        t[sel] = local[rows, np.where(ax == 2, 1, 2)]
    return s, t, normal


def render_frame(scene: Scene, config: SceneConfig, frame_index: int) -> list[RenderedView]:
    """All cameras of the rig at ``frame_index`` (the same stamp for every camera: a synchronized rig)."""
    stamp_ns = config.start_stamp_ns + round(frame_index * 1e9 / config.rate_hz)
    views = []
    for cam in config.cameras:
        pose = camera_pose(config, cam, frame_index)
        rgb, depth = render_view(scene, cam, pose)
        views.append(
            RenderedView(cam.name, cam.frame_id, frame_index, stamp_ns, cam.intrinsics, rgb, depth, pose)
        )
    return views


def render_sequence(config: SceneConfig, n_frames: int) -> Iterator[list[RenderedView]]:
    """Frames 0..n_frames-1 of the moving rig, one list of views (one per camera) per frame."""
    if n_frames <= 0:
        raise ValueError(f'n_frames must be positive, got {n_frames}')
    scene = build_scene(config, n_frames)
    for i in range(n_frames):
        yield render_frame(scene, config, i)
