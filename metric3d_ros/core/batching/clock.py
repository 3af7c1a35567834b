"""Clocks as plain callables returning integer nanoseconds, plus a settable fake clock for tests.

Two kinds of time are used by the batching code and must not be mixed:

* a *stamp clock* (the node passes ROS time, which may be simulation time): compared with image stamps
  for staleness and stamp-to-publish latency;
* a *monotonic clock* (``time.monotonic_ns`` by default): deadlines (``max_wait_ms``), camera activity
  (``camera_timeout_ms``), rates and log throttling.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

ClockNs = Callable[[], int]
"""A zero-argument callable returning the current time in integer nanoseconds."""


def monotonic_ns() -> int:
    """The process's monotonic clock in nanoseconds (never jumps, unaffected by sim time)."""
    return time.monotonic_ns()


class FakeClock:
    """A thread-safe clock that only moves when told to. Call it to read the time in nanoseconds."""

    def __init__(self, start_ns: int = 0) -> None:
        self._lock = threading.Lock()
        self._now_ns = int(start_ns)

    def __call__(self) -> int:
        with self._lock:
            return self._now_ns

    def set_ns(self, now_ns: int) -> None:
        """Set the time to ``now_ns`` (may go backwards, like a looping bag's sim time)."""
        with self._lock:
            self._now_ns = int(now_ns)

    def advance_ns(self, delta_ns: int) -> int:
        """Move the time forward by ``delta_ns`` (must be >= 0) and return the new time."""
        if delta_ns < 0:
            raise ValueError(f'advance_ns needs a non-negative step, got {delta_ns}: use set_ns to go back')
        with self._lock:
            self._now_ns += int(delta_ns)
            return self._now_ns

    def advance_ms(self, delta_ms: float) -> int:
        """Move the time forward by ``delta_ms`` milliseconds and return the new time in nanoseconds."""
        return self.advance_ns(round(delta_ms * 1e6))

    def advance_s(self, delta_s: float) -> int:
        """Move the time forward by ``delta_s`` seconds and return the new time in nanoseconds."""
        return self.advance_ns(round(delta_s * 1e9))
