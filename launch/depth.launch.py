"""Launch the metric3d_ros depth node (lifecycle node metric3d_depth, executable depth_node).

    ros2 launch metric3d_ros depth.launch.py
    ros2 launch metric3d_ros depth.launch.py params_file:=$HOME/depth.yaml namespace:=robot1 \
        camera_topics:='front=/cam_front/color,left=/cam_left/color' image_topic:=image_rect

Arguments:
  params_file     parameters YAML (default: the package's config/depth.yaml). Its entry for the node applies
                  under any namespace: '/**:' (as config/depth.yaml) matches every node, and an entry keyed
                  by the bare node name 'metric3d_depth:' is given to /NAMESPACE/metric3d_depth. A file
                  with no entry for the node is refused (it would be silently ignored).
  namespace       namespace of the node and its relative topics (default: none)
  use_sim_time    true to use /clock (bag playback)
  camera_topics   per-camera remapping, NAME=DRIVER_NAMESPACE[,NAME=...]: NAME/image ->
                  DRIVER_NAMESPACE/<image_topic>, NAME/camera_info -> DRIVER_NAMESPACE/camera_info
  image_topic     the image topic inside each driver namespace (default image_raw; image_rect for rectified)
  remappings      any further remappings, FROM:=TO[;FROM:=TO...] (e.g. front/points:=/front/cloud)
  fastdds_profile Fast DDS XML profile for the node's processes only (default: the package's
                  config/fastdds_shm.xml, 256 MiB shared memory); 'none' leaves the environment alone. Set
                  as FASTDDS_DEFAULT_PROFILES_FILE for Fast DDS 3 (Kilted and later) and as
                  FASTRTPS_DEFAULT_PROFILES_FILE for Fast DDS 2 (Humble, Jazzy). Camera drivers need the
                  same profile: see docs/NODE.md.
  autostart       false to leave the node unconfigured for a lifecycle manager
  log_level       debug, info, warn, error

No shell, eval or subprocess: arguments are parsed as plain strings in an OpaqueFunction.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = 'metric3d_ros'
EXECUTABLE = 'depth_node'
NODE_NAME = 'metric3d_depth'
NO_PROFILE = ('none', '')
FASTDDS2_DISTROS = ('humble', 'iron', 'jazzy')


def parse_camera_topics(text: str, image_topic: str) -> list[tuple[str, str]]:
    """'front=/cam/front,left=/cam/left' -> remappings of NAME/image and NAME/camera_info."""
    remaps = []
    for item in (part.strip() for part in text.split(',')):
        if not item:
            continue
        name, sep, driver_ns = item.partition('=')
        name, driver_ns = name.strip().strip('/'), driver_ns.strip().rstrip('/')
        if not sep or not name or not driver_ns:
            raise ValueError(f'camera_topics entry {item!r} must look like NAME=DRIVER_NAMESPACE')
        remaps.append((f'{name}/image', f'{driver_ns}/{image_topic}'))
        remaps.append((f'{name}/image/compressed', f'{driver_ns}/{image_topic}/compressed'))
        remaps.append((f'{name}/camera_info', f'{driver_ns}/camera_info'))
    return remaps


def parse_remappings(text: str) -> list[tuple[str, str]]:
    """'a:=b;c:=d' -> [('a', 'b'), ('c', 'd')]."""
    remaps = []
    for item in (part.strip() for part in text.split(';')):
        if not item:
            continue
        source, sep, target = item.partition(':=')
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f'remapping {item!r} must look like FROM:=TO')
        remaps.append((source.strip(), target.strip()))
    return remaps


def _as_bool(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value in ('true', '1', 'yes', 'on'):
        return True
    if value in ('false', '0', 'no', 'off'):
        return False
    raise ValueError(f'launch argument {name} must be true or false, got {text!r}')


def fully_qualified_name(namespace: str) -> str:
    """'/robot1/metric3d_depth' for namespace 'robot1' (or '/robot1/'), '/metric3d_depth' for ''."""
    namespace = namespace.strip().strip('/')
    return f'/{namespace}/{NODE_NAME}' if namespace else f'/{NODE_NAME}'


def key_matches(key: str, fqn: str) -> bool:
    """Whether a params-file node key matches the node's fully-qualified name as rcl matches them: a key
    without a leading '/' is absolute, '*' matches one name token and '**' any number of tokens."""
    pattern = [t for t in str(key).strip('/').split('/') if t]
    tokens = [t for t in fqn.strip('/').split('/') if t]

    def match(p: int, t: int) -> bool:
        if p == len(pattern):
            return t == len(tokens)
        if pattern[p] == '**':
            return any(match(p + 1, k) for k in range(t, len(tokens) + 1))
        return t < len(tokens) and pattern[p] in ('*', tokens[t]) and match(p + 1, t + 1)

    return match(0, 0)


def params_file_for(path: str, namespace: str) -> str:
    """The parameters file to give the node in ``namespace``: ``path`` itself when one of its entries
    matches the node's fully-qualified name; a rewritten copy (in the temp folder) when its entry for the
    node is keyed by the bare node name ('metric3d_depth:' or '/metric3d_depth:') and the namespace is not
    empty. Raises ValueError for a missing or unreadable file and for a file with no entry for the node."""
    if not os.path.isfile(path):
        raise ValueError(f'params_file {path!r} does not exist')
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f'params_file {path!r} is not valid YAML: {exc}') from exc
    if not isinstance(data, dict) or not data:
        raise ValueError(f'params_file {path!r} holds no node entries (expected "/**:" or '
                         f'"{NODE_NAME}:" with "ros__parameters:" below)')
    fqn = fully_qualified_name(namespace)
    bare = [key for key in data if str(key).strip('/') == NODE_NAME]
    if not bare or fqn == f'/{NODE_NAME}':
        if not any(key_matches(key, fqn) for key in data):
            raise ValueError(f'params_file {path!r} has no entry for the node {fqn} (its entries: '
                             f'{", ".join(map(str, data))}): key its parameters "/**:" or "{NODE_NAME}:"')
        return path
    rewritten = {(fqn if key in bare else key): value for key, value in data.items()}
    with tempfile.NamedTemporaryFile('w', prefix=f'{NODE_NAME}_params_', suffix='.yaml', delete=False) as out:
        yaml.safe_dump(rewritten, out, sort_keys=False)
    return out.name


def profile_variable() -> str:
    """The environment variable that the Fast DDS of this ROS distribution reads for its XML profiles:
    FASTDDS_DEFAULT_PROFILES_FILE for Fast DDS 3 (Kilted, rclpy >= 9), FASTRTPS_DEFAULT_PROFILES_FILE for
    Fast DDS 2 (Humble, Jazzy; Fast DDS 3 warns that this one is deprecated). ROS_DISTRO decides when it is
    set (a sourced ROS install), else the version of the installed rclpy (the PyPI wheels)."""
    distro = os.environ.get('ROS_DISTRO', '').strip().lower()
    if distro:
        fastdds2 = distro in FASTDDS2_DISTROS
        return 'FASTRTPS_DEFAULT_PROFILES_FILE' if fastdds2 else 'FASTDDS_DEFAULT_PROFILES_FILE'
    from ament_index_python.packages import get_package_share_directory

    text = (Path(get_package_share_directory('rclpy')) / 'package.xml').read_text()
    major = int(text.split('<version>', 1)[1].split('.', 1)[0])
    return 'FASTDDS_DEFAULT_PROFILES_FILE' if major >= 9 else 'FASTRTPS_DEFAULT_PROFILES_FILE'


def profile_env(profile: str) -> dict[str, str]:
    """The environment for the node's processes: {} for 'none' (or ''), else the profile variable."""
    if profile.strip().lower() in NO_PROFILE:
        return {}
    if not os.path.isfile(profile):
        raise ValueError(f"fastdds_profile {profile!r} does not exist (give 'none' to leave the environment "
                         'alone)')
    return {profile_variable(): profile}


def _launch_setup(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    namespace = arg('namespace')
    remappings = parse_camera_topics(arg('camera_topics'), arg('image_topic'))
    remappings += parse_remappings(arg('remappings'))
    overrides = {'use_sim_time': _as_bool(arg('use_sim_time'), 'use_sim_time')}
    autostart = arg('autostart')
    if autostart:
        overrides['autostart'] = _as_bool(autostart, 'autostart')
    return [Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=namespace,
        output='screen',
        emulate_tty=True,
        parameters=[params_file_for(arg('params_file'), namespace), overrides],
        remappings=remappings,
        arguments=['--ros-args', '--log-level', arg('log_level')],
        additional_env=profile_env(arg('fastdds_profile')),  # this process (and its workers) only
    )]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument('params_file',
                              default_value=PathJoinSubstitution([share, 'config', 'depth.yaml']),
                              description="parameters YAML of the depth node ('/**:' or 'metric3d_depth:')"),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of the node'),
        DeclareLaunchArgument('use_sim_time', default_value='false', description='use /clock'),
        DeclareLaunchArgument('camera_topics', default_value='',
                              description='NAME=DRIVER_NAMESPACE[,NAME=...] per-camera remapping'),
        DeclareLaunchArgument('image_topic', default_value='image_raw',
                              description='image topic inside each driver namespace'),
        DeclareLaunchArgument('remappings', default_value='', description='FROM:=TO[;FROM:=TO...]'),
        DeclareLaunchArgument('fastdds_profile',
                              default_value=PathJoinSubstitution([share, 'config', 'fastdds_shm.xml']),
                              description="Fast DDS XML profile for the node's processes ('none' = leave "
                                          'the environment alone)'),
        DeclareLaunchArgument('autostart', default_value='',
                              description="'' = as in params_file; false = wait for a lifecycle manager"),
        DeclareLaunchArgument('log_level', default_value='info', description='node log level'),
        OpaqueFunction(function=_launch_setup),
    ])
