"""Launch the metric3d_ros depth node (lifecycle node metric3d_depth, executable depth_node).

    ros2 launch metric3d_ros depth.launch.py
    ros2 launch metric3d_ros depth.launch.py params_file:=$HOME/depth.yaml namespace:=robot1 \
        camera_topics:='front=/cam_front/color,left=/cam_left/color' image_topic:=image_rect

Arguments:
  params_file     parameters YAML (default: the package's config/depth.yaml)
  namespace       namespace of the node and its relative topics (default: none)
  use_sim_time    true to use /clock (bag playback)
  camera_topics   per-camera remapping, NAME=DRIVER_NAMESPACE[,NAME=...]: NAME/image ->
                  DRIVER_NAMESPACE/<image_topic>, NAME/camera_info -> DRIVER_NAMESPACE/camera_info
  image_topic     the image topic inside each driver namespace (default image_raw; image_rect for rectified)
  remappings      any further remappings, FROM:=TO[;FROM:=TO...] (e.g. front/points:=/front/cloud)
  fastdds_profile Fast DDS XML profile set for the node (default: the package's config/fastdds_shm.xml,
                  256 MiB shared memory); '' to leave the environment alone. Camera drivers need the same
                  profile: see docs/NODE.md.
  autostart       false to leave the node unconfigured for a lifecycle manager
  log_level       debug, info, warn, error

No shell, eval or subprocess: arguments are parsed as plain strings in an OpaqueFunction.
"""
from __future__ import annotations

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = 'metric3d_ros'
EXECUTABLE = 'depth_node'
NODE_NAME = 'metric3d_depth'
PROFILE_VARIABLES = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')


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


def _launch_setup(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    actions = []
    profile = arg('fastdds_profile')
    if profile:
        if not os.path.isfile(profile):
            raise ValueError(f'fastdds_profile {profile!r} does not exist')
        actions.extend(SetEnvironmentVariable(variable, profile) for variable in PROFILE_VARIABLES)
    remappings = parse_camera_topics(arg('camera_topics'), arg('image_topic'))
    remappings += parse_remappings(arg('remappings'))
    overrides = {'use_sim_time': _as_bool(arg('use_sim_time'), 'use_sim_time')}
    autostart = arg('autostart')
    if autostart:
        overrides['autostart'] = _as_bool(autostart, 'autostart')
    actions.append(Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=arg('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=[arg('params_file'), overrides],
        remappings=remappings,
        arguments=['--ros-args', '--log-level', arg('log_level')],
    ))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument('params_file',
                              default_value=PathJoinSubstitution([share, 'config', 'depth.yaml']),
                              description='parameters YAML of the depth node'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of the node'),
        DeclareLaunchArgument('use_sim_time', default_value='false', description='use /clock'),
        DeclareLaunchArgument('camera_topics', default_value='',
                              description='NAME=DRIVER_NAMESPACE[,NAME=...] per-camera remapping'),
        DeclareLaunchArgument('image_topic', default_value='image_raw',
                              description='image topic inside each driver namespace'),
        DeclareLaunchArgument('remappings', default_value='', description='FROM:=TO[;FROM:=TO...]'),
        DeclareLaunchArgument('fastdds_profile',
                              default_value=PathJoinSubstitution([share, 'config', 'fastdds_shm.xml']),
                              description="Fast DDS XML profile for the node ('' = leave the environment)"),
        DeclareLaunchArgument('autostart', default_value='',
                              description="'' = as in params_file; false = wait for a lifecycle manager"),
        DeclareLaunchArgument('log_level', default_value='info', description='node log level'),
        OpaqueFunction(function=_launch_setup),
    ])
