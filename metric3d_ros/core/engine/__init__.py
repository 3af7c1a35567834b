"""Batched multi-camera Metric3D inference engine (ROS-free).

- ``types``: ``Frame``, ``OutputRequest``, ``FrameResult`` (numpy only; importing them loads no torch).
- ``engine.DepthEngine``: ``DepthEngine.from_config(EngineConfig(...))``, ``infer(frames, request)``,
  ``warmup()``, ``close()``; configuration in ``metric3d_ros.core.config.EngineConfig``.
- ``backend``: the ``Backend`` protocol (``run(batch, metas)``) and the backend registry;
  ``torch_backend``, ``onnxruntime_backend``, ``test_backends`` (fake, replay, slow), ``gt_backend``.
- ``preprocess`` / ``postprocess`` / ``transfer`` / ``timing``: the batched device stages;
  ``reference``: upstream's exact CPU pre/post-processing.

``DepthEngine``, ``Frame``, ``OutputRequest`` and ``FrameResult`` are importable from this package; the
engine (and torch) is loaded only when ``DepthEngine`` is first accessed.
"""
from __future__ import annotations

from typing import Any

from metric3d_ros.core.engine.types import Frame, FrameResult, OutputRequest

__all__ = ['DepthEngine', 'Frame', 'FrameResult', 'OutputRequest']


def __getattr__(name: str) -> Any:
    if name == 'DepthEngine':
        from metric3d_ros.core.engine.engine import DepthEngine

        return DepthEngine
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
