"""Engine data types: what goes into the engine and what comes out (numpy only, no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from metric3d_ros.core.geometry.intrinsics import Intrinsics

OutputResolution = Literal['camera', 'network']


@dataclass(frozen=True)
class Frame:
    """One camera image to process.

    image_rgb: (H, W, 3) uint8 RGB, C-contiguous.
    intrinsics: pinhole intrinsics of ``image_rgb`` at its own resolution.
    """

    image_rgb: np.ndarray
    intrinsics: Intrinsics
    camera_id: str
    stamp_ns: int
    frame_id: str = ''


@dataclass(frozen=True)
class OutputRequest:
    """Which outputs to compute for a frame (outputs nobody consumes are not computed)."""

    depth: bool = True
    confidence: bool = False
    normals: bool = False
    cloud: bool = False
    cloud_rgb: bool = False
    resolution: OutputResolution = 'camera'
    cloud_stride: int = 1
    min_depth_m: float = 0.0
    max_depth_m: float = float('inf')


@dataclass
class FrameResult:
    """Result for one input frame, in input order. ``error`` is set (and arrays are None) on failure.

    depth_m: (h, w) float32 metres, NaN where invalid, at the requested output resolution.
    intrinsics: intrinsics of the output image (h, w).
    confidence: (h, w) float32. normals: (h, w, 3) float32 unit vectors in the optical frame.
    points_xyz: (hc, wc, 3) float32 organized cloud (NaN where invalid), hc = ceil(h / stride).
    points_rgb: (hc, wc, 3) uint8 colours for points_xyz, when requested.
    """

    camera_id: str
    stamp_ns: int
    frame_id: str = ''
    intrinsics: Intrinsics | None = None
    depth_m: np.ndarray | None = None
    confidence: np.ndarray | None = None
    normals: np.ndarray | None = None
    points_xyz: np.ndarray | None = None
    points_rgb: np.ndarray | None = None
    error: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None
