"""Per-camera admission of image stamps: duplicates, out-of-order and stale stamps are rejected."""
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
    """Validate an age limit: a positive number of ms, or a negative one meaning "no limit" (None)."""
    max_age_ms = float(max_age_ms)
    if math.isnan(max_age_ms) or max_age_ms == 0.0:
        raise ValueError(
            f'{what} must be > 0 (the oldest input accepted, in ms) or negative to disable the check, '
            f'got {max_age_ms}'
        )
    if max_age_ms < 0.0 or math.isinf(max_age_ms):
        return None
    return round(max_age_ms * 1e6)


def is_stale(stamp_ns: int, now_ns: int, max_age_ns: int | None) -> bool:
    """True when ``stamp_ns`` is older than ``max_age_ns`` at ``now_ns`` (stamps from the future are not)."""
    return max_age_ns is not None and now_ns - stamp_ns > max_age_ns


class StampGate:
    """Rejects, per camera, an image stamp equal to or older than the last accepted one, or stale.

    ``max_input_age_ms``: images older than this w.r.t. the stamp clock are rejected as stale; a negative
    value disables the check. The stamp clock is whatever ``now_ns`` the caller passes (the node uses
    ROS time, so simulation time works). When that clock jumps back (a looping bag), call ``reset``.
    Thread-safe.
    """

    def __init__(self, max_input_age_ms: float) -> None:
        self._max_age_ns = age_limit_ns(max_input_age_ms)
        self._lock = threading.Lock()
        self._last_ns: dict[str, int] = {}

    def check(self, camera_id: str, stamp_ns: int, now_ns: int) -> str | None:
        """``None`` and remember ``stamp_ns`` if the image is admitted, else the reason it is not."""
        stamp_ns = as_stamp_ns(stamp_ns)
        with self._lock:
            last_ns = self._last_ns.get(camera_id)
            if last_ns is not None and stamp_ns == last_ns:
                return reasons.DUPLICATE_STAMP
            if last_ns is not None and stamp_ns < last_ns:
                return reasons.OUT_OF_ORDER_STAMP
            if is_stale(stamp_ns, now_ns, self._max_age_ns):
                return reasons.STALE
            self._last_ns[camera_id] = stamp_ns
            return None

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
