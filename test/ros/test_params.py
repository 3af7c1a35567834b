"""Node parameters: engine parameters derived from the engine-option declaration, layout parameters and
their validation, declaration on a real rclpy node."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip('rclpy')

from metric3d_ros.core.config import EngineConfig, engine_options  # noqa: E402
from metric3d_ros.ros.params import (  # noqa: E402
    ENGINE_PARAMETERS,
    PARAMETERS,
    SPECS,
    ConfigError,
    GroupConfig,
    config_from_values,
    declare_parameters,
    read_node_config,
)

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('isolated_ros_env')]
CAMERAS = ['front', 'left', 'right']


def _config(**values):
    return config_from_values({'cameras': CAMERAS, **values})


def _problems(**values) -> str:
    with pytest.raises(ConfigError) as info:
        _config(**values)
    return str(info.value)


def test_every_node_engine_option_is_a_parameter_with_its_declared_constraints():
    declared = {o.name: o for o in engine_options() if o.info.node}
    assert {s.name for s in ENGINE_PARAMETERS} == set(declared)
    assert 'pipeline_depth' in SPECS and 'variant' in SPECS and 'onnx.model_path' in SPECS
    for name, opt in declared.items():
        spec = SPECS[name]
        assert spec.description == opt.info.description and spec.read_only == opt.info.read_only
        assert spec.int_range == opt.info.int_range and spec.float_range == opt.info.float_range
        assert (spec.choices or ()) == opt.info.choices
    assert SPECS['variant'].choices == ('small', 'large', 'giant2')
    assert SPECS['pipeline_depth'].int_range == (1, 4, 1) and SPECS['pipeline_depth'].read_only
    # the node's own defaults where they differ from EngineConfig's
    assert SPECS['device'].default == 'auto' and SPECS['max_batch_size'].default == 4
    assert len({s.name for s in PARAMETERS}) == len(PARAMETERS)


def test_removed_parameters_are_gone():
    for name in ('engine_process', 'publisher_processes', 'input_processes', 'publish_thread',
                 'malloc_tuning', 'gil_switch_interval_ms'):
        assert name not in SPECS


def test_engine_parameters_reach_the_engine_config():
    config = _config(pipeline_depth=2, variant='vit_large', precision='bf16', max_batch_size=3,
                     **{'onnx.providers': ['CPUExecutionProvider']})
    engine = config.engine
    assert isinstance(engine, EngineConfig)
    assert (engine.pipeline_depth, engine.variant, engine.precision) == (2, 'large', 'bf16')
    assert engine.max_batch_size == config.scheduler.max_batch_size == 3
    assert engine.onnx.providers == ('CPUExecutionProvider',)
    assert _config(pad_to_max_batch=True, max_batch_size=3).engine.batch_buckets == (3,)


def test_bad_engine_parameters_are_named_once_with_what_to_change():
    text = _problems(pipeline_depth=5, variant='vit_huge', precision='fp8', net_height_px=600)
    assert 'pipeline_depth: got 5; use an integer in [1, 4]' in text
    assert "variant: unknown Metric3D variant 'vit_huge': use small, large or giant2" in text
    assert 'precision: got \'fp8\'; use one of fp32, tf32, bf16, fp16' in text
    assert 'net_height_px: got 600; use an integer in [28, 2828] that is a multiple of 28' in text
    assert text.count('pipeline_depth') == 1  # not again from EngineConfig
    assert 'onnx.model_path: backend onnxruntime needs' in _problems(backend='onnxruntime')


def test_default_layout_is_one_group_with_every_camera_on_the_engine_device():
    config = _config()
    assert config.process_layout == 'in_process'
    assert config.groups == (GroupConfig('group0', tuple(CAMERAS), 'auto'),)
    assert config.engine_for(config.groups[0]) == config.engine


def test_groups_and_devices():
    config = _config(process_layout='group_workers', camera_groups=['front left', 'right'],
                     group_devices=['cuda:0', 'cuda:1'], device='cuda')
    assert config.process_layout == 'group_workers'
    assert config.groups == (GroupConfig('group0', ('front', 'left'), 'cuda:0'),
                             GroupConfig('group1', ('right',), 'cuda:1'))
    assert config.engine_for(config.groups[1]).device == 'cuda:1'
    assert config.engine_for(config.groups[1]).variant == config.engine.variant
    assert config.engine.device == 'cuda'
    with pytest.raises(ValueError, match='group7 is not a camera group'):
        config.engine_for(GroupConfig('group7', ('front',), 'cpu'))
    # commas and spaces both separate; devices default to the engine device
    groups = _config(camera_groups=['front,left', ' right '], device='cpu').groups
    assert [(g.cameras, g.device) for g in groups] == [(('front', 'left'), 'cpu'), (('right',), 'cpu')]


def test_node_config_is_frozen_and_picklable():
    config = _config(camera_groups=['front', 'left right'])
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(AttributeError):
        config.process_layout = 'group_workers'  # type: ignore[misc]


@pytest.mark.parametrize('values,message', [
    ({'camera_groups': ['front left', 'rear']},
     "camera_groups: entry 1 names 'rear', which is not in cameras ['front', 'left', 'right']; use only "
     'names from the cameras parameter'),
    ({'camera_groups': ['front left', 'left right']},
     "camera_groups: camera 'left' is in entries [0, 1]; put every camera in exactly one group"),
    ({'camera_groups': ['front left']},
     "camera_groups: camera(s) ['right'] are in no group; add each to one group"),
    ({'camera_groups': ['front left right', ' ']}, "camera_groups: entry 1 (' ') names no camera"),
    ({'camera_groups': ['front left', 'right'], 'group_devices': ['cuda:0']},
     'group_devices: 1 device(s) for 2 camera group(s); give exactly one device per group'),
    ({'group_devices': ['gpu0']},
     "group_devices: 'gpu0' is not a device; use 'cuda', 'cuda:N' (N = 0, 1, ...), 'cpu' or 'auto'"),
    ({'process_layout': 'threads'}, "process_layout: got 'threads'; use one of in_process, group_workers"),
    ({'camera_groups': 'front left'}, "camera_groups: got 'front left' (str); use a list of strings"),
])
def test_layout_problems_name_the_parameter_and_what_to_change(values, message):
    assert message in _problems(**values)


def test_declared_on_a_node_with_overrides():
    import rclpy
    from rclpy.parameter import Parameter

    rclpy.init()
    try:
        node = rclpy.create_node('params_test', parameter_overrides=[
            Parameter('cameras', value=CAMERAS),
            Parameter('camera_groups', value=['front', 'left right']),
            Parameter('pipeline_depth', value=2),
            Parameter('process_layout', value='group_workers'),
            Parameter('max_batch_size', value=100),  # outside the declared range: refused, reported
        ])
        problems = declare_parameters(node)
        assert len(problems) == 1 and problems[0].startswith('max_batch_size: the value given at start-up')
        descriptor = node.describe_parameter('pipeline_depth')
        assert descriptor.read_only and descriptor.integer_range[0].to_value == 4
        assert node.describe_parameter('variant').additional_constraints == 'one of: small, large, giant2'
        config = read_node_config(node)  # the refused value is not re-checked here
        assert config.engine.pipeline_depth == 2 and config.process_layout == 'group_workers'
        assert [g.cameras for g in config.groups] == [('front',), ('left', 'right')]
        assert config.groups[0].device == 'auto'  # group_devices unset: the engine device
        with pytest.raises(ConfigError, match='max_batch_size: the value given at start-up'):
            read_node_config(node, problems)
        node.destroy_node()
    finally:
        rclpy.shutdown()


def test_max_depth_m_above_upstreams_300_m_clamp_works_and_beyond_its_range_is_named():
    """Issue 16: the engine clamps nothing, so max_depth_m up to 1000 m reaches each request; beyond the
    declared range configure names the parameter."""
    config = _config(max_depth_m=1000.0)
    assert config.outputs.max_depth_m == 1000.0
    assert 'max_depth_m: got 5000.0; use a number in [0, 1000]' in _problems(max_depth_m=5000.0)


def test_unset_and_undeclared_parameters_are_named_with_what_to_change():
    from metric3d_ros.ros.params import UNDECLARED

    text = _problems(cameras=None, max_wait_ms=None, info_tolerance_ms=UNDECLARED)
    assert "cameras: not set (an empty list or a null in a params file leaves a parameter unset); give it " \
           "a value like the default ['camera']" in text
    assert 'max_wait_ms: not set' in text and 'like the default 15.0' in text
    assert 'info_tolerance_ms: not declared on the node any more; restart the node' in text
    assert _config(camera_groups=None, group_devices=None).groups[0].cameras == tuple(CAMERAS), \
        'an unset string-array parameter with an empty default is the empty list'


def test_stamp_and_size_parameters_reach_the_config():
    config = _config(max_future_ms=250.0, stamp_restart_ms=-1.0, max_image_megapixels=12.0)
    assert (config.scheduler.max_future_ms, config.scheduler.stamp_restart_ms) == (250.0, -1.0)
    assert config.max_image_megapixels == 12.0
    assert 'max_future_ms must be > 0' in _problems(max_future_ms=0.0)
    text = _problems(max_image_megapixels=0.0)
    assert 'max_image_megapixels: got 0.0; use a number in [0.001, 1000]' in text


# ------------------------------------------------------------------------------ fused cloud (issue 17)
_LOOK_X = [-0.5, 0.5, -0.5, 0.5]  # optical z along base_link x


def _static(camera, parent='base_link', translation=(0.1, 0.0, 1.0), rotation=_LOOK_X):
    return {f'extrinsics.{camera}.parent_frame': parent,
            f'extrinsics.{camera}.translation_m': list(translation),
            f'extrinsics.{camera}.rotation_xyzw': list(rotation)}


def test_fused_is_off_by_default_and_static_extrinsics_reach_the_config():
    assert _config().fused is None
    values = {'fused.enabled': True, 'fused.voxel_m': 0.05, 'fused.stride': 4, 'fused.max_range_m': 20.0,
              'fused.min_height_m': 0.05, 'fused.max_height_m': 2.0}
    for cam in CAMERAS:
        values.update(_static(cam))
    config = _config(**values)
    fused = config.fused
    assert fused.source == 'static' and set(fused.static) == set(CAMERAS)  # auto: static extrinsics given
    assert fused.fusion.voxel_m == 0.05 and fused.fusion.stride == 4 and fused.fusion.max_range_m == 20.0
    assert (fused.fusion.min_height_m, fused.fusion.max_height_m) == (0.05, 2.0)
    assert fused.camera_index == {'front': 0, 'left': 1, 'right': 2}
    assert fused.static['left'].translation_m == (0.1, 0.0, 1.0)
    assert pickle.loads(pickle.dumps(config)) == config  # group workers get it pickled


def test_fused_rig_file_and_parameters_win(tmp_path):
    rig = tmp_path / 'rig.json'
    rig.write_text('{"cameras": {"front": {"T_vehicle_camera": {"rotation_wxyz": [0.5, -0.5, 0.5, -0.5], '
                   '"translation_xyz": [1.0, 0.0, 1.5]}}, "left": {"T_vehicle_camera": {"rotation_wxyz": '
                   '[1, 0, 0, 0], "translation_xyz": [0, 0, 0]}}}}')
    config = _config(**{'fused.enabled': True, 'fused.rig_file': str(rig), **_static('left'),
                        **_static('right', translation=(0.0, -0.2, 1.0))})
    static = config.fused.static
    assert static['front'].translation_m == (1.0, 0.0, 1.5)
    assert static['front'].rotation_xyzw == pytest.approx(tuple(_LOOK_X))
    assert static['left'].translation_m == (0.1, 0.0, 1.0)  # the parameters win over the rig file


@pytest.mark.parametrize('values,message', [
    ({**_static('front'), **_static('left')},
     "extrinsics: no static extrinsics for camera(s) ['right']; set extrinsics.<camera>.parent_frame "
     "('base_link'), .translation_m and .rotation_xyzw, or list them in fused.rig_file"),
    ({**_static('front', parent='odom'), **_static('left'), **_static('right')},
     "extrinsics.front.parent_frame: 'odom' is not fused.base_frame 'base_link'; static extrinsics are not "
     'chained'),
    ({**_static('front', rotation=(0.0, 0.0, 0.0, 3.0)), **_static('left'), **_static('right')},
     'extrinsics.front.translation_m / extrinsics.front.rotation_xyzw: rotation_xyzw must be a unit '
     'quaternion'),
    ({'extrinsics.front.parent_frame': 'base_link', **_static('left'), **_static('right')},
     'extrinsics.front.translation_m, extrinsics.front.rotation_xyzw: not set; give all three'),
    ({'fused.rig_file': '/nonexistent/rig.json'}, 'fused.rig_file: [Errno 2]'),
    ({'fused.extrinsics_source': 'tf'}, 'fused.extrinsics_source: tf needs tf2_ros, which is not importable'),
    ({'fused.voxel_m': 0.0001}, 'fused.*: voxel_m must be 0 (no voxel decimation) or in [0.001, 100]'),
    ({'fused.min_height_m': 2.0, 'fused.max_height_m': 1.0}, 'fused.*: need finite min_height_m < '
     'max_height_m'),
])
def test_fused_problems_name_the_parameter_and_what_to_change(values, message):
    from metric3d_ros.ros.params import tf2_available

    if 'tf needs tf2_ros' in message and tf2_available():
        pytest.skip('tf2_ros is importable here: the tf source is valid')
    assert message in _problems(**{'fused.enabled': True, **values})


def test_extrinsics_parameters_are_declared_per_camera_and_read_at_configure():
    import rclpy
    from rclpy.parameter import Parameter

    from metric3d_ros.ros.params import declare_extrinsics

    rclpy.init()
    try:
        overrides = [Parameter('cameras', value=['front']), Parameter('fused.enabled', value=True)]
        overrides += [Parameter(name, value=value) for name, value in _static('front').items()]
        node = rclpy.create_node('params_fused', parameter_overrides=overrides)
        declare_parameters(node)
        declare_extrinsics(node, ['front'])
        assert node.describe_parameter('extrinsics.front.translation_m').dynamic_typing
        config = read_node_config(node)
        assert config.fused.static['front'].translation_m == (0.1, 0.0, 1.0)
        node.set_parameters([Parameter('cameras', value=['front', 'rear'])])
        with pytest.raises(ConfigError, match=r"no static extrinsics for camera\(s\) \['rear'\]"):
            read_node_config(node)  # rear's parameters are declared at configure, unset
        assert node.has_parameter('extrinsics.rear.parent_frame')
        node.destroy_node()
    finally:
        rclpy.shutdown()


def test_fused_and_extrinsics_from_a_params_file_keyed_for_any_node(tmp_path):
    import rclpy

    from metric3d_ros.ros.params import declare_extrinsics

    params = tmp_path / 'fused.yaml'
    params.write_text('''/**:
  ros__parameters:
    cameras: [front, left]
    fused:
      enabled: true
      voxel_m: 0.05
      min_height_m: 0.05
      max_height_m: 2.0
    extrinsics:
      front:
        parent_frame: base_link
        translation_m: [0.20, 0.0, 1.10]
        rotation_xyzw: [-0.5, 0.5, -0.5, 0.5]
      left:
        parent_frame: base_link
        translation_m: [0.0, 0.15, 1.10]
        rotation_xyzw: [-0.7071068, 0.0, 0.0, 0.7071068]
''')
    context = rclpy.Context()
    rclpy.init(args=['--ros-args', '--params-file', str(params)], context=context)
    try:
        node = rclpy.create_node('any_name', context=context)
        assert declare_parameters(node) == []
        declare_extrinsics(node, node.get_parameter('cameras').value)
        config = read_node_config(node)
        fused = config.fused
        assert fused.source == 'static' and fused.fusion.voxel_m == 0.05
        assert fused.static['left'].translation_m == (0.0, 0.15, 1.1)
        optical_z = fused.static['left'].rotation_matrix()[:, 2]
        np.testing.assert_allclose(optical_z, [0.0, 1.0, 0.0], atol=1e-6)  # the left camera looks along +y
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
