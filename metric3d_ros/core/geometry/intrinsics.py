"""Pinhole intrinsics of an image at its own resolution."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (OpenCV / REP 103 optical frame, pixel centres at integers).

    ``fx_px``/``fy_px`` must be finite and positive, ``cx_px``/``cy_px`` finite; anything else raises
    ``ValueError`` at construction.
    """

    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float

    def __post_init__(self) -> None:
        for name in ('fx_px', 'fy_px', 'cx_px', 'cy_px'):
            value = getattr(self, name)
            try:
                as_float = float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f'Intrinsics.{name} must be a real number, got {value!r}') from exc
            if not math.isfinite(as_float):
                raise ValueError(f'Intrinsics.{name} must be finite, got {value!r}')
            object.__setattr__(self, name, as_float)
        if self.fx_px <= 0.0 or self.fy_px <= 0.0:
            raise ValueError(
                f'Intrinsics focal lengths must be positive, got fx_px={self.fx_px}, fy_px={self.fy_px}'
            )

    def scaled(self, sx: float, sy: float | None = None) -> Intrinsics:
        """Intrinsics times ``sx`` along x (fx, cx) and ``sy`` along y (fy, cy); ``sy`` defaults to ``sx``.

        This is pure scaling (no half-pixel shift), upstream Metric3D's rule for its network intrinsics
        (``Letterbox.scale_intrinsics``: only fx enters the depth). It is not the geometry of a resampled
        image: use ``resampled`` for that.
        """
        sx, sy = _factors(sx, sy)
        return Intrinsics(self.fx_px * sx, self.fy_px * sy, self.cx_px * sx, self.cy_px * sy)

    def resampled(self, sx: float, sy: float | None = None) -> Intrinsics:
        """The intrinsics of this image resampled by ``sx`` along x and ``sy`` along y (default ``sx``) with
        pixel centres at integers, as cv2.resize and ``F.interpolate(align_corners=False)`` resample: a
        source point ``x`` lands at ``(x + 0.5) * s - 0.5``, so fx' = fx * sx and cx' = (cx + 0.5) * sx - 0.5
        (likewise fy, cy with sy). Unprojecting the resampled image with these gives the rays of the
        source image; pure scaling (``scaled``) is off by ``0.5 * (1 - s)`` px.
        """
        sx, sy = _factors(sx, sy)
        return Intrinsics(self.fx_px * sx, self.fy_px * sy, resampled_centre(self.cx_px, sx),
                          resampled_centre(self.cy_px, sy))

    def as_matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K (float64)."""
        return np.array(
            [[self.fx_px, 0.0, self.cx_px], [0.0, self.fy_px, self.cy_px], [0.0, 0.0, 1.0]],
            dtype=np.float64,
        )

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(fx_px, fy_px, cx_px, cy_px)``, the order upstream Metric3D uses for its ``intrinsic`` list."""
        return (self.fx_px, self.fy_px, self.cx_px, self.cy_px)

    @classmethod
    def from_matrix(cls, k: np.ndarray | tuple[float, ...] | list[float]) -> Intrinsics:
        """Intrinsics from a 3x3 K (or its 9 row-major values, as in CameraInfo.k); skew must be 0."""
        arr = np.asarray(k, dtype=np.float64).reshape(-1)
        if arr.size != 9:
            raise ValueError(f'a camera matrix needs 9 values (3x3), got {arr.size}')
        if arr[1] != 0.0:
            raise ValueError(f'skewed camera matrices are not supported (K[0,1]={arr[1]})')
        return cls(float(arr[0]), float(arr[4]), float(arr[2]), float(arr[5]))


def resampled_centre(c_px: float, s: float) -> float:
    """A principal-point coordinate after resampling by ``s`` (pixel centres at integers):
    ``(c + 0.5) * s - 0.5``; exactly ``c`` at ``s == 1`` (no rounding of an unchanged size)."""
    return c_px if s == 1.0 else (c_px + 0.5) * s - 0.5


def _factors(sx: float, sy: float | None) -> tuple[float, float]:
    sy = sx if sy is None else sy
    if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0.0 and sy > 0.0):
        raise ValueError(f'scale factors must be finite and positive, got sx={sx}, sy={sy}')
    return sx, sy
