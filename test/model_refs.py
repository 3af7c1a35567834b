"""Test helpers for the Metric3D network: synthetic weights, reference files, the agreement criterion.

Everything is read from the shared reference folder (``<shared>/reference/metric3d``, see its README);
nothing is copied into the repository.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

MEAN_RGB = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD_RGB = np.array([58.395, 57.12, 57.375], dtype=np.float32)

# acceptance criterion of the reference README
ELEMENT_ATOL = 1e-3
ELEMENT_RTOL = 1e-3
MIN_FRACTION_OK = 0.999
MAX_DIFF_OVER_RANGE = 0.01

REFERENCE_NAMES = (
    'ref_vit_small_b2_280x392',
    'ref_vit_small_b1_616x1064',
    'ref_vit_small_b1_616x1064_kitti',
    'ref_vit_large_b1_280x392',
    'ref_vit_giant2_b1_140x196',
)


def reference_dir(shared_dir: Path) -> Path:
    return Path(shared_dir) / 'reference' / 'metric3d'


def synth_module(shared_dir: Path) -> ModuleType:
    """The shared ``synth_weights.py``, imported from its file (it is not a package)."""
    path = reference_dir(shared_dir) / 'synth_weights.py'
    spec = importlib.util.spec_from_file_location('metric3d_synth_weights', path)
    if spec is None or spec.loader is None:
        raise ImportError(f'cannot import {path}')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manifest(shared_dir: Path, variant: str) -> list[tuple[str, tuple[int, ...], str | None]]:
    """Rows (key, shape, alias_of) of the official layout of ``variant``."""
    return synth_module(shared_dir).read_manifest(reference_dir(shared_dir) / f'keys_vit_{variant}.tsv')


def synthetic_state_dict(shared_dir: Path, variant: str) -> dict:
    """The synthetic checkpoint state dict as torch tensors sharing the numpy buffers (no copies)."""
    import torch

    synth = synth_module(shared_dir)
    state = synth.synth_state_dict(manifest(shared_dir, variant))
    return {key: torch.from_numpy(value) for key, value in state.items()}


def synthetic_network(shared_dir: Path, variant: str, fused_attention: bool = False):
    """A network of ``variant`` holding the synthetic weights, loaded strictly like an official checkpoint.

    Built on the meta device and assigned the tensors, so giant2 holds one 5.5 GB copy, not two.
    """
    from metric3d_ros.core.model.network import build_network

    net = build_network(variant, fused_attention=fused_attention, device='meta')
    state = synthetic_state_dict(shared_dir, variant)
    net.load_state_dict(state, strict=True, assign=True)
    del state
    return net.eval()


@dataclass(frozen=True)
class Reference:
    """One reference file: name, arrays and json metadata."""

    name: str
    arrays: dict[str, np.ndarray]
    meta: dict

    @property
    def variant(self) -> str:
        return self.meta['variant']

    def network_input(self) -> np.ndarray:
        """(B, 3, H, W) float32: ``(input_u8 - mean) / std`` laid out NCHW."""
        rgb = self.arrays['input_u8'].astype(np.float32)
        return np.ascontiguousarray(((rgb - MEAN_RGB) / STD_RGB).transpose(0, 3, 1, 2))


def load_reference(shared_dir: Path, name: str) -> Reference:
    base = reference_dir(shared_dir) / name
    with np.load(base.with_suffix('.npz')) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(base.with_suffix('.json').read_text())
    return Reference(name=name, arrays=arrays, meta=meta)


def agreement(ours, ref) -> tuple[float, float]:
    """(fraction of elements with |ours - ref| <= 1e-3 + 1e-3 |ref|, max |ours - ref| / range(ref)).

    The conformance criterion holds when the fraction is >= 0.999 and the ratio <= 0.01. Accepts numpy
    arrays or torch tensors of the same shape.
    """
    ours = _as_numpy(ours).astype(np.float64)
    ref = _as_numpy(ref).astype(np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f'shape mismatch: ours {ours.shape} vs reference {ref.shape}')
    diff = np.abs(ours - ref)
    fraction = float(np.mean(diff <= ELEMENT_ATOL + ELEMENT_RTOL * np.abs(ref)))
    span = float(ref.max() - ref.min())
    worst = float(diff.max())
    ratio = worst / span if span > 0 else (0.0 if worst == 0 else float('inf'))
    if not np.isfinite(ours).all():
        fraction, ratio = 0.0, float('inf')
    return fraction, ratio


def meets_criterion(fraction: float, ratio: float) -> bool:
    return fraction >= MIN_FRACTION_OK and ratio <= MAX_DIFF_OVER_RANGE


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    detach = getattr(x, 'detach', None)
    if detach is not None:
        return detach().cpu().numpy()
    return np.asarray(x)
