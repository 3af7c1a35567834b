"""The backend interface: what runs the network on a prepared batch, and how backends are found by name.

A backend receives the whole preprocessed batch on the engine's device AND per-frame metadata
(``FrameMeta``: letterbox, source and network intrinsics, camera id, stamp), and returns canonical-camera
outputs at network resolution. The metadata lets backends that are not a neural network work too, e.g. a
ground-truth backend that returns the canonical depth implied by recorded ground truth
(``canonical = metric * canonical_focal_px / network_fx_px``).

Contract of ``Backend.run(batch, metas)``:

- ``batch``: float32 (B, 3, H, W) on ``backend.device``, C-contiguous, ``B <= max_batch_size``,
  (H, W) = the configured network size. Its values depend on ``backend.input_format``:
  ``'normalized'``: ``(rgb - mean) / std`` with Metric3D's ImageNet mean/std (what ``load_metric3d``'s
  ``forward`` takes); ``'rgb255'``: RGB in 0..255 (for exported graphs that fold the normalization in).
  The letterbox padding holds the mean colour as upstream writes it into uint8 (124, 116, 104).
- ``metas[i]`` describes ``batch[i]``; ``len(metas) == B``.
- returns ``NetworkOutput`` with float32 tensors on ``backend.device``: depth (B, 1, H, W) canonical depth
  (positive, metres in the canonical camera of focal ``canonical_focal_px``), confidence (B, 1, H, W) or
  None, normal (B, 4, H, W) (unit xyz in the camera optical frame + kappa) or None. The tensors may be
  static buffers that the next ``run`` overwrites: the engine consumes them before calling ``run`` again.
- may raise; the engine then reports the error on every frame of that batch.

Optional: ``input_buffer(batch_size)`` returns a (batch_size, 3, H, W) tensor the engine should fill in
place (e.g. a CUDA graph's static input); ``run`` then skips its copy when handed that very tensor.
Optional, for ``EngineConfig.pipeline_depth`` > 1: ``set_lanes(n)`` (returns the number of lanes) and
``lane(i)``, a backend view whose ``run`` and ``input_buffer`` may be used on its own CUDA stream while other
lanes run (see ``torch_backend``); backends without them run one batch at a time.

Backends are created by name through a registry of factories ``factory(config, device) -> Backend``;
built-in names import their module lazily (so 'onnxruntime' costs nothing unless used). Register your own
with ``register_backend('name', factory)`` and set ``EngineConfig(backend='name')``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import torch

from metric3d_ros.core.config import batch_buckets  # noqa: F401 - re-exported for the backends
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.geometry.letterbox import Letterbox

if TYPE_CHECKING:
    from metric3d_ros.core.config import EngineConfig

InputFormat = Literal['normalized', 'rgb255']

#: ImageNet mean / std (RGB, 0..255 scale) that Metric3D normalizes with.
MEAN_RGB: tuple[float, float, float] = (123.675, 116.28, 103.53)
STD_RGB: tuple[float, float, float] = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class FrameMeta:
    """What a backend may know about frame ``index`` of a batch.

    intrinsics: of the source image (its own resolution).
    network_intrinsics: upstream's letterbox-scaled intrinsics (fx, fy, cx, cy times ``letterbox.scale``,
        not shifted by the padding); ``network_intrinsics.fx_px`` is the fx of the de-canonical transform.
    """

    index: int
    camera_id: str
    stamp_ns: int
    frame_id: str
    intrinsics: Intrinsics
    letterbox: Letterbox
    network_intrinsics: Intrinsics


@dataclass
class NetworkOutput:
    """Canonical-camera network outputs for a batch at network resolution (see module docstring)."""

    depth: torch.Tensor
    confidence: torch.Tensor | None = None
    normal: torch.Tensor | None = None


@runtime_checkable
class Backend(Protocol):
    """Runs the network (or a stand-in) on a prepared batch; see the module docstring for the contract."""

    name: str
    device: torch.device
    input_format: InputFormat

    def run(self, batch: torch.Tensor, metas: Sequence[FrameMeta]) -> NetworkOutput:
        """Canonical outputs for ``batch`` (B, 3, H, W) described by ``metas``."""
        ...

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        """Prepare for these batch sizes (allocate, autotune, capture CUDA graphs); may be a no-op."""
        ...

    def close(self) -> None:
        """Release device memory and other resources; the backend is unusable afterwards."""
        ...


BackendFactory = Callable[['EngineConfig', torch.device], Backend]

_BUILTIN: dict[str, str] = {
    'torch': 'metric3d_ros.core.engine.torch_backend:create_backend',
    'onnxruntime': 'metric3d_ros.core.engine.onnxruntime_backend:create_backend',
    'fake': 'metric3d_ros.core.engine.test_backends:create_fake_backend',
}
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``EngineConfig(backend=name)`` create backends with ``factory(config, device)``."""
    if not name or not callable(factory):
        raise ValueError('register_backend needs a non-empty name and a callable factory(config, device)')
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    """Backend names that ``create_backend`` knows (built-in ones may still fail to import)."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def create_backend(config: EngineConfig, device: torch.device) -> Backend:
    """The backend named by ``config.backend`` on ``device``."""
    name = config.backend
    if name in _REGISTRY:
        return _REGISTRY[name](config, device)
    if name not in _BUILTIN:
        raise ValueError(
            f'unknown backend {name!r}: use one of {", ".join(available_backends())} or register it with '
            'metric3d_ros.core.engine.backend.register_backend'
        )
    module_name, attr = _BUILTIN[name].split(':')
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeError(
            f'backend {name!r} is not available: importing {module_name} failed ({exc})'
        ) from exc
    return getattr(module, attr)(config, device)
