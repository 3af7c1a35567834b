"""Canonical-camera depth to metric depth, and the REP 117/118 depth image encodings.

Metric3D predicts depth for a canonical camera of focal length ``CANONICAL_FOCAL_PX`` (1000 px); the
metric depth of the real camera is ``depth_m = canonical_depth * fx_scaled_px / canonical_focal_px``
where ``fx_scaled_px`` is the focal length of the image the network saw (after the letterbox scale).

Valid range: upstream clamps twice, the network's canonical output to [0.1, 200] (the decoder's depth
range, ``core.model.specs.DecoderSpec.min_depth``/``max_depth``) and the metric depth to [0, 300] m. A
clamped value is not a measurement, so nothing published is clamped: a pixel whose canonical depth sits at
either end of the canonical range (saturated), or whose metric depth is non-finite or outside
``[min_depth_m, max_depth_m]``, is invalid (NaN in 32FC1 and in the cloud, 0 in 16UC1). The engine detects
saturation with torch on the device, on the network-resolution canonical tensor before it is resized, and
also invalidates every output pixel whose bilinear resize draws on a saturated one
(``metric3d_ros.core.engine.postprocess``); ``canonical_to_metric`` applies the same rule on the host.
``clamp_depth`` reproduces upstream's metric clamp when that is wanted (conformance).
"""
from __future__ import annotations

import math

import numpy as np

#: Focal length of Metric3D's canonical camera.
CANONICAL_FOCAL_PX = 1000.0
#: Upstream's metric depth clamp range.
UPSTREAM_MIN_DEPTH_M = 0.0
UPSTREAM_MAX_DEPTH_M = 300.0
#: Largest depth representable in a 16UC1 millimetre image.
MAX_DEPTH_16UC1_M = 65.535


def _check_range(min_depth_m: float, max_depth_m: float) -> None:
    if math.isnan(min_depth_m) or math.isnan(max_depth_m) or min_depth_m < 0.0 or max_depth_m <= min_depth_m:
        raise ValueError(
            f'depth range must satisfy 0 <= min_depth_m < max_depth_m, got [{min_depth_m}, {max_depth_m}]'
        )


def canonical_to_metric(
    canonical_depth: np.ndarray,
    fx_scaled_px: float | np.ndarray,
    canonical_focal_px: float = CANONICAL_FOCAL_PX,
    min_depth_m: float = 0.0,
    max_depth_m: float = math.inf,
    canonical_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Metric depth (float32 metres) from canonical-camera depth; invalid pixels are NaN.

    ``fx_scaled_px`` is a scalar or an array broadcastable against ``canonical_depth`` (e.g. shape
    (B, 1, 1, 1) for a batch). Pixels whose metric depth is non-finite or outside the inclusive range
    ``[min_depth_m, max_depth_m]`` become NaN (not clamped; see ``clamp_depth`` for upstream's clamp).
    ``canonical_range`` (lo, hi): the network's canonical output range (Metric3D: (0.1, 200)); canonical
    values <= lo or >= hi are saturated (the network clamped them) and become NaN too. None: no such check.
    """
    depth = np.asarray(canonical_depth)
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f'canonical_depth must be a floating-point array, got dtype {depth.dtype}')
    fx = np.asarray(fx_scaled_px, dtype=np.float64)
    if not np.all(np.isfinite(fx)) or np.any(fx <= 0.0):
        raise ValueError(f'fx_scaled_px must be finite and positive, got {fx_scaled_px!r}')
    if not (math.isfinite(canonical_focal_px) and canonical_focal_px > 0.0):
        raise ValueError(f'canonical_focal_px must be finite and positive, got {canonical_focal_px!r}')
    _check_range(min_depth_m, max_depth_m)
    with np.errstate(invalid='ignore', over='ignore'):
        metric = depth.astype(np.float64) * (fx / canonical_focal_px)
        metric = np.broadcast_to(metric, np.broadcast_shapes(depth.shape, fx.shape)).astype(np.float32)
        valid = np.isfinite(metric) & (metric >= min_depth_m) & (metric <= max_depth_m)
        if canonical_range is not None:
            lo, hi = (np.asarray(v, dtype=depth.dtype) for v in canonical_range)
            valid &= np.broadcast_to((depth > lo) & (depth < hi), valid.shape)
    metric[~valid] = np.nan
    return metric


def clamp_depth(
    depth_m: np.ndarray,
    min_depth_m: float = UPSTREAM_MIN_DEPTH_M,
    max_depth_m: float = UPSTREAM_MAX_DEPTH_M,
) -> np.ndarray:
    """Upstream's post-processing clamp (float32): values clipped into [min, max]; NaN stays NaN."""
    _check_range(min_depth_m, max_depth_m)
    depth = np.asarray(depth_m)
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f'depth_m must be a floating-point array, got dtype {depth.dtype}')
    return np.clip(depth, min_depth_m, max_depth_m).astype(np.float32)


def encode_depth_32fc1(depth_m: np.ndarray) -> np.ndarray:
    """REP 117/118 32FC1: float32 metres (a new array).

    NaN marks invalid pixels; finite values <= 0 (no physical depth) become NaN; +Inf ("no return within
    range") and -Inf ("too close") are kept as REP 117 defines them.
    """
    depth = np.asarray(depth_m)
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f'depth_m must be a floating-point array in metres, got dtype {depth.dtype}')
    out = depth.astype(np.float32, copy=True)
    with np.errstate(invalid='ignore'):
        out[np.isfinite(out) & (out <= 0.0)] = np.nan
    return out


def encode_depth_16uc1(depth_m: np.ndarray) -> np.ndarray:
    """REP 118 16UC1: uint16 millimetres, 0 marks invalid.

    Rounding: ``np.rint(depth_m * 1000)`` computed in float64, i.e. round half to even (62.5 mm -> 62,
    187.5 mm -> 188). Saturation to invalid: a depth that would round above 65535 mm (depth > 65.5355 m)
    is not representable and becomes 0 (invalid), never clamped to 65535. Depths that round to 0 mm
    (below 0.5 mm), negative, NaN and +/-Inf all become 0. (depth_image_proc's ``fromMeters`` truncates
    ``depth * 1000 + 0.5`` in float32, i.e. rounds halves up; the two differ only on exact half millimetres.)
    """
    depth = np.asarray(depth_m)
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f'depth_m must be a floating-point array in metres, got dtype {depth.dtype}')
    with np.errstate(invalid='ignore', over='ignore'):
        mm = np.rint(depth.astype(np.float64) * 1000.0)
        valid = np.isfinite(mm) & (mm >= 1.0) & (mm <= 65535.0)
    out = np.zeros(depth.shape, dtype=np.uint16)
    out[valid] = mm[valid].astype(np.uint16)
    return out


def decode_depth_16uc1(depth_mm: np.ndarray) -> np.ndarray:
    """float32 metres from a 16UC1 millimetre image; 0 (invalid) becomes NaN.

    Computed as ``float32(mm) * float32(0.001)``, exactly as depth_image_proc's
    ``DepthTraits<uint16_t>::toMeters`` does.
    """
    mm = np.asarray(depth_mm)
    if mm.dtype != np.uint16:
        raise ValueError(f'a 16UC1 depth image must have dtype uint16, got {mm.dtype}')
    out = mm.astype(np.float32) * np.float32(0.001)
    out[mm == 0] = np.nan
    return out
