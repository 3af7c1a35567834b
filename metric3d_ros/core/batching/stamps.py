"""Per-camera admission of image stamps: duplicates, out-of-order, stale and future stamps are rejected.

A camera's stamps must increase. A stamp far behind the camera's last one (more than ``stamp_restart_ms``)
is not taken as out of order but as a new timeline: the driver restarted with a clock that is behind, or
its host's clock jumped back. The camera's order restarts from that stamp (counted in ``restarts``), so a
camera never stays blacked out by one wrong stamp. A stamp ahead of the stamp clock by more than
``max_future_ms`` is rejected and never becomes the camera's last stamp.
"""
from __future__ import annotations

import math
import numbers
import threading

from metric3d_ros.core.batching import reasons


def as_stamp_ns(value: object, what: str = 'stamp_ns') -> int:
    """``value`` as a non-negative integer number of nanoseconds; raises ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f'{what} must be an integer number of nanoseconds (sec * 10**9 + nanosec), got {value!r}'
        )
    stamp_ns = int(value)
    if stamp_ns < 0:
        raise ValueError(f'{what} must be >= 0, got {stamp_ns}')
    return stamp_ns


def age_limit_ns(max_age_ms: float, what: str = 'max_input_age_ms') -> int | None:
    """Validate a time limit (an age, a future tolerance): a positive number of ms, or a negative one
    meaning "no limit" (None)."""
    max_age_ms = float(max_age_ms)
    if math.isnan(max_age_ms) or max_age_ms == 0.0:
        raise ValueError(
            f'{what} must be > 0 (a time in ms) or negative to disable the check, got {max_age_ms}'
        )
    if max_age_ms < 0.0 or math.isinf(max_age_ms):
        return None
    return round(max_age_ms * 1e6)


def is_stale(stamp_ns: int, now_ns: int, max_age_ns: int | None) -> bool:
    """True when ``stamp_ns`` is older than ``max_age_ns`` at ``now_ns`` (stamps from the future are not)."""
    return max_age_ns is not None and now_ns - stamp_ns > max_age_ns


class StampGate:
    """Admits, per camera, image stamps that increase; rejects duplicates, older, stale and future stamps.

    ``max_input_age_ms``: images older than this w.r.t. the stamp clock are rejected as stale.
    ``max_future_ms``: images stamped later than the stamp clock's now by more than this are rejected as
    ``future_stamp`` (never remembered as the camera's last stamp). Not checked while the clock reads 0
    (simulation time before the first /clock message).
    ``stamp_restart_ms``: an image stamped more than this before the camera's last image restarts the
    camera's order (module docstring): it is admitted as if it were the camera's first, and ``restarts``
    counts it. Smaller steps back are ``out_of_order_stamp``.
    A negative value disables each check. The stamp clock is whatever ``now_ns`` the caller passes (the
    node uses ROS time, so simulation time works). When that clock jumps back (a looping bag), call
    ``reset``. Thread-safe.
    """

    def __init__(self, max_input_age_ms: float, max_future_ms: float = -1.0,
                 stamp_restart_ms: float = -1.0) -> None:
        self._max_age_ns = age_limit_ns(max_input_age_ms)
        self._max_future_ns = age_limit_ns(max_future_ms, 'max_future_ms')
        self._restart_ns = age_limit_ns(stamp_restart_ms, 'stamp_restart_ms')
        self._lock = threading.Lock()
        self._last_ns: dict[str, int] = {}
        self._restarts: dict[str, int] = {}

    def check(self, camera_id: str, stamp_ns: int, now_ns: int) -> str | None:
        """``None`` and remember ``stamp_ns`` if the image is admitted, else the reason it is not."""
        stamp_ns = as_stamp_ns(stamp_ns)
        with self._lock:
            if self._max_future_ns is not None and now_ns > 0 and stamp_ns - now_ns > self._max_future_ns:
                return reasons.FUTURE_STAMP
            last_ns = self._last_ns.get(camera_id)
            if last_ns is not None and self._restart_ns is not None and last_ns - stamp_ns > self._restart_ns:
                del self._last_ns[camera_id]
                self._restarts[camera_id] = self._restarts.get(camera_id, 0) + 1
                last_ns = None
            if last_ns is not None and stamp_ns == last_ns:
                return reasons.DUPLICATE_STAMP
            if last_ns is not None and stamp_ns < last_ns:
                return reasons.OUT_OF_ORDER_STAMP
            if is_stale(stamp_ns, now_ns, self._max_age_ns):
                return reasons.STALE
            self._last_ns[camera_id] = stamp_ns
            return None

    def restarts(self, camera_id: str) -> int:
        """How many times ``camera_id``'s order restarted (a stamp more than ``stamp_restart_ms`` back)."""
        with self._lock:
            return self._restarts.get(camera_id, 0)

    def last_stamp_ns(self, camera_id: str) -> int | None:
        """The last admitted stamp of ``camera_id``, or None."""
        with self._lock:
            return self._last_ns.get(camera_id)

    def reset(self, camera_id: str | None = None) -> None:
        """Forget the last stamp of ``camera_id`` (of every camera when None), e.g. after a time jump."""
        with self._lock:
            if camera_id is None:
                self._last_ns.clear()
            else:
                self._last_ns.pop(camera_id, None)
