"""Reduced-precision options of the network: fused ConvGRU gates, the 'cast' scope, memory formats (CPU)."""
from __future__ import annotations

import copy

import pytest
import torch

from metric3d_ros.core.engine.torch_backend import TorchBackend
from metric3d_ros.core.model import load_metric3d
from metric3d_ros.core.model.gru import ConvGRU, LayerNorm2d
from metric3d_ros.core.model.synthetic import synthetic_state_dict

torch.set_num_threads(2)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@torch.no_grad()
def test_fused_gates_compute_the_same_gru_update():
    torch.manual_seed(0)
    gru = ConvGRU(16, 22)
    for p in gru.parameters():
        torch.nn.init.normal_(p, std=0.1)
    h = torch.randn(2, 16, 9, 13)
    context = torch.randn(2, 48, 9, 13)
    inputs = (torch.randn(2, 6, 9, 13), torch.randn(2, 16, 9, 13))
    ref = gru(h, context, *inputs)
    assert torch.equal(ref, gru(h, tuple(context.split(16, dim=1)), *inputs))
    gates = gru.fused_gates()
    assert gates[0].shape == (48, 38, 3, 3) and gates[1].shape == (48,) and gates[2].shape == (16, 16, 3, 3)
    folded = context + gates[1].view(1, -1, 1, 1)  # the decoder folds the biases into the context once
    assert _rel(gru(h, folded, *inputs, gates=gates), ref) < 1e-5


def test_layer_norm_2d_keeps_the_memory_format():
    norm = LayerNorm2d(8)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(2, 8, 5, 7)
    y = norm(x)
    assert y.is_contiguous()
    y_cl = norm(x.contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, y_cl)


@pytest.fixture(scope='module')
def small_net():
    return load_metric3d(synthetic_state_dict('small'), variant='small', fused_attention=True)


def test_fused_gates_network_close_to_upstream_arithmetic(small_net):
    net = copy.deepcopy(small_net)
    x = torch.randn(1, 3, 56, 84, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = net(x)
        net.set_fused_gates(True)
        fused = net(x)
    for a, b in zip(fused, ref, strict=True):
        assert _rel(a, b) < 1e-5


@pytest.mark.parametrize('precision,scope,cast,fused', [
    ('fp32', 'cast', False, False),
    ('bf16', 'encoder', False, False),
    ('bf16', 'all', False, True),
    ('bf16', 'cast', True, True),
])
def test_backend_scopes_on_the_network(small_net, precision, scope, cast, fused):
    backend = TorchBackend(copy.deepcopy(small_net), 'cpu', (56, 84), precision=precision, max_batch_size=2,
                           autocast_scope=scope)
    net = backend.module.net
    dtypes = {p.dtype for p in net.parameters()}
    assert dtypes == ({torch.bfloat16} if cast else {torch.float32})
    assert net.depth_model.decoder.fused_gates is fused
    x = torch.randn(2, 3, 56, 84, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out = backend.module(x)
        ref = small_net(x)
    for a, b in zip(out, ref, strict=True):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert _rel(a, b) < (1e-6 if precision == 'fp32' else 0.1)
