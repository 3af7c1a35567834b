"""EngineConfig validation: sizes, names, ranges, mapping construction."""
from __future__ import annotations

import pytest

from metric3d_ros.core.config import EngineConfig, OnnxRuntimeOptions, check_net_size, parse_net_size


def test_defaults_are_the_training_size_and_conformant():
    cfg = EngineConfig()
    assert cfg.net_hw == (616, 1064)
    assert cfg.precision == 'fp32'
    assert cfg.variant == 'small'
    assert cfg.canonical_focal_px == 1000.0


@pytest.mark.parametrize('alias,name', [('vit_small', 'small'), ('ViT_Large', 'large'),
                                        ('metric3d_vit_giant2', 'giant2'), ('giant2', 'giant2')])
def test_variant_aliases(alias, name):
    assert EngineConfig(variant=alias).variant == name


def test_unknown_variant_names_the_choices():
    with pytest.raises(ValueError, match='small, large or giant2'):
        EngineConfig(variant='vit_huge')


@pytest.mark.parametrize('h,w', [(600, 1064), (616, 1000), (0, 28), (-28, 28)])
def test_net_size_must_be_positive_multiples_of_28(h, w):
    with pytest.raises(ValueError, match='net_'):
        EngineConfig(net_height_px=h, net_width_px=w)


def test_net_size_error_suggests_neighbours():
    with pytest.raises(ValueError, match='use e.g. 588 or 616'):
        check_net_size(600, 1064)
    with pytest.raises(ValueError, match=r'use e\.g\. 28; the default'):  # below 28: no '28 or 28'
        check_net_size(10, 56)



def test_parse_net_size():
    assert parse_net_size('280x504') == (280, 504)
    with pytest.raises(ValueError, match='HEIGHTxWIDTH'):
        parse_net_size('280')


@pytest.mark.parametrize('field,value', [
    ('precision', 'int8'), ('preprocess', 'gpu'), ('attention', 'flash'), ('compile', 'yes'),
    ('max_batch_size', 0), ('max_batch_size', 2.5), ('warmup_iters', -1), ('canonical_focal_px', 0.0),
    ('cuda_graphs', 'true'), ('backend', ''),
    ('autocast_scope', 'decoder'), ('pipeline_depth', 0), ('pipeline_depth', 5), ('pipeline_depth', True),
    ('pipeline_depth', 2.0),
])
def test_bad_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        EngineConfig(**{field: value})


def test_from_mapping_accepts_net_size_and_nested_onnx_and_rejects_unknown_keys():
    cfg = EngineConfig.from_mapping({'net_size': '280x392', 'precision': 'bf16',
                                     'onnx': {'model_path': 'm.onnx', 'providers': ['CPUExecutionProvider']}})
    assert cfg.net_hw == (280, 392)
    assert cfg.onnx == OnnxRuntimeOptions(model_path='m.onnx', providers=('CPUExecutionProvider',))
    with pytest.raises(ValueError, match='unknown engine option'):
        EngineConfig.from_mapping({'presicion': 'bf16'})
    with pytest.raises(ValueError, match='unknown onnx option'):
        EngineConfig.from_mapping({'onnx': {'provider': 'x'}})


def test_config_is_frozen():
    cfg = EngineConfig()
    with pytest.raises(AttributeError):
        cfg.precision = 'bf16'  # type: ignore[misc]


# ------------------------------------------------------------------------- the engine-option declaration
def test_every_field_is_declared_once_with_its_constraints():
    import dataclasses

    from metric3d_ros.core.config import OPTION, OnnxRuntimeOptions, engine_options

    names = [o.name for o in engine_options()]
    expected = [f.name for f in dataclasses.fields(EngineConfig) if f.name != 'onnx']
    expected += [f'onnx.{f.name}' for f in dataclasses.fields(OnnxRuntimeOptions)]
    assert names == expected
    for f in dataclasses.fields(EngineConfig):
        assert f.name == 'onnx' or OPTION in f.metadata, f.name
    by_name = {o.name: o for o in engine_options()}
    assert by_name['pipeline_depth'].info.int_range == (1, 4, 1) and by_name['pipeline_depth'].info.node
    assert by_name['variant'].info.choices == ('small', 'large', 'giant2')
    assert by_name['precision'].info.choices == ('fp32', 'tf32', 'bf16', 'fp16')
    # the declared defaults are EngineConfig's
    cfg = EngineConfig()
    for opt in engine_options():
        if not opt.name.startswith('onnx.'):
            assert getattr(cfg, opt.name) == opt.default, opt.name
    assert by_name['pipeline_depth'].check(5) == 'got 5; use an integer in [1, 4]'
    assert 'unknown Metric3D variant' in by_name['variant'].check('vit_huge')
    assert by_name['variant'].check('ViT-S') is None


def test_command_line_flags_derive_from_the_declaration(capsys):
    import argparse

    from metric3d_ros.core.config import add_engine_arguments, engine_values_from_args

    p = argparse.ArgumentParser()
    add_engine_arguments(p, exclude=('max_batch_size',), multi=('precision',), defaults={'device': 'auto'})
    args = p.parse_args(['--variant', 'vit_large', '--no-cuda-graphs', '--pipeline-depth', '2',
                         '--precision', 'fp32', 'bf16', '--net-size', '280x392',
                         '--onnx-providers', 'CPUExecutionProvider', '--batch-buckets', '2', '4'])
    values = engine_values_from_args(args)
    assert 'max_batch_size' not in values and values['device'] == 'auto'
    assert values['precision'] == ['fp32', 'bf16']
    cfg = EngineConfig.from_mapping({**values, 'precision': 'bf16'})
    assert (cfg.variant, cfg.cuda_graphs, cfg.pipeline_depth, cfg.net_hw) == ('large', False, 2, (280, 392))
    assert cfg.onnx.providers == ('CPUExecutionProvider',) and cfg.batch_buckets == (2, 4)
    for bad, message in ((['--pipeline-depth', '9'], 'use an integer in [1, 4]'),
                         (['--variant', 'huge'], 'unknown Metric3D variant'),
                         (['--net-size', '100x100'], 'multiple of 28'),
                         (['--precision', 'fp8'], "invalid choice: 'fp8'")):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
        assert message in capsys.readouterr().err
    only = argparse.ArgumentParser()
    add_engine_arguments(only, include=('variant',))
    assert engine_values_from_args(only.parse_args([])) == {'variant': 'small'}


def test_variant_table_is_the_one_home():
    from metric3d_ros.core.model.specs import VARIANTS, get_spec, resolve_variant
    from metric3d_ros.core.model.weights import OFFICIAL_WEIGHTS

    assert tuple(VARIANTS) == ('small', 'large', 'giant2')
    for name, spec in VARIANTS.items():
        assert resolve_variant(name.upper()) == name and get_spec(name) is spec
        assert all(resolve_variant(alias) == name for alias in spec.aliases)
        assert OFFICIAL_WEIGHTS[name].name == spec.checkpoint_file
        assert OFFICIAL_WEIGHTS[name].sha256 == spec.checkpoint_sha256
    assert EngineConfig(variant='vit-g2').variant == 'giant2'
