"""Host buffers registered with CUDA (``cudaHostRegister``): the GPU copies straight from and into them.

Pinned (page-locked) memory is what lets a host-to-device or device-to-host copy run as DMA without a
staging copy. PyTorch's pinned tensors are one way to get it; registering an existing buffer (an mmap or a
shared-memory block that already holds the frames; ``metric3d_bench --host-frames registered`` does this) is
the other, and it saves the copy between that buffer and a pinned one: frames are uploaded straight from it.

``register(buffer)`` pins a writable buffer and records its address range; ``is_registered(array)`` says
whether an array lies wholly inside a registered range (``Preprocessor.upload`` then skips staging);
``HostRegistration.close()`` unpins it (always before the buffer is unmapped). Without CUDA, or when the
driver refuses (e.g. a locked-memory limit), ``register`` returns None and callers keep their copying path.
"""
from __future__ import annotations

import ctypes
import logging
import threading

import numpy as np

LOG = logging.getLogger(__name__)

_LOCK = threading.Lock()
_RANGES: dict[int, int] = {}  # start address -> end address of every live registration
_REFUSED_LOGGED = False


class HostRegistration:
    """A buffer pinned with ``cudaHostRegister`` (``close`` unpins it; idempotent)."""

    def __init__(self, address: int, size_b: int) -> None:
        self.address = address
        self.size_b = size_b
        self._open = True

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        with _LOCK:
            _RANGES.pop(self.address, None)
        import torch

        torch.cuda.synchronize()  # no copy may still read or write the buffer once it is unpinned
        rc = _code(torch.cuda.cudart().cudaHostUnregister(self.address))
        if rc != 0:
            _clear_cuda_error()
            LOG.warning('cudaHostUnregister failed (CUDA error %d)', rc)


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__['data'][0])


def _inside(array: np.ndarray, low: int, high: int) -> bool:
    if not isinstance(array, np.ndarray) or array.size == 0:
        return False
    start = _address(array)
    spans = [(n - 1) * stride for n, stride in zip(array.shape, array.strides, strict=True)]
    first = start + sum(min(0, span) for span in spans)
    last = start + sum(max(0, span) for span in spans) + array.itemsize
    return low <= first and last <= high


def _code(result) -> int:
    """cudart bindings return an enum (or a tuple starting with one): its integer value."""
    if isinstance(result, tuple):
        result = result[0]
    return int(getattr(result, 'value', result))


def _clear_cuda_error() -> None:
    """Reset the thread's last CUDA runtime error after a refused call, so that PyTorch's next kernel-launch
    check does not report it (best effort: libcudart is looked up among the loaded libraries)."""
    for name in ('libcudart.so', 'libcudart.so.13', 'libcudart.so.12', 'libcudart.so.11.0'):
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_NOLOAD).cudaGetLastError()
            return
        except (OSError, AttributeError):
            continue


def register(buffer) -> HostRegistration | None:
    """Pin the writable ``buffer`` (a memoryview, mmap, shared-memory ``.buf``) for DMA; None when CUDA is
    not available or the driver refuses."""
    global _REFUSED_LOGGED
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    view = np.frombuffer(buffer, dtype=np.uint8)
    if view.size == 0:
        return None
    address, size_b = _address(view), int(view.size)
    torch.cuda.init()
    rc = _code(torch.cuda.cudart().cudaHostRegister(address, size_b, 0))
    if rc != 0:
        _clear_cuda_error()
        if not _REFUSED_LOGGED:
            _REFUSED_LOGGED = True
            LOG.warning('cudaHostRegister of %d bytes failed (CUDA error %d): copying through pinned '
                        'buffers instead (check `ulimit -l`)', size_b, rc)
        return None
    with _LOCK:
        _RANGES[address] = address + size_b
    return HostRegistration(address, size_b)


def is_registered(array: np.ndarray) -> bool:
    """True when ``array`` lies wholly inside one live registration."""
    with _LOCK:
        ranges = list(_RANGES.items())
    return any(_inside(array, low, high) for low, high in ranges)
