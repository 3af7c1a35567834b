"""CameraInfo semantics: P vs K, binning, ROI, validation, and rescaling with its pixel-centre convention."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from metric3d_ros.core.geometry import (
    CalibrationError,
    CameraInfoFields,
    Intrinsics,
    Roi,
    intrinsics_from_camera_info,
    published_size,
    scale_camera_info,
)

# K (raw) and P (rectified) deliberately differ so that using the wrong one fails.
K_RAW = (500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0)
P_RECT = (450.0, 0.0, 300.0, -45.0, 0.0, 460.0, 230.0, 5.0, 0.0, 0.0, 1.0, 0.0)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
NO_DISTORTION = (0.0, 0.0, 0.0, 0.0, 0.0)
SOME_DISTORTION = (-0.28, 0.07, 0.0002, 0.00002, 0.0)


def make_info(**overrides) -> CameraInfoFields:
    fields = dict(
        width=640, height=480, distortion_model='plumb_bob', d=NO_DISTORTION, k=K_RAW, r=IDENTITY, p=P_RECT
    )
    fields.update(overrides)
    return CameraInfoFields(**fields)


def as_tuple(result) -> tuple[float, float, float, float]:
    return result.intrinsics.as_tuple()


# ---------------------------------------------------------------- which matrix


def test_auto_uses_p_when_p_is_set():
    result = intrinsics_from_camera_info(make_info(), 640, 480)
    assert as_tuple(result) == (450.0, 460.0, 300.0, 230.0)
    assert result.source_used == 'rectified'
    assert result.warnings == ()
    assert (result.width, result.height) == (640, 480)


def test_rectified_uses_p():
    result = intrinsics_from_camera_info(make_info(), 640, 480, source='rectified')
    assert as_tuple(result) == (450.0, 460.0, 300.0, 230.0)


def test_raw_uses_k_without_warning_when_undistorted():
    result = intrinsics_from_camera_info(make_info(), 640, 480, source='raw')
    assert as_tuple(result) == (500.0, 510.0, 320.0, 240.0)
    assert result.source_used == 'raw'
    assert result.warnings == ()


def test_raw_with_distortion_is_reported():
    result = intrinsics_from_camera_info(make_info(d=SOME_DISTORTION), 640, 480, source='raw')
    assert as_tuple(result) == (500.0, 510.0, 320.0, 240.0)
    assert len(result.warnings) == 1
    assert 'distortion' in result.warnings[0] and 'rectify' in result.warnings[0]


def test_rectified_with_distortion_coefficients_is_not_reported():
    # A rectified image has had D removed already: D in its CameraInfo describes the raw camera.
    result = intrinsics_from_camera_info(make_info(d=SOME_DISTORTION), 640, 480)
    assert result.source_used == 'rectified'
    assert result.warnings == ()


def test_auto_falls_back_to_k_when_p_unset_and_says_so():
    result = intrinsics_from_camera_info(make_info(p=(0.0,) * 12, d=SOME_DISTORTION), 640, 480)
    assert as_tuple(result) == (500.0, 510.0, 320.0, 240.0)
    assert result.source_used == 'raw'
    assert any('P is not set' in w for w in result.warnings)
    assert any('distortion' in w for w in result.warnings)


def test_rectified_requested_without_p_raises():
    with pytest.raises(CalibrationError, match='P is not set'):
        intrinsics_from_camera_info(make_info(p=(0.0,) * 12), 640, 480, source='rectified')


@pytest.mark.parametrize('source', ['auto', 'rectified', 'raw'])
def test_k0_zero_is_uncalibrated(source):
    k = (0.0,) + K_RAW[1:]
    with pytest.raises(CalibrationError, match='uncalibrated'):
        intrinsics_from_camera_info(make_info(k=k), 640, 480, source=source)


def test_all_zero_camera_info_is_uncalibrated():
    with pytest.raises(CalibrationError, match='uncalibrated'):
        intrinsics_from_camera_info(make_info(k=(0.0,) * 9, p=(0.0,) * 12), 640, 480)


def test_unknown_source_raises():
    with pytest.raises(CalibrationError, match='source'):
        intrinsics_from_camera_info(make_info(), 640, 480, source='rect')


@pytest.mark.parametrize(
    ('index', 'value', 'source'),
    [
        (0, math.nan, 'rectified'),
        (5, -460.0, 'rectified'),
        (5, 0.0, 'rectified'),
        (0, math.inf, 'rectified'),
        (2, math.nan, 'rectified'),
        (6, math.inf, 'rectified'),
    ],
)
def test_bad_p_values_are_rejected(index, value, source):
    p = list(P_RECT)
    p[index] = value
    with pytest.raises(CalibrationError):
        intrinsics_from_camera_info(make_info(p=p), 640, 480, source=source)


@pytest.mark.parametrize(('index', 'value'), [(0, math.inf), (4, -1.0), (4, 0.0), (5, math.nan)])
def test_bad_k_values_are_rejected_for_raw(index, value):
    k = list(K_RAW)
    k[index] = value
    with pytest.raises(CalibrationError):
        intrinsics_from_camera_info(make_info(k=k), 640, 480, source='raw')


@pytest.mark.parametrize(('field', 'index', 'value'), [
    ('k', 2, math.nan),     # K while P is used
    ('k', 1, math.inf),
    ('p', 3, math.nan),     # Tx
    ('p', 7, -math.inf),    # Ty
    ('r', 4, math.nan),
    ('d', 0, math.inf),
])
def test_non_finite_values_are_rejected_even_where_unused(field, index, value):
    values = list(make_info().__dict__[field])
    values[index] = value
    with pytest.raises(CalibrationError, match=f'CameraInfo.{field} holds a non-finite value'):
        intrinsics_from_camera_info(make_info(**{field: values}), 640, 480, source='rectified')


# ---------------------------------------------------------------- binning and ROI


def test_binning_divides_focal_and_centre():
    info = make_info(binning_x=2, binning_y=4)
    result = intrinsics_from_camera_info(info, 320, 120)
    assert as_tuple(result) == (225.0, 115.0, 150.0, 57.5)


def test_binning_zero_means_one():
    info = make_info(binning_x=2, binning_y=0)
    result = intrinsics_from_camera_info(info, 320, 480)
    assert as_tuple(result) == (225.0, 460.0, 150.0, 230.0)


def test_roi_offsets_shift_the_principal_point():
    info = make_info(roi=Roi(x_offset=100, y_offset=50, width=400, height=300))
    result = intrinsics_from_camera_info(info, 400, 300)
    assert as_tuple(result) == (450.0, 460.0, 200.0, 180.0)
    raw = intrinsics_from_camera_info(info, 400, 300, source='raw')
    assert as_tuple(raw) == (500.0, 510.0, 220.0, 190.0)


def test_roi_is_applied_before_binning():
    # ROI in full-resolution pixels, then binning: cx = (300 - 100) / 2 = 100 (binning first would give 50).
    info = make_info(roi=Roi(x_offset=100, y_offset=50, width=400, height=300), binning_x=2, binning_y=2)
    result = intrinsics_from_camera_info(info, 200, 150)
    assert as_tuple(result) == (225.0, 230.0, 100.0, 90.0)


def test_roi_zero_size_means_full_image():
    info = make_info(roi=Roi())
    assert published_size(info) == (640, 480)
    assert as_tuple(intrinsics_from_camera_info(info, 640, 480)) == (450.0, 460.0, 300.0, 230.0)


def test_published_size_floors_like_decimation():
    assert published_size(make_info(binning_x=3, binning_y=7)) == (213, 68)


def test_roi_on_distorted_rectified_camera_warns():
    roi = Roi(x_offset=8, y_offset=4, width=600, height=400, do_rectify=True)
    info = make_info(d=SOME_DISTORTION, roi=roi)
    result = intrinsics_from_camera_info(info, 600, 400)
    assert as_tuple(result) == (450.0, 460.0, 292.0, 226.0)
    assert any('ROI' in w for w in result.warnings)


@pytest.mark.parametrize(
    ('info_overrides', 'image_wh'),
    [
        ({}, (320, 240)),
        ({}, (480, 640)),
        ({'binning_x': 2, 'binning_y': 2}, (640, 480)),
        ({'roi': Roi(x_offset=100, y_offset=50, width=400, height=300)}, (640, 480)),
        ({'roi': Roi(x_offset=100, y_offset=50, width=400, height=300), 'binning_x': 2}, (400, 300)),
    ],
)
def test_size_mismatch_raises_and_names_both_sizes(info_overrides, image_wh):
    info = make_info(**info_overrides)
    expected = published_size(info)
    with pytest.raises(CalibrationError) as excinfo:
        intrinsics_from_camera_info(info, *image_wh)
    message = str(excinfo.value)
    assert f'{image_wh[0]}x{image_wh[1]}' in message
    assert f'{expected[0]}x{expected[1]}' in message


def test_roi_outside_the_sensor_raises():
    info = make_info(roi=Roi(x_offset=300, y_offset=0, width=400, height=480))
    with pytest.raises(CalibrationError, match='does not fit'):
        intrinsics_from_camera_info(info, 400, 480)


def test_unknown_calibrated_size_raises():
    with pytest.raises(CalibrationError, match='width/height'):
        intrinsics_from_camera_info(make_info(width=0, height=0), 640, 480)


# ---------------------------------------------------------------- the dataclasses


def test_camera_info_fields_normalises_sequences_and_checks_lengths():
    info = make_info(k=np.array(K_RAW), p=list(P_RECT), d=np.zeros(8))
    assert info.k == K_RAW and isinstance(info.k, tuple)
    assert info.p == P_RECT and isinstance(info.p, tuple)
    assert info.d == (0.0,) * 8
    with pytest.raises(CalibrationError, match='k must have 9'):
        make_info(k=K_RAW[:8])
    with pytest.raises(CalibrationError, match='p must have 12'):
        make_info(p=P_RECT + (0.0,))
    with pytest.raises(CalibrationError, match='binning_x'):
        make_info(binning_x=-1)
    with pytest.raises(CalibrationError, match='x_offset'):
        Roi(x_offset=-3)
    assert issubclass(CalibrationError, ValueError)


def test_camera_info_fields_is_frozen():
    info = make_info()
    with pytest.raises(AttributeError):
        info.width = 10  # type: ignore[misc]


def test_from_intrinsics_round_trips():
    intr = Intrinsics(300.5, 301.25, 159.5, 119.75)
    info = CameraInfoFields.from_intrinsics(intr, 320, 240)
    for source in ('auto', 'rectified', 'raw'):
        assert intrinsics_from_camera_info(info, 320, 240, source=source).intrinsics == intr


# ---------------------------------------------------------------- scale_camera_info


def test_scale_camera_info_scales_k_and_p_rows():
    out = scale_camera_info(make_info(), 1280, 240)  # sx = 2, sy = 0.5
    # focal lengths and Tx, Ty scale; the principal point follows the resampling: (c + 0.5) * s - 0.5
    assert out.k == (1000.0, 0.0, 640.5, 0.0, 255.0, 119.75, 0.0, 0.0, 1.0)
    assert out.p == (900.0, 0.0, 600.5, -90.0, 0.0, 230.0, 114.75, 2.5, 0.0, 0.0, 1.0, 0.0)
    assert (out.width, out.height) == (1280, 240)
    assert out.d == NO_DISTORTION and out.r == IDENTITY and out.distortion_model == 'plumb_bob'
    assert (out.binning_x, out.binning_y, out.roi) == (0, 0, Roi())


def test_scale_camera_info_applies_input_binning_and_roi_first():
    info = make_info(roi=Roi(x_offset=100, y_offset=50, width=400, height=300), binning_x=2, binning_y=2)
    # The input image is 200x150 with fx 225, cx 100; doubling it gives fx 450, cx (100 + 0.5) * 2 - 0.5.
    out = scale_camera_info(info, 400, 300)
    assert out.p == (450.0, 0.0, 200.5, -45.0, 0.0, 460.0, 180.5, 5.0, 0.0, 0.0, 1.0, 0.0)
    assert out.k == (500.0, 0.0, 220.5, 0.0, 510.0, 190.5, 0.0, 0.0, 1.0)
    assert (out.binning_x, out.binning_y, out.roi) == (0, 0, Roi())
    assert as_tuple(intrinsics_from_camera_info(out, 400, 300)) == (450.0, 460.0, 200.5, 180.5)
    # at the input's own size (s = 1) the binned/ROI intrinsics are kept exactly
    same = scale_camera_info(info, 200, 150)
    assert as_tuple(intrinsics_from_camera_info(same, 200, 150)) == (225.0, 230.0, 100.0, 90.0)


def test_scale_camera_info_leaves_unset_p_unset():
    out = scale_camera_info(make_info(p=(0.0,) * 12), 320, 240)
    assert out.p == (0.0,) * 12
    assert out.k[0] == 250.0


def test_scale_camera_info_pixel_centre_formula():
    out = scale_camera_info(make_info(), 320, 120)  # sx = 0.5, sy = 0.25
    assert out.p[2] == (300.0 + 0.5) * 0.5 - 0.5
    assert out.p[6] == (230.0 + 0.5) * 0.25 - 0.5
    assert out.k[2] == (320.0 + 0.5) * 0.5 - 0.5
    assert out.p[0] == 225.0 and out.p[3] == -22.5  # focal and Tx are not shifted


@pytest.mark.parametrize('size', [(0, 240), (320, -1), (320.5, 240)])
def test_scale_camera_info_rejects_bad_sizes(size):
    with pytest.raises(CalibrationError, match='output size'):
        scale_camera_info(make_info(), *size)


def _gaussian_blob(width: int, height: int, x0: float, y0: float, sigma_px: float) -> np.ndarray:
    u = np.arange(width, dtype=np.float64)
    v = np.arange(height, dtype=np.float64)
    blob = np.exp(-((u[None, :] - x0) ** 2) / (2 * sigma_px**2)) * np.exp(
        -((v[:, None] - y0) ** 2) / (2 * sigma_px**2)
    )
    return blob.astype(np.float32)


def _centroid(image: np.ndarray) -> tuple[float, float]:
    a = image.astype(np.float64)
    total = a.sum()
    return (
        float((a.sum(axis=0) * np.arange(a.shape[1])).sum() / total),
        float((a.sum(axis=1) * np.arange(a.shape[0])).sum() / total),
    )


@pytest.mark.parametrize('interpolation', [cv2.INTER_LINEAR, cv2.INTER_AREA])
@pytest.mark.parametrize('out_wh', [(320, 240), (416, 312), (160, 120), (960, 720)])
def test_resized_pattern_follows_the_documented_pixel_centre_convention(interpolation, out_wh):
    """A point at the principal point of the source lands where the stated conventions predict."""
    width, height = 640, 480
    x0, y0 = 301.37, 207.81
    image = _gaussian_blob(width, height, x0, y0, sigma_px=6.0)
    measured_src = _centroid(image)
    assert measured_src == pytest.approx((x0, y0), abs=1e-6)

    out_w, out_h = out_wh
    resized = cv2.resize(image, (out_w, out_h), interpolation=interpolation)
    mx, my = _centroid(resized)
    sx, sy = out_w / width, out_h / height

    # A camera whose principal point sits on the blob.
    info = CameraInfoFields.from_intrinsics(Intrinsics(500.0, 500.0, x0, y0), width, height)
    exact = scale_camera_info(info, out_w, out_h)
    k_exact = Intrinsics(500.0, 500.0, x0, y0).resampled(sx, sy)

    # Pixel centres at integers: the resampled point is at (x + 0.5) * s - 0.5, where the CameraInfo and
    # Intrinsics.resampled put the principal point.
    assert abs(mx - exact.p[2]) < 0.05 and abs(my - exact.p[6]) < 0.05
    assert abs(mx - ((x0 + 0.5) * sx - 0.5)) < 0.05
    assert (k_exact.cx_px, k_exact.cy_px) == (exact.p[2], exact.p[6])
    # Pure scaling (upstream's network intrinsics) would be off by 0.5 * (1 - s) px: a measurable error.
    assert abs(mx - x0 * sx) == pytest.approx(abs(0.5 * (1.0 - sx)), abs=0.05)


@pytest.mark.parametrize('value', ['2', 2.0, True, -1, None])
def test_integer_fields_reject_non_integers(value):
    with pytest.raises(CalibrationError, match='non-negative integer'):
        make_info(binning_x=value)
    with pytest.raises(CalibrationError, match='non-negative integer'):
        Roi(width=value)


def test_integer_fields_accept_numpy_integers():
    info = make_info(width=np.uint32(640), roi=Roi(x_offset=np.int64(0)))
    assert info.width == 640 and type(info.width) is int and type(info.roi.x_offset) is int
