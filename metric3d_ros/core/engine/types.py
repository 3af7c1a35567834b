"""Engine data types: what goes into the engine and what comes out (numpy only, no torch)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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
    """Which outputs to compute for a frame (outputs nobody consumes are not computed).

    resolution: 'camera' = outputs at the frame's own size (H, W), with the frame's intrinsics;
        'network' = outputs at the un-padded letterbox size (int(H * s), int(W * s)),
        s = min(net_h / H, net_w / W), with that image's own intrinsics: fx, cx times rw / W and fy, cy times
        rh / H (the real resampling factors, no padding shift); the depth values still use upstream's fx * s.
    cloud_stride: the cloud samples rows/columns 0, k, 2k, ... of the depth image (organized, NaN kept).
    min_depth_m / max_depth_m: depth (and cloud points) outside this inclusive range become NaN; the
        engine's own clamp (``EngineConfig.min_depth_m``/``max_depth_m``, upstream's [0, 300]) comes first.
    cloud_rgb needs cloud. Invalid values fail the frame (``FrameResult.error``), not the call.
    """

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

    Arrays are host numpy arrays owned by the result (never reused by a later call); outputs that were not
    requested are None.
    depth_m: (h, w) float32 metres, NaN where invalid, at the requested output resolution.
    intrinsics: intrinsics of the output image (h, w) (see ``OutputRequest.resolution``).
    confidence: (h, w) float32. normals: (h, w, 3) float32 unit vectors in the optical frame.
    points_xyz: (hc, wc, 3) float32 organized cloud (NaN where invalid), hc = ceil(h / stride); from the
        engine a ``[..., :3]`` view of (hc, wc, 4) points (16-byte points, see ``geometry.cloud.padded_xyz``).
    points_rgb: (hc, wc, 3) uint8 colours for points_xyz, when requested (at network resolution: the
        resized image the network saw).
    timings_ms: stage times of the batch this frame was part of (upload, preprocess, network, postprocess,
        cloud, download, total), shared by the frames of that batch.
    shared: only from ``ProcessEngine.infer(..., shared=True)``: array name -> ``SharedArray`` (where the
        array lies in the engine process's shared memory; the arrays are read-only views of it).
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
    shared: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def expand_requests(count: int,
                    request: OutputRequest | Sequence[OutputRequest] | None) -> list[OutputRequest]:
    """One ``OutputRequest`` per frame: depth only (None), the same for all, or exactly one per frame."""
    if request is None:
        return [OutputRequest()] * count
    if isinstance(request, OutputRequest):
        return [request] * count
    requests = list(request)
    if len(requests) != count:
        raise ValueError(f'got {len(requests)} requests for {count} frames: pass one request for all frames '
                         'or exactly one per frame')
    return requests
