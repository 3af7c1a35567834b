"""Engine data types: what goes into the engine and what comes out (numpy only, no torch)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    """Which outputs to compute for a frame (outputs nobody consumes are not computed).

    outputs: names from the output catalogue (``metric3d_ros.core.outputs.OUTPUTS``: 'depth',
        'confidence', 'normals', 'points', and any registered one); a set or list is stored as a frozenset.
    resolution: 'camera' = outputs at the frame's own size (H, W), with the frame's intrinsics;
        'network' = outputs at the un-padded letterbox size (int(H * s), int(W * s)),
        s = min(net_h / H, net_w / W), with that image's own intrinsics (``Intrinsics.resampled`` by the
        real resampling factors sx = rw / W, sy = rh / H, no padding shift): fx * sx, fy * sy,
        cx' = (cx + 0.5) * sx - 0.5, cy' = (cy + 0.5) * sy - 0.5 (pixel centres at integers, as the resize
        maps them); the depth values still use upstream's fx * s.
    cloud_stride: a cloud samples rows/columns 0, k, 2k, ... of the depth image (organized, NaN kept).
    cloud_rgb: also the cloud's uint8 colours (``FrameResult.arrays['points_rgb']``); needs a cloud output.
    min_depth_m / max_depth_m: depth (and cloud points) outside this inclusive range become NaN, as do
        pixels whose canonical depth saturates the network's range; nothing is clamped (any finite
        max_depth_m is honoured, also above upstream's 300 m clamp).
    Invalid values (unknown or no output names, ...) fail the frame (``FrameResult.error``), not the call.
    """

    outputs: frozenset[str] = frozenset({'depth'})
    resolution: OutputResolution = 'camera'
    cloud_stride: int = 1
    cloud_rgb: bool = False
    min_depth_m: float = 0.0
    max_depth_m: float = float('inf')

    def __post_init__(self) -> None:
        names = self.outputs
        if not isinstance(names, (str, bytes, frozenset)) and isinstance(names, Iterable):
            object.__setattr__(self, 'outputs', frozenset(names))


@dataclass
class FrameResult:
    """Result for one input frame, in input order. ``error`` is set (and ``arrays`` empty) on failure.

    arrays: what was computed, keyed by ``OutputSpec.array`` of the output catalogue
        (``metric3d_ros.core.outputs``): host numpy arrays owned by the result (never reused by a later
        call), only for the requested outputs. Built in: 'depth_m' (h, w) float32 metres, NaN where invalid,
        at the requested output resolution; 'confidence' (h, w) float32; 'normals' (h, w, 3) float32 unit
        vectors in the optical frame; 'points_xyz' (hc, wc, 3) float32 organized cloud (NaN where invalid),
        hc = ceil(h / stride), a ``[..., :3]`` view of (hc, wc, 4) points (16-byte points, see
        ``geometry.cloud.padded_xyz``); 'points_rgb' (hc, wc, 3) uint8 colours of the cloud when the request
        asks for ``cloud_rgb`` (at network resolution: the resized image the network saw).
    intrinsics: intrinsics of the output image (h, w) (see ``OutputRequest.resolution``).
    timings_ms: stage times of the batch this frame was part of (upload, preprocess, network, postprocess,
        cloud, download, total), shared by the frames of that batch.
    """

    camera_id: str
    stamp_ns: int
    frame_id: str = ''
    intrinsics: Intrinsics | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

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
