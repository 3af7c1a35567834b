"""Depth figures a person can read alone: one depth scale per camera set, a colour bar in metres, and the
synthetic-weights warning band on every figure made from synthetic weights."""
from __future__ import annotations

import numpy as np
import pytest

from metric3d_ros.tools import eval_report as er

RED_BGR = np.array([0, 0, 200])


def _has_warning_band(image: np.ndarray) -> bool:
    """The top rows are the red band (white text aside)."""
    top = image[:4].reshape(-1, 3)
    return bool(np.mean(np.all(top == RED_BGR, axis=1)) > 0.9)


def test_depth_scale_pools_every_image():
    near = np.full((10, 10), 1.0)
    far = np.full((10, 10), 20.0)
    far[0, 0] = np.nan
    scale = er.DepthScale.of([near, far])
    assert scale.lo_m == pytest.approx(1.0) and scale.hi_m == pytest.approx(20.0)
    # each image's own percentiles would give a degenerate range per image; the pooled one spans both
    assert er.DepthScale.of([np.full((4, 4), np.nan)]) == er.DepthScale(0.5, 10.0)
    with pytest.raises(ValueError):
        er.DepthScale(2.0, 1.0)


def test_colour_bar_runs_from_near_to_far_with_metre_labels():
    scale = er.DepthScale(1.0, 10.0)
    bar = er.colour_bar(scale, 200)
    assert bar.shape == (200, er.COLOUR_BAR_WIDTH_PX, 3)
    column = bar[:, 18]
    # the bar's colours are the depth colouring at the depths its rows stand for: top = near, bottom = far
    assert np.array_equal(column[0], scale.colourise(np.array([[1.0]]))[0, 0])
    assert np.array_equal(column[-1], scale.colourise(np.array([[10.0]]))[0, 0])
    assert scale.row_of(1.0, 200) == 0 and scale.row_of(10.0, 200) == 199
    assert 0 < scale.row_of(2.0, 200) < scale.row_of(5.0, 200) < 199
    # tick labels are drawn (dark pixels in the label area)
    assert (bar[:, 38:] < 100).any()


def test_depth_figure_has_the_bar_and_the_warning_only_when_asked():
    depth = np.linspace(1.0, 5.0, 64 * 48).reshape(48, 64)
    scale = er.DepthScale(1.0, 5.0)
    plain = er.depth_figure(depth, scale, 'cam 1')
    assert plain.shape == (48, 64 + er.COLOUR_BAR_WIDTH_PX, 3)
    assert not _has_warning_band(plain)
    # the depth pixels are coloured with the given scale (bottom row: away from the title label)
    assert np.array_equal(plain[47, :64], scale.colourise(depth)[47])
    warned = er.depth_figure(depth, scale, 'cam 1', er.SYNTHETIC_FIGURE_WARNING)
    assert warned.shape[0] > plain.shape[0] and _has_warning_band(warned)
    assert np.array_equal(warned[-48:], plain)


def test_depth_panel_uses_the_given_scale_and_warning():
    rgb = np.zeros((48, 64, 3), np.uint8)
    pred = np.full((48, 64), 3.0)
    gt = np.full((48, 64), 3.0)
    valid = np.ones((48, 64), bool)
    panel = er.depth_panel(rgb, pred, gt, valid, 'cam', er.DepthScale(1.0, 9.0), er.SYNTHETIC_FIGURE_WARNING)
    assert _has_warning_band(panel)
    assert panel.shape[1] == 2 * er.TILE_WIDTH_PX + er.COLOUR_BAR_WIDTH_PX
    assert not _has_warning_band(er.depth_panel(rgb, pred, gt, valid, 'cam', er.DepthScale(1.0, 9.0)))
