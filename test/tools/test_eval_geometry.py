"""Geometry proof on real cameras: the ground-truth backend through the whole engine gives near-zero error.

The ground-truth backend hands the engine the canonical depth that the recorded ground truth implies for
the letterboxed network input (see metric3d_ros.core.engine.gt_backend); the engine un-pads, resizes and
rescales it with the camera's intrinsics exactly as it does a network's output. What is left is resampling
error. Bounds (network input 616x1064, measured values in brackets):

- synthetic room, exact dense depth, 3 cameras: AbsRel < 1e-3 [3.7e-4 .. 5.1e-4], |median(p/g) - 1| < 1e-5;
- NYU (dense Kinect depth with holes): AbsRel < 2e-3 [1.08e-3], |median(p/g) - 1| < 1e-5 [0];
- KITTI (semi-dense LiDAR, 19 % of pixels): AbsRel < 6e-3 [4.0e-3], |median(p/g) - 1| < 2e-3 [7.1e-4];
- DDAD rig (sparse LiDAR, 0.2-0.5 % of pixels, 3 cameras x 3 samples): per camera AbsRel < 0.05
  [4.3e-3 .. 3.5e-2], |median(p/g) - 1| < 1e-3 [< 1e-6], delta1 > 0.95 [0.957 .. 0.997]. LiDAR holes are
  filled with the nearest return before resampling and never evaluated; the remaining error sits at
  occlusion edges where projected returns of foreground and background interleave (CAMERA_06 most).
- every organized cloud equals the unprojection of its depth with the CameraInfo intrinsics (< 1e-4 m).

The bounds are tight enough to catch a one-pixel shift of the network canvas or a 1 % scale error
(``test_bound_catches_a_shift_or_a_scale_error``).
"""
from __future__ import annotations

import numpy as np
import pytest

from metric3d_ros.core.engine import gt_backend
from metric3d_ros.core.metrics import MetricsConfig
from metric3d_ros.core.synthetic_scene import SceneConfig
from metric3d_ros.tools import evaluate as ev
from metric3d_ros.tools.bag_builder import (
    BagOptions,
    cameras_from_preset,
    write_camera_bag,
    write_synthetic_bag,
)

NET = {'net_size': '616x1064'}


def _proof(bag, out, max_depth_m, median=False):
    metrics = MetricsConfig(min_depth_m=1e-3, max_depth_m=max_depth_m)
    options = ev.EvalOptions(metrics=metrics, figures=False, cloud_stride=4, median_scaled=median)
    report = ev.evaluate_with_backend(bag, 'gt', NET, options, out, write=False)
    assert report['counts']['errors'] == 0
    assert report['counts']['frames'] == report['counts']['frames_with_gt']
    assert report['cloud_check']['max_abs_diff_m'] < 1e-4
    return report


def _preset_bag(tmp_path, shared_dir, name, storage='sqlite3'):
    bag = tmp_path / name
    write_camera_bag(bag, cameras_from_preset(name, shared_dir / 'data'), BagOptions(storage=storage))
    return bag


def test_synthetic_room_exact_depth(tmp_path):
    bag = tmp_path / 'room'
    write_synthetic_bag(bag, SceneConfig(), 1, BagOptions())
    report = _proof(bag, tmp_path / 'r', 20.0)
    cams = report['metrics']['cameras']
    assert set(cams) == {'front', 'left', 'right'}
    for name, m in cams.items():
        assert m['abs_rel'] < 1e-3, name
        assert abs(m['scale_ratio'] - 1.0) < 1e-5, name
        assert m['delta1'] > 0.999 and m['coverage'] == 1.0, name


def test_nyu_dense(tmp_path, shared_dir):
    m = _proof(_preset_bag(tmp_path, shared_dir, 'nyu'), tmp_path / 'r', 10.0)['metrics']['overall']
    assert m['abs_rel'] < 2e-3
    assert abs(m['scale_ratio'] - 1.0) < 1e-5
    assert m['delta1'] > 0.9999 and m['coverage'] == 1.0


def test_kitti_semi_dense_lidar(tmp_path, shared_dir):
    bag = _preset_bag(tmp_path, shared_dir, 'kitti', 'mcap')
    m = _proof(bag, tmp_path / 'r', 250.0)['metrics']['overall']
    assert m['abs_rel'] < 6e-3
    assert abs(m['scale_ratio'] - 1.0) < 2e-3
    assert m['delta1'] > 0.999 and m['coverage'] == 1.0


def test_ddad_rig_sparse_lidar(tmp_path, shared_dir):
    report = _proof(_preset_bag(tmp_path, shared_dir, 'ddad'), tmp_path / 'r', 250.0)
    assert report['counts']['frames'] == 9 and report['counts']['batches'] == 3  # one batch per sample
    cams = report['metrics']['cameras']
    assert set(cams) == {'CAMERA_01', 'CAMERA_05', 'CAMERA_06'}
    for name, m in cams.items():
        assert m['frames'] == 3, name
        assert m['abs_rel'] < 0.05, name
        assert abs(m['scale_ratio'] - 1.0) < 1e-3, name
        assert m['delta1'] > 0.95 and m['coverage'] == 1.0, name


@pytest.mark.parametrize('fault', ['shift_1px', 'scale_1pct'])
def test_bound_catches_a_shift_or_a_scale_error(tmp_path, shared_dir, monkeypatch, fault):
    original = gt_backend.ground_truth_canvas

    def faulty(*args, **kwargs):
        canvas = original(*args, **kwargs)
        return np.roll(canvas, 1, axis=1) if fault == 'shift_1px' else canvas * np.float32(1.01)

    monkeypatch.setattr(gt_backend, 'ground_truth_canvas', faulty)
    m = _proof(_preset_bag(tmp_path, shared_dir, 'nyu'), tmp_path / 'r', 10.0)['metrics']['overall']
    if fault == 'shift_1px':
        assert m['abs_rel'] > 2e-3  # 3.1e-3 measured
    else:
        assert m['abs_rel'] > 5e-3 and m['scale_ratio'] == pytest.approx(1.01, abs=1e-4)
