"""CameraInfo semantics without ROS: which matrix, binning and ROI give an image's own intrinsics.

``CameraInfoFields`` mirrors the fields of ``sensor_msgs/CameraInfo`` so that this module stays ROS-free;
the ROS layer converts messages to and from it.

Conventions follow ``image_geometry.PinholeCameraModel`` and ``image_proc``:

- ``K`` describes the raw (distorted) image, ``P`` the rectified image. A rectified image uses ``P``,
  a raw image ``K``. ``p[0] == 0`` means P is not set; ``k[0] == 0`` means the camera is uncalibrated.
- K, P, width and height describe the full-resolution sensor image. A published image may be a
  region of interest (``roi``, in full-resolution pixels) that was then binned/decimated by
  ``binning_x``/``binning_y`` (0 means 1, i.e. no binning). The intrinsics of the published image are
  ``fx / bx``, ``(cx - x_offset) / bx``, ``fy / by``, ``(cy - y_offset) / by``: the ROI first, then
  the binning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from metric3d_ros.core.geometry.intrinsics import Intrinsics, resampled_centre

Source = Literal['auto', 'rectified', 'raw']
_SOURCES = ('auto', 'rectified', 'raw')


class CalibrationError(ValueError):
    """A CameraInfo cannot describe the image it comes with (uncalibrated, inconsistent or malformed)."""


def _non_negative_int(label: str, value: object) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise CalibrationError(f'{label} must be a non-negative integer, got {value!r}')
    return int(value)


@dataclass(frozen=True)
class Roi:
    """Mirror of ``sensor_msgs/RegionOfInterest`` in full-resolution pixels; width/height 0 = full size."""

    x_offset: int = 0
    y_offset: int = 0
    height: int = 0
    width: int = 0
    do_rectify: bool = False

    def __post_init__(self) -> None:
        for name in ('x_offset', 'y_offset', 'height', 'width'):
            object.__setattr__(self, name, _non_negative_int(f'Roi.{name}', getattr(self, name)))
        object.__setattr__(self, 'do_rectify', bool(self.do_rectify))

    @property
    def is_full(self) -> bool:
        """True when the ROI selects nothing (all zero), i.e. the whole image."""
        return self.x_offset == 0 and self.y_offset == 0 and self.width == 0 and self.height == 0


def _float_tuple(name: str, values: object, length: int | None) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f'CameraInfo.{name} must hold real numbers, got {values!r}') from exc
    if length is not None and len(out) != length:
        raise CalibrationError(f'CameraInfo.{name} must have {length} values, got {len(out)}')
    return out


@dataclass(frozen=True)
class CameraInfoFields:
    """ROS-free mirror of ``sensor_msgs/CameraInfo`` (K, R row-major 3x3; P row-major 3x4).

    Sequences (lists, arrays, ``array.array``) are normalised to tuples of floats; wrong lengths raise
    ``CalibrationError``.
    """

    width: int
    height: int
    distortion_model: str
    d: tuple[float, ...]
    k: tuple[float, ...]
    r: tuple[float, ...]
    p: tuple[float, ...]
    binning_x: int = 0
    binning_y: int = 0
    roi: Roi = field(default_factory=Roi)

    def __post_init__(self) -> None:
        for name in ('width', 'height', 'binning_x', 'binning_y'):
            object.__setattr__(self, name, _non_negative_int(f'CameraInfo.{name}', getattr(self, name)))
        object.__setattr__(self, 'distortion_model', str(self.distortion_model))
        object.__setattr__(self, 'd', _float_tuple('d', self.d, None))
        object.__setattr__(self, 'k', _float_tuple('k', self.k, 9))
        object.__setattr__(self, 'r', _float_tuple('r', self.r, 9))
        object.__setattr__(self, 'p', _float_tuple('p', self.p, 12))
        if not isinstance(self.roi, Roi):
            raise CalibrationError(f'CameraInfo.roi must be a Roi, got {type(self.roi).__name__}')

    @classmethod
    def from_intrinsics(
        cls, intrinsics: Intrinsics, width: int, height: int, distortion_model: str = 'plumb_bob'
    ) -> CameraInfoFields:
        """An ideal (distortion-free, rectified) CameraInfo: K = P[:, :3] = ``intrinsics``, R = I, Tx = 0."""
        fx, fy, cx, cy = intrinsics.as_tuple()
        return cls(
            width=width,
            height=height,
            distortion_model=distortion_model,
            d=(0.0, 0.0, 0.0, 0.0, 0.0),
            k=(fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0),
            r=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
            p=(fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0),
        )


@dataclass(frozen=True)
class CameraIntrinsics:
    """Intrinsics of one published image, resolved from its CameraInfo.

    ``source_used`` is ``'rectified'`` (from P) or ``'raw'`` (from K); ``warnings`` holds human-readable
    notes that do not make the calibration unusable (e.g. distortion on a raw image).
    """

    intrinsics: Intrinsics
    width: int
    height: int
    source_used: Literal['rectified', 'raw']
    warnings: tuple[str, ...] = ()


def _binning(info: CameraInfoFields) -> tuple[int, int]:
    return (info.binning_x or 1, info.binning_y or 1)


def _roi_extent(info: CameraInfoFields) -> tuple[int, int, int, int]:
    """(x_offset, y_offset, width, height) of the ROI in full-resolution pixels, checked to fit."""
    roi = info.roi
    roi_w = roi.width if roi.width else info.width - roi.x_offset
    roi_h = roi.height if roi.height else info.height - roi.y_offset
    if roi_w <= 0 or roi_h <= 0 or roi.x_offset + roi_w > info.width or roi.y_offset + roi_h > info.height:
        raise CalibrationError(
            f'CameraInfo ROI (x_offset={roi.x_offset}, y_offset={roi.y_offset}, width={roi.width}, '
            f'height={roi.height}) does not fit in the {info.width}x{info.height} calibrated image'
        )
    return roi.x_offset, roi.y_offset, roi_w, roi_h


def published_size(info: CameraInfoFields) -> tuple[int, int]:
    """(width, height) of the image this CameraInfo describes: ROI size (0 = full) / binning, floored.

    Raises ``CalibrationError`` when the CameraInfo has width or height 0 (size unknown).
    """
    if info.width == 0 or info.height == 0:
        raise CalibrationError(
            f'CameraInfo width/height is {info.width}x{info.height}: the calibrated image size must be set'
        )
    bx, by = _binning(info)
    _, _, roi_w, roi_h = _roi_extent(info)
    return roi_w // bx, roi_h // by


def _check_calibrated(info: CameraInfoFields) -> None:
    if info.k[0] == 0.0:
        raise CalibrationError('CameraInfo.k[0] == 0: the camera is uncalibrated (K is not set)')
    for name in ('d', 'k', 'r', 'p'):
        values = getattr(info, name)
        if not all(math.isfinite(v) for v in values):
            raise CalibrationError(
                f'CameraInfo.{name} holds a non-finite value ({list(values)}): every value of D, K, R and P '
                'must be finite (all of them are copied into the depth CameraInfo); fix the calibration'
            )


def _choose_source(info: CameraInfoFields, source: str) -> tuple[str, list[str]]:
    if source not in _SOURCES:
        raise CalibrationError(f"source must be one of {_SOURCES}, got {source!r}")
    notes: list[str] = []
    p_set = info.p[0] != 0.0
    if source == 'rectified' and not p_set:
        raise CalibrationError(
            "source='rectified' but CameraInfo.p[0] == 0 (P is not set): publish a rectified "
            "calibration or use source='raw' for an unrectified image"
        )
    if source == 'auto':
        if p_set:
            return 'rectified', notes
        notes.append('CameraInfo P is not set (p[0] == 0): using K, i.e. treating the image as raw')
        return 'raw', notes
    return source, notes


def _fxfycxcy(info: CameraInfoFields, source_used: str) -> tuple[float, float, float, float]:
    if source_used == 'rectified':
        return info.p[0], info.p[5], info.p[2], info.p[6]
    return info.k[0], info.k[4], info.k[2], info.k[5]


def _check_values(fx: float, fy: float, cx: float, cy: float, matrix: str) -> None:
    for name, value in (('fx', fx), ('fy', fy)):
        if not math.isfinite(value) or value <= 0.0:
            raise CalibrationError(
                f'CameraInfo {matrix} has {name} = {value}: focal lengths must be finite and > 0'
            )
    for name, value in (('cx', cx), ('cy', cy)):
        if not math.isfinite(value):
            raise CalibrationError(
                f'CameraInfo {matrix} has {name} = {value}: principal point must be finite'
            )


def intrinsics_from_camera_info(
    info: CameraInfoFields,
    image_width: int,
    image_height: int,
    source: Source = 'auto',
) -> CameraIntrinsics:
    """Intrinsics of the published image (``image_width`` x ``image_height``) described by ``info``.

    - ``source='auto'`` uses P when it is set (``p[0] != 0``, the image is taken as rectified), else K;
      ``'rectified'`` requires P; ``'raw'`` uses K (the image is unrectified).
    - ``k[0] == 0`` is rejected as uncalibrated; non-finite or non-positive focal lengths are rejected, and so
      is a NaN or infinity anywhere in D, K, R or P (even in a matrix not used here: the depth CameraInfo
      carries every field on).
    - ROI offsets (full-resolution pixels) are subtracted from cx, cy, then fx, cx are divided by
      ``binning_x`` and fy, cy by ``binning_y`` (0 means 1).
    - The resulting size (ROI size, 0 = full, divided by binning) must equal the image's, else
      ``CalibrationError`` naming both sizes.
    - Non-zero distortion with a raw image is reported in ``warnings``: the image should be rectified
      first, as the pinhole model ignores the distortion.
    - With a ROI on a rectified image the offsets are applied to P as given, exactly as
      ``image_geometry.PinholeCameraModel`` does; on a distorted camera that is approximate (the
      rectified ROI is not the raw one) and a warning says so.
    """
    _check_calibrated(info)
    source_used, notes = _choose_source(info, source)
    matrix = 'P' if source_used == 'rectified' else 'K'
    fx, fy, cx, cy = _fxfycxcy(info, source_used)
    _check_values(fx, fy, cx, cy, matrix)
    has_distortion = any(c != 0.0 for c in info.d)
    if source_used == 'rectified' and has_distortion and not info.roi.is_full:
        notes.append(
            'ROI offsets applied to P as given (as image_geometry does); on a distorted camera the '
            'rectified ROI may differ from the raw one, so cx, cy may be off by the difference'
        )
    expected_w, expected_h = published_size(info)
    if (expected_w, expected_h) != (int(image_width), int(image_height)):
        bx, by = _binning(info)
        raise CalibrationError(
            f'image is {image_width}x{image_height} but its CameraInfo describes {expected_w}x{expected_h} '
            f'(calibrated size {info.width}x{info.height}, roi {info.roi.width}x{info.roi.height}'
            f'+{info.roi.x_offset}+{info.roi.y_offset} (0 = full), binning {bx}x{by}); '
            'publish a CameraInfo that matches the image'
        )
    if source_used == 'raw' and has_distortion:
        notes.append(
            f'raw image with non-zero distortion ({info.distortion_model}, d={list(info.d)}): the pinhole '
            'model ignores it; rectify the image first (image_proc) for exact geometry'
        )
    bx, by = _binning(info)
    intrinsics = Intrinsics(
        fx_px=fx / bx,
        fy_px=fy / by,
        cx_px=(cx - info.roi.x_offset) / bx,
        cy_px=(cy - info.roi.y_offset) / by,
    )
    return CameraIntrinsics(
        intrinsics=intrinsics,
        width=expected_w,
        height=expected_h,
        source_used=source_used,  # type: ignore[arg-type]
        warnings=tuple(notes),
    )


def scale_camera_info(
    info: CameraInfoFields,
    out_width: int,
    out_height: int,
) -> CameraInfoFields:
    """CameraInfo for an output image of ``out_width`` x ``out_height`` resampled from ``info``'s image.

    The input image is the one ``info`` describes: its ROI and binning are applied first (offsets
    subtracted from K and P's cx, cy, then fx, cx, Tx divided by the x binning and fy, cy, Ty by the y
    binning), then with ``sx = out_width / in_width`` and ``sy = out_height / in_height`` fx, Tx = p[3] (and
    skew) are scaled by sx, fy, Ty = p[7] by sy, and the principal point follows the resampling:
    ``cx' = (cx + 0.5) * sx - 0.5``, ``cy' = (cy + 0.5) * sy - 0.5`` (K and P). D and R are unchanged
    (distortion acts in normalised coordinates), width/height are set, ROI and binning are cleared, so the
    result describes the output image exactly at full resolution.

    Pixel-centre convention: ROS/OpenCV, pixel centres at integer coordinates. An image resized with
    cv2.resize (INTER_LINEAR, INTER_AREA) or ``F.interpolate(align_corners=False)`` (how the engine makes
    every output) maps a source point ``x`` to ``(x + 0.5) * s - 0.5``, hence the principal point above
    (``Intrinsics.resampled``, the same rule for the engine's own intrinsics). Pure scaling ``c * s``
    (image_proc's resize node, upstream Metric3D's network intrinsics) is off by ``0.5 * (1 - s)`` px. At
    ``s = 1`` both give ``c``: a CameraInfo for an image of the input's size is the input's, unchanged.
    """
    if isinstance(out_width, bool) or isinstance(out_height, bool) or int(out_width) != out_width \
            or int(out_height) != out_height or out_width <= 0 or out_height <= 0:
        raise CalibrationError(f'output size must be positive integers, got {out_width}x{out_height}')
    out_width, out_height = int(out_width), int(out_height)
    in_w, in_h = published_size(info)
    bx, by = _binning(info)
    x0, y0 = info.roi.x_offset, info.roi.y_offset
    sx = out_width / in_w
    sy = out_height / in_h

    def centre(c: float, offset: int, binning: int, s: float) -> float:
        reduced = (c - offset) / binning
        return resampled_centre(reduced, s)

    k = list(info.k)
    if k[0] != 0.0:  # an unset K (uncalibrated) stays all zero
        k[0] = k[0] / bx * sx
        k[1] = k[1] / bx * sx  # skew scales with x
        k[2] = centre(k[2], x0, bx, sx)
        k[4] = k[4] / by * sy
        k[5] = centre(k[5], y0, by, sy)
    p = list(info.p)
    if p[0] != 0.0:  # an unset P stays all zero
        p[0] = p[0] / bx * sx
        p[1] = p[1] / bx * sx
        p[2] = centre(p[2], x0, bx, sx)
        p[3] = p[3] / bx * sx
        p[5] = p[5] / by * sy
        p[6] = centre(p[6], y0, by, sy)
        p[7] = p[7] / by * sy
    return CameraInfoFields(
        width=out_width,
        height=out_height,
        distortion_model=info.distortion_model,
        d=info.d,
        k=tuple(k),
        r=info.r,
        p=tuple(p),
        binning_x=0,
        binning_y=0,
        roi=Roi(),
    )
