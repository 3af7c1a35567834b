"""Checkpoint loading: safe reading, strict key/shape checks, aliases, mask_token, variant detection,
synthetic weights equal to the shared reference rules."""
from __future__ import annotations

import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from metric3d_ros.core.model.checkpoint import (
    MASK_TOKEN_KEY,
    CheckpointError,
    StateLayout,
    detect_variant,
    load_into,
    normalize_state_dict,
    read_checkpoint,
    validate_state_dict,
)
from metric3d_ros.core.model.synthetic import synthetic_state_dict, synthetic_tensor

torch.set_num_threads(2)

ALIAS_KEY = 'depth_model.decoder.context_feature_encoder.outputs04.0.0.downsample.1.weight'
ALIAS_TARGET = 'depth_model.decoder.context_feature_encoder.outputs04.0.0.norm3.weight'


# ----------------------------------------------------------------------------------------------- helpers
def _shared_synth(shared_dir: Path):
    """The shared reference module synth_weights.py (read in place, never copied)."""
    path = shared_dir / 'reference' / 'metric3d' / 'synth_weights.py'
    spec = importlib.util.spec_from_file_location('shared_synth_weights', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def synth(shared_dir):
    return _shared_synth(shared_dir)


@pytest.fixture(scope='module')
def manifests(shared_dir, synth):
    folder = shared_dir / 'reference' / 'metric3d'
    return {v: synth.read_manifest(folder / f'keys_vit_{v}.tsv') for v in ('small', 'large', 'giant2')}


@pytest.fixture(scope='module')
def small_layout(manifests) -> StateLayout:
    return StateLayout.from_manifest_rows(manifests['small'])


@pytest.fixture(scope='module')
def small_state(small_layout) -> dict[str, torch.Tensor]:
    """Synthetic ViT-S weights (aliases share a tensor, as in a saved model.state_dict())."""
    return synthetic_state_dict(small_layout)


def _meta_state(rows) -> dict[str, torch.Tensor]:
    """Shape-only tensors of a manifest: enough for variant detection, no memory."""
    return {key: torch.empty(shape, device='meta') for key, shape, _ in rows}


def stand_in_module(layout: StateLayout, device: str = 'cpu') -> nn.Module:
    """An nn.Module tree whose state_dict has exactly ``layout``'s keys and shapes; an alias name is the
    same submodule registered twice, as upstream registers its LayerNorm as norm3 and downsample.1."""
    root = nn.Module()
    modules: dict[str, nn.Module] = {'': root}

    def module_at(path: str) -> nn.Module:
        if path not in modules:
            parent, _, name = path.rpartition('.')
            modules[path] = nn.Module()
            module_at(parent).add_module(name, modules[path])
        return modules[path]

    for key, shape in layout.shapes.items():
        path, _, name = key.rpartition('.')
        target = layout.aliases.get(key)
        if target is None:
            module_at(path).register_parameter(name, nn.Parameter(torch.zeros(shape, device=device)))
        elif path not in modules:
            shared = module_at(target.rpartition('.')[0])
            parent, _, child = path.rpartition('.')
            module_at(parent).add_module(child, shared)
            modules[path] = shared
    return root


def _bytes_of(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# ------------------------------------------------------------------------------ synthetic weights == shared
def test_synthetic_weights_equal_shared_reference_small_bitwise(synth, manifests, small_state):
    reference = synth.synth_state_dict(manifests['small'])
    assert list(small_state) == list(reference)
    for key, expected in reference.items():
        got = small_state[key].numpy()
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        assert np.array_equal(got.view(np.uint8), expected.view(np.uint8)), f'{key} differs'


@pytest.mark.parametrize('key,shape', [
    ('a.running_var', (5,)), ('a.num_batches_tracked', ()), ('x.pos_embed', (1, 3, 4)), ('x.ls1.gamma', (7,)),
    ('a.conv.weight', (4, 3, 2, 2)), ('a.norm.weight', (6,)), ('a.conv.bias', (6,)), ('a.running_mean', (6,)),
])
def test_synthetic_tensor_rules_match_shared(synth, key, shape):
    expected = synth.synth_tensor(key, shape)
    got = synthetic_tensor(key, shape)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)


# ------------------------------------------------------------------------------------------ read_checkpoint
def test_official_format_round_trip_and_aliases_share_storage(tmp_path, small_state):
    path = tmp_path / 'metric_depth_vit_small_800k.pth'
    torch.save({'model_state_dict': small_state}, path)
    state = read_checkpoint(path)
    assert list(state) == list(small_state)
    assert all(torch.equal(state[k], v) for k, v in small_state.items())
    assert state[ALIAS_KEY].data_ptr() == state[ALIAS_TARGET].data_ptr()


@pytest.mark.parametrize('wrap', [
    lambda sd: sd,
    lambda sd: {'model_state_dict': sd, 'epoch': 3},
    lambda sd: {'state_dict': sd},
    lambda sd: {'model': sd},
    lambda sd: {'model_state_dict': {f'module.{k}': v for k, v in sd.items()}},
    lambda sd: {f'module.module.{k}': v for k, v in sd.items()},
], ids=['bare', 'model_state_dict', 'state_dict', 'model', 'ddp', 'ddp-twice'])
def test_containers_and_prefixes(tmp_path, wrap):
    sd = {'depth_model.a.weight': torch.ones(2, 3), 'depth_model.b.bias': torch.zeros(4)}
    path = tmp_path / 'c.pth'
    torch.save(wrap(sd), path)
    got = read_checkpoint(path)
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_legacy_serialization_format_reads(tmp_path):
    path = tmp_path / 'legacy.pth'
    torch.save({'model_state_dict': {'a': torch.arange(3.0)}}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(path)['a'], torch.arange(3.0))


class _Payload:
    """Unpickling this would run _touch (it must never happen)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (str(self.marker),))


def _touch(path: str) -> None:
    Path(path).write_text('unpickled!')


def test_arbitrary_objects_are_never_unpickled(tmp_path):
    marker = tmp_path / 'marker'
    path = tmp_path / 'evil.pth'
    torch.save({'model_state_dict': {'a': torch.zeros(2)}, 'extra': _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    msg = str(info.value)
    assert 'weights_only' in msg and str(path) in msg and '_touch' in msg
    assert not marker.exists(), 'the payload ran: the loader unpickled an arbitrary object'
    with pytest.raises(CheckpointError, match='weights_only'):
        from metric3d_ros.core.model import load_metric3d
        load_metric3d(path)
    assert not marker.exists()


@pytest.mark.parametrize('content,cause', [
    ('half', 'zip archive'), ('junk', 'KeyError'), ('empty', 'EOFError'),
])
def test_corrupt_files_name_the_file_and_cause(tmp_path, content, cause):
    good = _bytes_of({'model_state_dict': {'a': torch.zeros(1000)}})
    data = {'half': good[: len(good) // 2], 'junk': b'hello world' * 10, 'empty': b''}[content]
    path = tmp_path / f'{content}.pth'
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and cause in str(info.value)
    assert 'download it again' in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r'nope\.pth does not exist'):
        read_checkpoint(tmp_path / 'nope.pth')


def test_non_tensor_entries_are_listed():
    with pytest.raises(CheckpointError, match=r"\['model_state_dict'\] is not a state dict of tensors: b, c"):
        normalize_state_dict({'model_state_dict': {'a': torch.zeros(1), 'b': 1, 'c': 'x'}}, source='f.pth')
    with pytest.raises(CheckpointError, match='holds a list'):
        normalize_state_dict([torch.zeros(1)])


# ---------------------------------------------------------------------------------------- validation rules
def test_complete_state_validates_and_mask_token_may_be_missing(small_layout, small_state):
    assert validate_state_dict(small_state, small_layout).keys() == small_state.keys()
    without = {k: v for k, v in small_state.items() if k != MASK_TOKEN_KEY}
    assert MASK_TOKEN_KEY not in validate_state_dict(without, small_layout)


def test_every_single_key_removed_renamed_or_reshaped_is_named(small_layout, small_state):
    """Loops over ALL ViT-S keys with the state-dict-level validator (no model is built)."""
    checked = 0
    for key, tensor in small_state.items():
        if key == MASK_TOKEN_KEY:
            continue
        removed = {k: v for k, v in small_state.items() if k != key}
        with pytest.raises(CheckpointError) as info:
            validate_state_dict(removed, small_layout)
        assert key in str(info.value) and info.value.missing_keys == (key,), key

        renamed = dict(removed)
        renamed[key + '_renamed'] = tensor
        with pytest.raises(CheckpointError) as info:
            validate_state_dict(renamed, small_layout)
        assert f'{key}_renamed (shape {tuple(tensor.shape)}, did you mean {key}?)' in str(info.value), key
        assert info.value.unexpected_keys == (key + '_renamed',)

        bad_shape = (*tensor.shape[:-1], tensor.shape[-1] + 1) if tensor.dim() else (2,)
        reshaped = dict(small_state)
        reshaped[key] = torch.zeros(bad_shape)
        with pytest.raises(CheckpointError) as info:
            validate_state_dict(reshaped, small_layout)
        assert f'{key}: expected {tuple(tensor.shape)}, found {bad_shape}' in str(info.value), key
        checked += 1
    assert checked == len(small_layout.shapes) - 1 == 361


def test_mask_token_reshaped_is_still_an_error(small_layout, small_state):
    state = dict(small_state)
    state[MASK_TOKEN_KEY] = torch.zeros(1, 7)
    with pytest.raises(CheckpointError, match=f'{MASK_TOKEN_KEY}: expected'):
        validate_state_dict(state, small_layout)


def test_alias_name_missing_is_an_error_unless_filled(small_layout, small_state):
    for gone, kept in ((ALIAS_KEY, ALIAS_TARGET), (ALIAS_TARGET, ALIAS_KEY)):
        state = {k: v for k, v in small_state.items() if k != gone}
        with pytest.raises(CheckpointError) as info:
            validate_state_dict(state, small_layout)
        assert f'{gone} (expected shape (48,); same tensor as {kept}, which is present' in str(info.value)
        filled = validate_state_dict(state, small_layout, fill_aliases=True)
        assert filled[gone] is small_state[kept]


def test_only_one_name_of_every_alias_pair_loads_with_fill_aliases(small_layout, small_state):
    deduplicated = {k: v for k, v in small_state.items() if k not in small_layout.aliases}
    assert len(small_state) - len(deduplicated) == 12
    assert validate_state_dict(deduplicated, small_layout, fill_aliases=True).keys() == small_state.keys()


def test_alias_names_with_different_values_are_an_error(small_layout, small_state):
    state = dict(small_state)
    state[ALIAS_KEY] = small_state[ALIAS_TARGET] + 1.0
    pattern = f'(?s)holding different values.*{ALIAS_KEY} and {ALIAS_TARGET}'
    with pytest.raises(CheckpointError, match=pattern):
        validate_state_dict(state, small_layout)
    state[ALIAS_KEY] = small_state[ALIAS_TARGET].clone()  # equal values in separate storage are fine
    validate_state_dict(state, small_layout)


def test_integer_tensor_in_a_float_slot_is_an_error(small_layout, small_state):
    state = dict(small_state)
    state['depth_model.encoder.norm.bias'] = torch.zeros(384, dtype=torch.int64)
    with pytest.raises(CheckpointError, match=r'(?s)floating point.*encoder\.norm\.bias \(torch\.int64\)'):
        validate_state_dict(state, small_layout)


def test_many_problems_are_listed_together_and_capped(small_layout, small_state, manifests):
    state = {k: v for k, v in small_state.items() if 'encoder.blocks' not in k}
    with pytest.raises(CheckpointError) as info:
        validate_state_dict(state, small_layout, source='x.pth')
    msg = str(info.value)
    assert msg.startswith(f'x.pth does not fit the network (only {MASK_TOKEN_KEY} may be missing)')
    assert 'missing keys (168)' in msg and '... and 128 more' in msg
    assert len(info.value.missing_keys) == 168


# ---------------------------------------------------------------------------------------- variant detection
@pytest.mark.parametrize('variant', ['small', 'large', 'giant2'])
def test_detect_variant_from_manifests(manifests, variant):
    assert detect_variant(_meta_state(manifests[variant])) == variant


def test_detect_variant_unknown_width_or_block_count(manifests):
    state = _meta_state(manifests['small'])
    state['depth_model.encoder.cls_token'] = torch.empty(1, 1, 768, device='meta')
    with pytest.raises(CheckpointError, match=r'width 768\) and there are 12 encoder blocks; known: small'):
        detect_variant(state, source='b.pth')
    state = {k: v for k, v in _meta_state(manifests['large']).items() if 'blocks.0.23.' not in k}
    with pytest.raises(CheckpointError, match='there are 23 encoder blocks'):
        detect_variant(state)
    with pytest.raises(CheckpointError, match='not a Metric3D v2 ViT checkpoint'):
        detect_variant({'depth_model.encoder.stem.weight': torch.zeros(1)})


# --------------------------------------------------------------------------------- load_into (stand-in net)
def test_load_into_stand_in_module(small_layout, small_state):
    model = stand_in_module(small_layout)
    layout = StateLayout.from_module(model)
    assert list(layout.shapes.items()) == list(small_layout.shapes.items())
    assert dict(layout.aliases) == dict(small_layout.aliases)
    sd = {f'module.{k}': v for k, v in small_state.items() if k != MASK_TOKEN_KEY}
    assert load_into(model, {'model_state_dict': sd}, variant='small') is model
    loaded = model.state_dict()
    assert torch.count_nonzero(loaded[MASK_TOKEN_KEY]) == 0, 'mask_token keeps the model value'
    for key, value in small_state.items():
        if key != MASK_TOKEN_KEY:
            assert torch.equal(loaded[key], value), key


def test_load_into_stand_in_reports_bad_key(small_layout, small_state):
    model = stand_in_module(small_layout)
    key = 'depth_model.decoder.update_block.gru08.convz.weight'
    sd = dict(small_state)
    sd[key] = torch.zeros(48, 102, 3, 1)
    expected = re.escape(f'{key}: expected (48, 102, 3, 3), found (48, 102, 3, 1)')
    with pytest.raises(CheckpointError, match=expected):
        load_into(model, sd)


def test_variant_mismatch_says_what_to_set(small_layout, manifests):
    large = _meta_state(manifests['large'])
    with pytest.raises(CheckpointError) as info:
        load_into(stand_in_module(small_layout, device='meta'), large, variant='small', source='ck.pth')
    assert str(info.value) == (
        "ck.pth is ViT-L (metric_depth_vit_large_800k.pth) but variant='small' was configured: set variant "
        "to 'large' (or leave it unset to detect it) or use metric_depth_vit_small_800k.pth")
    pattern = r"ViT-L .* but the network was built as ViT-S .*variant='large'"
    with pytest.raises(CheckpointError, match=pattern):
        load_into(stand_in_module(small_layout, device='meta'), large, source='ck.pth')


def test_package_import_is_torch_free_and_exports_load_metric3d():
    code = ('import sys, metric3d_ros.core.model as m; t = "torch" in sys.modules; '
            'print(t, callable(m.load_metric3d), m.CheckpointError.__name__)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ['False', 'True', 'CheckpointError']


# ------------------------------------------------------------------------------- the real network (ViT-S)
from metric3d_ros.core.model import load_metric3d  # noqa: E402
from metric3d_ros.core.model.synthetic import network_layout, write_synthetic_checkpoint  # noqa: E402

SAMPLE_KEYS = (
    ALIAS_KEY,
    ALIAS_TARGET,
    'depth_model.decoder.context_feature_encoder.outputs16.1.0.downsample.1.bias',
    'depth_model.encoder.cls_token',
    'depth_model.encoder.pos_embed',
    'depth_model.encoder.register_tokens',
    'depth_model.encoder.patch_embed.proj.weight',
    'depth_model.encoder.blocks.0.5.attn.qkv.weight',
    'depth_model.encoder.blocks.0.11.ls2.gamma',
    'depth_model.encoder.norm.bias',
    'depth_model.decoder.token2feature.read_1.sample.weight',
    'depth_model.decoder.decoder_mono.upconv_2.out_conv.bias',
    'depth_model.decoder.depth_regressor.2.weight',
    'depth_model.decoder.normal_predictor.6.bias',
    'depth_model.decoder.context_zqr_convs.1.weight',
    'depth_model.decoder.update_block.mask.2.weight',
)


def _edit(state: dict[str, torch.Tensor], key: str, edit: str) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in state.items() if k != key}
    if edit == 'rename':
        out[key.replace('depth_model.', 'depth_model.x', 1)] = state[key]
    elif edit == 'reshape':
        shape = state[key].shape
        out[key] = torch.zeros(*shape[:-1], shape[-1] + 1)
    return out


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp('ckpt')
    return write_synthetic_checkpoint(folder / 'metric_depth_vit_small_800k.pth', 'small')


@pytest.mark.parametrize('variant', ['small', 'large', 'giant2'])
def test_network_layout_is_the_official_layout(manifests, variant):
    layout = network_layout(variant)
    expected = StateLayout.from_manifest_rows(manifests[variant])
    assert list(layout.shapes.items()) == list(expected.shapes.items())
    assert dict(layout.aliases) == dict(expected.aliases)


def test_synthetic_weights_from_the_network_equal_shared_reference(synth, manifests):
    reference = synth.synth_state_dict(manifests['small'])
    ours = synthetic_state_dict('small')
    assert list(ours) == list(reference)
    assert all(np.array_equal(ours[k].numpy().view(np.uint8), v.view(np.uint8)) for k, v in reference.items())


def test_load_metric3d_official_format_small(small_checkpoint, small_state):
    net = load_metric3d(small_checkpoint)
    assert not net.training and net.variant == 'small'
    loaded = net.state_dict(keep_vars=True)
    assert list(loaded) == list(small_state)
    for key, value in small_state.items():
        assert loaded[key].dtype == torch.float32 and loaded[key].device.type == 'cpu', key
        assert torch.equal(loaded[key], value), key
    assert loaded[ALIAS_KEY] is loaded[ALIAS_TARGET], 'the aliased LayerNorm must stay one module'
    with torch.no_grad():
        depth, confidence, normal = net(torch.zeros(2, 3, 56, 84))
    assert (depth.shape, confidence.shape, normal.shape) == ((2, 1, 56, 84), (2, 1, 56, 84), (2, 4, 56, 84))
    assert torch.isfinite(depth).all() and torch.isfinite(normal).all()


def test_load_metric3d_from_state_dict_copies_and_tolerates_missing_mask_token(small_state):
    state = {k: v for k, v in small_state.items() if k != MASK_TOKEN_KEY}
    net = load_metric3d({'model_state_dict': state}, variant='vit_small')
    params = net.state_dict()
    assert torch.count_nonzero(params[MASK_TOKEN_KEY]) == 0
    key = 'depth_model.encoder.norm.weight'
    assert torch.equal(params[key], small_state[key])
    assert params[key].data_ptr() != small_state[key].data_ptr(), "a caller's tensor became a parameter"


def test_load_metric3d_file_without_mask_token_or_with_one_alias_name(tmp_path, small_state):
    path = tmp_path / 'no_mask.pth'
    torch.save({'model_state_dict': {k: v for k, v in small_state.items() if k != MASK_TOKEN_KEY}}, path)
    net = load_metric3d(path)
    assert net.state_dict()[MASK_TOKEN_KEY].device.type == 'cpu'
    assert torch.count_nonzero(net.state_dict()[MASK_TOKEN_KEY]) == 0
    path = tmp_path / 'dedup.pth'
    torch.save({k: v for k, v in small_state.items() if k != ALIAS_KEY}, path)
    with pytest.raises(CheckpointError, match=f'{re.escape(ALIAS_KEY)} .*fill_aliases=True'):
        load_metric3d(path)
    net = load_metric3d(path, fill_aliases=True)
    assert torch.equal(net.state_dict()[ALIAS_KEY], small_state[ALIAS_TARGET])


def test_load_metric3d_variant_mismatch_names_file_and_fix(small_checkpoint):
    with pytest.raises(CheckpointError) as info:
        load_metric3d(small_checkpoint, variant='large')
    assert str(info.value) == (
        f"{small_checkpoint} is ViT-S (metric_depth_vit_small_800k.pth) but variant='large' was configured: "
        "set variant to 'small' (or leave it unset to detect it) or use metric_depth_vit_large_800k.pth")
    with pytest.raises(CheckpointError, match="unknown Metric3D variant 'base'"):
        load_metric3d(small_checkpoint, variant='base')


def test_load_metric3d_rejects_other_inputs():
    with pytest.raises(TypeError, match='checkpoint path or a state dict'):
        load_metric3d(42)


@pytest.mark.parametrize('edit', ['remove', 'rename', 'reshape'])
@pytest.mark.parametrize('key', SAMPLE_KEYS)
def test_load_metric3d_names_a_removed_renamed_or_reshaped_key(small_state, key, edit):
    with pytest.raises(CheckpointError) as info:
        load_metric3d(_edit(small_state, key, edit))
    assert key in str(info.value)


@pytest.mark.parametrize('edit', ['remove', 'rename', 'reshape'])
def test_edited_checkpoint_files_fail_naming_the_key(tmp_path, small_state, edit):
    key = 'depth_model.decoder.update_block.gru16.convq.bias'
    path = tmp_path / f'{edit}.pth'
    torch.save({'model_state_dict': _edit(small_state, key, edit)}, path)
    with pytest.raises(CheckpointError) as info:
        load_metric3d(path)
    assert key in str(info.value) and str(path) in str(info.value)


@pytest.mark.slow
def test_load_metric3d_official_format_large(tmp_path):
    path = write_synthetic_checkpoint(tmp_path / 'metric_depth_vit_large_800k.pth', 'large')
    net = load_metric3d(path)
    assert net.variant == 'large' and not net.training
    params = net.state_dict()
    assert len(params) == 530
    for key in ('depth_model.encoder.blocks.0.23.mlp.fc2.weight', 'depth_model.encoder.pos_embed', ALIAS_KEY,
                'depth_model.decoder.update_block.mask.2.bias'):
        expected = synthetic_tensor(ALIAS_TARGET if key == ALIAS_KEY else key, tuple(params[key].shape))
        assert np.array_equal(params[key].numpy(), expected), key
    with pytest.raises(CheckpointError, match="ViT-L .* but variant='small'"):
        load_metric3d(path, variant='small')
