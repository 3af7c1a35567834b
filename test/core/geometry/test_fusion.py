"""core/geometry/fusion.py: extrinsics, the stamp policy, and the fused cloud against its float64 reference
(the union of the per-camera organized clouds moved by the known extrinsics)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from metric3d_ros.core.geometry.cloud import unproject_organized
from metric3d_ros.core.geometry.fusion import (
    CameraDepth,
    FusionConfig,
    RigidTransform,
    fuse_depths,
    read_rig_extrinsics,
    select_cameras,
)
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.synthetic_scene import SceneConfig, build_scene, render_frame, rig_pose


def _reference(cameras, config):
    """float64 union of unproject_organized clouds moved by each camera's extrinsic, with the crops."""
    xyz, index = [], []
    for cam in cameras:
        p = unproject_organized(cam.depth_m, cam.intrinsics, config.stride).reshape(-1, 3).astype(np.float64)
        with np.errstate(invalid='ignore'):
            dist = np.linalg.norm(p, axis=1)
            keep = np.isfinite(p[:, 2]) & (dist >= config.min_range_m) & (dist <= config.max_range_m)
        base = cam.base_from_optical.apply(p)
        with np.errstate(invalid='ignore'):
            keep &= (base[:, 2] >= config.min_height_m) & (base[:, 2] <= config.max_height_m)
        xyz.append(base[keep])
        index.append(np.full(int(keep.sum()), cam.index))
    return np.concatenate(xyz), np.concatenate(index)


def test_rigid_transform_quaternion_and_matrix_round_trip():
    t = RigidTransform((1.0, -2.0, 0.5), (0.1, -0.3, 0.2, 0.9273618495495704))
    r = t.rotation_matrix()
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    back = RigidTransform.from_matrix(t.matrix())
    np.testing.assert_allclose(back.rotation_xyzw, t.rotation_xyzw, atol=1e-12)
    np.testing.assert_allclose(back.translation_m, t.translation_m)
    p = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(t.apply(p), (t.matrix() @ np.append(p[0], 1.0))[None, :3])
    # 90 degrees about z (x, y, z, w): x -> y
    quarter = RigidTransform(rotation_xyzw=(0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5)))
    np.testing.assert_allclose(quarter.apply([1.0, 0.0, 0.0]), [0.0, 1.0, 0.0], atol=1e-12)
    assert RigidTransform.from_wxyz((0, 0, 0), (math.sqrt(0.5), 0, 0, math.sqrt(0.5))) == quarter
    for r in (np.diag([1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, -1.0])):  # a reflection is no rotation
        with pytest.raises(ValueError, match='not a rotation'):
            RigidTransform.from_matrix(np.pad(r, ((0, 1), (0, 1))))
    for m in ([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], [[1, 0, 0], [0, -1, 0], [0, 0, -1]]):  # 180 degrees
        m = np.asarray(m, dtype=float)
        np.testing.assert_allclose(RigidTransform.from_matrix(np.c_[m, np.zeros(3)]).rotation_matrix(), m,
                                   atol=1e-12)


def test_rigid_transform_rejects_bad_values():
    with pytest.raises(ValueError, match='unit quaternion'):
        RigidTransform(rotation_xyzw=(0.0, 0.0, 0.0, 2.0))
    with pytest.raises(ValueError, match='translation_m must be 3 finite numbers'):
        RigidTransform(translation_m=(0.0, math.nan, 0.0))
    with pytest.raises(ValueError, match='rotation_xyzw'):
        RigidTransform(rotation_xyzw=(0.0, 0.0, 1.0))
    # a quaternion rounded to 4 digits is normalized
    assert abs(np.linalg.norm(RigidTransform(rotation_xyzw=(0.7071, 0, 0, 0.7071)).rotation_xyzw) - 1) < 1e-15


def test_fusion_config_validation_names_the_field():
    for kwargs, match in (({'stride': 0}, 'stride'), ({'voxel_m': 0.0001}, 'voxel_m'),
                          ({'min_range_m': 5.0, 'max_range_m': 1.0}, 'min_range_m'),
                          ({'min_height_m': 1.0, 'max_height_m': 0.0}, 'min_height_m'),
                          ({'stamp_tolerance_ms': -1.0}, 'stamp_tolerance_ms'),
                          ({'base_frame': '/base_link'}, 'base_frame')):
        with pytest.raises(ValueError, match=match):
            FusionConfig(**kwargs)


def test_stamp_policy_newest_stamp_and_tolerance():
    newest, kept = select_cameras([1_000_000_000, 1_040_000_000, 1_100_000_000], 50.0)
    assert newest == 1_100_000_000 and kept == [False, False, True]
    newest, kept = select_cameras([1_000_000_000, 1_050_000_000], 50.0)  # inclusive
    assert newest == 1_050_000_000 and kept == [True, True]
    with pytest.raises(ValueError):
        select_cameras([], 10.0)


@pytest.fixture(scope='module')
def synthetic_views():
    config = SceneConfig(n_boxes=6)
    return config, render_frame(build_scene(config, 1), config, 0)


def _rig_extrinsics(config, views):
    """base (the rig) from optical of every view: T_world_rig^-1 T_world_camera, the known extrinsics."""
    r_rig, t_rig = rig_pose(config, 0)
    world_rig = np.eye(4)
    world_rig[:3, :3], world_rig[:3, 3] = r_rig, t_rig
    return [RigidTransform.from_matrix(np.linalg.inv(world_rig) @ v.T_world_camera) for v in views]


@pytest.mark.parametrize('stride', [1, 3])
def test_synthetic_rig_fused_equals_union_of_moved_camera_clouds(synthetic_views, stride):
    config, views = synthetic_views
    extrinsics = _rig_extrinsics(config, views)
    cams = [CameraDepth(i, v.depth_m, v.intrinsics, e) for i, (v, e) in enumerate(zip(views, extrinsics,
                                                                                        strict=True))]
    fusion = FusionConfig(base_frame='rig', stride=stride, max_range_m=1000.0)
    cloud = fuse_depths(cams, fusion)
    ref_xyz, ref_index = _reference(cams, fusion)
    assert cloud.xyz.dtype == np.float32 and cloud.camera_index.dtype == np.uint32
    assert len(cloud) == ref_xyz.shape[0] > 0
    np.testing.assert_array_equal(cloud.camera_index, ref_index)
    scale = np.abs(ref_xyz).max()
    err = np.abs(cloud.xyz.astype(np.float64) - ref_xyz).max()
    # float32 rounding of x, y, z and of R p + t
    assert err <= 4 * np.finfo(np.float32).eps * scale, (err, scale)
    assert cloud.points_per_camera == {i: int((ref_index == i).sum()) for i in range(len(views))}
    # the scene is consistent: in the world every fused point lies inside the room (floor at 0)
    r_rig, t_rig = rig_pose(config, 0)
    world = cloud.xyz.astype(np.float64) @ r_rig.T + t_rig
    lx, ly, lz = config.room_size_m
    assert (world[:, 2] > -1e-3).all() and (world[:, 2] < lz + 1e-3).all()
    assert (np.abs(world[:, 0]) < lx / 2 + 1e-3).all() and (np.abs(world[:, 1]) < ly / 2 + 1e-3).all()


def test_range_crop_height_band_and_invalid_depth():
    depth = np.full((4, 5), 2.0, dtype=np.float32)
    depth[0, 0] = np.nan
    depth[0, 1] = 0.0
    depth[1, 1] = 9.0  # beyond max_range_m
    depth[2, 2] = 0.5  # below min_range_m
    intr = Intrinsics(4.0, 4.0, 2.0, 1.5)
    # a forward-looking camera 1 m above the base (optical z -> base x, optical y -> base -z)
    up = RigidTransform.from_matrix(np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0],
                                              [0.0, -1.0, 0.0, 1.0]]))
    config = FusionConfig(stride=1, min_range_m=1.0, max_range_m=5.0, min_height_m=0.0, max_height_m=2.9)
    cloud = fuse_depths([CameraDepth(3, depth, intr, up)], config)
    ref, _ = _reference([CameraDepth(3, depth, intr, up)], config)
    assert len(cloud) == 16 == ref.shape[0]  # 20 pixels - NaN - 0 - too far - too near
    np.testing.assert_allclose(cloud.xyz, ref, atol=1e-6)
    assert (cloud.camera_index == 3).all()
    # the height band is in the base frame: z_base = 1 - y_optical = 1.75, 1.25, 0.75, 0.25 m by row
    band = FusionConfig(stride=1, min_height_m=1.0, max_height_m=2.0)
    banded = fuse_depths([CameraDepth(0, depth, intr, up)], band)
    kept = np.isfinite(depth[:2]) & (depth[:2] > 0)
    kept &= np.abs(1.0 - (np.arange(2)[:, None] - 1.5) * depth[:2] / 4.0 - 1.5) <= 0.5
    assert len(banded) == int(kept.sum()) > 0
    assert (banded.xyz[:, 2] >= 1.0).all() and (banded.xyz[:, 2] <= 2.0).all()


def test_voxel_decimation_keeps_the_first_point_of_each_voxel():
    rng = np.random.default_rng(5)
    depth_a = rng.uniform(1.0, 3.0, (30, 40)).astype(np.float32)
    depth_b = rng.uniform(1.0, 3.0, (20, 25)).astype(np.float32)
    intr_a, intr_b = Intrinsics(30.0, 30.0, 20.0, 15.0), Intrinsics(20.0, 20.0, 12.0, 10.0)
    pose_b = RigidTransform((0.1, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))  # overlapping views
    cams = [CameraDepth(0, depth_a, intr_a, RigidTransform()), CameraDepth(1, depth_b, intr_b, pose_b)]
    full = fuse_depths(cams, FusionConfig(stride=1))
    voxel_m = 0.25
    cloud = fuse_depths(cams, FusionConfig(stride=1, voxel_m=voxel_m))
    keys_full = np.floor(full.xyz.astype(np.float64) / voxel_m).astype(np.int64)
    _, first = np.unique(keys_full, axis=0, return_index=True)
    first.sort()
    assert 0 < len(cloud) < len(full)
    np.testing.assert_array_equal(cloud.xyz, full.xyz[first])  # the first point of each occupied voxel
    np.testing.assert_array_equal(cloud.camera_index, full.camera_index[first])
    assert set(np.unique(cloud.camera_index)) == {0, 1}


def test_rgb_samples_the_nearest_image_pixel():
    depth = np.full((6, 8), 2.0, dtype=np.float32)
    image = np.arange(12 * 16 * 3, dtype=np.uint32).reshape(12, 16, 3).astype(np.uint8)  # twice the size
    cam = CameraDepth(0, depth, Intrinsics(5.0, 5.0, 4.0, 3.0), RigidTransform(), rgb=image)
    cloud = fuse_depths([cam], FusionConfig(stride=2, rgb=True))
    assert cloud.rgb is not None and cloud.rgb.shape == (12, 3)
    expected = image[1::4, 1::4].reshape(-1, 3)  # depth pixel (v, u) -> image pixel (2v + 1, 2u + 1)
    np.testing.assert_array_equal(cloud.rgb, expected)
    same = fuse_depths([CameraDepth(0, depth, cam.intrinsics, RigidTransform(), rgb=image[::2, ::2])],
                       FusionConfig(stride=2, rgb=True))
    np.testing.assert_array_equal(same.rgb, image[::2, ::2][::2, ::2].reshape(-1, 3))
    with pytest.raises(ValueError, match='rgb'):
        fuse_depths([CameraDepth(0, depth, cam.intrinsics, RigidTransform())], FusionConfig(rgb=True))


def test_no_camera_gives_an_empty_cloud():
    cloud = fuse_depths([], FusionConfig(rgb=True))
    assert cloud.xyz.shape == (0, 3) and cloud.camera_index.shape == (0,) and cloud.rgb.shape == (0, 3)


def test_ddad_rig_file(shared_dir, tmp_path):
    rig = read_rig_extrinsics(shared_dir / 'data' / 'ddad_rig' / 'rig.json')
    assert set(rig) == {'CAMERA_01', 'CAMERA_05', 'CAMERA_06'}
    front = rig['CAMERA_01']
    # the front camera looks forward: its optical z is the vehicle's x
    np.testing.assert_allclose(front.rotation_matrix()[:, 2], [1.0, 0.0, 0.0], atol=0.05)
    assert 1.0 < front.translation_m[2] < 2.0
    bad = tmp_path / 'rig.json'
    bad.write_text('{"cameras": {"a": {"T_vehicle_camera": {"rotation_wxyz": [2, 0, 0, 0], '
                   '"translation_xyz": [0, 0, 0]}}}}')
    with pytest.raises(ValueError, match="camera 'a'.*unit quaternion"):
        read_rig_extrinsics(bad)
    bad.write_text('{"cameras": {"a": {}}}')
    with pytest.raises(ValueError, match='T_vehicle_camera'):
        read_rig_extrinsics(bad)
