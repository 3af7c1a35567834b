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
    assert gru.input_pad == 2 and gates[0].shape == (48, 40, 3, 3)  # 38 input channels padded to 40
    assert gates[1].shape == (48,) and gates[2].shape == (64, 16, 3, 3)  # r*h conv: 16 outputs padded to 64
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


def test_fused_decoder_network_close_to_upstream_arithmetic(small_net):
    net = copy.deepcopy(small_net)
    x = torch.randn(1, 3, 56, 84, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = net(x)
        net.set_fused(True)
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
    assert net.depth_model.decoder.fused is fused
    assert net.depth_model.encoder.patch_embed.as_matmul is fused
    x = torch.randn(2, 3, 56, 84, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out = backend.module(x)
        ref = small_net(x)
    for a, b in zip(out, ref, strict=True):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert _rel(a, b) < (1e-6 if precision == 'fp32' else 0.1)


def _conv(cin: int, cout: int, k: int, seed: int) -> torch.nn.Conv2d:
    conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen))
    return conv


@pytest.mark.parametrize('channels_last', [False, True])
@torch.no_grad()
def test_merged_convs_compute_the_separate_convs(channels_last):
    from metric3d_ros.core.model.merged_convs import conv_aligned, pair_conv, pair_layer_norm, shared_conv

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 12, 9, 11).contiguous(memory_format=fmt)
    a, b = _conv(12, 5, 3, 1), _conv(12, 7, 3, 2)
    assert _rel(shared_conv(x, a, b), torch.cat([a(x), b(x)], dim=1)) < 1e-6
    c, d = _conv(6, 5, 3, 3), _conv(6, 3, 3, 4)
    assert _rel(pair_conv(x, c, d), torch.cat([c(x[:, :6]), d(x[:, 6:])], dim=1)) < 1e-6
    aligned = conv_aligned(x, a.weight, a.bias, padding=1)
    assert aligned.shape == (2, 5, 9, 11) and _rel(aligned, a(x)) < 1e-6
    n1, n2 = LayerNorm2d(6), LayerNorm2d(6)
    torch.nn.init.normal_(n1.weight), torch.nn.init.normal_(n2.bias)
    y = pair_layer_norm(x, n1, n2)
    assert y.is_contiguous(memory_format=fmt)
    assert _rel(y, torch.cat([n1(x[:, :6]), n2(x[:, 6:])], dim=1)) < 1e-6


@torch.no_grad()
def test_fuse_block_conv_before_upsampling_is_the_same_function():
    from metric3d_ros.core.model.dpt import FuseBlock

    block = FuseBlock(16, 10, upsample=(7, 4))
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, skip = torch.randn(2, 16, 8, 12), torch.randn(2, 16, 8, 12)
    ref = block(x, skip)
    block.conv_first = True
    out = block(x, skip)
    assert out.shape == ref.shape == (2, 10, 14, 21)
    assert _rel(out, ref) < 1e-6


@torch.no_grad()
def test_fused_decoder_parts_compute_the_upstream_parts(small_net):
    decoder = small_net.depth_model.decoder
    gen = torch.Generator().manual_seed(3)
    f4, f8, f16 = (torch.randn(1, c, h, w, generator=gen) for c, h, w in ((96, 14, 21), (192, 8, 12),
                                                                          (384, 4, 6)))
    ref = decoder.context_feature_encoder(f4, f8, f16)
    fused = decoder.context_feature_encoder(f4, f8, f16, fused=True)
    for (h_ref, c_ref), (h_f, c_f) in zip(ref, fused, strict=True):
        assert _rel(h_f, h_ref) < 1e-5 and _rel(c_f, c_ref) < 1e-5
    hidden = torch.randn(1, 48, 14, 21, generator=gen)
    head = decoder.update_block.flow_head
    assert _rel(head(hidden, fused=True), head(hidden)) < 1e-5
    shared = torch.randn(1, 96, 14, 21, generator=gen)
    decoder.set_fused(True)
    try:
        fused_heads = decoder.heads(shared)
    finally:
        decoder.set_fused(False)
    for a, b in zip(fused_heads, decoder.heads(shared), strict=True):
        assert a.shape == b.shape and _rel(a, b) < 1e-5


@pytest.mark.parametrize('channels_last', [False, True])
@torch.no_grad()
def test_patch_embedding_as_matmul_is_the_conv(channels_last):
    from metric3d_ros.core.model.vit import PatchEmbed

    embed = PatchEmbed(14, 32)
    torch.nn.init.normal_(embed.proj.weight, std=0.1), torch.nn.init.normal_(embed.proj.bias)
    x = torch.randn(2, 3, 28, 42)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref = embed(x)
    embed.as_matmul = True
    out = embed(x)
    assert out.shape == ref.shape == (2, 6, 32)
    assert _rel(out, ref) < 1e-6
