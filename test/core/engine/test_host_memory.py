"""host_memory: address-range bookkeeping of CUDA-registered buffers; on CUDA, registration, uploads from and
downloads into a registered block."""
from __future__ import annotations

import numpy as np
import pytest

from metric3d_ros.core.engine import host_memory


def _base(array):
    return array.__array_interface__['data'][0]


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


@pytest.mark.cuda
def test_registered_block_uploads_and_downloads_the_same_bytes_on_cuda():
    """A registered block (as ``metric3d_bench --host-frames registered`` uses):
    frames in it are uploaded by DMA straight from it (``Preprocessor.upload``'s direct path) and give the
    bytes the pinned staging path gives; device-to-host copies into it land exactly; ``close`` unpins it."""
    import mmap

    import torch

    from metric3d_ros.core.engine.preprocess import Preprocessor

    rng = np.random.default_rng(0)
    sizes = ((720, 1280), (720, 1280), (480, 640))
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    block = mmap.mmap(-1, sum(im.nbytes for im in images) + 4096)
    reg = host_memory.register(block)
    assert reg is not None, 'cudaHostRegister refused a 6 MB block (check `ulimit -l`)'
    try:
        memory = np.frombuffer(block, dtype=np.uint8)
        views, offset = [], 0
        for im in images:
            views.append(memory[offset:offset + im.nbytes].reshape(im.shape))
            views[-1][...] = im
            offset += im.nbytes
        assert all(host_memory.is_registered(v) for v in views)
        assert not host_memory.is_registered(images[0])
        pre = Preprocessor((616, 1064), torch.device('cuda'), 'device_exact')
        direct = [t.clone() for t in pre.upload([views[:2], views[2:]])]
        staged = pre.upload([images[:2], images[2:]])
        torch.cuda.synchronize()
        for a, b in zip(direct, staged, strict=True):
            assert torch.equal(a, b)
        assert torch.equal(direct[0][1].cpu(), torch.from_numpy(images[1]))
        device_bytes = torch.arange(4096, device='cuda', dtype=torch.int32).to(torch.uint8)
        target = memory[offset:offset + 4096]
        torch.from_numpy(target).copy_(device_bytes, non_blocking=True)
        torch.cuda.synchronize()
        np.testing.assert_array_equal(target, device_bytes.cpu().numpy())
    finally:
        reg.close()
    assert not host_memory.is_registered(views[0])
