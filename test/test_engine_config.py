"""EngineConfig validation: sizes, names, ranges, mapping construction."""
from __future__ import annotations

import pytest

from metric3d_ros.core.config import EngineConfig, OnnxRuntimeOptions, check_net_size, parse_net_size


def test_defaults_are_the_training_size_and_conformant():
    cfg = EngineConfig()
    assert cfg.net_hw == (616, 1064)
    assert cfg.precision == 'fp32'
    assert cfg.variant == 'small'
    assert (cfg.min_depth_m, cfg.max_depth_m) == (0.0, 300.0)
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
    ('min_depth_m', -1.0), ('max_depth_m', 0.0), ('cuda_graphs', 'true'), ('backend', ''),
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
