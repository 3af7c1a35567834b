"""DepthEngine.submit with pipeline_depth > 1 (lanes of the torch backend): same results as one batch at a
time, tickets, per-batch errors, close with batches in flight. CPU here; the CUDA test runs the lanes on
their own streams and CUDA graphs."""
from __future__ import annotations

import gc
import logging
import threading
import time
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from metric3d_ros.core.config import EngineConfig
from metric3d_ros.core.engine.engine import DepthEngine
from metric3d_ros.core.engine.test_backends import FakeBackend
from metric3d_ros.core.engine.torch_backend import TorchBackend
from metric3d_ros.core.engine.transfer import PendingDownload
from metric3d_ros.core.engine.types import Frame, OutputRequest
from metric3d_ros.core.geometry.intrinsics import Intrinsics

NET_HW = (56, 84)
ALL = OutputRequest(outputs={'depth', 'confidence', 'normals', 'points'}, cloud_stride=2)


class _ToyNet(nn.Module):
    """Depth, confidence and normal that depend on every input pixel's neighbourhood (a conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, kernel_size=3, padding=1)
        with torch.no_grad():
            weight = self.conv.weight
            weight.copy_(torch.linspace(-0.2, 0.3, weight.numel()).view_as(weight))
            self.conv.bias.copy_(torch.tensor([4.0, 0.5, 0.1, 0.2, 1.0, 2.0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        normal = torch.cat([nn.functional.normalize(y[:, 2:5], dim=1), y[:, 5:6]], dim=1)
        return y[:, :1].abs() + 1.0, torch.sigmoid(y[:, 1:2]), normal


def _engine(depth: int, device: str = 'cpu', backend=None, **kwargs) -> DepthEngine:
    config = EngineConfig(device=device, net_height_px=NET_HW[0], net_width_px=NET_HW[1], max_batch_size=3,
                          pipeline_depth=depth, **kwargs)
    if backend is None:
        backend = TorchBackend(_ToyNet(), device, NET_HW, max_batch_size=3)
    return DepthEngine(config, backend)


def _frames(seed: int, count: int = 3) -> list[Frame]:
    rng = np.random.default_rng(seed)
    sizes = [(48, 64), (30, 90), (72, 96)]
    out = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        fx = 50.0 + 10 * i + seed
        out.append(Frame(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), Intrinsics(fx, fx, w / 2, h / 2),
                         f'cam{i}', 1000 * seed + i))
    return out


def _same(a, b) -> None:
    assert (a.camera_id, a.stamp_ns, a.error) == (b.camera_id, b.stamp_ns, b.error)
    if a.error:
        return
    assert a.intrinsics == b.intrinsics
    assert set(a.arrays) == set(b.arrays)
    for name, array in a.arrays.items():
        np.testing.assert_array_equal(array, b.arrays[name], err_msg=name)


def test_pipelined_submits_give_what_infer_gives_one_batch_at_a_time():
    calls = [_frames(seed) for seed in range(1, 6)]
    calls[2][1] = Frame(np.zeros((10, 10), np.uint8), calls[2][1].intrinsics, 'bad', 7)  # fails alone
    reference = [_engine(1).infer(frames, ALL) for frames in calls]
    engine = _engine(2)
    assert len(engine._lanes) == 2
    tickets = [engine.submit(frames, ALL) for frames in calls]
    # five calls over two lanes: each submit collected the batch that last used its lane
    assert [t.done() for t in tickets] == [True, True, True, False, False]
    for ticket, expected in zip(tickets, reference, strict=True):
        got = ticket.result()
        assert ticket.done() and len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            _same(a, b)
    assert 'image' in tickets[2].result()[1].error
    first, second = tickets[0].result()[0], tickets[1].result()[0]
    assert not np.shares_memory(first.arrays['depth_m'], second.arrays['depth_m'])


def test_a_call_longer_than_max_batch_size_spans_lanes_in_order():
    frames = _frames(3, count=7)
    expected = _engine(1).infer(frames, ALL)
    got = _engine(2).submit(frames, ALL).result()
    assert [r.camera_id for r in got] == [r.camera_id for r in expected]
    for a, b in zip(got, expected, strict=True):
        _same(a, b)


def test_a_failing_batch_fails_only_its_own_frames(monkeypatch, caplog):
    engine = _engine(2)
    real_run = TorchBackend.run
    runs = []

    def flaky(self, batch, metas, lane=0):
        runs.append(lane)
        if len(runs) == 2:
            raise RuntimeError('device fell over')
        return real_run(self, batch, metas, lane)

    monkeypatch.setattr(TorchBackend, 'run', flaky)
    tickets = [engine.submit(_frames(seed), ALL) for seed in (1, 2, 3)]
    first, second, third = (t.result() for t in tickets)
    assert runs == [0, 1, 1]  # the failed batch left lane 1 idle: the third batch takes it (lane 0 is busy)
    assert all(r.ok for r in first + third)
    assert all('device fell over' in r.error for r in second)
    assert 'depth engine batch of 3 frames failed' in caplog.text


def test_close_finishes_batches_in_flight():
    engine = _engine(2)
    tickets = [engine.submit(_frames(seed), ALL) for seed in (1, 2)]
    engine.close()
    assert all(t.done() for t in tickets)
    assert all(r.ok for t in tickets for r in t.result())
    with pytest.raises(RuntimeError, match='closed'):
        engine.submit(_frames(4), ALL)


def test_a_backend_without_lanes_runs_one_batch_at_a_time(caplog):
    with caplog.at_level(logging.WARNING):
        engine = _engine(2, backend=FakeBackend())
    assert len(engine._lanes) == 1 and 'has no lanes' in caplog.text
    tickets = [engine.submit(_frames(seed), ALL) for seed in (1, 2)]
    assert tickets[0].done() and all(r.ok for t in tickets for r in t.result())


def test_a_dropped_ticket_frees_its_buffers_without_the_garbage_collector():
    # pinned host blocks kept alive until a garbage collection made the caching host allocator pin new memory
    # every few batches (H100: stalls of ~100 ms)
    engine = _engine(2)
    gc.collect()
    gc.disable()
    try:
        ticket = engine.submit(_frames(1), ALL)
        results = ticket.result()
        ticket_ref, depth_ref = weakref.ref(ticket), weakref.ref(results[0].arrays['depth_m'])
        del ticket, results
        assert ticket_ref() is None and depth_ref() is None
    finally:
        gc.enable()


def test_a_waiting_result_does_not_block_a_submit_to_an_idle_lane(monkeypatch):
    # result() waits for the device without the engine lock: another thread can keep the GPU fed meanwhile
    engine = _engine(2)
    first = engine.submit(_frames(1), ALL)
    release, waiting = threading.Event(), threading.Event()
    real_wait = PendingDownload.wait

    def slow_wait(self):
        if not waiting.is_set():
            waiting.set()
            release.wait(10)
        real_wait(self)

    monkeypatch.setattr(PendingDownload, 'wait', slow_wait)
    consumer = threading.Thread(target=first.result)
    consumer.start()
    assert waiting.wait(10)
    started = time.perf_counter()
    second = engine.submit(_frames(2), ALL)  # lane 1 is idle
    took_s = time.perf_counter() - started
    release.set()
    consumer.join(10)
    assert took_s < 5 and not consumer.is_alive()
    assert first.done() and all(r.ok for r in first.result() + second.result())


def test_camera_resolution_cloud_colours_are_taken_at_submit():
    # the caller may reuse its image buffers once the results are in; colours must not come from later
    engine = _engine(2)
    frames = _frames(1)
    request = OutputRequest(outputs={'depth', 'points'}, cloud_rgb=True, cloud_stride=2)
    expected = [f.image_rgb[::2, ::2].copy() for f in frames]
    ticket = engine.submit(frames, request)
    for frame in frames:
        frame.image_rgb[:] = 0  # overwritten before result()
    for result, colours in zip(ticket.result(), expected, strict=True):
        np.testing.assert_array_equal(result.arrays['points_rgb'], colours)


def test_torch_backend_lanes_are_checked():
    backend = TorchBackend(_ToyNet(), 'cpu', NET_HW, max_batch_size=3)
    with pytest.raises(ValueError, match='lane count'):
        backend.set_lanes(0)
    assert backend.set_lanes(2) == 2
    with pytest.raises(ValueError, match='lane 2 does not exist'):
        backend.lane(2)
    batch = torch.zeros((1, 3, *NET_HW))
    with pytest.raises(ValueError, match='lane 3 does not exist'):
        backend.run(batch, [None], lane=3)
    lane = backend.lane(1)
    assert (lane.name, lane.device, lane.input_format) == ('torch', backend.device, 'normalized')
    assert lane.input_buffer(1) is None  # no graphs on the CPU


@pytest.mark.cuda
def test_cuda_lanes_with_graphs_give_the_sequential_results():
    calls = [_frames(seed) for seed in range(1, 7)]
    sequential = _engine(1, device='cuda')
    sequential.warmup([3], image_hw=[(48, 64)])
    reference = [sequential.infer(frames, ALL) for frames in calls]
    backend = TorchBackend(_ToyNet(), 'cuda', NET_HW, max_batch_size=3)
    engine = _engine(2, device='cuda', backend=backend)
    engine.warmup([3], image_hw=[(48, 64)])
    assert {key[0] for key in backend._graphs} == {0, 1}
    assert engine._lanes[0].stream is not engine._lanes[1].stream
    tickets = [engine.submit(frames, ALL) for frames in calls]
    for ticket, expected in zip(tickets, reference, strict=True):
        for a, b in zip(ticket.result(), expected, strict=True):
            _same(a, b)
