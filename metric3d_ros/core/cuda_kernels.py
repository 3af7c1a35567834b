"""Whether a hand-written Triton kernel can run here (used by the fused preprocessing, the convex
upsampling and the bilinear resize kernels; everything else falls back to the torch code, which also
serves the CPU)."""
from __future__ import annotations

import logging
from collections.abc import Callable

LOG = logging.getLogger(__name__)


def kernel_available(device_type: str, build: Callable[[], object], what: str) -> bool:
    """True when ``device_type`` is CUDA, a CUDA device is present and ``build()`` (which imports Triton and
    defines the kernel) succeeds; otherwise logs why at INFO and returns False (Triton is imported only
    then)."""
    if device_type != 'cuda':
        return False
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        build()
    except Exception as exc:  # noqa: BLE001 - no Triton, or an incompatible one: the torch code stays
        LOG.info('%s unavailable (%s: %s): using the torch code', what, type(exc).__name__, exc)
        return False
    return True
