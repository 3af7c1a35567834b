"""launch/depth.launch.py without launch_ros: static checks, and a run against stub launch modules."""
from __future__ import annotations

import ast
import importlib.util
import sys
import types

import pytest
import yaml
from conftest import REPO_ROOT

LAUNCH_FILE = REPO_ROOT / 'launch' / 'depth.launch.py'
PARAMS_FILE = REPO_ROOT / 'config' / 'depth.yaml'
PROFILE = REPO_ROOT / 'config' / 'fastdds_shm.xml'


def _tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO_ROOT / 'setup.py').read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ' = ' in node.value:
            name, _, target = node.value.partition(' = ')
            scripts[name.strip()] = target.strip()
    return scripts


def test_launch_file_parses_and_uses_no_shell_eval_or_subprocess():
    tree = _tree()
    forbidden_calls = {'eval', 'exec', 'compile', '__import__', 'system', 'popen', 'Popen', 'run',
                       'check_output', 'ExecuteProcess'}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n and n.split('.')[0] in ('subprocess', 'shlex') for n in names), ast.dump(node)
        if isinstance(node, ast.Call):
            func = node.func
            name = getattr(func, 'id', None) or getattr(func, 'attr', '')
            assert name not in forbidden_calls, f'launch file calls {name}() at line {node.lineno}'
        if isinstance(node, ast.Name) and node.id == 'PythonExpression':
            raise AssertionError('launch file uses PythonExpression (an eval)')


def test_launch_file_names_the_installed_executable_and_package():
    tree = _tree()
    constants = {
        t.id: node.value.value
        for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for t in node.targets if isinstance(t, ast.Name)
    }
    assert constants['PACKAGE'] == 'metric3d_ros'
    assert constants['EXECUTABLE'] == 'depth_node'
    assert constants['NODE_NAME'] == 'metric3d_depth'
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    node_calls = [n for n in calls if getattr(n.func, 'id', '') == 'Node']
    assert len(node_calls) == 1
    keywords = {k.arg: k.value for k in node_calls[0].keywords}
    assert getattr(keywords['package'], 'id', None) == 'PACKAGE'
    assert getattr(keywords['executable'], 'id', None) == 'EXECUTABLE'
    # The executable is a console script of the package that points at the node's main().
    assert _console_scripts().get('depth_node') == 'metric3d_ros.ros.node:main'
    # ... and the package name matches package.xml.
    assert '<name>metric3d_ros</name>' in (REPO_ROOT / 'package.xml').read_text()


def test_default_params_file_exists_and_is_installed():
    text = LAUNCH_FILE.read_text()
    assert "PathJoinSubstitution([share, 'config', 'depth.yaml'])" in text
    assert PARAMS_FILE.is_file() and PROFILE.is_file()
    setup_text = (REPO_ROOT / 'setup.py').read_text()
    assert "glob('config/*.yaml')" in setup_text and "glob('config/*.xml')" in setup_text
    assert "glob('launch/*.py')" in setup_text
    data = yaml.safe_load(PARAMS_FILE.read_text())
    params = data['metric3d_depth']['ros__parameters']
    assert params['cameras'] and all(isinstance(c, str) for c in params['cameras'])


def test_default_params_file_matches_the_declared_parameters():
    pytest.importorskip('rclpy')
    from metric3d_ros.ros.params import SPECS, config_from_values

    params = yaml.safe_load(PARAMS_FILE.read_text())['metric3d_depth']['ros__parameters']

    def flatten(prefix, mapping):
        for key, value in mapping.items():
            name = f'{prefix}{key}'
            if isinstance(value, dict):
                yield from flatten(f'{name}.', value)
            else:
                yield name, value

    flat = dict(flatten('', params))
    assert sorted(set(flat) - set(SPECS)) == [], 'depth.yaml sets parameters the node does not declare'
    assert sorted(set(SPECS) - set(flat)) == [], 'depth.yaml should document every parameter'
    for name, value in flat.items():
        default = SPECS[name].default
        assert type(value) is type(default) or (isinstance(default, list) and isinstance(value, list)), name
    config = config_from_values(flat)  # the shipped file must validate
    assert config.cameras == ('front', 'left', 'right')


# ------------------------------------------------------------------------------------- stub launch modules
class _Action:
    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


class _PathJoin:
    def __init__(self, parts):
        self.parts = parts


class _FindPackageShare:
    def __init__(self, package):
        self.package = package


class _Context:
    def __init__(self, values):
        self.launch_configurations = values


@pytest.fixture()
def launch_module(monkeypatch):
    def module(name, **attrs):
        mod = types.ModuleType(name)
        for key, value in attrs.items():
            setattr(mod, key, value)
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    classes = {n: type(n, (_Action,), {}) for n in (
        'LaunchDescription', 'DeclareLaunchArgument', 'OpaqueFunction', 'SetEnvironmentVariable', 'Node')}
    module('launch', LaunchDescription=classes['LaunchDescription'])
    module('launch.actions', DeclareLaunchArgument=classes['DeclareLaunchArgument'],
           OpaqueFunction=classes['OpaqueFunction'], SetEnvironmentVariable=classes['SetEnvironmentVariable'])
    module('launch.substitutions', LaunchConfiguration=_LaunchConfiguration, PathJoinSubstitution=_PathJoin)
    module('launch_ros')
    module('launch_ros.actions', Node=classes['Node'])
    module('launch_ros.substitutions', FindPackageShare=_FindPackageShare)
    spec = importlib.util.spec_from_file_location('metric3d_depth_launch', LAUNCH_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, classes


def _run(mod, **values):
    description = mod.generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == 'DeclareLaunchArgument'}
    defaults = {name: kw['default_value'] for name, kw in declared.items()}
    config = {name: (value if isinstance(value, str) else '') for name, value in defaults.items()}
    config.update(values)
    opaque = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
    assert len(opaque) == 1
    actions = opaque[0].kwargs['function'](_Context(config))
    return declared, actions


def test_generate_launch_description_with_stub_modules(launch_module):
    mod, _ = launch_module
    declared, actions = _run(
        mod, params_file=str(PARAMS_FILE), namespace='robot1', use_sim_time='true',
        camera_topics='front=/cam_front/color, left=/cam_left/color/', image_topic='image_rect',
        remappings='front/points:=/front/cloud', fastdds_profile=str(PROFILE), autostart='false',
        log_level='warn',
    )
    assert {'params_file', 'namespace', 'use_sim_time', 'camera_topics', 'remappings',
            'fastdds_profile'} <= set(declared)
    default_params = declared['params_file']['default_value']
    assert isinstance(default_params, _PathJoin)
    assert default_params.parts[0].package == 'metric3d_ros'
    assert default_params.parts[1:] == ['config', 'depth.yaml']
    env = [a for a in actions if type(a).__name__ == 'SetEnvironmentVariable']
    assert {a.args[0] for a in env} == {'FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE'}
    assert all(a.args[1] == str(PROFILE) for a in env)
    nodes = [a for a in actions if type(a).__name__ == 'Node']
    assert len(nodes) == 1 and actions.index(nodes[0]) > max(actions.index(a) for a in env)
    kw = nodes[0].kwargs
    assert (kw['package'], kw['executable'], kw['name']) == ('metric3d_ros', 'depth_node', 'metric3d_depth')
    assert kw['namespace'] == 'robot1'
    assert kw['parameters'] == [str(PARAMS_FILE), {'use_sim_time': True, 'autostart': False}]
    remaps = dict(kw['remappings'])
    assert remaps['front/image'] == '/cam_front/color/image_rect'
    assert remaps['front/camera_info'] == '/cam_front/color/camera_info'
    assert remaps['left/image'] == '/cam_left/color/image_rect'
    assert remaps['left/camera_info'] == '/cam_left/color/camera_info'
    assert remaps['front/points'] == '/front/cloud'
    assert kw['arguments'] == ['--ros-args', '--log-level', 'warn']


def test_launch_defaults_and_bad_arguments(launch_module):
    mod, _ = launch_module
    _, actions = _run(mod, params_file=str(PARAMS_FILE), fastdds_profile='')
    assert [type(a).__name__ for a in actions] == ['Node']  # '' profile: environment left alone
    kw = actions[0].kwargs
    assert kw['parameters'][1] == {'use_sim_time': False}  # autostart '' = as in the params file
    assert kw['remappings'] == [] and kw['namespace'] == ''
    with pytest.raises(ValueError, match='NAME=DRIVER_NAMESPACE'):
        _run(mod, params_file=str(PARAMS_FILE), fastdds_profile='', camera_topics='front')
    with pytest.raises(ValueError, match='FROM:=TO'):
        _run(mod, params_file=str(PARAMS_FILE), fastdds_profile='', remappings='a=b')
    with pytest.raises(ValueError, match='use_sim_time'):
        _run(mod, params_file=str(PARAMS_FILE), fastdds_profile='', use_sim_time='maybe')
    with pytest.raises(ValueError, match='does not exist'):
        _run(mod, params_file=str(PARAMS_FILE), fastdds_profile='/nonexistent/profile.xml')


def test_node_docs_document_every_parameter_and_topic():
    pytest.importorskip('rclpy')
    from metric3d_ros.ros.params import SPECS

    text = (REPO_ROOT / 'docs' / 'NODE.md').read_text()
    missing = [name for name in SPECS if f'`{name}`' not in text]
    assert not missing, f'docs/NODE.md does not document {missing}'
    for topic in ('NAME/image', 'NAME/camera_info', 'NAME/depth/image', 'NAME/depth/camera_info',
                  'NAME/points', 'NAME/normals/image', 'NAME/confidence/image', '/diagnostics',
                  'fastdds_shm.xml'):
        assert topic in text, topic

