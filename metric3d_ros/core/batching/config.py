"""Configuration of the batching scheduler."""
from __future__ import annotations

import math
from dataclasses import dataclass

from metric3d_ros.core.batching.stamps import age_limit_ns


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'SchedulerConfig.{name} must be an integer >= 1, got {value!r}')


def _non_negative_ms(name: str, value: object, *, allow_zero: bool = True) -> float:
    try:
        as_float = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f'SchedulerConfig.{name} must be a number of milliseconds, got {value!r}') from exc
    if not math.isfinite(as_float) or as_float < 0.0 or (as_float == 0.0 and not allow_zero):
        bound = '>= 0' if allow_zero else '> 0'
        raise ValueError(f'SchedulerConfig.{name} must be finite and {bound}, got {value!r}')
    return as_float


@dataclass(frozen=True)
class SchedulerConfig:
    """When batches go out and which frames they hold.

    max_batch_size: most frames per ``process_batch`` call (>= 1).
    max_wait_ms: a pending batch goes out at the latest this long after its first (oldest) frame arrived,
        even if some active camera has no frame yet (>= 0; 0 means never wait).
    queue_depth: frames kept per camera while waiting (>= 1); a newer frame pushes out the oldest one,
        counted as ``queue_overflow``.
    max_input_age_ms: frames older than this w.r.t. the stamp clock are dropped as ``stale``, at
        submission and at dispatch; negative disables the check.
    max_future_ms: frames stamped later than the stamp clock's now by more than this are dropped as
        ``future_stamp``; negative disables the check (``StampGate``).
    stamp_restart_ms: a frame stamped more than this before its camera's last frame restarts that camera's
        stamp order instead of being dropped as ``out_of_order_stamp`` (a restarted driver, a clock jump
        back); negative: never (``StampGate``).
    camera_timeout_ms: a camera is *active* (waited for) while its last frame arrived less than this ago;
        a silent camera stops being waited for after this long (> 0).
    error_log_period_s: at most one error message per kind (and camera) per this period (>= 0).
    """

    max_batch_size: int = 4
    max_wait_ms: float = 15.0
    queue_depth: int = 1
    max_input_age_ms: float = 500.0
    max_future_ms: float = 1000.0
    stamp_restart_ms: float = 1000.0
    camera_timeout_ms: float = 1000.0
    error_log_period_s: float = 5.0

    def __post_init__(self) -> None:
        _positive_int('max_batch_size', self.max_batch_size)
        _positive_int('queue_depth', self.queue_depth)
        object.__setattr__(self, 'max_wait_ms', _non_negative_ms('max_wait_ms', self.max_wait_ms))
        timeout_ms = _non_negative_ms('camera_timeout_ms', self.camera_timeout_ms, allow_zero=False)
        object.__setattr__(self, 'camera_timeout_ms', timeout_ms)
        age_limit_ns(self.max_input_age_ms, 'SchedulerConfig.max_input_age_ms')
        object.__setattr__(self, 'max_input_age_ms', float(self.max_input_age_ms))
        for name in ('max_future_ms', 'stamp_restart_ms'):
            age_limit_ns(getattr(self, name), f'SchedulerConfig.{name}')
            object.__setattr__(self, name, float(getattr(self, name)))
        try:
            period_s = float(self.error_log_period_s)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f'SchedulerConfig.error_log_period_s must be a number, got {self.error_log_period_s!r}'
            ) from exc
        if not math.isfinite(period_s) or period_s < 0.0:
            raise ValueError(f'SchedulerConfig.error_log_period_s must be finite and >= 0, got {period_s}')
        object.__setattr__(self, 'error_log_period_s', period_s)

    @property
    def max_wait_ns(self) -> int:
        return round(self.max_wait_ms * 1e6)

    @property
    def camera_timeout_ns(self) -> int:
        return round(self.camera_timeout_ms * 1e6)

    @property
    def max_input_age_ns(self) -> int | None:
        """The stale limit in ns, or None when disabled."""
        return age_limit_ns(self.max_input_age_ms, 'SchedulerConfig.max_input_age_ms')
