"""ProcessEngine: DepthEngine in a child process through shared memory gives DepthEngine's results."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from metric3d_ros.core.config import EngineConfig
from metric3d_ros.core.engine.engine import DepthEngine
from metric3d_ros.core.engine.process_engine import EngineProcessError, ProcessEngine
from metric3d_ros.core.engine.types import Frame, OutputRequest
from metric3d_ros.core.geometry.intrinsics import Intrinsics

CONFIG = EngineConfig(backend='fake', device='cpu', net_height_px=56, net_width_px=84, max_batch_size=4)
FULL = OutputRequest(depth=True, confidence=True, normals=True, cloud=True, cloud_rgb=True, cloud_stride=2)


def _frame(h, w, seed, cam='cam', fx=None):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    fx = fx or 0.9 * w
    intrinsics = Intrinsics(fx, fx * 1.01, w / 2.0, h / 2.0)
    return Frame(image, intrinsics, cam, 1_000 + seed, f'{cam}_optical_frame')


@pytest.fixture(scope='module')
def remote():
    engine = ProcessEngine(CONFIG)
    yield engine
    engine.close()


def _same(a, b):
    assert (a.camera_id, a.stamp_ns, a.frame_id, a.error) == (b.camera_id, b.stamp_ns, b.frame_id, b.error)
    assert a.intrinsics == b.intrinsics
    for name in ('depth_m', 'confidence', 'normals', 'points_xyz', 'points_rgb'):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.shape == y.shape and x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_mixed_batch_matches_the_in_process_engine_and_a_bad_frame_fails_alone(remote):
    frames = [_frame(48, 64, 1, 'a'), _frame(30, 90, 2, 'b', fx=70.0), _frame(48, 64, 3, 'c')]
    bad = Frame(np.zeros((10, 10), dtype=np.float32), Intrinsics(5, 5, 5, 5), 'bad', 7)
    frames.insert(1, bad)
    requests = [FULL, FULL, OutputRequest(resolution='network'), FULL]
    got = remote.infer(frames, requests)
    with DepthEngine(CONFIG) as local:
        want = local.infer(frames, requests)
    assert [r.camera_id for r in got] == ['a', 'bad', 'b', 'c']
    assert got[1].error and not got[1].ok and got[1].depth_m is None
    assert got[1].error == want[1].error
    for a, b in zip(got, want, strict=True):
        _same(a, b)
    assert np.isnan(got[0].depth_m).sum() == np.isnan(want[0].depth_m).sum()
    # results own their memory (not views of the shared arena)
    assert all(r.depth_m.flags.owndata for r in got if r.ok)


def test_arena_grows_for_larger_frames_and_results_stay_intact(remote):
    small = remote.infer([_frame(20, 30, 4)], FULL)[0]
    keep = small.depth_m.copy()
    big = remote.infer([_frame(200, 300, 5), _frame(210, 280, 6)], FULL)
    assert [r.depth_m.shape for r in big] == [(200, 300), (210, 280)]
    np.testing.assert_array_equal(small.depth_m, keep)
    assert remote.device == 'cpu' and remote.pid is not None


def test_a_killed_engine_process_is_restarted_by_the_next_call():
    engine = ProcessEngine(CONFIG)
    try:
        engine.warmup([1])
        first = engine.infer([_frame(48, 64, 1)], FULL)[0]
        pid = engine.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while engine._proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        again = engine.infer([_frame(48, 64, 1)], FULL)[0]
        assert engine.restarts == 1 and engine.pid != pid
        _same(first, again)
    finally:
        engine.close()
    assert engine.pid is None
    with pytest.raises(RuntimeError, match='closed'):
        engine.infer([_frame(48, 64, 1)])


def test_a_failing_start_raises_with_the_child_s_reason():
    bad = EngineConfig(backend='torch', device='cpu', net_height_px=56, net_width_px=84,
                       weights='/nonexistent/metric3d.pth')
    with pytest.raises(EngineProcessError, match='failed to start.*nonexistent'):
        ProcessEngine(bad)


def test_close_unlinks_the_shared_memory():
    engine = ProcessEngine(CONFIG)
    engine.infer([_frame(48, 64, 1)])
    name = engine._inputs.name
    assert name and Path('/dev/shm', name).exists()
    engine.close()
    assert not Path('/dev/shm', name).exists()
    engine.close()  # idempotent


def test_shared_results_are_read_only_views_and_an_arena_is_reused_only_when_released():
    from multiprocessing import shared_memory

    from metric3d_ros.core.engine.process_engine import shared_array_view

    engine = ProcessEngine(CONFIG, output_slots=2)
    try:
        frames = [_frame(48, 64, 1, 'a'), _frame(30, 90, 2, 'b')]
        copied = engine.infer(frames, FULL)
        first = engine.infer(frames, FULL, shared=True)
        for a, b in zip(first, copied, strict=True):
            _same(a, b)
            assert not a.depth_m.flags.writeable
            assert set(a.shared) == {'depth_m', 'confidence', 'normals', 'points_xyz', 'points_rgb'}
        # another attachment of the arena (what a publisher process does) sees the same arrays
        where = first[1].shared['points_xyz']
        block = shared_memory.SharedMemory(name=where.arena)
        try:
            np.testing.assert_array_equal(shared_array_view(block, where), first[1].points_xyz)
        finally:
            block.close()
        second = engine.infer([_frame(48, 64, 7, 'c')], FULL, shared=True)
        keep = second[0].depth_m.copy()
        with pytest.raises(EngineProcessError, match='still referenced'):
            engine.infer([_frame(48, 64, 8, 'd')], FULL, shared=True, slot_timeout_s=0.2)
        first_depth = first[0].depth_m.copy()
        del first, where, a  # (a: the loop variable above still held a result)
        third = engine.infer([_frame(48, 64, 8, 'd')], FULL, shared=True, slot_timeout_s=5.0)
        assert third[0].camera_id == 'd'
        np.testing.assert_array_equal(second[0].depth_m, keep)  # the held arena was not written
        assert not np.array_equal(third[0].depth_m, first_depth)
    finally:
        engine.close()


def test_shared_results_outlive_a_restart_of_the_engine_process():
    """A held shared result keeps its arena mapped and unchanged when the child dies and a new one runs."""
    engine = ProcessEngine(CONFIG, output_slots=1)
    try:
        held = engine.infer([_frame(48, 64, 1)], FULL, shared=True)[0]
        want = held.depth_m.copy()
        os.kill(engine.pid, signal.SIGKILL)
        engine._proc.join(10.0)
        # the new child writes new arenas; the held result keeps the old (unlinked) mapping
        after = engine.infer([_frame(48, 64, 2)], FULL, shared=True, slot_timeout_s=5.0)
        assert engine.restarts == 1 and after[0].ok
        assert after[0].shared['depth_m'].arena != held.shared['depth_m'].arena
        np.testing.assert_array_equal(held.depth_m, want)
        assert not np.array_equal(after[0].depth_m, want)
        del held, after
        again = engine.infer([_frame(48, 64, 3)], FULL, shared=True, slot_timeout_s=5.0)
        assert again[0].ok
    finally:
        engine.close()


def test_a_frame_that_cannot_be_pickled_fails_alone(remote):
    class Unpicklable(Intrinsics):
        def __reduce__(self):
            raise TypeError('not today')

    good = _frame(48, 64, 1, 'good')
    bad = Frame(good.image_rgb, Unpicklable(50.0, 50.0, 32.0, 24.0), 'bad', 42, 'bad_frame')
    got = remote.infer([bad, good], FULL)
    assert [r.camera_id for r in got] == ['bad', 'good']
    assert 'cannot be sent' in got[0].error and got[0].stamp_ns == 42 and got[0].frame_id == 'bad_frame'
    assert got[1].ok


class _FakeRegistration:
    """host_memory.register without CUDA: records the range like the real one, unpins nothing."""

    def __init__(self, buffer):
        from metric3d_ros.core.engine.host_memory import HostRegistration

        view = np.frombuffer(buffer, dtype=np.uint8)
        self.real = HostRegistration(view.__array_interface__['data'][0], view.size)
        self.closed = False

    def offset_of(self, array):
        return self.real.offset_of(array)

    def close(self):
        self.closed = True


class _DownloadingEngine:
    """Stands in for DepthEngine on a GPU: its depth and padded points come from ``output_allocator`` (the
    device-to-host copies), its colours are a private array (as at camera resolution)."""

    def __init__(self):
        self.output_allocator = None
        self.pieces = []

    def infer(self, frames, requests):
        import torch

        from metric3d_ros.core.engine.types import FrameResult

        out = []
        for k, frame in enumerate(frames):
            h, w = frame.image_rgb.shape[:2]
            arrays = {}
            for name, shape in (('depth_m', (h, w)), ('points', (h // 2, w // 2, 4))):
                host = None if self.output_allocator is None else self.output_allocator(
                    int(np.prod(shape)), torch.float32)
                if host is None:
                    host = torch.empty(int(np.prod(shape)), dtype=torch.float32)
                else:
                    self.pieces.append(host.data_ptr())
                host.copy_(torch.arange(host.numel(), dtype=torch.float32) + 1000 * k)
                arrays[name] = host.numpy().reshape(shape)
            rgb = np.full((h // 2, w // 2, 3), 7 + k, dtype=np.uint8)
            out.append(FrameResult(frame.camera_id, frame.stamp_ns, frame.frame_id, frame.intrinsics,
                                   depth_m=arrays['depth_m'], points_xyz=arrays['points'][..., :3],
                                   points_rgb=rgb, timings_ms={'total': 1.0}))
        return out


def test_child_keeps_downloads_in_a_registered_arena_in_place_and_copies_the_rest(monkeypatch):
    """With a registered output arena the engine's downloads land in it: they are described where they lie
    (no copy), other arrays are copied behind them, and a first call (or growth) copies everything."""
    from metric3d_ros.core.engine import process_engine as pe

    monkeypatch.setattr(pe.host_memory, 'register', _FakeRegistration)
    engine = _DownloadingEngine()
    arena = pe._Arena(register=True)
    inputs = pe._Viewer()
    frames = [_frame(48, 64, 1, 'a'), _frame(30, 90, 2, 'b')]
    packed = [pe._Packed(0, (), None, '', 0, '', inline=f) for f in frames]
    try:
        for call in range(3):
            engine.pieces.clear()
            name, specs = pe._child_infer(engine, inputs, arena, '', packed, [FULL, FULL])
            assert engine.output_allocator is None  # reset after the call
            block = arena.block
            base = np.frombuffer(block.buf, dtype=np.uint8).__array_interface__['data'][0]
            if call == 0:
                assert engine.pieces == []  # no arena yet: pinned copies, then all copied into a new arena
            else:
                # depth and points of both frames were written by the "download" straight into the arena
                in_place = sorted(p - base for p in engine.pieces)
                described = sorted(s['arrays'][n].offset for s in specs for n in ('depth_m', 'points_xyz'))
                assert in_place == described
                rgb_offsets = [s['arrays']['points_rgb'].offset for s in specs]
                assert min(rgb_offsets) > max(in_place)  # copied behind the downloads
            for k, (spec, frame) in enumerate(zip(specs, frames, strict=True)):
                h, w = frame.image_rgb.shape[:2]
                depth = pe.stored_array(block.buf, spec['arrays']['depth_m'])
                want = np.arange(h * w, dtype=np.float32) + 1000 * k
                np.testing.assert_array_equal(depth.reshape(-1), want)
                points = pe.shared_array_view(block, spec['arrays']['points_xyz'])
                assert points.shape == (h // 2, w // 2, 3) and spec['arrays']['points_xyz'].padded
                assert points[0, 1, 0] == 4 + 1000 * k
                assert (pe.stored_array(block.buf, spec['arrays']['points_rgb']) == 7 + k).all()
                assert 'ipc_write_out' in spec['timings_ms']
            assert name == block.name
        # the first frame's downloads fit, the second's do not (beyond the 1 MiB arena): the arena grows (a
        # new, registered block), what was downloaded into the old one is taken out first, all is copied
        old = arena.registration
        mixed = [_frame(48, 64, 4, 'c'), _frame(480, 640, 5, 'd')]
        engine.pieces.clear()
        name, specs = pe._child_infer(engine, inputs, arena, '',
                                      [pe._Packed(0, (), None, '', 0, '', inline=f) for f in mixed],
                                      [FULL, FULL])
        assert len(engine.pieces) == 2  # depth and points of the small frame went into the old arena
        assert arena.registration is not old and old.closed and name == arena.block.name
        for k, (spec, frame) in enumerate(zip(specs, mixed, strict=True)):
            h, w = frame.image_rgb.shape[:2]
            depth = pe.stored_array(arena.block.buf, spec['arrays']['depth_m'])
            np.testing.assert_array_equal(depth.reshape(-1), np.arange(h * w, dtype=np.float32) + 1000 * k)
            points = pe.shared_array_view(arena.block, spec['arrays']['points_xyz'])
            assert points[0, 1, 0] == 4 + 1000 * k
    finally:
        arena.release()
