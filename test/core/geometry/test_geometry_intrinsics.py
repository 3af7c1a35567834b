"""Intrinsics: validation, scaling, matrix conversions, and that the geometry core stays numpy-only."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from metric3d_ros.core.geometry import Intrinsics


def test_values_become_floats():
    intr = Intrinsics(500, np.float32(510.5), 320, 240)
    assert intr.as_tuple() == (500.0, 510.5, 320.0, 240.0)
    assert all(type(v) is float for v in intr.as_tuple())


@pytest.mark.parametrize(
    'values',
    [(0.0, 1.0, 0.0, 0.0), (1.0, -1.0, 0.0, 0.0), (math.nan, 1.0, 0.0, 0.0), (1.0, 1.0, math.inf, 0.0),
     (1.0, 1.0, 0.0, math.nan), (1.0, 1.0, 'a', 0.0)],
)
def test_invalid_values_raise(values):
    with pytest.raises(ValueError, match='Intrinsics'):
        Intrinsics(*values)


def test_negative_principal_point_is_allowed():
    assert Intrinsics(1.0, 1.0, -3.5, -0.5).cx_px == -3.5


def test_resampled_moves_the_principal_point_with_the_pixel_centres():
    intr = Intrinsics(500.0, 510.0, 320.0, 240.0)
    # (c + 0.5) * s - 0.5: the centre of source pixel 0 (x = 0) lands at 0.5 * s - 0.5
    assert intr.resampled(0.5, 0.25) == Intrinsics(250.0, 127.5, 159.75, 59.625)
    assert intr.resampled(2.0) == Intrinsics(1000.0, 1020.0, 640.5, 480.5)
    assert intr.resampled(1.0) == intr
    with pytest.raises(ValueError, match='finite and positive'):
        intr.resampled(0.0)


def test_scaled_is_pure_scaling_per_axis():
    intr = Intrinsics(500.0, 510.0, 320.0, 240.0)
    assert intr.scaled(0.5, 0.25) == Intrinsics(250.0, 127.5, 160.0, 60.0)
    assert intr.scaled(2.0) == Intrinsics(1000.0, 1020.0, 640.0, 480.0)
    with pytest.raises(ValueError, match='scale'):
        intr.scaled(0.0)
    with pytest.raises(ValueError, match='scale'):
        intr.scaled(1.0, math.nan)


def test_matrix_round_trip():
    intr = Intrinsics(500.0, 510.0, 320.0, 240.0)
    k = intr.as_matrix()
    np.testing.assert_array_equal(k, [[500.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])
    assert Intrinsics.from_matrix(k) == intr
    assert Intrinsics.from_matrix(tuple(k.reshape(-1))) == intr
    with pytest.raises(ValueError, match='9 values'):
        Intrinsics.from_matrix([1.0, 2.0])
    with pytest.raises(ValueError, match='skew'):
        Intrinsics.from_matrix([500.0, 1.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0])


def test_frozen():
    intr = Intrinsics(1.0, 1.0, 0.0, 0.0)
    with pytest.raises(AttributeError):
        intr.fx_px = 2.0  # type: ignore[misc]


def test_geometry_imports_neither_torch_nor_cv2_nor_ros():
    code = (
        'import sys, metric3d_ros.core.geometry; '
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'cv2', 'rclpy') "
        "or m.split('.')[0].endswith('_msgs')]; "
        'print(bad); sys.exit(1 if bad else 0)'
    )
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
