"""Depth validity in postprocessing: nothing clamped is published as valid (issue 16, "Range").

The network's canonical output is clamped to [0.1, 200] (the decoder's depth range): a pixel at either end is
saturated, and so is every output pixel whose bilinear resize draws on one. Metric depth is never clamped:
outside the request's [min_depth_m, max_depth_m] it is NaN, and a range above upstream's 300 m is honoured.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metric3d_ros.core.config import EngineConfig
from metric3d_ros.core.engine.engine import DepthEngine
from metric3d_ros.core.engine.test_backends import ReplayBackend
from metric3d_ros.core.engine.types import Frame, OutputRequest
from metric3d_ros.core.geometry.cloud import unproject_organized
from metric3d_ros.core.geometry.depth import encode_depth_16uc1
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.geometry.letterbox import compute_letterbox
from metric3d_ros.core.model.specs import get_spec

torch.set_num_threads(2)
NET_H, NET_W = 56, 84
SRC_H, SRC_W = 40, 80  # letterboxed with scale 1.05 into 42x84 + 7 rows of padding above and below
LB = compute_letterbox(SRC_H, SRC_W, NET_H, NET_W)
FX_NET = 4000.0  # fx * scale: metric depth = 4 * canonical
LO, HI = (get_spec('small').decoder.min_depth, get_spec('small').decoder.max_depth)


def _canonical() -> np.ndarray:
    """(1, 1, NET_H, NET_W) canonical depth: 150 (600 m), a 200 band (saturated high, 800 m once clamped),
    a 0.1 block (saturated low) and a 50 band (200 m)."""
    c = np.full((1, 1, NET_H, NET_W), 150.0, np.float32)
    c[..., :, 10:20] = HI
    c[..., 20:30, 50:60] = np.float32(LO)
    c[..., :, 70:] = 50.0
    return c


def _infer(request: OutputRequest):
    intr = Intrinsics(FX_NET / LB.scale, FX_NET / LB.scale, SRC_W / 2, SRC_H / 2)
    image = np.full((SRC_H, SRC_W, 3), 100, np.uint8)
    engine = DepthEngine(EngineConfig(net_height_px=NET_H, net_width_px=NET_W, max_batch_size=1),
                         ReplayBackend(_canonical()))
    (res,) = engine.infer([Frame(image, intr, 'cam', 1)], request)
    engine.close()
    assert res.ok, res.error
    return res


def _taps(coord: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear (align_corners False) taps of network coordinates: i0, i1 (clamped) and the i1 weight."""
    coord = np.clip(coord, 0.0, None)
    i0 = np.floor(coord).astype(int)
    frac = coord - i0
    return np.clip(i0, 0, size - 1), np.clip(i0 + 1, 0, size - 1), frac


def _camera_saturated() -> np.ndarray:
    """(SRC_H, SRC_W) bool: output pixels whose bilinear footprint (taps of non-zero weight) holds a saturated
    canonical pixel, derived from the letterbox's pixel mapping (independent of the engine's code)."""
    c = _canonical()[0, 0]
    sat = (c <= np.float32(LO)) | (c >= HI)
    rows, cols = LB.unpad_slices
    sat = sat[rows, cols]
    u, v = LB.source_to_network_uv(np.arange(SRC_W), np.arange(SRC_H))
    u0, u1, fu = _taps(u - LB.pad_left, LB.resized_width)
    v0, v1, fv = _taps(v - LB.pad_top, LB.resized_height)
    out = np.zeros((SRC_H, SRC_W), bool)
    for vi, vw in ((v0, np.ones_like(fv, bool)), (v1, fv > 0)):
        for ui, uw in ((u0, np.ones_like(fu, bool)), (u1, fu > 0)):
            out |= sat[vi][:, ui] & vw[:, None] & uw[None, :]
    return out


@pytest.mark.parametrize('resolution', ['camera', 'network'])
def test_saturated_canonical_depth_is_never_valid(resolution):
    res = _infer(OutputRequest(outputs={'depth', 'points'}, resolution=resolution, max_depth_m=1000.0))
    depth = res.arrays['depth_m']
    if resolution == 'network':
        rows, cols = LB.unpad_slices
        canonical = _canonical()[0, 0][rows, cols]
        saturated = (canonical <= np.float32(LO)) | (canonical >= HI)
        expected = canonical * np.float32(FX_NET / 1000.0)
    else:
        saturated = _camera_saturated()
        expected = None
    assert saturated.any() and (~saturated).any()
    np.testing.assert_array_equal(np.isnan(depth), saturated)
    if expected is not None:
        np.testing.assert_allclose(depth[~saturated], expected[~saturated], rtol=1e-6)
    # no pixel anywhere reads a clamped value: neither upstream's 300 m nor the canonical ends times 4
    finite = depth[np.isfinite(depth)]
    assert not np.any(np.isclose(finite, 300.0)) and not np.any(np.isclose(finite, 800.0))
    assert not np.any(finite < 1.0)  # 0.1 * 4 would be 0.4 m
    # the cloud and 16UC1 follow the depth
    assert np.array_equal(np.isnan(res.arrays['points_xyz'][..., 2]), saturated)
    np.testing.assert_allclose(res.arrays['points_xyz'], unproject_organized(depth, res.intrinsics),
                               rtol=1e-5, atol=1e-6)
    assert np.array_equal(encode_depth_16uc1(depth) == 0, saturated | (depth > 65.535))


def test_depth_beyond_300_m_is_honoured_not_clamped():
    """With max_depth_m 1000, unsaturated 600 m pixels read 600 (upstream's clamp would make them 300)."""
    res = _infer(OutputRequest(resolution='network', max_depth_m=1000.0))
    depth = res.arrays['depth_m']
    assert np.nanmax(depth) == pytest.approx(600.0, rel=1e-6)
    assert np.count_nonzero(np.isclose(depth, 600.0, rtol=1e-6)) > depth.size // 2


def test_depth_outside_the_request_range_is_nan_not_clamped():
    """The default request range of the node (max 300 m): 600 m pixels are NaN, 200 m pixels valid."""
    res = _infer(OutputRequest(outputs={'depth', 'points'}, resolution='network', max_depth_m=300.0))
    depth = res.arrays['depth_m']
    rows, cols = LB.unpad_slices
    canonical = _canonical()[0, 0][rows, cols]
    inside = canonical == 50.0
    np.testing.assert_array_equal(np.isfinite(depth), inside)
    np.testing.assert_allclose(depth[inside], 200.0, rtol=1e-6)
    assert np.array_equal(np.isfinite(res.arrays['points_xyz'][..., 2]), inside)
    assert math.isnan(float(res.arrays['points_xyz'][0, 0, 0]))
