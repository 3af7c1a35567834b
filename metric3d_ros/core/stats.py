"""Statistics for /diagnostics, per camera and per batch, with an OK/WARN/ERROR verdict (ROS-free).

Per camera: rolling input and output rates, drops by reason (total and over the window), stamp-to-publish
latency percentiles, inference time and size of the batches the camera was in, time since the last input.
Per batch: count, errors, size histogram and mean, inference time percentiles.

Rolling figures cover the last ``window_s`` seconds of the monotonic clock (and at most ``max_samples``
events). Latencies are passed in already measured (the scheduler measures them on the stamp clock, the
node's ROS time). Thread-safe: executor callbacks, the worker thread and a diagnostics timer all use it.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

ClockNs = Callable[[], int]


class Level(IntEnum):
    """Diagnostic level; values match diagnostic_msgs/DiagnosticStatus OK, WARN and ERROR."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True)
class StatsConfig:
    """Windows and thresholds of the diagnostics verdict.

    window_s: length of the rolling window for rates, drop fractions, latency and inference times.
    max_samples: most events kept per rolling series (bounds memory at high rates).
    silent_error_s: ERROR when a camera has delivered no input for this long (or never, this long after
        it was registered).
    warn_drop_fraction: WARN when more than this fraction of the window's inputs were dropped.
    warn_latency_p95_ms: WARN when the window's stamp-to-publish latency p95 is above this.
    min_inputs_for_level: drop-based verdicts need at least this many inputs in the window.
    """

    window_s: float = 5.0
    max_samples: int = 4096
    silent_error_s: float = 3.0
    warn_drop_fraction: float = 0.05
    warn_latency_p95_ms: float = 100.0
    min_inputs_for_level: int = 3

    def __post_init__(self) -> None:
        for name in ('window_s', 'silent_error_s', 'warn_latency_p95_ms'):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value <= 0.0:
                raise ValueError(f'StatsConfig.{name} must be finite and > 0, got {getattr(self, name)!r}')
            object.__setattr__(self, name, value)
        fraction = float(self.warn_drop_fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(
                f'StatsConfig.warn_drop_fraction must be in [0, 1], got {self.warn_drop_fraction!r}'
            )
        object.__setattr__(self, 'warn_drop_fraction', fraction)
        for name in ('max_samples', 'min_inputs_for_level'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'StatsConfig.{name} must be an integer >= 1, got {value!r}')


class _Rolling:
    """Timestamped values in a time window, bounded in count."""

    def __init__(self, max_samples: int) -> None:
        self._events: deque[tuple[int, float]] = deque(maxlen=max_samples)

    def add(self, now_ns: int, value: float = 1.0) -> None:
        self._events.append((now_ns, value))

    def prune(self, since_ns: int) -> None:
        while self._events and self._events[0][0] < since_ns:
            self._events.popleft()

    def __len__(self) -> int:
        return len(self._events)

    def values(self) -> list[float]:
        return [value for _, value in self._events]

    def rate_hz(self, now_ns: int, span_ns: int) -> float:
        """Events per second over the last ``span_ns`` (or over what is kept, when the buffer is full)."""
        count = len(self._events)
        if count == 0 or span_ns <= 0:
            return 0.0
        if count == self._events.maxlen:
            span_ns = min(span_ns, max(now_ns - self._events[0][0], 1))
        return count * 1e9 / span_ns


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else math.nan


def _mean(values: list[float]) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64))) if values else math.nan


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'n/a'
    return f'{value:.{digits}f}'


def _fmt_counts(counts: Mapping[str, int]) -> str:
    return ', '.join(f'{reason}: {count}' for reason, count in sorted(counts.items())) or 'none'


@dataclass(frozen=True)
class CameraSnapshot:
    """Diagnostics of one camera at one time. NaN: no sample in the window."""

    camera_id: str
    level: Level
    message: str
    input_rate_hz: float
    output_rate_hz: float
    inputs_total: int
    outputs_total: int
    drops_total: Mapping[str, int]
    inputs_window: int
    outputs_window: int
    drops_window: Mapping[str, int]
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    inference_mean_ms: float
    inference_p95_ms: float
    batch_size_mean: float
    last_input_age_s: float | None

    @property
    def drop_fraction(self) -> float:
        """Dropped inputs over inputs in the window (0 when there were none)."""
        dropped = sum(self.drops_window.values())
        return dropped / self.inputs_window if self.inputs_window else 0.0

    def key_values(self) -> list[tuple[str, str]]:
        """(key, value) strings for a diagnostic_msgs/KeyValue list."""
        items = [
            ('input_rate_hz', _fmt(self.input_rate_hz)),
            ('output_rate_hz', _fmt(self.output_rate_hz)),
            ('inputs_total', str(self.inputs_total)),
            ('outputs_total', str(self.outputs_total)),
            ('drops_total', str(sum(self.drops_total.values()))),
            ('drop_fraction_window', _fmt(self.drop_fraction, 3)),
            ('latency_p50_ms', _fmt(self.latency_p50_ms)),
            ('latency_p95_ms', _fmt(self.latency_p95_ms)),
            ('latency_p99_ms', _fmt(self.latency_p99_ms)),
            ('inference_mean_ms', _fmt(self.inference_mean_ms)),
            ('inference_p95_ms', _fmt(self.inference_p95_ms)),
            ('batch_size_mean', _fmt(self.batch_size_mean, 2)),
            ('last_input_age_s', _fmt(self.last_input_age_s, 2)),
        ]
        items.extend((f'drops_{reason}', str(count)) for reason, count in sorted(self.drops_total.items()))
        return items


@dataclass(frozen=True)
class BatchSnapshot:
    """Diagnostics of the batches (all cameras together)."""

    batches_total: int
    batch_errors_total: int
    batch_size_histogram: Mapping[int, int]
    batch_size_mean: float
    inference_p50_ms: float
    inference_p95_ms: float
    inference_mean_ms: float

    def key_values(self) -> list[tuple[str, str]]:
        """(key, value) strings for a diagnostic_msgs/KeyValue list."""
        histogram = ' '.join(f'{size}:{count}' for size, count in sorted(self.batch_size_histogram.items()))
        return [
            ('batches_total', str(self.batches_total)),
            ('batch_errors_total', str(self.batch_errors_total)),
            ('batch_size_mean', _fmt(self.batch_size_mean, 2)),
            ('batch_size_histogram', histogram or 'none'),
            ('inference_p50_ms', _fmt(self.inference_p50_ms)),
            ('inference_p95_ms', _fmt(self.inference_p95_ms)),
            ('inference_mean_ms', _fmt(self.inference_mean_ms)),
        ]


class _CameraSeries:
    """Everything recorded for one camera."""

    def __init__(self, registered_ns: int, max_samples: int) -> None:
        self.registered_ns = registered_ns
        self.last_input_ns: int | None = None
        self.inputs_total = 0
        self.outputs_total = 0
        self.drops_total: Counter[str] = Counter()
        self.inputs = _Rolling(max_samples)
        self.outputs = _Rolling(max_samples)
        self.drops: deque[tuple[int, str]] = deque(maxlen=max_samples)
        self.latency_ms = _Rolling(max_samples)
        self.inference_ms = _Rolling(max_samples)
        self.batch_size = _Rolling(max_samples)

    def prune(self, since_ns: int) -> None:
        for series in (self.inputs, self.outputs, self.latency_ms, self.inference_ms, self.batch_size):
            series.prune(since_ns)
        while self.drops and self.drops[0][0] < since_ns:
            self.drops.popleft()


class DiagnosticsStats:
    """Thread-safe recorder of per-camera and per-batch statistics; ``snapshot`` gives the verdict.

    Unknown camera ids are registered on first use; register expected cameras up front (``camera_ids``)
    so that one that never delivers anything is reported.
    """

    def __init__(
        self,
        config: StatsConfig | None = None,
        camera_ids: Iterable[str] = (),
        monotonic_ns: ClockNs | None = None,
    ) -> None:
        self._config = config if config is not None else StatsConfig()
        self._clock_ns = monotonic_ns if monotonic_ns is not None else time.monotonic_ns
        self._window_ns = round(self._config.window_s * 1e9)
        self._lock = threading.Lock()
        self._cameras: dict[str, _CameraSeries] = {}
        self._batches_total = 0
        self._batch_errors_total = 0
        self._batch_histogram: Counter[int] = Counter()
        self._batch_size = _Rolling(self._config.max_samples)
        self._batch_inference_ms = _Rolling(self._config.max_samples)
        for camera_id in camera_ids:
            self.register(camera_id)

    @property
    def config(self) -> StatsConfig:
        return self._config

    def _camera(self, camera_id: str, now_ns: int) -> _CameraSeries:
        series = self._cameras.get(camera_id)
        if series is None:
            if not isinstance(camera_id, str) or not camera_id:
                raise ValueError(f'camera_id must be a non-empty string, got {camera_id!r}')
            series = self._cameras[camera_id] = _CameraSeries(now_ns, self._config.max_samples)
        return series

    def register(self, camera_id: str) -> None:
        """Track ``camera_id`` from now on (no-op if already tracked)."""
        now_ns = self._clock_ns()
        with self._lock:
            self._camera(camera_id, now_ns)

    def camera_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._cameras)

    def record_input(self, camera_id: str) -> None:
        """An input frame arrived for ``camera_id`` (count every frame, also those dropped later)."""
        now_ns = self._clock_ns()
        with self._lock:
            series = self._camera(camera_id, now_ns)
            series.inputs_total += 1
            series.inputs.add(now_ns)
            series.last_input_ns = now_ns

    def record_drop(self, camera_id: str, reason: str) -> None:
        """An input frame of ``camera_id`` was dropped for ``reason`` (see ``batching.reasons``)."""
        if not isinstance(reason, str) or not reason:
            raise ValueError(f'drop reason must be a non-empty string, got {reason!r}')
        now_ns = self._clock_ns()
        with self._lock:
            series = self._camera(camera_id, now_ns)
            series.drops_total[reason] += 1
            series.drops.append((now_ns, reason))

    def record_output(self, camera_id: str, latency_ms: float) -> None:
        """A result of ``camera_id`` was published ``latency_ms`` after its stamp."""
        now_ns = self._clock_ns()
        with self._lock:
            series = self._camera(camera_id, now_ns)
            series.outputs_total += 1
            series.outputs.add(now_ns)
            if math.isfinite(latency_ms):
                series.latency_ms.add(now_ns, float(latency_ms))

    def record_batch(self, camera_ids: Iterable[str], inference_ms: float) -> None:
        """A batch holding one frame per entry of ``camera_ids`` was processed in ``inference_ms``."""
        camera_ids = list(camera_ids)
        size = len(camera_ids)
        now_ns = self._clock_ns()
        with self._lock:
            self._batches_total += 1
            self._batch_histogram[size] += 1
            self._batch_size.add(now_ns, size)
            self._batch_inference_ms.add(now_ns, float(inference_ms))
            for camera_id in set(camera_ids):
                series = self._camera(camera_id, now_ns)
                series.inference_ms.add(now_ns, float(inference_ms))
                series.batch_size.add(now_ns, size)

    def record_batch_error(self) -> None:
        """A batch failed as a whole (its frames are counted as drops separately)."""
        with self._lock:
            self._batch_errors_total += 1

    def drop_counts(self, camera_id: str) -> dict[str, int]:
        """Total drops of ``camera_id`` by reason."""
        with self._lock:
            series = self._cameras.get(camera_id)
            return dict(series.drops_total) if series is not None else {}

    def counts(self, camera_id: str) -> tuple[int, int]:
        """``(inputs_total, outputs_total)`` of ``camera_id``."""
        with self._lock:
            series = self._cameras.get(camera_id)
            return (series.inputs_total, series.outputs_total) if series is not None else (0, 0)

    def snapshot(self, camera_id: str) -> CameraSnapshot:
        """Diagnostics and verdict of ``camera_id`` now."""
        now_ns = self._clock_ns()
        with self._lock:
            series = self._camera(camera_id, now_ns)
            series.prune(now_ns - self._window_ns)
            span_ns = min(self._window_ns, now_ns - series.registered_ns)
            last_ns = series.last_input_ns
            latencies = series.latency_ms.values()
            inference = series.inference_ms.values()
            drops_window = Counter(reason for _, reason in series.drops)
            fields = dict(
                camera_id=camera_id,
                input_rate_hz=series.inputs.rate_hz(now_ns, span_ns),
                output_rate_hz=series.outputs.rate_hz(now_ns, span_ns),
                inputs_total=series.inputs_total,
                outputs_total=series.outputs_total,
                drops_total=dict(series.drops_total),
                inputs_window=len(series.inputs),
                outputs_window=len(series.outputs),
                drops_window=dict(drops_window),
                latency_p50_ms=_percentile(latencies, 50.0),
                latency_p95_ms=_percentile(latencies, 95.0),
                latency_p99_ms=_percentile(latencies, 99.0),
                inference_mean_ms=_mean(inference),
                inference_p95_ms=_percentile(inference, 95.0),
                batch_size_mean=_mean(series.batch_size.values()),
                last_input_age_s=None if last_ns is None else (now_ns - last_ns) / 1e9,
            )
            silent_s = (now_ns - (series.registered_ns if last_ns is None else last_ns)) / 1e9
            never = last_ns is None
        level, message = self._verdict(fields, silent_s, never)
        return CameraSnapshot(level=level, message=message, **fields)

    def snapshots(self) -> list[CameraSnapshot]:
        """``snapshot`` of every tracked camera, by camera id."""
        return [self.snapshot(camera_id) for camera_id in self.camera_ids()]

    def _verdict(self, fields: dict, silent_s: float, never: bool) -> tuple[Level, str]:
        config = self._config
        if silent_s > config.silent_error_s:
            what = 'no input received yet' if never else 'no input'
            return Level.ERROR, f'camera silent: {what} for {silent_s:.1f} s'
        inputs = fields['inputs_window']
        drops: dict[str, int] = fields['drops_window']
        dropped = sum(drops.values())
        if never:
            return Level.OK, 'waiting for the first input'
        if inputs >= config.min_inputs_for_level and dropped > 0 and fields['outputs_window'] == 0:
            return Level.ERROR, (
                f'all frames dropped in the last {config.window_s:g} s ({_fmt_counts(drops)})'
            )
        problems = []
        if inputs >= config.min_inputs_for_level and dropped / inputs > config.warn_drop_fraction:
            problems.append(f'{100.0 * dropped / inputs:.0f} % of inputs dropped ({_fmt_counts(drops)})')
        p95_ms = fields['latency_p95_ms']
        if not math.isnan(p95_ms) and p95_ms > config.warn_latency_p95_ms:
            problems.append(f'latency p95 {p95_ms:.0f} ms > {config.warn_latency_p95_ms:g} ms')
        if problems:
            return Level.WARN, '; '.join(problems)
        return Level.OK, 'ok'

    def batch_snapshot(self) -> BatchSnapshot:
        """Diagnostics of the batches now."""
        now_ns = self._clock_ns()
        with self._lock:
            self._batch_size.prune(now_ns - self._window_ns)
            self._batch_inference_ms.prune(now_ns - self._window_ns)
            inference = self._batch_inference_ms.values()
            return BatchSnapshot(
                batches_total=self._batches_total,
                batch_errors_total=self._batch_errors_total,
                batch_size_histogram=dict(self._batch_histogram),
                batch_size_mean=_mean(self._batch_size.values()),
                inference_p50_ms=_percentile(inference, 50.0),
                inference_p95_ms=_percentile(inference, 95.0),
                inference_mean_ms=_mean(inference),
            )
