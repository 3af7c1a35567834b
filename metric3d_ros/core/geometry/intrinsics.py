"""Pinhole intrinsics of an image at its own resolution."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (OpenCV / REP 103 optical frame, pixel centres at integers)."""

    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float
