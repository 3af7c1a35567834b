"""TorchBackend mechanics on the CPU with a tiny stand-in network: precision scopes, buckets, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from metric3d_ros.core.config import EngineConfig
from metric3d_ros.core.engine.backend import FrameMeta, batch_buckets
from metric3d_ros.core.engine.engine import DepthEngine
from metric3d_ros.core.engine.torch_backend import TorchBackend, tf32_mode
from metric3d_ros.core.engine.types import Frame, OutputRequest
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.geometry.letterbox import compute_letterbox

torch.set_num_threads(2)


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.seen: list[torch.dtype] = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append(y.dtype)
        return [y], 1, 1


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(8, 6, 1)
        self.seen: list[torch.dtype] = []

    def forward(self, features, h_tokens, w_tokens):
        y = self.head(features[0])
        self.seen.append(y.dtype)
        depth = 5.0 + torch.tanh(y[:, :1])
        normal = torch.cat([nn.functional.normalize(y[:, 1:4], dim=1), y[:, 4:5].abs()], dim=1)
        return depth, torch.sigmoid(y[:, 5:6]), normal


class TinyNet(nn.Module):
    """Same forward contract as the Metric3D network, with ``depth_model.encoder/decoder``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.depth_model = nn.Module()
        self.depth_model.encoder = _Encoder()
        self.depth_model.decoder = _Decoder()

    def forward(self, x):
        f, h, w = self.depth_model.encoder(x)
        return self.depth_model.decoder(f, h, w)


def _metas(n, hw=(56, 84)):
    lb = compute_letterbox(*hw, *hw)
    k = Intrinsics(50.0, 50.0, 40.0, 28.0)
    return [FrameMeta(i, 'c', 0, '', k, lb, k) for i in range(n)]


def test_buckets():
    assert batch_buckets(1) == [1]
    assert batch_buckets(6) == [1, 2, 4, 6]
    assert batch_buckets(8) == [1, 2, 4, 8]
    assert batch_buckets(8, (4,)) == [4, 8]
    assert batch_buckets(4, (4,)) == [4]
    assert batch_buckets(6, (3, 1, 3)) == [1, 3, 6]


def test_configured_buckets_and_their_validation():
    from metric3d_ros.core.config import EngineConfig

    assert EngineConfig(max_batch_size=4).buckets == [1, 2, 4]
    assert EngineConfig(max_batch_size=4, batch_buckets=(4,)).buckets == [4]
    assert EngineConfig(max_batch_size=8, batch_buckets=[2, 2]).batch_buckets == (2,)
    for bad in ((0,), (9,), ('4',), (True,), 4):
        with pytest.raises(ValueError, match='batch_buckets'):
            EngineConfig(max_batch_size=8, batch_buckets=bad)


def test_backend_pads_into_the_configured_bucket():
    backend = TorchBackend(TinyNet(), 'cpu', (56, 84), max_batch_size=4, batch_bucket_sizes=(4,))
    assert backend.buckets == [4]
    assert [backend._bucket(b) for b in (1, 2, 3, 4)] == [4, 4, 4, 4]
    default = TorchBackend(TinyNet(), 'cpu', (56, 84), max_batch_size=4)
    assert [default._bucket(b) for b in (1, 2, 3, 4)] == [1, 2, 4, 4]


@pytest.mark.parametrize('precision,scope,enc,dec', [
    ('fp32', 'encoder', torch.float32, torch.float32),
    ('bf16', 'encoder', torch.bfloat16, torch.float32),
    ('bf16', 'all', torch.bfloat16, torch.bfloat16),
    ('bf16', 'cast', torch.bfloat16, torch.bfloat16),
])
def test_autocast_scopes_and_float32_outputs(precision, scope, enc, dec):
    net = TinyNet()
    backend = TorchBackend(net, 'cpu', (56, 84), precision=precision, max_batch_size=4, autocast_scope=scope)
    assert backend.input_buffer(2) is None and not backend.use_graphs and not backend.channels_last
    out = backend.run(torch.randn(3, 3, 56, 84), _metas(3))
    assert net.depth_model.encoder.seen[-1] == enc and net.depth_model.decoder.seen[-1] == dec
    for t, c in ((out.depth, 1), (out.confidence, 1), (out.normal, 4)):
        assert t.dtype == torch.float32 and tuple(t.shape) == (3, c, 56, 84)


def test_run_rejects_mismatched_batches():
    backend = TorchBackend(TinyNet(), 'cpu', (56, 84), max_batch_size=2)
    with pytest.raises(ValueError, match='does not match'):
        backend.run(torch.randn(2, 3, 56, 84), _metas(1))
    with pytest.raises(ValueError, match='built for'):
        backend.run(torch.randn(1, 3, 28, 84), _metas(1))
    with pytest.raises(ValueError, match='precision'):
        TorchBackend(TinyNet(), 'cpu', (56, 84), precision='int8')


def test_tf32_mode_restores_the_global_flags():
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with tf32_mode(not before[0]):
        assert torch.backends.cudnn.allow_tf32 == (not before[0])
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_engine_with_torch_backend_batches_and_warms_up():
    config = EngineConfig(net_height_px=56, net_width_px=84, max_batch_size=3)
    backend = TorchBackend(TinyNet(), 'cpu', config.net_hw, max_batch_size=3)
    engine = DepthEngine(config, backend)
    engine.warmup()
    assert backend._warm == {1}  # CPU warm-up: batch 1 only
    rng = np.random.default_rng(0)
    sizes = [(40, 60), (90, 120), (40, 60), (30, 200)]
    frames = [Frame(rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                    Intrinsics(60.0, 60.0, w / 2, h / 2), 'c', i) for i, (h, w) in enumerate(sizes)]
    batched = engine.infer(frames, OutputRequest(outputs={'depth', 'confidence', 'normals'}))
    single = [engine.infer([f], OutputRequest(outputs={'depth', 'confidence', 'normals'}))[0] for f in frames]
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.arrays['depth_m'], b.arrays['depth_m'], rtol=1e-5)
        np.testing.assert_allclose(a.arrays['normals'], b.arrays['normals'], atol=1e-5)
    engine.close()
