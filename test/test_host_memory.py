"""host_memory: address-range bookkeeping of CUDA-registered buffers (registration itself needs CUDA)."""
from __future__ import annotations

import numpy as np
import pytest

from metric3d_ros.core.engine import host_memory
from metric3d_ros.core.engine.host_memory import HostRegistration


def _base(array):
    return array.__array_interface__['data'][0]


def test_offset_of_finds_contiguous_arrays_inside_the_buffer_only():
    buf = np.zeros(1024, dtype=np.uint8)
    reg = HostRegistration(_base(buf), buf.size)
    inside = buf[64:64 + 400].view(np.float32).reshape(10, 10)
    assert reg.contains(inside) and reg.offset_of(inside) == 64
    assert reg.offset_of(buf[::2]) is None  # inside, but not contiguous
    assert reg.contains(buf[::2])
    assert not reg.contains(np.zeros(16, dtype=np.uint8))  # another buffer
    assert not reg.contains(buf[:0])  # empty
    reg._open = False  # (closed without CUDA)
    assert not reg.contains(inside)


def test_ranges_cover_whole_arrays_with_any_strides():
    buf = np.zeros(100, dtype=np.float32)
    low, high = _base(buf), _base(buf) + buf.nbytes
    assert host_memory._inside(buf[::-1], low, high)
    assert host_memory._inside(buf.reshape(10, 10).T, low, high)
    assert not host_memory._inside(buf, low + 4, high)
    assert not host_memory._inside(buf, low, high - 1)
    # mixed-sign strides: rows forward, columns backward; the array reaches 4 bytes below the range
    mixed = buf.reshape(10, 10)[:, ::-1]
    assert host_memory._inside(mixed, low, high)
    assert not host_memory._inside(mixed[:, :], low + 4, high)
    assert not host_memory._inside(np.lib.stride_tricks.as_strided(buf[1:], shape=(2, 2), strides=(8, -4)),
                                   low + 4, high)


def test_is_registered_looks_up_live_registrations(monkeypatch):
    buf = np.zeros(256, dtype=np.uint8)
    monkeypatch.setitem(host_memory._RANGES, _base(buf), _base(buf) + buf.size)
    assert host_memory.is_registered(buf[10:20])
    assert not host_memory.is_registered(np.zeros(4, dtype=np.uint8))


def test_register_without_cuda_returns_none():
    torch = pytest.importorskip('torch')
    if torch.cuda.is_available():
        pytest.skip('this checks the CPU fallback')
    assert host_memory.register(bytearray(4096)) is None
