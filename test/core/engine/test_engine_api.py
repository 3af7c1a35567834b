"""DepthEngine with the deterministic fake backend: order, per-frame errors, mixed batches, outputs."""
from __future__ import annotations

import math
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from metric3d_ros.core.config import EngineConfig
from metric3d_ros.core.engine.backend import FrameMeta, NetworkOutput, register_backend
from metric3d_ros.core.engine.engine import DepthEngine
from metric3d_ros.core.engine.test_backends import FakeBackend, SlowBackend
from metric3d_ros.core.engine.types import Frame, OutputRequest
from metric3d_ros.core.geometry.camera_info import (
    CameraInfoFields,
    intrinsics_from_camera_info,
    scale_camera_info,
)
from metric3d_ros.core.geometry.cloud import unproject_organized
from metric3d_ros.core.geometry.intrinsics import Intrinsics

torch.set_num_threads(2)
NET = dict(net_height_px=140, net_width_px=196)


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3)).astype(np.uint8)
    return np.ascontiguousarray(cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR))


def _frame(h, w, seed=0, fx=None, cam='cam'):
    fx = fx or 0.9 * w
    return Frame(_image(h, w, seed), Intrinsics(fx, fx * 1.01, w / 2 - 3.0, h / 2 + 2.0), cam, 1000 + seed)


def _engine(backend=None, **cfg):
    params = dict(NET, max_batch_size=4)
    params.update(cfg)
    return DepthEngine(EngineConfig(**params), backend or FakeBackend())


ALL = OutputRequest(outputs={'depth', 'confidence', 'normals', 'points'}, cloud_rgb=True, cloud_stride=3)


def test_one_result_per_frame_in_order_with_ids():
    engine = _engine()
    frames = [_frame(120, 160, i, cam=f'c{i}') for i in range(6)]
    results = engine.infer(frames)
    assert [r.camera_id for r in results] == [f'c{i}' for i in range(6)]
    assert [r.stamp_ns for r in results] == [1000 + i for i in range(6)]
    assert all(r.ok and r.arrays['depth_m'].shape == (120, 160) and r.arrays['depth_m'].dtype == np.float32
               for r in results)
    assert all('confidence' not in r.arrays and 'points_xyz' not in r.arrays for r in results)


def test_chunks_follow_max_batch_size():
    backend = FakeBackend()
    engine = _engine(backend, max_batch_size=2)
    engine.infer([_frame(60, 80, i) for i in range(5)])
    assert backend.calls == [2, 2, 1]


def _bad_frames():
    good = _frame(90, 120)
    k = good.intrinsics
    zero_fx = SimpleNamespace(fx_px=0.0, fy_px=k.fy_px, cx_px=k.cx_px, cy_px=k.cy_px)
    nan_cx = SimpleNamespace(fx_px=k.fx_px, fy_px=k.fy_px, cx_px=math.nan, cy_px=k.cy_px)
    return {
        'float image': Frame(good.image_rgb.astype(np.float32), k, 'bad', 1),
        'gray image': Frame(good.image_rgb[:, :, 0].copy(), k, 'bad', 1),
        'rgba image': Frame(np.zeros((90, 120, 4), np.uint8), k, 'bad', 1),
        'empty image': Frame(np.zeros((0, 120, 3), np.uint8), k, 'bad', 1),
        'not an array': Frame([[1, 2, 3]], k, 'bad', 1),  # type: ignore[arg-type]
        'zero fx': Frame(good.image_rgb, zero_fx, 'bad', 1),  # type: ignore[arg-type]
        'nan cx': Frame(good.image_rgb, nan_cx, 'bad', 1),  # type: ignore[arg-type]
        'extreme aspect': Frame(np.zeros((1, 5000, 3), np.uint8), k, 'bad', 1),
        'stamp None': Frame(good.image_rgb, k, 'bad', None),  # type: ignore[arg-type]
        'stamp text': Frame(good.image_rgb, k, 'bad', 'x'),  # type: ignore[arg-type]
        'stamp float': Frame(good.image_rgb, k, 'bad', 1.5),  # type: ignore[arg-type]
    }


@pytest.mark.parametrize('kind', list(_bad_frames()))
def test_a_bad_frame_fails_alone(kind):
    bad = _bad_frames()[kind]
    frames = [_frame(90, 120, 1, cam='a'), bad, _frame(100, 90, 2, cam='b')]
    engine = _engine()
    results = engine.infer(frames, ALL)
    assert [r.camera_id for r in results] == ['a', 'bad', 'b']
    assert results[1].error and 'depth_m' not in results[1].arrays and 'points_xyz' not in results[1].arrays
    alone = [engine.infer([f], ALL)[0] for f in (frames[0], frames[2])]
    for got, ref in zip((results[0], results[2]), alone, strict=True):
        assert got.ok, got.error
        np.testing.assert_array_equal(got.arrays['depth_m'], ref.arrays['depth_m'])
        np.testing.assert_array_equal(got.arrays['points_xyz'], ref.arrays['points_xyz'])


def test_a_bad_request_fails_its_frame_only():
    engine = _engine()
    frames = [_frame(90, 120, 1), _frame(90, 120, 2)]
    results = engine.infer(frames, [OutputRequest(outputs={'depth', 'points'}, cloud_stride=0),
                                    OutputRequest()])
    assert 'cloud_stride' in results[0].error
    assert results[1].ok


def test_request_list_must_match_frames():
    with pytest.raises(ValueError, match='one per frame'):
        _engine().infer([_frame(90, 120)], [OutputRequest(), OutputRequest()])


def test_mixed_resolutions_and_requests_equal_single_runs():
    engine = _engine(max_batch_size=8)
    frames = [_frame(1080 // 4, 1920 // 4, 0), _frame(720 // 4, 1280 // 4, 1), _frame(480 // 4, 640 // 4, 2),
              _frame(720 // 4, 1280 // 4, 3), _frame(200, 100, 4)]
    requests = [ALL,
                OutputRequest(outputs={'depth', 'confidence', 'points'}, resolution='network',
                              cloud_rgb=True),
                ALL, OutputRequest(outputs={'depth', 'normals'}), ALL]
    batched = engine.infer(frames, requests)
    for frame, req, got in zip(frames, requests, batched, strict=True):
        (alone,) = engine.infer([frame], req)
        assert got.ok and alone.ok
        assert got.intrinsics == alone.intrinsics
        assert set(got.arrays) == set(alone.arrays)
        for name, a in got.arrays.items():
            np.testing.assert_array_equal(a, alone.arrays[name], err_msg=name)


def test_per_frame_intrinsics_scale_the_right_frame():
    engine = _engine()
    f = _frame(90, 120, 7)
    k = f.intrinsics
    frames = [f, Frame(f.image_rgb, Intrinsics(2.5 * k.fx_px, k.fy_px, k.cx_px, k.cy_px), 'double', 2),
              Frame(f.image_rgb, Intrinsics(0.5 * k.fx_px, k.fy_px, k.cx_px, k.cy_px), 'half', 3)]
    d0, d1, d2 = (r.arrays['depth_m'] for r in engine.infer(frames))
    np.testing.assert_allclose(d1 / d0, 2.5, rtol=1e-6)
    np.testing.assert_allclose(d2 / d0, 0.5, rtol=1e-6)


def test_outputs_geometry_camera_resolution():
    engine = _engine()
    frame = _frame(90, 121, 3)
    (r,) = engine.infer([frame], ALL)
    assert r.intrinsics == frame.intrinsics
    conf = r.arrays['confidence']
    assert conf.shape == (90, 121) and np.all((conf > 0) & (conf < 1))
    np.testing.assert_allclose(np.linalg.norm(r.arrays['normals'], axis=-1), 1.0, atol=1e-5)
    assert r.arrays['points_xyz'].shape == (30, 41, 3) and r.arrays['points_rgb'].shape == (30, 41, 3)
    np.testing.assert_array_equal(r.arrays['points_rgb'], frame.image_rgb[::3, ::3])
    expected = unproject_organized(r.arrays['depth_m'], r.intrinsics, stride=3)
    np.testing.assert_allclose(r.arrays['points_xyz'], expected, rtol=1e-5, atol=1e-6)


def test_outputs_geometry_network_resolution():
    engine = _engine()
    frame = _frame(90, 120, 3)
    req = OutputRequest(outputs={'depth', 'confidence', 'normals', 'points'}, resolution='network',
                        cloud_rgb=True)
    (r,) = engine.infer([frame], req)
    scale = min(140 / 90, 196 / 120)
    rh, rw = int(90 * scale), int(120 * scale)
    assert r.arrays['depth_m'].shape == r.arrays['confidence'].shape == (rh, rw)
    assert r.arrays['normals'].shape == (rh, rw, 3)
    k = frame.intrinsics
    # The image's own intrinsics: the real resampling factors rw / W and rh / H (not upstream's s), pixel
    # centres at integers, which is also how the node scales the CameraInfo it publishes for this image.
    sx, sy = rw / 120, rh / 90
    assert r.intrinsics == Intrinsics(k.fx_px * sx, k.fy_px * sy, (k.cx_px + 0.5) * sx - 0.5,
                                      (k.cy_px + 0.5) * sy - 0.5)
    # ... so a consumer unprojecting the depth image with the node's depth CameraInfo gets the same cloud.
    info = CameraInfoFields(width=120, height=90, distortion_model='plumb_bob', d=(0.0,) * 5,
                            k=(k.fx_px, 0.0, k.cx_px, 0.0, k.fy_px, k.cy_px, 0.0, 0.0, 1.0),
                            r=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
                            p=(k.fx_px, 0.0, k.cx_px, 0.0, 0.0, k.fy_px, k.cy_px, 0.0, 0.0, 0.0, 1.0, 0.0))
    published = intrinsics_from_camera_info(scale_camera_info(info, rw, rh), rw, rh).intrinsics
    np.testing.assert_allclose(published.as_tuple(), r.intrinsics.as_tuple(), rtol=1e-12)
    expected = unproject_organized(r.arrays['depth_m'], r.intrinsics)
    np.testing.assert_allclose(r.arrays['points_xyz'], expected, rtol=1e-5, atol=1e-6)
    assert r.arrays['points_rgb'].shape == (rh, rw, 3) and r.arrays['points_rgb'].dtype == np.uint8
    # the colours are the pixels the network saw: the frame resized like upstream (cv2 INTER_LINEAR on uint8)
    resized = cv2.resize(frame.image_rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)
    # CPU: the cv2 reference path
    assert np.abs(r.arrays['points_rgb'].astype(int) - resized.astype(int)).max() == 0


def test_depth_range_limits_give_nan():
    engine = _engine()
    frame = _frame(90, 120, 5)
    (full,) = engine.infer([frame])
    lo, hi = np.nanpercentile(full.arrays['depth_m'], [25, 75])
    (r,) = engine.infer([frame], OutputRequest(outputs={'depth', 'points'}, min_depth_m=float(lo),
                                               max_depth_m=float(hi)))
    inside = (full.arrays['depth_m'] >= lo) & (full.arrays['depth_m'] <= hi)
    np.testing.assert_array_equal(np.isnan(r.arrays['depth_m']), ~inside)
    assert np.all(np.isnan(r.arrays['points_xyz'][~inside]))
    assert np.all(np.isfinite(r.arrays['points_xyz'][inside]))


def test_depth_beyond_upstreams_300_m_clamp_is_never_clamped():
    engine = _engine(backend=FakeBackend(depth_offset=150.0))
    frame = _frame(90, 120, 5, fx=3000.0)  # canonical ~150 m x ~3 -> ~450 m, upstream would clamp at 300
    (wide,) = engine.infer([frame], OutputRequest(max_depth_m=1000.0))
    assert np.nanmin(wide.arrays['depth_m']) > 300.0
    (node_default,) = engine.infer([frame], OutputRequest(max_depth_m=300.0))
    assert np.isnan(node_default.arrays['depth_m']).all()  # out of range: invalid, not 300


def test_timings_and_rgb255_input_format():
    backend = FakeBackend(input_format='rgb255')
    engine = _engine(backend)
    (r,) = engine.infer([_frame(90, 120, 1)])
    (n,) = _engine(FakeBackend()).infer([_frame(90, 120, 1)])
    np.testing.assert_allclose(r.arrays['depth_m'], n.arrays['depth_m'], rtol=1e-5)
    stages = {'upload', 'preprocess', 'network', 'postprocess', 'cloud', 'download', 'total'}
    assert stages <= set(r.timings_ms)


@pytest.mark.parametrize('mode', ['device', 'device_exact', 'reference'])
def test_every_preprocess_mode_runs(mode):
    (r,) = _engine(preprocess=mode).infer([_frame(90, 120, 1)])
    assert r.ok and r.arrays['depth_m'].shape == (90, 120)


def test_backend_failure_marks_the_chunk():
    class Broken(FakeBackend):
        def run(self, batch, metas):
            raise RuntimeError('device lost')

    results = _engine(Broken()).infer([_frame(90, 120, 1), _frame(90, 120, 2)])
    assert all('device lost' in r.error for r in results)


def test_missing_confidence_fails_only_the_frames_that_want_it():
    class DepthOnly(FakeBackend):
        def run(self, batch, metas):
            return NetworkOutput(super().run(batch, metas).depth)

    results = _engine(DepthOnly()).infer([_frame(90, 120, 1), _frame(90, 120, 2)],
                                         [OutputRequest(outputs={'depth', 'confidence'}), OutputRequest()])
    assert 'confidence' in results[0].error and results[1].ok


def test_backend_sees_per_frame_metadata():
    seen: list[list[FrameMeta]] = []

    class Spy(FakeBackend):
        def run(self, batch, metas):
            seen.append(list(metas))
            return super().run(batch, metas)

    frames = [_frame(90, 120, 1, cam='a'), _frame(60, 200, 2, cam='b')]
    _engine(Spy()).infer(frames)
    metas = {m.camera_id: m for m in seen[0]}
    assert sorted(m.index for m in seen[0]) == [0, 1]
    b = metas['b']
    assert (b.letterbox.src_height, b.letterbox.src_width) == (60, 200)
    assert b.network_intrinsics.fx_px == pytest.approx(frames[1].intrinsics.fx_px * b.letterbox.scale)


def test_slow_backend_delays_each_batch():
    engine = _engine(SlowBackend(FakeBackend(), delay_ms=60.0), max_batch_size=2)
    t0 = time.perf_counter()
    engine.infer([_frame(30, 40, i) for i in range(3)])
    assert time.perf_counter() - t0 >= 0.12


def test_registered_backend_and_close():
    register_backend('fake_for_test', lambda config, device: FakeBackend(device))
    engine = DepthEngine.from_config(EngineConfig(backend='fake_for_test', **NET))
    engine.warmup([1, 2])
    assert engine.infer([_frame(30, 40)])[0].ok
    engine.close()
    engine.close()
    with pytest.raises(RuntimeError, match='closed'):
        engine.infer([_frame(30, 40)])


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match='unknown backend'):
        DepthEngine.from_config(EngineConfig(backend='tensorflow', **NET))


@pytest.mark.parametrize('resolution', ['camera', 'network'])
def test_de_canonical_focal_is_each_frames_own_in_a_mixed_batch(resolution):
    # Constant canonical depth for every row: each frame's metric depth must be exactly C * fx_i * s_i / 1000
    # with its own fx and letterbox scale, whatever the batch order the engine chose (upstream's batched
    # script applied the last image's intrinsics to all images).
    from metric3d_ros.core.engine.test_backends import ReplayBackend

    canonical = 7.0
    sizes = [(90, 120), (60, 200), (90, 120), (100, 90), (60, 200)]
    fxs = [80.0, 300.0, 160.0, 55.0, 120.0]
    frames = [Frame(_image(h, w, i), Intrinsics(fx, 2.0 * fx, w / 2, h / 2), f'c{i}', i)
              for i, ((h, w), fx) in enumerate(zip(sizes, fxs, strict=True))]
    replay = ReplayBackend(np.full((5, 1, 140, 196), canonical, np.float32))
    results = _engine(replay, max_batch_size=8).infer(frames, OutputRequest(resolution=resolution))
    for (h, w), fx, r in zip(sizes, fxs, results, strict=True):
        s = min(140 / h, 196 / w)
        expected = np.float32(canonical) * np.float32(fx * s / 1000.0)
        assert r.ok, r.error
        np.testing.assert_allclose(r.arrays['depth_m'], expected, rtol=1e-6)


def test_fused_preprocessing_branch_replaces_fill_and_normalize(monkeypatch):
    """Where ``fill_normalized`` succeeds (CUDA + Triton; emulated here with the torch path) the engine skips
    ``fill`` and ``normalize_``; network-resolution cloud colours need the 0..255 batch: unfused path."""
    from metric3d_ros.core.engine.preprocess import Preprocessor

    calls = []
    real_fill, real_norm = Preprocessor.fill, Preprocessor.normalize_

    def fused(self, batch, staged, letterboxes, groups):
        calls.append('fused')
        real_fill(self, batch, staged, letterboxes, groups)
        real_norm(self, batch)
        return True

    def fill(self, *args):
        calls.append('fill')
        return real_fill(self, *args)

    monkeypatch.setattr(Preprocessor, 'fill_normalized', fused)
    monkeypatch.setattr(Preprocessor, 'fill', fill)
    frames = [_frame(90, 120, 1), _frame(60, 80, 2)]
    results = _engine(preprocess='device_exact').infer(frames, OutputRequest())
    assert calls == ['fused']
    monkeypatch.undo()
    reference = _engine(preprocess='device_exact').infer(frames, OutputRequest())
    for got, ref in zip(results, reference, strict=True):
        np.testing.assert_array_equal(got.arrays['depth_m'], ref.arrays['depth_m'])
    monkeypatch.setattr(Preprocessor, 'fill_normalized', fused)
    monkeypatch.setattr(Preprocessor, 'fill', fill)
    calls.clear()
    request = OutputRequest(outputs={'depth', 'points'}, cloud_rgb=True, resolution='network')
    (r,) = _engine(preprocess='device_exact').infer([_frame(90, 120, 1)], request)
    assert r.ok and 'points_rgb' in r.arrays and calls == ['fill']


def test_a_failing_fused_kernel_falls_back_to_the_torch_path_for_good(monkeypatch, caplog):
    from metric3d_ros.core.engine import fused_preprocess
    from metric3d_ros.core.engine.preprocess import Preprocessor

    launches = []

    def broken(*args, **kwargs):
        launches.append(1)
        raise RuntimeError('no C compiler for the Triton launcher')

    monkeypatch.setattr(fused_preprocess, 'available', lambda device_type: True)
    monkeypatch.setattr(fused_preprocess, 'letterbox_normalize', broken)
    engine = _engine(preprocess='device_exact')
    frames = [_frame(90, 120, 1)]
    first = engine.infer(frames)
    second = engine.infer(frames)
    assert first[0].ok and second[0].ok and len(launches) == 1
    assert 'fused preprocessing failed' in caplog.text
    monkeypatch.undo()
    (reference,) = _engine(preprocess='device_exact').infer(frames)
    np.testing.assert_array_equal(first[0].arrays['depth_m'], reference.arrays['depth_m'])
    pre = engine._lanes[0].pre
    assert isinstance(pre, Preprocessor) and pre._fused_failed
