"""launch/depth.launch.py and config/depth.yaml, static checks (no launch modules needed). The launch file
runs for real in test_depth_launch.py (launch_testing) and its helpers in test_launch_arguments.py."""
from __future__ import annotations

import ast

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
    assert list(data) == ['/**'], 'config/depth.yaml must apply under any namespace (ros2 run -r __ns:=...)'
    params = data['/**']['ros__parameters']
    assert params['cameras'] and all(isinstance(c, str) for c in params['cameras'])


def test_default_params_file_matches_the_declared_parameters():
    pytest.importorskip('rclpy')
    from metric3d_ros.ros.params import SPECS, config_from_values

    params = yaml.safe_load(PARAMS_FILE.read_text())['/**']['ros__parameters']

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

