"""Rolling means of where the node's time goes, for /diagnostics and the node benchmark (thread-safe).

Series: the engine's per-batch stage times (``FrameResult.timings_ms``: upload, preprocess, network,
postprocess, cloud, download, total), the time to build and publish one frame's messages, the time to
fuse and publish a batch's ``fused_points`` (``fused``, only while it has a subscriber), the time
an image callback takes on the executor thread, and a frame's path from its stamp: to its image callback
(``stamp_to_receive``), to the start of its batch (``stamp_to_dispatch``), to the batch's results
(``stamp_to_result``) and to its last message published (``stamp_to_publish``).
"""
from __future__ import annotations

import threading
from collections import deque

import numpy as np


class TimingStats:
    """Last ``max_samples`` values per named series; ``summary`` gives mean and p95 in ms."""

    def __init__(self, max_samples: int = 512) -> None:
        self._lock = threading.Lock()
        self._series: dict[str, deque[float]] = {}
        self._max = max_samples

    def add(self, name: str, value_ms: float) -> None:
        with self._lock:
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = deque(maxlen=self._max)
            series.append(float(value_ms))

    def add_all(self, prefix: str, values_ms: dict[str, float]) -> None:
        for name, value in values_ms.items():
            self.add(f'{prefix}{name}', value)

    def summary(self) -> dict[str, str]:
        """``{'<name>_mean_ms': ..., '<name>_p50_ms': ..., '<name>_p95_ms': ..., '<name>_p99_ms': ...}``."""
        with self._lock:
            snapshot = {name: np.asarray(values) for name, values in self._series.items() if values}
        out = {}
        for name, values in sorted(snapshot.items()):
            out[f'{name}_mean_ms'] = f'{values.mean():.2f}'
            for q in (50, 95, 99):
                out[f'{name}_p{q}_ms'] = f'{np.percentile(values, q):.2f}'
        return out
