"""The Metric3D network: checkpoint layout, spec table, export-clean forward, resampling, batch invariance."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from model_refs import agreement, manifest, meets_criterion, synthetic_network

from metric3d_ros.core.model.decoder import norm_normalize
from metric3d_ros.core.model.gru import convex_upsample
from metric3d_ros.core.model.network import Metric3DNet, build_network
from metric3d_ros.core.model.resample import bilinear_align_corners, nearest_upsample_3_5
from metric3d_ros.core.model.specs import VARIANTS, get_spec

VARIANT_NAMES = ('small', 'large', 'giant2')


@pytest.fixture(scope='module')
def small_net(shared_dir):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return synthetic_network(shared_dir, 'small')


def _module_of(key: str) -> str:
    return key.rsplit('.', 1)[0]


# spec table ---------------------------------------------------------------------------------------


def test_spec_table_rows():
    rows = {name: (s.encoder.embed_dim, s.encoder.depth, s.encoder.num_heads, s.encoder.mlp,
                   s.decoder.gru_iters, s.encoder.feature_blocks, s.encoder.feature_norm)
            for name, s in VARIANTS.items()}
    assert rows == {
        'small': (384, 12, 6, 'gelu', 4, (12, 12, 12, 12), True),
        'large': (1024, 24, 16, 'gelu', 8, (24, 24, 24, 24), True),
        'giant2': (1536, 40, 24, 'swiglu', 8, (10, 20, 30, 40), False),
    }
    for spec in VARIANTS.values():
        assert spec.encoder.patch_size == 14 and spec.encoder.num_register_tokens == 4
        assert (spec.decoder.depth_bins, spec.decoder.min_depth, spec.decoder.max_depth) == (256, 0.1, 200.0)
    assert VARIANTS['giant2'].encoder.mlp_hidden_dim == 4096


def test_get_spec_names_and_errors():
    assert get_spec('small') is VARIANTS['small']
    assert get_spec('vit_large') is VARIANTS['large']
    assert get_spec('ViT-giant2') is VARIANTS['giant2']
    with pytest.raises(ValueError, match='unknown Metric3D variant'):
        get_spec('base')
    with pytest.raises(dataclasses.FrozenInstanceError):
        VARIANTS['small'].encoder.depth = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match='feature_blocks'):
        dataclasses.replace(VARIANTS['small'].encoder, feature_blocks=(1, 2, 3, 13))


# checkpoint layout -------------------------------------------------------------------------------


@pytest.mark.parametrize('variant', VARIANT_NAMES)
def test_state_dict_layout_is_the_official_one(variant, shared_dir):
    rows = manifest(shared_dir, variant)
    net = build_network(variant, device='meta')
    state = net.state_dict()
    assert list(state) == [key for key, _, _ in rows]  # same keys, same order
    shapes = {key: tuple(t.shape) for key, t in state.items()}
    assert shapes == {key: shape for key, shape, _ in rows}
    assert 'depth_model.encoder.mask_token' in state
    aliases = [(key, alias) for key, _, alias in rows if alias]
    assert len(aliases) == 12  # 3 scales x 2 heads x (weight, bias)
    for key, alias in aliases:
        assert net.get_submodule(_module_of(key)) is net.get_submodule(_module_of(alias))
    expected_params = {'small': 37_495_051, 'large': 411_941_915, 'giant2': 1_377_675_099}[variant]
    assert sum(p.numel() for p in net.parameters()) == expected_params


def test_alias_keys_share_storage_after_strict_load(small_net, shared_dir):
    assert isinstance(small_net, Metric3DNet)
    assert not small_net.training
    state = small_net.state_dict()
    for key, _, alias in manifest(shared_dir, 'small'):
        if alias:
            assert state[key].data_ptr() == state[alias].data_ptr()
            assert torch.equal(state[key], state[alias])
    assert all(p.dtype == torch.float32 and p.device.type == 'cpu' for p in small_net.parameters())


def test_build_network_defaults_cpu_fp32_eval():
    net = build_network('small')
    assert not net.training
    assert {p.device.type for p in net.parameters()} == {'cpu'}
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    assert list(net.buffers()) == []


# export-clean forward ----------------------------------------------------------------------------


def test_upsampling_mask_is_computed_once_per_forward():
    """Only the last iteration's convex-upsampling mask is used: the mask head runs once, not per update."""
    net = build_network('small', device='meta')
    calls = []
    net.depth_model.decoder.update_block.mask.register_forward_hook(lambda *_: calls.append(1))
    net(torch.empty(1, 3, 140, 196, device='meta'))
    assert net.depth_model.decoder.iters == 4 and len(calls) == 1


@pytest.mark.parametrize('variant', VARIANT_NAMES)
def test_forward_runs_on_meta_device(variant):
    """Meta tensors hold no data: any data-dependent Python check or hard-coded device would raise."""
    net = build_network(variant, device='meta')
    depth, confidence, normal = net(torch.empty(2, 3, 140, 196, device='meta'))
    assert depth.shape == (2, 1, 140, 196) and depth.device.type == 'meta'
    assert confidence.shape == (2, 1, 140, 196)
    assert normal.shape == (2, 4, 140, 196)


@pytest.mark.parametrize('height,width', [(280, 392), (154, 196), (150, 200), (14, 28), (616, 1064)])
def test_output_size_rule(height, width):
    """Output side 4 * floor(3.5 * ceil(side / 14)); equal to the input side for multiples of 28."""
    net = build_network('small', device='meta')
    depth, confidence, normal = net(torch.empty(1, 3, height, width, device='meta'))

    def side(n: int) -> int:
        return 4 * math.floor(3.5 * math.ceil(n / 14))

    assert depth.shape[-2:] == (side(height), side(width))
    assert normal.shape[-2:] == depth.shape[-2:] == confidence.shape[-2:]
    if height % 28 == 0 and width % 28 == 0:
        assert depth.shape[-2:] == (height, width)


def test_forward_rejects_bad_input():
    net = build_network('small', device='meta')
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        net(torch.empty(1, 4, 140, 196, device='meta'))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        net(torch.empty(3, 140, 196, device='meta'))
    with pytest.raises(TypeError, match='floating point'):
        net(torch.empty(1, 3, 140, 196, dtype=torch.uint8, device='meta'))
    with pytest.raises(ValueError, match='smaller than one'):
        net(torch.empty(1, 3, 10, 196, device='meta'))


def test_no_state_sized_by_batch(small_net):
    keys = list(small_net.state_dict())
    with torch.inference_mode():
        small_net(torch.zeros(3, 3, 56, 56))
    assert list(small_net.buffers()) == []
    assert list(small_net.state_dict()) == keys


def test_batch_invariance_first_batch_3_then_5(shared_dir):
    """A batch of N equals N single runs; a fresh network first sees batch 3, then batch 5."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 140, 196, generator=generator)
    batched_net = synthetic_network(shared_dir, 'small')
    with torch.inference_mode():
        out3 = batched_net(x[:3])
        out5 = batched_net(x)
    del batched_net
    single_net = synthetic_network(shared_dir, 'small')
    with torch.inference_mode():
        singles = [single_net(x[i:i + 1]) for i in range(5)]
    for i in range(5):
        for k, name in enumerate(('depth', 'confidence', 'normal')):
            for batched in (out5, out3) if i < 3 else (out5,):
                fraction, ratio = agreement(batched[k][i:i + 1], singles[i][k])
                assert fraction == 1.0 and ratio <= 1e-5, f'sample {i} {name}: {fraction}, {ratio}'


def test_fused_attention_option_within_criterion(small_net):
    x = torch.randn(1, 3, 140, 196, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain = small_net(x)
        small_net.set_fused_attention(True)
        try:
            fused = small_net(x)
        finally:
            small_net.set_fused_attention(False)
        again = small_net(x)
    assert all(torch.equal(a, b) for a, b in zip(plain, again, strict=True))
    for a, b in zip(fused, plain, strict=True):
        assert meets_criterion(*agreement(a, b))


@pytest.mark.slow
def test_export_with_dynamic_shapes_matches_eager(small_net):
    """torch.export with dynamic batch and size; the exported program matches eager at two other sizes."""
    dim = torch.export.Dim
    h28, w28 = dim('h28', min=1, max=40), dim('w28', min=1, max=40)
    example = torch.randn(2, 3, 140, 196, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        dynamic = {'x': {0: dim('batch', min=1, max=8), 2: 28 * h28, 3: 28 * w28}}
        program = torch.export.export(small_net, (example,), dynamic_shapes=dynamic)
    exported = program.module()
    for shape in ((3, 3, 168, 224), (2, 3, 112, 280)):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            eager = small_net(x)
            traced = exported(x)
        for a, b in zip(traced, eager, strict=True):
            assert a.shape == b.shape
            fraction, ratio = agreement(a, b)
            assert fraction == 1.0 and ratio <= 1e-5, (shape, fraction, ratio)


# positional embedding ----------------------------------------------------------------------------


def _upstream_pos_embed(pos: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """DINOv2's interpolate_pos_encoding, written out independently for the test."""
    grid = pos[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((h + 0.1) / 37, (w + 0.1) / 37), mode='bicubic', antialias=False)
    return torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)), dim=1)


@pytest.mark.parametrize('h,w', [(10, 14), (20, 28), (44, 76), (37, 38), (3, 5)])
def test_pos_embed_matches_upstream_interpolation(small_net, h, w):
    encoder = small_net.depth_model.encoder
    with torch.no_grad():
        expected = _upstream_pos_embed(encoder.pos_embed, h, w)
        eager = encoder.pos_embed_for(h, w)
        dynamic = encoder._dynamic_pos_embed(h, w)
        by_size = F.interpolate(encoder.pos_embed[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2),
                                size=(h, w), mode='bicubic', antialias=False)
    assert torch.equal(eager, expected)
    torch.testing.assert_close(dynamic, expected, rtol=0, atol=1e-6)
    # an output size instead of the scale factor shifts the sampling grid: the test can tell them apart
    assert float((by_size.permute(0, 2, 3, 1).reshape(1, h * w, -1) - expected[:, 1:]).abs().max()) > 1e-4


def test_pos_embed_native_grid_is_not_interpolated(small_net):
    encoder = small_net.depth_model.encoder
    with torch.no_grad():
        assert torch.equal(encoder.pos_embed_for(37, 37), encoder.pos_embed)
        assert torch.equal(encoder._dynamic_pos_embed(37, 37), encoder.pos_embed)


def test_pos_embed_computed_once_per_size_and_refreshed_on_load(shared_dir):
    net = synthetic_network(shared_dir, 'small')
    encoder = net.depth_model.encoder
    with torch.no_grad():
        first = encoder.pos_embed_for(20, 28)
        assert encoder.pos_embed_for(20, 28) is first
        assert encoder.pos_embed_for(10, 14) is not first
        state = net.state_dict()
        state['depth_model.encoder.pos_embed'] = state['depth_model.encoder.pos_embed'] * 2.0
        net.load_state_dict(state, strict=True)
        refreshed = encoder.pos_embed_for(20, 28)
    assert refreshed is not first
    torch.testing.assert_close(refreshed, _upstream_pos_embed(encoder.pos_embed.detach(), 20, 28))


# resampling helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize('n', list(range(1, 25)) + [44, 76])
def test_nearest_3_5_matches_interpolate(n):
    x = torch.arange(2 * n * (n + 3), dtype=torch.float32).reshape(1, 2, n, n + 3)
    expected = F.interpolate(x, scale_factor=3.5, mode='nearest')
    assert torch.equal(nearest_upsample_3_5(x), expected)


@pytest.mark.parametrize('num,den', [(2, 1), (7, 4)])
@pytest.mark.parametrize('n', [1, 3, 20, 22, 41])
def test_bilinear_align_corners_matches_interpolate(num, den, n):
    x = torch.randn(1, 3, n, n + 2, generator=torch.Generator().manual_seed(n))
    expected = F.interpolate(x, scale_factor=num / den, mode='bilinear', align_corners=True)
    assert torch.equal(bilinear_align_corners(x, num, den), expected)


def test_convex_upsample_matches_unfold_formulation():
    gen = torch.Generator().manual_seed(4)
    flow = torch.randn(2, 6, 5, 7, generator=gen)
    mask = torch.randn(2, 9 * 16, 5, 7, generator=gen)
    weights = torch.softmax(mask.view(2, 1, 9, 4, 4, 5, 7), dim=2)
    patches = F.unfold(flow, [3, 3], padding=1).view(2, 6, 9, 1, 1, 5, 7)
    expected = torch.sum(weights * patches, dim=2).permute(0, 1, 4, 2, 5, 3).reshape(2, 6, 20, 28)
    torch.testing.assert_close(convex_upsample(flow, mask, 4), expected, rtol=0, atol=0)


def test_depth_bins_follow_input_device_and_dtype(small_net):
    decoder = small_net.depth_model.decoder
    bins = decoder.bins(torch.zeros(1, dtype=torch.float64))
    assert bins.dtype == torch.float64 and bins.shape == (256,)
    ends = torch.tensor([0.1, 200.0], dtype=torch.float64)
    torch.testing.assert_close(bins[[0, -1]], ends, rtol=1e-6, atol=0)
    ratios = bins[1:] / bins[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (2000.0) ** (1 / 255)), rtol=1e-5, atol=0)
    assert decoder.bins(torch.empty(1, device='meta')).device.type == 'meta'


def test_norm_normalize_unit_xyz_and_kappa():
    raw = torch.tensor([3.0, 0.0, 4.0, -50.0]).view(1, 4, 1, 1)
    out = norm_normalize(raw).flatten()
    torch.testing.assert_close(out[:3], torch.tensor([0.6, 0.0, 0.8]))
    assert abs(float(out[3]) - 0.01) < 1e-6  # elu(-50) + 1 + 0.01
