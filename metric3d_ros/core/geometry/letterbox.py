"""Metric3D letterbox: aspect-preserving resize into the network input plus constant mean-colour padding.

This reproduces upstream Metric3D's preprocessing (``hubconf.py`` / ``mono/utils`` at eb5b6fac):

- ``scale = min(net_h / h, net_w / w)``;
- the resized size is truncated: ``(int(w * scale), int(h * scale))`` (not rounded);
- ``pad_h = net_h - rh``, ``pad_w = net_w - rw``; top = ``pad_h // 2``, bottom = ``pad_h - top``,
  left = ``pad_w // 2``, right = ``pad_w - left``; ``pad_info = [top, bottom, left, right]``;
- the intrinsics are multiplied by ``scale`` and cx, cy are NOT shifted by the padding: this is what
  upstream does and what the network was trained with (the canonical transform only uses fx).

Pixel mapping (``network_to_source_uv``/``source_to_network_uv``) is that of the image resampling itself:
cv2.resize and ``align_corners=False`` bilinear upsampling both map with pixel centres at integers and the
per-axis factors ``rw / w``, ``rh / h`` (which differ slightly from ``scale`` because of the truncation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from metric3d_ros.core.geometry.intrinsics import Intrinsics

#: Upstream pads with the ImageNet mean colour (RGB, 0..255 scale).
PADDING_RGB: tuple[float, float, float] = (123.675, 116.28, 103.53)
#: What cv2.copyMakeBorder writes for ``PADDING_RGB`` into a uint8 image (values rounded).
PADDING_RGB_UINT8: tuple[int, int, int] = (124, 116, 104)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return int(value)


@dataclass(frozen=True)
class Letterbox:
    """Geometry of letterboxing a ``src_height`` x ``src_width`` image into ``net_height`` x ``net_width``."""

    src_height: int
    src_width: int
    net_height: int
    net_width: int
    scale: float
    resized_height: int
    resized_width: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int

    @property
    def pad_info(self) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)``, upstream's ``pad_info`` order."""
        return (self.pad_top, self.pad_bottom, self.pad_left, self.pad_right)

    @property
    def unpad_slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` of the valid (resized image) region in the network image."""
        return (
            slice(self.pad_top, self.pad_top + self.resized_height),
            slice(self.pad_left, self.pad_left + self.resized_width),
        )

    @property
    def resize_factors(self) -> tuple[float, float]:
        """``(rw / w, rh / h)``: the factors the pixels were actually resampled by along x and y."""
        return (self.resized_width / self.src_width, self.resized_height / self.src_height)

    def scale_intrinsics(self, intrinsics: Intrinsics) -> Intrinsics:
        """Upstream's network intrinsics: fx, fy, cx, cy times ``scale``; cx, cy NOT shifted by padding."""
        return intrinsics.scaled(self.scale, self.scale)

    def network_to_source_uv(
        self, u: np.ndarray | float, v: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Source-image pixel coordinates of network-image pixel coordinates (pixel centres at integers).

        ``u_src = (u - left + 0.5) * w / rw - 0.5``, likewise for v; points in the padding map outside the
        source image.
        """
        fx, fy = self.resize_factors
        u_src = (np.asarray(u, dtype=np.float64) - self.pad_left + 0.5) / fx - 0.5
        v_src = (np.asarray(v, dtype=np.float64) - self.pad_top + 0.5) / fy - 0.5
        return u_src, v_src

    def source_to_network_uv(
        self, u: np.ndarray | float, v: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Network-image pixel coordinates of source-image ones; the inverse of ``network_to_source_uv``."""
        fx, fy = self.resize_factors
        u_net = (np.asarray(u, dtype=np.float64) + 0.5) * fx - 0.5 + self.pad_left
        v_net = (np.asarray(v, dtype=np.float64) + 0.5) * fy - 0.5 + self.pad_top
        return u_net, v_net


def compute_letterbox(src_height: int, src_width: int, net_height: int, net_width: int) -> Letterbox:
    """Upstream Metric3D's letterbox of a ``src_height`` x ``src_width`` image into the network input."""
    h = _positive_int('src_height', src_height)
    w = _positive_int('src_width', src_width)
    net_h = _positive_int('net_height', net_height)
    net_w = _positive_int('net_width', net_width)
    scale = min(net_h / h, net_w / w)
    resized_w = int(w * scale)
    resized_h = int(h * scale)
    if resized_w <= 0 or resized_h <= 0:
        raise ValueError(
            f'a {w}x{h} image letterboxed into {net_w}x{net_h} would be resized to {resized_w}x{resized_h} '
            '(width x height): the aspect ratio is too extreme for this network input size'
        )
    if not math.isfinite(scale):
        raise ValueError(f'letterbox scale is not finite for {w}x{h} -> {net_w}x{net_h} (width x height)')
    pad_h = net_h - resized_h
    pad_w = net_w - resized_w
    top = pad_h // 2
    left = pad_w // 2
    return Letterbox(
        src_height=h,
        src_width=w,
        net_height=net_h,
        net_width=net_w,
        scale=scale,
        resized_height=resized_h,
        resized_width=resized_w,
        pad_top=top,
        pad_bottom=pad_h - top,
        pad_left=left,
        pad_right=pad_w - left,
    )
