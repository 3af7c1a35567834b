"""Per-batch timing of the engine's stages: CUDA events on a GPU, ``time.perf_counter`` on the CPU.

Usage: ``timer = StageTimer(device); timer.start(); ...; timer.mark('preprocess'); ...;
timer.mark('network')`` and, after the stream has been synchronized, ``timer.elapsed_ms()`` ->
``{'preprocess': ..., 'network': ...}`` (each stage is the time since the previous mark; a stage marked
twice accumulates).

On CUDA the marks are events recorded on the current stream, so a stage's time is the GPU timeline between
two marks (it includes the GPU waiting for the host to enqueue work, which is exactly what a stage costs
when batches do not overlap; with batches in flight, ``EngineConfig.pipeline_depth``, it includes the time
its kernels share the GPU with the other batch's). Reading them needs no extra synchronization once the
engine has waited for its device-to-host copies. ``total`` is host wall time from the start to the read.
"""
from __future__ import annotations

import time

import torch


class StageTimer:
    """Named stage durations between consecutive marks (see module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == 'cuda'
        self._device = device
        self._names: list[str] = []
        self._marks: list[object] = []
        self._wall_start = 0.0

    def _now(self) -> object:
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self._device))
            return event
        return time.perf_counter()

    def start(self) -> None:
        """Forget earlier marks and start timing now."""
        self._names = []
        self._marks = [self._now()]
        self._wall_start = time.perf_counter()

    def mark(self, name: str) -> None:
        """End the stage ``name`` (it began at the previous mark)."""
        if not self._marks:
            raise RuntimeError('StageTimer.mark() called before start()')
        self._names.append(name)
        self._marks.append(self._now())

    def elapsed_ms(self) -> dict[str, float]:
        """Stage durations in milliseconds plus ``'total'`` (host wall time since ``start``).

        On CUDA the stream must have passed the last mark (the engine synchronizes before calling this).
        """
        out: dict[str, float] = {}
        for i, name in enumerate(self._names):
            a, b = self._marks[i], self._marks[i + 1]
            if self._cuda:
                ms = float(a.elapsed_time(b))  # type: ignore[union-attr]
            else:
                ms = (float(b) - float(a)) * 1e3  # type: ignore[arg-type]
            out[name] = out.get(name, 0.0) + ms
        out['total'] = (time.perf_counter() - self._wall_start) * 1e3
        return out
