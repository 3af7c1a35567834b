"""launch/depth.launch.py's argument handling with the real launch modules (from ../shared/ros-tools):
the params file under namespaces, the Fast DDS profile variable per distribution, 'none', bad arguments."""
from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest
import yaml
from conftest import REPO_ROOT

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('isolated_ros_env')]

LAUNCH_FILE = REPO_ROOT / 'launch' / 'depth.launch.py'
PARAMS_FILE = REPO_ROOT / 'config' / 'depth.yaml'
PROFILE = REPO_ROOT / 'config' / 'fastdds_shm.xml'


@pytest.fixture(scope='module')
def launch_file():
    spec = importlib.util.spec_from_file_location('metric3d_depth_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(tmp_path, data: dict):
    path = tmp_path / 'params.yaml'
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(('key', 'fqn', 'matches'), [
    ('/**', '/metric3d_depth', True),
    ('/**', '/robot1/metric3d_depth', True),
    ('metric3d_depth', '/metric3d_depth', True),
    ('metric3d_depth', '/robot1/metric3d_depth', False),
    ('/**/metric3d_depth', '/a/b/metric3d_depth', True),
    ('/*/metric3d_depth', '/robot1/metric3d_depth', True),
    ('/*/metric3d_depth', '/metric3d_depth', False),
    ('/robot1/metric3d_depth', '/robot1/metric3d_depth', True),
    ('/robot1/other', '/robot1/metric3d_depth', False),
])
def test_key_matches_as_rcl_does(launch_file, key, fqn, matches):
    assert launch_file.key_matches(key, fqn) is matches


def test_the_shipped_params_file_applies_under_any_namespace(launch_file):
    for namespace in ('', 'robot1', '/a/b/'):
        assert launch_file.params_file_for(str(PARAMS_FILE), namespace) == str(PARAMS_FILE)


def test_an_entry_keyed_by_the_node_name_is_given_to_the_node_in_its_namespace(launch_file, tmp_path):
    params = {'ros__parameters': {'backend': 'fake', 'cameras': ['front'], 'qos': {'input': {'depth': 1}}}}
    path = _write(tmp_path, {'metric3d_depth': params, 'other_node': {'ros__parameters': {'x': 1}}})
    assert launch_file.params_file_for(path, '') == path  # no namespace: the key matches as it is
    rewritten = launch_file.params_file_for(path, '/robot1/')
    assert rewritten != path
    data = yaml.safe_load(open(rewritten).read())
    assert data == {'/robot1/metric3d_depth': params, 'other_node': {'ros__parameters': {'x': 1}}}
    # a wildcard entry beside it does not hide the node's own entry
    path = _write(tmp_path, {'/**': {'ros__parameters': {'use_sim_time': False}}, '/metric3d_depth': params})
    data = yaml.safe_load(open(launch_file.params_file_for(path, 'robot1')).read())
    assert data['/robot1/metric3d_depth'] == params and '/**' in data


def test_a_params_file_without_an_entry_for_the_node_is_refused(launch_file, tmp_path):
    path = _write(tmp_path, {'camera_driver': {'ros__parameters': {'fps': 30}}})
    with pytest.raises(ValueError, match=r'no entry for the node /robot1/metric3d_depth.*"/\*\*:"'):
        launch_file.params_file_for(path, 'robot1')
    with pytest.raises(ValueError, match='does not exist'):
        launch_file.params_file_for(str(tmp_path / 'missing.yaml'), '')
    (tmp_path / 'empty.yaml').write_text('')
    with pytest.raises(ValueError, match='holds no node entries'):
        launch_file.params_file_for(str(tmp_path / 'empty.yaml'), '')


def test_fastdds_profile_none_leaves_the_environment_alone(launch_file):
    assert launch_file.profile_env('none') == {}
    assert launch_file.profile_env('None') == {}
    assert launch_file.profile_env('') == {}
    with pytest.raises(ValueError, match="does not exist.*'none'"):
        launch_file.profile_env('/nonexistent/profile.xml')


@pytest.mark.parametrize(('distro', 'variable'), [
    ('humble', 'FASTRTPS_DEFAULT_PROFILES_FILE'), ('jazzy', 'FASTRTPS_DEFAULT_PROFILES_FILE'),
    ('kilted', 'FASTDDS_DEFAULT_PROFILES_FILE'), ('rolling', 'FASTDDS_DEFAULT_PROFILES_FILE'),
])
def test_one_profile_variable_for_the_distribution(launch_file, monkeypatch, distro, variable):
    monkeypatch.setenv('ROS_DISTRO', distro)
    assert launch_file.profile_env(str(PROFILE)) == {variable: str(PROFILE)}


def test_profile_variable_of_the_pypi_wheels_without_ros_distro(launch_file, monkeypatch):
    monkeypatch.delenv('ROS_DISTRO', raising=False)
    major = int(importlib.metadata.version('ros-rclpy').split('.')[0])  # 9 Kilted (Fast DDS 3), 7 Jazzy
    expected = 'FASTDDS_DEFAULT_PROFILES_FILE' if major >= 9 else 'FASTRTPS_DEFAULT_PROFILES_FILE'
    assert launch_file.profile_env(str(PROFILE)) == {expected: str(PROFILE)}


def test_the_launch_file_starts_only_the_node_and_sets_no_environment(launch_file):
    """No SetEnvironmentVariable (it would reach every later process of an including launch file): the
    profile goes to the Node's own environment (the launch_testing test checks the processes)."""
    from launch.actions import OpaqueFunction
    from launch_ros.actions import Node

    from launch import LaunchContext

    description = launch_file.generate_launch_description()
    declared = {e.name: e.default_value for e in description.entities if hasattr(e, 'default_value')}
    context = LaunchContext()
    context.launch_configurations.update({name: '' for name in declared})
    context.launch_configurations.update(
        params_file=str(PARAMS_FILE), namespace='robot1', use_sim_time='true', image_topic='image_raw',
        fastdds_profile=str(PROFILE), camera_topics='front=/cam_front/color', log_level='warn')
    opaque = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    assert len(opaque) == 1
    actions = opaque[0].execute(context)
    assert [type(a) for a in actions] == [Node]
    assert context.environment == LaunchContext().environment


@pytest.mark.parametrize(('argument', 'value', 'message'), [
    ('camera_topics', 'front', 'NAME=DRIVER_NAMESPACE'),
    ('remappings', 'a=b', 'FROM:=TO'),
    ('use_sim_time', 'maybe', 'use_sim_time'),
    ('fastdds_profile', '/nonexistent.xml', 'does not exist'),
])
def test_bad_arguments_are_refused_with_a_reason(launch_file, argument, value, message):
    from launch.actions import OpaqueFunction

    from launch import LaunchContext

    description = launch_file.generate_launch_description()
    context = LaunchContext()
    context.launch_configurations.update(
        params_file=str(PARAMS_FILE), namespace='', use_sim_time='false', camera_topics='',
        image_topic='image_raw', remappings='', fastdds_profile='none', autostart='', log_level='info')
    context.launch_configurations[argument] = value
    opaque = next(e for e in description.entities if isinstance(e, OpaqueFunction))
    with pytest.raises(ValueError, match=message):
        opaque.execute(context)


def test_camera_topics_remap_image_compressed_and_camera_info(launch_file):
    text = 'front=/cam_front/color, left=/cam_left/color/'
    remaps = dict(launch_file.parse_camera_topics(text, 'image_rect'))
    assert remaps == {
        'front/image': '/cam_front/color/image_rect',
        'front/image/compressed': '/cam_front/color/image_rect/compressed',
        'front/camera_info': '/cam_front/color/camera_info',
        'left/image': '/cam_left/color/image_rect',
        'left/image/compressed': '/cam_left/color/image_rect/compressed',
        'left/camera_info': '/cam_left/color/camera_info',
    }
    remaps = launch_file.parse_remappings('front/points:=/front/cloud; a:=b')
    assert remaps == [('front/points', '/front/cloud'), ('a', 'b')]
