"""One camera's input side, ROS-free: pairing images with CameraInfo, and holding an image that came first.

``CameraInput`` is what the node does between receiving a message and submitting a frame to the batching
scheduler, for ONE camera:

- ``add_info(info, stamp_ns)`` buffers a CameraInfo (``CameraInfoPairer``) and retries the held image;
- ``add_image(image)`` pairs an image by stamp (exact stamp, else the newest within ``info_tolerance_ms``);
  when nothing pairs yet and the reason may still resolve (no CameraInfo yet, or only older ones), the image
  is *held* up to ``info_wait_ms`` for its CameraInfo. One image is held at most: a newer image replaces it
  (the replaced one is dropped with its pairing reason);
- ``expire(now_s)`` drops a held image whose wait is over.

Each call returns what became of the images it touched, in order: ``Paired(image, info)`` (ready to submit)
or ``Dropped(image, reason)`` (count it). An image is never lost silently: it is paired, dropped with a reason
(``core.batching.reasons``), or held (``held``). Thread-safe: one lock per camera, so an image arriving on
one thread and its CameraInfo on another pair exactly once.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

from metric3d_ros.core.batching import reasons
from metric3d_ros.core.batching.pairing import CameraInfoPairer, PairingConfig

Image = TypeVar('Image')
Info = TypeVar('Info')


@dataclass(frozen=True)
class Paired(Generic[Image, Info]):
    """``image`` paired with ``info`` (the CameraInfo object given to ``add_info``)."""

    image: Image
    info: Info


@dataclass(frozen=True)
class Dropped(Generic[Image]):
    """``image`` dropped for ``reason`` (a ``core.batching.reasons`` name)."""

    image: Image
    reason: str


@dataclass
class _Held(Generic[Image]):
    image: Image
    stamp_ns: int
    since_s: float
    reason: str


class CameraInput(Generic[Image, Info]):
    """Pairing and holding for one camera (see the module docstring).

    info_wait_ms: how long an image may wait for a CameraInfo that pairs with it (0: never hold).
    """

    def __init__(self, camera_id: str, pairing: PairingConfig, info_wait_ms: float) -> None:
        if info_wait_ms < 0.0:
            raise ValueError(f'info_wait_ms must be >= 0, got {info_wait_ms!r}')
        self.camera_id = camera_id
        self._pairer: CameraInfoPairer[Info] = CameraInfoPairer(pairing)
        self._wait_s = info_wait_ms / 1e3
        self._held: _Held[Image] | None = None
        self._lock = threading.Lock()

    @property
    def held(self) -> Image | None:
        """The image waiting for its CameraInfo, if any."""
        held = self._held
        return None if held is None else held.image

    def add_info(self, info: Info, stamp_ns: int, now_s: float) -> list[Paired | Dropped]:
        """Buffer ``info`` (stamped ``stamp_ns``) and retry the held image."""
        with self._lock:
            self._pairer.add(info, stamp_ns)
            held, self._held = self._held, None
            if held is None:
                return []
            outcome = self._pair(held.image, held.stamp_ns, held.since_s, now_s)
            return [] if outcome is None else [outcome]

    def add_image(self, image: Image, stamp_ns: int, now_s: float) -> list[Paired | Dropped]:
        """Pair ``image`` (stamped ``stamp_ns``, received at ``now_s`` on a monotonic clock), or hold it."""
        with self._lock:
            out: list[Paired | Dropped] = []
            replaced, self._held = self._held, None
            if replaced is not None:
                out.append(Dropped(replaced.image, replaced.reason))
            outcome = self._pair(image, stamp_ns, now_s, now_s)
            if outcome is not None:
                out.append(outcome)
            return out

    def expire(self, now_s: float) -> list[Dropped]:
        """Drop the held image if it has waited ``info_wait_ms``."""
        with self._lock:
            held = self._held
            if held is None or now_s - held.since_s < self._wait_s:
                return []
            self._held = None
            return [Dropped(held.image, held.reason)]

    def clear(self) -> list[Dropped]:
        """Forget the CameraInfo buffer; the held image, if any, is returned as dropped (with its reason)."""
        with self._lock:
            self._pairer.clear()
            held, self._held = self._held, None
            return [] if held is None else [Dropped(held.image, held.reason)]

    def _pair(self, image: Image, stamp_ns: int, since_s: float, now_s: float) -> Paired | Dropped | None:
        match = self._pairer.match(stamp_ns)
        if match.ok:
            return Paired(image, match.info)
        # an image older than every CameraInfo will not pair later; the others may
        if match.reason != reasons.CAMERA_INFO_TOO_NEW and now_s - since_s < self._wait_s:
            self._held = _Held(image, stamp_ns, since_s, match.reason)
            return None
        return Dropped(image, match.reason)
