"""Synthetic ray-cast scene: exact depth, determinism, camera layout."""
from __future__ import annotations

import numpy as np
import pytest

from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.synthetic_scene import (
    CameraSpec,
    SceneConfig,
    build_scene,
    camera_pose,
    default_cameras,
    render_frame,
    render_sequence,
    render_view,
)

SMALL = (
    CameraSpec('a', 64, 48, Intrinsics(50.0, 50.0, 31.5, 24.0), yaw_deg=0.0, pitch_deg=5.0),
    CameraSpec('b', 96, 54, Intrinsics(60.0, 58.0, 47.0, 26.5), yaw_deg=120.0, pitch_deg=8.0),
    CameraSpec('c', 128, 72, Intrinsics(90.0, 90.0, 63.0, 36.0), yaw_deg=-120.0),
)


def _unproject_world(view) -> np.ndarray:
    h, w = view.depth_m.shape
    k = view.intrinsics
    v, u = np.mgrid[0:h, 0:w]
    z = view.depth_m.astype(np.float64)
    pts = np.stack([(u - k.cx_px) / k.fx_px * z, (v - k.cy_px) / k.fy_px * z, z], axis=-1).reshape(-1, 3)
    return pts @ view.T_world_camera[:3, :3].T + view.T_world_camera[:3, 3]


def _distance_to_scene_surfaces(points: np.ndarray, scene) -> np.ndarray:
    lx, ly, lz = scene.room_size_m
    lo = np.array([-lx / 2, -ly / 2, 0.0])
    hi = np.array([lx / 2, ly / 2, lz])
    dist = np.minimum(np.abs(points - lo), np.abs(points - hi)).min(axis=1)
    for box in scene.boxes:
        c, s = np.cos(box.yaw_rad), np.sin(box.yaw_rad)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        local = (points - np.asarray(box.center_m)) @ rot
        excess = np.abs(local) - np.asarray(box.size_m) / 2  # <= 0 inside on every axis
        on_box = np.where(np.all(excess <= 1e-4, axis=1), np.abs(excess.max(axis=1)), np.inf)
        dist = np.minimum(dist, on_box)
    return dist


def test_every_pixel_lies_on_a_scene_surface():
    cfg = SceneConfig(cameras=SMALL, seed=3)
    scene = build_scene(cfg, 2)
    views = render_frame(scene, cfg, 1)
    for view in views:
        pts = _unproject_world(view)
        # float32 depth of up to ~7 m: about 5e-7 m rounding.
        assert _distance_to_scene_surfaces(pts, scene).max() < 2e-5, view.camera
    assert any(len(scene.boxes) and np.any(view.depth_m < 2.5) for view in views)


def test_analytic_depth_in_an_empty_room():
    cam = CameraSpec('f', 41, 31, Intrinsics(20.0, 20.0, 20.0, 15.0))
    cfg = SceneConfig(cameras=(cam,), n_boxes=0, rig_start_xy_m=(1.0, 0.0), rig_height_m=1.0,
                      room_size_m=(10.0, 8.0, 3.0))
    (view,) = next(render_sequence(cfg, 1))
    # The principal ray looks along +x from x = 1: the wall at x = 5 is 4 m away.
    assert view.depth_m[15, 20] == pytest.approx(4.0, abs=1e-6)
    # The bottom row looks down by (30 - 15) / 20: the floor 1 m below is met at depth 1 / 0.75 unless the
    # wall (4 m) comes first.
    assert view.depth_m[30, 20] == pytest.approx(min(1.0 / 0.75, 4.0), abs=1e-6)
    assert view.depth_m[0, 20] == pytest.approx(2.0 / 0.75, abs=1e-6)  # ceiling 2 m above


def test_deterministic_and_seeded():
    cfg = SceneConfig(cameras=SMALL, seed=7)
    a = [v for frame in render_sequence(cfg, 2) for v in frame]
    b = [v for frame in render_sequence(cfg, 2) for v in frame]
    for va, vb in zip(a, b, strict=True):
        assert np.array_equal(va.image_rgb, vb.image_rgb)
        assert np.array_equal(va.depth_m, vb.depth_m)
    other = next(render_sequence(SceneConfig(cameras=SMALL, seed=8), 1))
    assert not np.array_equal(a[0].image_rgb, other[0].image_rgb)


def test_cameras_stamps_and_motion():
    cfg = SceneConfig(cameras=SMALL, rate_hz=5.0, start_stamp_ns=1000)
    frames = list(render_sequence(cfg, 3))
    assert [len(f) for f in frames] == [3, 3, 3]
    for i, frame in enumerate(frames):
        for spec, view in zip(SMALL, frame, strict=True):
            assert view.image_rgb.shape == (spec.height_px, spec.width_px, 3)
            assert view.image_rgb.dtype == np.uint8
            assert view.depth_m.shape == (spec.height_px, spec.width_px)
            assert view.depth_m.dtype == np.float32
            assert np.isfinite(view.depth_m).all() and (view.depth_m > 0).all()
            assert view.stamp_ns == 1000 + i * 200_000_000
            assert view.frame_id == f'{spec.name}_optical_frame'
            assert view.intrinsics == spec.intrinsics
    pose0 = camera_pose(cfg, SMALL[0], 0)
    pose2 = camera_pose(cfg, SMALL[0], 2)
    moved_m = np.linalg.norm(pose2[:3, 3] - pose0[:3, 3])
    assert 0.0 < moved_m < 0.5  # a slowly moving rig
    # The optical z axis of camera 'c' (yaw -120 deg) points to the rig's rear right.
    z_axis = camera_pose(cfg, SMALL[2], 0)[:3, 2]
    assert z_axis[0] < 0 and z_axis[1] < 0


def test_default_rig_has_three_resolutions():
    cams = default_cameras()
    assert [(c.width_px, c.height_px) for c in cams] == [(640, 480), (960, 540), (1280, 720)]
    assert len({c.intrinsics for c in cams}) == 3


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match='unique'):
        SceneConfig(cameras=(SMALL[0], SMALL[0]))
    with pytest.raises(ValueError, match='rig_height_m'):
        SceneConfig(rig_height_m=5.0)
    with pytest.raises(ValueError, match='width_px'):
        CameraSpec('x', 0, 10, Intrinsics(1, 1, 0, 0))
    with pytest.raises(ValueError, match='camera name'):
        CameraSpec('a/b', 10, 10, Intrinsics(1, 1, 0, 0))
    with pytest.raises(ValueError, match='n_frames'):
        next(render_sequence(SceneConfig(cameras=SMALL), 0))
    cfg = SceneConfig(cameras=SMALL)
    pose = camera_pose(cfg, SMALL[0], 0)
    pose[0, 3] = 100.0
    with pytest.raises(ValueError, match='outside the room'):
        render_view(build_scene(cfg), SMALL[0], pose)
