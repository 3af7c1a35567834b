"""Pairing of an image with the CameraInfo of its camera, by stamp.

Rule: the CameraInfo with exactly the image's stamp if one is buffered; otherwise the most recently
received CameraInfo whose stamp is within ``info_tolerance_ms`` of the image's; otherwise none, with a
reason. A negative ``info_tolerance_ms`` accepts the most recently received CameraInfo of any age: use
it for static CameraInfo publishers (latched, low rate, or stamped once at start-up).

Images that arrive before their CameraInfo are not held back: with a tolerance of at least one frame
period they pair with the previous CameraInfo (intrinsics rarely change between frames).
"""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from metric3d_ros.core.batching import reasons
from metric3d_ros.core.batching.stamps import as_stamp_ns

Info = TypeVar('Info')

ANY_AGE_MS = -1.0
"""An ``info_tolerance_ms`` meaning "the latest CameraInfo, however old" (static publishers)."""


@dataclass(frozen=True)
class PairingConfig:
    """How images are paired with CameraInfo.

    info_tolerance_ms: largest |image stamp - CameraInfo stamp| accepted when no exact match is buffered;
        negative (e.g. ``ANY_AGE_MS``) accepts the latest CameraInfo of any age.
    buffer_size: how many recent CameraInfo messages are kept per camera (>= 1).
    """

    info_tolerance_ms: float = 50.0
    buffer_size: int = 8

    def __post_init__(self) -> None:
        tolerance_ms = float(self.info_tolerance_ms)
        if math.isnan(tolerance_ms):
            raise ValueError('info_tolerance_ms must be a number (negative for "any age"), got NaN')
        object.__setattr__(self, 'info_tolerance_ms', tolerance_ms)
        size = self.buffer_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f'buffer_size must be an integer >= 1, got {self.buffer_size!r}')

    @property
    def any_age(self) -> bool:
        """True when any CameraInfo age is accepted."""
        return self.info_tolerance_ms < 0.0


@dataclass(frozen=True)
class PairResult(Generic[Info]):
    """Outcome of ``CameraInfoPairer.match``: ``info`` and its stamp when paired, else ``reason``."""

    info: Info | None
    info_stamp_ns: int | None
    reason: str | None
    exact: bool = False

    @property
    def ok(self) -> bool:
        return self.reason is None


class CameraInfoPairer(Generic[Info]):
    """Recent CameraInfo of ONE camera (opaque objects with their stamps) and the pairing rule above.

    Thread-safe; ``add`` and ``match`` are O(buffer_size).
    """

    def __init__(self, config: PairingConfig | None = None) -> None:
        self._config = config if config is not None else PairingConfig()
        tolerance_ms = self._config.info_tolerance_ms
        self._tolerance_ns = None if self._config.any_age else round(tolerance_ms * 1e6)
        self._lock = threading.Lock()
        self._buffer: deque[tuple[int, Info]] = deque(maxlen=self._config.buffer_size)

    @property
    def config(self) -> PairingConfig:
        return self._config

    def add(self, info: Info, stamp_ns: int) -> None:
        """Remember ``info`` stamped ``stamp_ns`` (the oldest-received one is forgotten when full)."""
        stamp_ns = as_stamp_ns(stamp_ns, 'CameraInfo stamp_ns')
        with self._lock:
            self._buffer.append((stamp_ns, info))

    def clear(self) -> None:
        """Forget every buffered CameraInfo."""
        with self._lock:
            self._buffer.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._buffer)

    def match(self, image_stamp_ns: int) -> PairResult[Info]:
        """The CameraInfo for an image stamped ``image_stamp_ns`` (see the module docstring)."""
        image_stamp_ns = as_stamp_ns(image_stamp_ns, 'image stamp_ns')
        with self._lock:
            entries = list(self._buffer)
        if not entries:
            return PairResult(None, None, reasons.NO_CAMERA_INFO)
        for stamp_ns, info in reversed(entries):
            if stamp_ns == image_stamp_ns:
                return PairResult(info, stamp_ns, None, exact=True)
        if self._tolerance_ns is None:
            stamp_ns, info = entries[-1]
            return PairResult(info, stamp_ns, None)
        for stamp_ns, info in reversed(entries):
            if abs(stamp_ns - image_stamp_ns) <= self._tolerance_ns:
                return PairResult(info, stamp_ns, None)
        if any(stamp_ns < image_stamp_ns for stamp_ns, _ in entries):
            return PairResult(None, None, reasons.CAMERA_INFO_TOO_OLD)
        return PairResult(None, None, reasons.CAMERA_INFO_TOO_NEW)
