"""Metric3D letterbox: upstream's scale, truncation, padding split, intrinsics and the inverse mapping."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from metric3d_ros.core.geometry import (
    PADDING_RGB,
    PADDING_RGB_UINT8,
    Intrinsics,
    Letterbox,
    compute_letterbox,
)

REFERENCE_NAMES = (
    'ref_vit_giant2_b1_140x196',
    'ref_vit_large_b1_280x392',
    'ref_vit_small_b1_616x1064',
    'ref_vit_small_b1_616x1064_kitti',
    'ref_vit_small_b2_280x392',
)
IMAGE_OF_SOURCE = {
    'nyu_demo/rgb/rgb_00000.jpg': 'data/nyu/rgb_00000.jpg',
    'kitti_demo/rgb/0000000005.png': 'data/kitti/rgb_0000000005.png',
}


def reference_frames(shared_dir: Path):
    for name in REFERENCE_NAMES:
        meta = json.loads((shared_dir / 'reference' / 'metric3d' / f'{name}.json').read_text())
        for index, frame in enumerate(meta['frames']):
            yield name, index, tuple(meta['input_hw']), frame


def test_reference_cases_cover_nyu_and_kitti_at_three_sizes(shared_dir):
    cases = {(tuple(f['orig_hw']), net) for _, _, net, f in reference_frames(shared_dir)}
    assert cases == {
        ((480, 640), (616, 1064)),
        ((480, 640), (280, 392)),
        ((480, 640), (140, 196)),
        ((375, 1242), (616, 1064)),
        ((375, 1242), (280, 392)),
    }


def test_matches_upstream_reference_json(shared_dir):
    for name, index, (net_h, net_w), frame in reference_frames(shared_dir):
        h, w = frame['orig_hw']
        lb = compute_letterbox(h, w, net_h, net_w)
        where = f'{name} frame {index}'
        assert lb.scale == pytest.approx(frame['scale'], rel=1e-15), where
        assert lb.pad_info == tuple(frame['pad_info']), where
        scaled = lb.scale_intrinsics(Intrinsics(*frame['intrinsics']))
        assert scaled.as_tuple() == pytest.approx(tuple(frame['scaled_intrinsics']), rel=1e-12), where


@pytest.mark.parametrize(
    ('src_hw', 'net_hw', 'scale', 'resized_hw', 'pad_info'),
    [
        # 640 * 0.29166.. = 186.67 -> 186 (rounding would give 187 and pads 4 / 5)
        ((480, 640), (140, 196), 140 / 480, (140, 186), (0, 0, 5, 5)),
        # 640 * 0.58333.. = 373.33 -> 373, pad_w = 19 -> left 9, right 10
        ((480, 640), (280, 392), 280 / 480, (280, 373), (0, 0, 9, 10)),
        # width-limited: scale = 1064 / 1242, 375 * scale = 321.26 -> 321, pad_h = 295 -> 147 / 148
        ((375, 1242), (616, 1064), 1064 / 1242, (321, 1064), (147, 148, 0, 0)),
        # upscaling, exact fit
        ((100, 100), (200, 200), 2.0, (200, 200), (0, 0, 0, 0)),
        # 11 * (15 / 11) = 14.999999999999998 in floating point: truncation gives 14, as upstream does
        ((11, 11), (15, 15), 15 / 11, (14, 14), (0, 1, 0, 1)),
    ],
)
def test_hand_computed_letterboxes(src_hw, net_hw, scale, resized_hw, pad_info):
    lb = compute_letterbox(*src_hw, *net_hw)
    assert lb.scale == scale
    assert (lb.resized_height, lb.resized_width) == resized_hw
    assert lb.pad_info == pad_info
    assert (lb.pad_top, lb.pad_bottom, lb.pad_left, lb.pad_right) == pad_info
    assert lb.resized_height + lb.pad_top + lb.pad_bottom == net_hw[0]
    assert lb.resized_width + lb.pad_left + lb.pad_right == net_hw[1]


def test_float_truncation_case_is_what_int_gives():
    # Guards the "int(w * scale)" rule against "round" in the floating-point edge case above.
    assert 11 * (15 / 11) < 15.0
    assert int(11 * (15 / 11)) == 14 and round(11 * (15 / 11)) == 15


def test_scale_intrinsics_does_not_shift_by_padding():
    lb = compute_letterbox(480, 640, 616, 1064)
    assert lb.pad_left == 121
    scaled = lb.scale_intrinsics(Intrinsics(518.8579, 519.46961, 325.58245, 253.73617))
    s = lb.scale
    assert scaled == Intrinsics(518.8579 * s, 519.46961 * s, 325.58245 * s, 253.73617 * s)


def test_unpad_slices_select_the_resized_image():
    lb = compute_letterbox(375, 1242, 280, 392)
    rows, cols = lb.unpad_slices
    assert (rows, cols) == (slice(81, 199), slice(0, 392))
    net = np.zeros((lb.net_height, lb.net_width), dtype=np.int32)
    net[rows, cols] = 1
    assert net.sum() == lb.resized_height * lb.resized_width
    assert net[: lb.pad_top].sum() == 0 and net[lb.net_height - lb.pad_bottom :].sum() == 0


def test_padding_colour_constants():
    assert PADDING_RGB == (123.675, 116.28, 103.53)
    # cv2 rounds the float padding colour when writing uint8.
    padded = cv2.copyMakeBorder(
        np.zeros((2, 2, 3), np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=PADDING_RGB
    )
    assert tuple(int(c) for c in padded[0, 0]) == PADDING_RGB_UINT8 == (124, 116, 104)


@pytest.mark.parametrize('name', ['ref_vit_small_b1_616x1064', 'ref_vit_small_b1_616x1064_kitti'])
def test_letterbox_reproduces_upstream_network_input(shared_dir, name):
    """cv2 INTER_LINEAR to the letterbox's resized size + mean padding with its pad_info gives input_u8."""
    ref_dir = shared_dir / 'reference' / 'metric3d'
    meta = json.loads((ref_dir / f'{name}.json').read_text())
    frame = meta['frames'][0]
    bgr = cv2.imread(str(shared_dir / IMAGE_OF_SOURCE[frame['source']]), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RuntimeError(f'cannot read the source image of {name}')
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    lb = compute_letterbox(rgb.shape[0], rgb.shape[1], *meta['input_hw'])
    resized = cv2.resize(rgb, (lb.resized_width, lb.resized_height), interpolation=cv2.INTER_LINEAR)
    net = cv2.copyMakeBorder(resized, *lb.pad_info, cv2.BORDER_CONSTANT, value=PADDING_RGB)
    expected = np.load(ref_dir / f'{name}.npz')['input_u8'][0]
    diff = np.abs(net.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert np.array_equal(net[lb.unpad_slices], resized)


def test_inverse_mapping_round_trips_and_maps_edges_to_edges():
    lb = compute_letterbox(375, 1242, 616, 1064)
    u = np.array([-0.5, 0.0, 100.25, 1241.0, 1241.5])
    v = np.array([-0.5, 0.0, 17.75, 374.0, 374.5])
    un, vn = lb.source_to_network_uv(u, v)
    ub, vb = lb.network_to_source_uv(un, vn)
    np.testing.assert_allclose(ub, u, atol=1e-9)
    np.testing.assert_allclose(vb, v, atol=1e-9)
    # Outer edges of the source image land on the outer edges of the valid region.
    assert un[0] == pytest.approx(lb.pad_left - 0.5)
    assert un[-1] == pytest.approx(lb.pad_left + lb.resized_width - 0.5)
    assert vn[0] == pytest.approx(lb.pad_top - 0.5)
    assert vn[-1] == pytest.approx(lb.pad_top + lb.resized_height - 0.5)
    # The mapping uses the per-axis resampling factors rw / w and rh / h, not `scale`.
    assert lb.resize_factors == (1064 / 1242, 321 / 375)
    assert vn[2] == pytest.approx((17.75 + 0.5) * 321 / 375 - 0.5 + 147, abs=1e-12)


def test_inverse_mapping_matches_resampled_pattern():
    """A blob resized and padded like upstream lands where source_to_network_uv says."""
    h, w = 300, 500
    x0, y0 = 211.3, 140.7
    u = np.arange(w)[None, :]
    v = np.arange(h)[:, None]
    blob = np.exp(-((u - x0) ** 2 + (v - y0) ** 2) / (2 * 7.0**2)).astype(np.float32)
    lb = compute_letterbox(h, w, 280, 392)
    assert lb.pad_top > 0  # the padding offset is part of what is checked
    resized = cv2.resize(blob, (lb.resized_width, lb.resized_height), interpolation=cv2.INTER_LINEAR)
    net = cv2.copyMakeBorder(resized, *lb.pad_info, cv2.BORDER_CONSTANT, value=0.0)
    total = net.sum(dtype=np.float64)
    mx = (net.sum(axis=0, dtype=np.float64) * np.arange(net.shape[1])).sum() / total
    my = (net.sum(axis=1, dtype=np.float64) * np.arange(net.shape[0])).sum() / total
    un, vn = lb.source_to_network_uv(x0, y0)
    assert abs(mx - un) < 0.05 and abs(my - vn) < 0.05
    us, vs = lb.network_to_source_uv(mx, my)
    assert abs(us - x0) < 0.05 and abs(vs - y0) < 0.05


@pytest.mark.parametrize(
    'args',
    [
        (0, 640, 616, 1064),
        (480, -1, 616, 1064),
        (480, 640, 0, 1064),
        (480.0, 640, 616, 1064),
        (True, 640, 10, 10),
    ],
)
def test_bad_sizes_raise(args):
    with pytest.raises(ValueError):
        compute_letterbox(*args)


def test_extreme_aspect_ratio_raises():
    with pytest.raises(ValueError, match='aspect ratio'):
        compute_letterbox(1, 5000, 140, 196)


def test_letterbox_is_frozen():
    lb = compute_letterbox(480, 640, 616, 1064)
    assert isinstance(lb, Letterbox)
    with pytest.raises(AttributeError):
        lb.scale = 1.0  # type: ignore[misc]
