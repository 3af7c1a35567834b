"""Throttling of repeated messages (errors logged at most once per period, per key)."""
from __future__ import annotations

import math
import threading
from collections.abc import Hashable

from metric3d_ros.core.batching.clock import ClockNs, monotonic_ns


class Throttle:
    """Lets one event per key through at most once every ``period_s`` seconds and counts the rest.

    Typical use (a throttled error, plus a counter elsewhere)::

        suppressed = throttle.poll(('bad_encoding', camera_id))
        if suppressed is not None:
            log.error(f'... ({suppressed} similar messages suppressed)')

    ``period_s == 0`` lets everything through. Thread-safe.
    """

    def __init__(self, period_s: float, clock_ns: ClockNs = monotonic_ns) -> None:
        period_s = float(period_s)
        if not math.isfinite(period_s) or period_s < 0.0:
            raise ValueError(f'Throttle period_s must be finite and >= 0, got {period_s}')
        self._period_ns = round(period_s * 1e9)
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._last_ns: dict[Hashable, int] = {}
        self._suppressed: dict[Hashable, int] = {}

    @property
    def period_s(self) -> float:
        return self._period_ns / 1e9

    def poll(self, key: Hashable = '') -> int | None:
        """``None`` if the event for ``key`` is throttled now, otherwise how many were suppressed since the
        last one let through (0 for the first)."""
        now_ns = self._clock_ns()
        with self._lock:
            last_ns = self._last_ns.get(key)
            if last_ns is not None and now_ns - last_ns < self._period_ns:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last_ns[key] = now_ns
            return self._suppressed.pop(key, 0)

    def ready(self, key: Hashable = '') -> bool:
        """True if the event for ``key`` may go out now (and record that it did)."""
        return self.poll(key) is not None

    def suppressed(self, key: Hashable = '') -> int:
        """How many events for ``key`` were held back since the last one let through."""
        with self._lock:
            return self._suppressed.get(key, 0)
