"""Batched preprocessing on the engine's device: upload, letterbox resize, mean padding, normalization.

Three ways to build the network batch (``EngineConfig.preprocess``):

``'device'`` (float bilinear): uint8 frames are uploaded (through one pinned staging buffer and one
    host-to-device copy on CUDA), converted to float32 and resized with ``F.interpolate(mode='bilinear',
    align_corners=False, antialias=False)``. This is the textbook bilinear of the same pixel grid as
    OpenCV's INTER_LINEAR, but OpenCV computes in 11-bit fixed point and rounds to uint8, so the values
    differ from upstream's ``input_u8`` by less than one intensity level (measured max 0.766 levels on the
    NYU and KITTI reference frames; see test_engine_conformance.py). The network sees unrounded floats.
``'device_exact'`` (default): the same upload, then an integer re-implementation of OpenCV's uint8
    INTER_LINEAR on the device: coefficients ``round((1 - f) * 2048)`` / ``round(f * 2048)`` from float32
    source coordinates, a horizontal pass in int32, and the vertical pass of OpenCV's SIMD kernel
    ``((((S0 >> 4) * b0) >> 16) + (((S1 >> 4) * b1) >> 16) + 2) >> 2``. It reproduces ``cv2.resize`` bit
    for bit (0 differing values on the reference frames and on random sizes, up- and downscaling, with the
    OpenCV 5.0 wheel of the project's environment), so the device path feeds the network exactly what
    upstream feeds it. It costs a few more integer kernels than the float path.
``'reference'``: upstream's own code on the CPU, per frame (``reference.reference_letterbox_u8``: cv2.resize +
    cv2.copyMakeBorder); the uint8 letterboxed batch is then uploaded and normalized on the device.

In all modes the padding holds (124, 116, 104), the mean colour as OpenCV rounds it into uint8, and the
normalization is ``(x - mean) / std`` in float32 in place in the batch tensor (bit-identical to upstream's
``torch.div(rgb - mean, std)``). Frames of equal size are resized together in one call. On CUDA with
Triton, ``'device_exact'`` resizing, padding and normalization run as one kernel per group
(``fill_normalized``, ``fused_preprocess.py``; the same numbers).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from metric3d_ros.core.engine import fused_preprocess
from metric3d_ros.core.engine.backend import MEAN_RGB, STD_RGB
from metric3d_ros.core.engine.host_memory import is_registered
from metric3d_ros.core.engine.reference import reference_letterbox_u8
from metric3d_ros.core.geometry.letterbox import PADDING_RGB_UINT8, Letterbox
from metric3d_ros.core.parallel_copy import copy_parallel

LOG = logging.getLogger(__name__)

#: OpenCV's INTER_RESIZE_COEF_BITS: bilinear weights are integers scaled by 2 ** 11.
CV_COEF_SCALE = 2048


def cv_linear_taps(src_len: int, dst_len: int, clamp_fraction: bool) -> tuple[np.ndarray, ...]:
    """OpenCV INTER_LINEAR taps along one axis: ``(i0, i1, w0, w1)`` int arrays of length ``dst_len``.

    Source coordinate ``f = float32((d + 0.5) * (src_len / dst_len) - 0.5)``, ``i0 = floor(f)``; weights
    ``w0 = round(float32(1 - frac) * 2048)``, ``w1 = round(frac * 2048)`` (round half to even, as
    ``saturate_cast<short>``). Along x (``clamp_fraction=True``) OpenCV pins taps left of the image to
    (0, weight 2048) and right of it to (src_len - 1, 2048); along y it keeps the fraction and clamps
    the row indices instead.
    """
    scale = src_len / dst_len
    f = ((np.arange(dst_len, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    frac = (f - i0.astype(np.float32)).astype(np.float32)
    if clamp_fraction:
        low = i0 < 0
        frac[low] = 0.0
        i0[low] = 0
        high = i0 >= src_len - 1
        frac[high] = 0.0
        i0[high] = src_len - 1
    w0 = np.rint((np.float32(1.0) - frac) * np.float32(CV_COEF_SCALE)).astype(np.int32)
    w1 = np.rint(frac * np.float32(CV_COEF_SCALE)).astype(np.int32)
    i1 = np.clip(i0 + 1, 0, src_len - 1)
    i0 = np.clip(i0, 0, src_len - 1)
    return i0, i1, w0, w1


@dataclass(frozen=True)
class ExactTables:
    """Device tap tables of ``resize_u8_exact`` for one (source size -> resized size) pair."""

    rows: torch.Tensor  # (2 * rh,) int64: y taps i0 then i1
    cols0: torch.Tensor  # (rw,) int64
    cols1: torch.Tensor
    wx0: torch.Tensor  # (1, 1, rw, 1) int32
    wx1: torch.Tensor
    wy0: torch.Tensor  # (1, rh, 1, 1) int32
    wy1: torch.Tensor


def make_exact_tables(src_hw: tuple[int, int], out_hw: tuple[int, int], device: torch.device) -> ExactTables:
    """``ExactTables`` resizing (h, w) -> (rh, rw) on ``device``."""
    y0, y1, wy0, wy1 = cv_linear_taps(src_hw[0], out_hw[0], clamp_fraction=False)
    x0, x1, wx0, wx1 = cv_linear_taps(src_hw[1], out_hw[1], clamp_fraction=True)
    return ExactTables(
        rows=torch.from_numpy(np.concatenate([y0, y1])).to(device),
        cols0=torch.from_numpy(x0).to(device),
        cols1=torch.from_numpy(x1).to(device),
        wx0=torch.from_numpy(wx0).to(device).view(1, 1, -1, 1),
        wx1=torch.from_numpy(wx1).to(device).view(1, 1, -1, 1),
        wy0=torch.from_numpy(wy0).to(device).view(1, -1, 1, 1),
        wy1=torch.from_numpy(wy1).to(device).view(1, -1, 1, 1),
    )


def resize_u8_exact(images: torch.Tensor, tables: ExactTables, out_hw: tuple[int, int]) -> torch.Tensor:
    """(n, rh, rw, 3) int32 in 0..255: OpenCV's uint8 INTER_LINEAR of (n, h, w, 3) uint8, bit for bit."""
    rh = out_hw[0]
    rows = images.index_select(1, tables.rows)  # (n, 2 rh, w, 3) uint8
    horiz = (rows.index_select(2, tables.cols0).to(torch.int32) * tables.wx0
             + rows.index_select(2, tables.cols1).to(torch.int32) * tables.wx1)  # (n, 2 rh, rw, 3)
    s0, s1 = horiz[:, :rh], horiz[:, rh:]
    out = (((s0 >> 4) * tables.wy0) >> 16) + (((s1 >> 4) * tables.wy1) >> 16)
    out = (out + 2) >> 2
    return out.clamp_(0, 255)


def resize_float(images: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """(n, 3, rh, rw) float32 bilinear resize (align_corners False, no antialias) of (n, h, w, 3) uint8."""
    x = images.permute(0, 3, 1, 2).to(torch.float32)
    return F.interpolate(x, size=out_hw, mode='bilinear', align_corners=False, antialias=False)


class Preprocessor:
    """Fills a (B, 3, H, W) float32 batch tensor from uint8 frames (see module docstring for the modes).

    Not thread-safe: the pinned staging buffer is reused by the next call (the engine gives each batch in
    flight its own Preprocessor and reuses it only after that batch's copies have completed).
    """

    def __init__(self, net_hw: tuple[int, int], device: torch.device, mode: str = 'device_exact') -> None:
        if mode not in ('device', 'device_exact', 'reference'):
            raise ValueError(f"preprocess mode must be 'device', 'device_exact' or 'reference', got {mode!r}")
        self.net_hw = (int(net_hw[0]), int(net_hw[1]))
        self.device = device
        self.mode = mode
        self._cuda = device.type == 'cuda'
        self._mean = torch.tensor(MEAN_RGB, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(STD_RGB, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._pad = torch.tensor(PADDING_RGB_UINT8, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._tables: dict[tuple[int, int], ExactTables] = {}
        self._staging: torch.Tensor | None = None  # pinned uint8 (CUDA only)
        self._upload: torch.Tensor | None = None  # device uint8
        self._fused_failed = False  # a fused-kernel launch failed once: torch kernels from then on

    # ----------------------------------------------------------------------------------------------- upload
    def upload(self, stacks: Sequence[Sequence[np.ndarray]]) -> list[torch.Tensor]:
        """One device uint8 tensor (n, *shape) per stack of equal-shape host arrays.

        On CUDA all stacks go through one pinned staging buffer and ONE host-to-device copy (non-blocking),
        or, when every array lies in CUDA-registered memory (``host_memory``), one copy per array straight
        from it; the returned tensors are views into a reused device buffer, valid until the next ``upload``.
        """
        if not self._cuda:
            out = []
            for arrays in stacks:
                if len(arrays) == 1:
                    out.append(torch.from_numpy(np.ascontiguousarray(arrays[0]))[None])
                else:
                    out.append(torch.from_numpy(np.stack(arrays)))
            return out
        total = sum(int(a.size) for arrays in stacks for a in arrays)
        if all(a.flags.c_contiguous and is_registered(a) for arrays in stacks for a in arrays):
            return self._upload_direct(stacks, total)
        if self._staging is None or self._upload is None or self._staging.numel() < total:
            self._staging = torch.empty(total, dtype=torch.uint8, pin_memory=True)
            self._upload = torch.empty(total, dtype=torch.uint8, device=self.device)
        host = self._staging.numpy()
        offset = 0
        spans = []
        copies: list[tuple[np.ndarray, np.ndarray]] = []
        for arrays in stacks:
            begin = offset
            for a in arrays:
                copies.append((host[offset:offset + a.size], a.reshape(-1)))
                offset += a.size
            spans.append((begin, offset, (len(arrays), *arrays[0].shape)))
        copy_parallel(copies)  # several threads: ~3x faster than one for 1080p batches
        self._upload[:total].copy_(self._staging[:total], non_blocking=True)
        return [self._upload[a:b].view(shape) for a, b, shape in spans]

    def _upload_direct(self, stacks: Sequence[Sequence[np.ndarray]], total: int) -> list[torch.Tensor]:
        """Every array lies in CUDA-registered host memory (``host_memory``): one DMA copy per array
        straight from it, no staging copy. The caller keeps the arrays unchanged until its stream is
        synchronized (``DepthEngine.infer`` and ``EngineTicket.result`` wait for it before they return, also
        after a failed batch)."""
        if self._upload is None or self._upload.numel() < total:
            self._upload = torch.empty(total, dtype=torch.uint8, device=self.device)
        out = []
        offset = 0
        for arrays in stacks:
            begin = offset
            for a in arrays:
                self._upload[offset:offset + a.size].copy_(torch.from_numpy(a.reshape(-1)), non_blocking=True)
                offset += a.size
            out.append(self._upload[begin:offset].view((len(arrays), *arrays[0].shape)))
        return out

    # --------------------------------------------------------------------------------------------- resizing
    def _exact_tables(self, src_hw: tuple[int, int], out_hw: tuple[int, int]) -> ExactTables:
        key = (src_hw[0], src_hw[1])
        tables = self._tables.get(key)
        if tables is None:
            tables = make_exact_tables(src_hw, out_hw, self.device)
            if len(self._tables) > 64:  # cameras come and go; keep the cache bounded
                self._tables.clear()
            self._tables[key] = tables
        return tables

    def resize(self, images: torch.Tensor, letterbox: Letterbox) -> torch.Tensor:
        """(n, 3, rh, rw) float32 resized images (0..255) from (n, h, w, 3) uint8 on the device."""
        out_hw = (letterbox.resized_height, letterbox.resized_width)
        if self.mode == 'device':
            return resize_float(images, out_hw)
        tables = self._exact_tables((letterbox.src_height, letterbox.src_width), out_hw)
        return resize_u8_exact(images, tables, out_hw).permute(0, 3, 1, 2).to(torch.float32)

    # ---------------------------------------------------------------------------------------------- batches
    def stage(self, images: Sequence[np.ndarray], letterboxes: Sequence[Letterbox],
              groups: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """Host work and upload: device uint8 stacks, one per group (``'reference'``: one letterboxed stack).

        ``groups``: ``(start, stop)`` runs of consecutive frames of equal source size (resized together).
        """
        if self.mode == 'reference':
            return self.upload([[reference_letterbox_u8(img, *self.net_hw)[0] for img in images]])
        return self.upload([images[start:stop] for start, stop in groups])

    def fill(self, batch: torch.Tensor, staged: Sequence[torch.Tensor], letterboxes: Sequence[Letterbox],
             groups: Sequence[tuple[int, int]]) -> None:
        """Write the letterboxed frames into ``batch[:B]`` in the 0..255 range (not yet normalized)."""
        b = len(letterboxes)
        if self.mode == 'reference':
            batch[:b].copy_(staged[0].permute(0, 3, 1, 2))
            return
        batch[:b].copy_(self._pad.expand(b, 3, *self.net_hw))
        for (start, stop), stack in zip(groups, staged, strict=True):
            lb = letterboxes[start]
            rows, cols = lb.unpad_slices
            batch[start:stop, :, rows, cols] = self.resize(stack, lb)

    def fill_normalized(self, batch: torch.Tensor, staged: Sequence[torch.Tensor],
                        letterboxes: Sequence[Letterbox], groups: Sequence[tuple[int, int]]) -> bool:
        """``fill`` then ``normalize_`` as one Triton kernel per group (``fused_preprocess``; same numbers).

        Only for ``'device_exact'`` on CUDA with Triton and a contiguous batch; returns False (nothing
        written) otherwise, and the caller uses ``fill`` + ``normalize_``.
        """
        if (self.mode != 'device_exact' or self._fused_failed or not batch.is_contiguous()
                or not fused_preprocess.available(self.device.type)):
            return False
        try:
            for (start, stop), stack in zip(groups, staged, strict=True):
                lb = letterboxes[start]
                out_hw = (lb.resized_height, lb.resized_width)
                tables = self._exact_tables((lb.src_height, lb.src_width), out_hw)
                fused_preprocess.letterbox_normalize(batch[start:stop], stack, tables, lb, MEAN_RGB, STD_RGB,
                                                     PADDING_RGB_UINT8)
        except Exception:  # noqa: BLE001 - the torch path (which rewrites the whole batch) takes over for good
            LOG.exception('fused preprocessing failed: using the torch kernels from now on')
            self._fused_failed = True
            return False
        return True

    def normalize_(self, batch: torch.Tensor) -> torch.Tensor:
        """In place ``(x - mean) / std`` (float32), as upstream computes it."""
        return batch.sub_(self._mean).div_(self._std)
