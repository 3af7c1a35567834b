"""Engine acceptance on the CPU with the real ViT-S network and synthetic weights (small network sizes)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from model_refs import agreement, load_reference, meets_criterion

from metric3d_ros.core.config import EngineConfig
from metric3d_ros.core.engine.engine import DepthEngine
from metric3d_ros.core.engine.reference import reference_postprocess
from metric3d_ros.core.engine.types import Frame, OutputRequest
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.geometry.letterbox import compute_letterbox

torch.set_num_threads(2)

NYU_K = Intrinsics(518.8579, 519.46961, 325.58245, 253.73617)
KITTI_K = Intrinsics(721.5377, 721.5377, 609.5593, 172.854)


def _rgb(path):
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


@pytest.fixture(scope='module')
def images(shared_dir):
    return {'nyu': _rgb(shared_dir / 'data/nyu/rgb_00000.jpg'),
            'kitti': _rgb(shared_dir / 'data/kitti/rgb_0000000005.png')}


@pytest.fixture(scope='module')
def engine_140():
    engine = DepthEngine.from_config(EngineConfig(variant='small', weights='synthetic', net_height_px=140,
                                                  net_width_px=196, max_batch_size=4))
    yield engine
    engine.close()


def _criterion(ours, ref, what):
    fraction, ratio = agreement(ours, ref)
    assert meets_criterion(fraction, ratio), f'{what}: {fraction=:.5f} {ratio=:.2e}'


def test_mixed_resolution_batch_equals_single_runs(engine_140, images):
    wide = np.ascontiguousarray(cv2.resize(images['kitti'], (960, 540)))
    frames = [Frame(images['nyu'], NYU_K, 'nyu', 1), Frame(images['kitti'], KITTI_K, 'kitti', 2),
              Frame(wide, KITTI_K.scaled(960 / 1242, 540 / 375), 'wide', 3)]
    requests = [OutputRequest(outputs={'depth', 'confidence', 'normals'}),
                OutputRequest(outputs={'depth', 'confidence', 'normals'}, resolution='network'),
                OutputRequest(outputs={'depth', 'confidence', 'normals', 'points'}, cloud_stride=2)]
    batched = engine_140.infer(frames, requests)
    for frame, req, got in zip(frames, requests, batched, strict=True):
        (alone,) = engine_140.infer([frame], req)
        assert got.ok and alone.ok, (got.error, alone.error)
        assert got.intrinsics == alone.intrinsics
        _criterion(got.arrays['depth_m'], alone.arrays['depth_m'], f'{frame.camera_id} depth')
        _criterion(got.arrays['confidence'], alone.arrays['confidence'], f'{frame.camera_id} confidence')
        _criterion(got.arrays['normals'], alone.arrays['normals'], f'{frame.camera_id} normals')
        if 'points' in req.outputs:
            finite = np.isfinite(alone.arrays['points_xyz'])
            np.testing.assert_array_equal(np.isfinite(got.arrays['points_xyz']), finite)
            _criterion(got.arrays['points_xyz'][finite], alone.arrays['points_xyz'][finite],
                       f'{frame.camera_id} cloud')


def test_per_frame_intrinsics_in_one_batch(engine_140, images):
    k = NYU_K
    frames = [Frame(images['nyu'], k, 'a', 1),
              Frame(images['nyu'], Intrinsics(1.7 * k.fx_px, k.fy_px, k.cx_px, k.cy_px), 'b', 2),
              Frame(images['kitti'], KITTI_K, 'c', 3)]
    a, b, c = engine_140.infer(frames)
    _criterion(b.arrays['depth_m'] / 1.7, a.arrays['depth_m'], 'depth ratio equals fx ratio')
    c_depth = c.arrays['depth_m']
    assert abs(float(np.nanmedian(c_depth / np.nanmedian(c_depth))) - 1.0) < 1e-6  # finite, its own size
    assert c.arrays['depth_m'].shape == images['kitti'].shape[:2]


def test_bad_frame_fails_alone_with_the_network(engine_140, images):
    frames = [Frame(images['nyu'], NYU_K, 'a', 1), Frame(images['nyu'][:, :, :2].copy(), NYU_K, 'bad', 2),
              Frame(images['kitti'], KITTI_K, 'c', 3)]
    results = engine_140.infer(frames)
    assert results[1].error and 'uint8' in results[1].error
    (a,) = engine_140.infer([frames[0]])
    (c,) = engine_140.infer([frames[2]])
    _criterion(results[0].arrays['depth_m'], a.arrays['depth_m'], 'good frame before the bad one')
    _criterion(results[2].arrays['depth_m'], c.arrays['depth_m'], 'good frame after the bad one')


@pytest.mark.parametrize('mode', ['reference', 'device_exact'])
def test_end_to_end_at_280x392_matches_upstream(shared_dir, images, mode):
    """Raw NYU + KITTI in one batch -> the reference's canonical depth post-processed like upstream."""
    ref = load_reference(shared_dir, 'ref_vit_small_b2_280x392')
    engine = DepthEngine.from_config(EngineConfig(variant='small', weights='synthetic', net_height_px=280,
                                                  net_width_px=392, max_batch_size=2, preprocess=mode))
    frames = [Frame(images['nyu'], NYU_K, 'nyu', 1), Frame(images['kitti'], KITTI_K, 'kitti', 2)]
    results = engine.infer(frames, OutputRequest(outputs={'depth', 'confidence', 'normals'},
                                                 resolution='camera'))
    engine.close()
    for i, (res, fr) in enumerate(zip(results, ref.meta['frames'], strict=True)):
        lb = compute_letterbox(*fr['orig_hw'], 280, 392)
        canonical = torch.from_numpy(ref.arrays['depth'][i])
        expected = reference_postprocess(canonical, lb, fr['scaled_intrinsics'][0]).numpy()
        _criterion(res.arrays['depth_m'], expected, f'{mode} frame {i} depth')


@pytest.mark.slow
def test_reduced_precision_runs_on_cpu(images):
    """bf16 / fp16 autocast paths execute on the CPU and give finite float32 outputs of the right shape
    (their deviation from fp32 is measured by metric3d_bench and reported in docs/BENCHMARKS.md)."""
    for precision in ('bf16', 'fp16'):
        engine = DepthEngine.from_config(EngineConfig(variant='small', weights='synthetic', net_height_px=140,
                                                      net_width_px=196, precision=precision))
        (r,) = engine.infer([Frame(images['nyu'], NYU_K, 'a', 1)],
                            OutputRequest(outputs={'depth', 'confidence'}))
        engine.close()
        assert r.ok, r.error
        assert r.arrays['depth_m'].dtype == np.float32 and r.arrays['depth_m'].shape == (480, 640)
        assert np.isfinite(r.arrays['depth_m']).mean() > 0.99 and np.isfinite(r.arrays['confidence']).all()
