"""launch_testing: ``ros2 launch metric3d_ros depth.launch.py`` from a colcon-built workspace, for real.

Each run builds the workspace with the README's colcon command (test/colcon_support.py), sources its
``install/setup.bash`` and starts the venv's ``ros2 launch`` with a test params file (the fake backend at a
tiny network size, ``process_layout: group_workers``). Runs (launch_testing.parametrize):

- ``plain``: no namespace, params keyed ``/**``, ``fastdds_profile:=none`` (the environment is left alone);
- ``namespaced``: ``namespace:=robot1``, ``camera_topics:=front=/drv/front``, params keyed by the bare node
  name ``metric3d_depth`` (the launch file gives them to /robot1/metric3d_depth), the default Fast DDS
  profile (only the variable of this distribution's Fast DDS, in the node's processes only);
- ``included``: a launch file includes depth.launch.py (namespace robot2) and then starts another process,
  which must not inherit the node's Fast DDS profile.

In each run: the params file applies (``ros2 param get``), the node goes active, ``ros2 lifecycle set``
deactivate/activate and ``ros2 param set`` work, a depth image with the input header arrives, and SIGINT to
``ros2 launch`` ends it with exit code 0 and leaves no process behind (node and group worker included).
The test process has its own ROS_DOMAIN_ID and ROS_LOG_DIR (node_support.ros_env).
"""
from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import launch_testing.markers
import psutil
import pytest
import yaml
from colcon_support import PACKAGE, build_workspace, sourced_env, venv_tool
from conftest import REPO_ROOT
from launch.actions import ExecuteProcess
from node_support import FAST_NODE, ros_env, wait_until

from launch import LaunchDescription

PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
START_TIMEOUT_S = 180.0
CLI_TIMEOUT_S = 60.0
INCLUDER = '''
from launch import LaunchDescription
from launch.actions import ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.substitutions import FindPackageShare
from launch.substitutions import PathJoinSubstitution


def generate_launch_description():
    depth = PathJoinSubstitution([FindPackageShare('metric3d_ros'), 'launch', 'depth.launch.py'])
    probe = {probe!r}
    return LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(depth),
            launch_arguments={{'params_file': {params!r}, 'namespace': 'robot2'}}.items()),
        ExecuteProcess(cmd=[{python!r}, '-c', probe], output='screen'),
    ])
'''
RUNS = {
    'plain': dict(namespace='', key='/**', camera_topics='', profile='none', include=False),
    'namespaced': dict(namespace='robot1', key='metric3d_depth', camera_topics='front=/drv/front',
                       profile='default', include=False),
    'included': dict(namespace='robot2', key='/**', camera_topics='', profile='default', include=True),
}
_WORKSPACE: dict = {}
_STATE: dict = {}


def _params_yaml(key: str) -> str:
    """The test params file: FAST_NODE (dotted names nested), one camera, group workers."""
    params: dict = {'cameras': ['front'], 'process_layout': 'group_workers'}
    for name, value in FAST_NODE.items():
        *parents, leaf = name.split('.')
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return yaml.safe_dump({key: {'ros__parameters': params}}, sort_keys=False)


def _workspace() -> tuple[Path, dict[str, str]]:
    """The colcon-built workspace (once per test process) and the sourced environment of ``ros2``."""
    if not _WORKSPACE:
        ros = ros_env(29)
        tmp = Path(tempfile.mkdtemp(prefix='metric3d_launch_'))
        ws, env, _ = build_workspace(REPO_ROOT, tmp, int(ros['ROS_DOMAIN_ID']))
        env = sourced_env(ws, env)
        for variable in PROFILE_VARIABLES:  # the launched processes start without a profile of ours
            env.pop(variable, None)
        env.update(ROS_LOG_DIR=ros['ROS_LOG_DIR'], RCUTILS_COLORIZED_OUTPUT='0', PYTHONUNBUFFERED='1')
        _WORKSPACE.update(ws=ws, env=env, tmp=tmp)
    return _WORKSPACE['ws'], _WORKSPACE['env']


def _fastdds3() -> bool:
    return int(importlib.metadata.version('ros-rclpy').split('.')[0]) >= 9


@pytest.mark.launch_test
@pytest.mark.ros
@pytest.mark.slow
@launch_testing.parametrize('run', list(RUNS))
@launch_testing.markers.keep_alive  # test_5 stops ros2 launch; inside parametrize: it marks each run
def generate_test_description(run):
    ws, env = _workspace()
    spec = RUNS[run]
    params = _WORKSPACE['tmp'] / f'params_{run}.yaml'
    params.write_text(_params_yaml(spec['key']))
    if spec['include']:
        includer = _WORKSPACE['tmp'] / 'includer.launch.py'
        probe = ('import os; print("PROFILE_AFTER_INCLUDE=" + '
                 f'",".join(v for v in {PROFILE_VARIABLES!r} if v in os.environ) + "|", flush=True)')
        includer.write_text(INCLUDER.format(params=str(params), probe=probe, python=sys.executable))
        cmd = [str(venv_tool('ros2')), 'launch', str(includer)]
    else:
        cmd = [str(venv_tool('ros2')), 'launch', PACKAGE, 'depth.launch.py', f'params_file:={params}']
        if spec['namespace']:
            cmd.append(f'namespace:={spec["namespace"]}')
        if spec['camera_topics']:
            cmd.append(f'camera_topics:={spec["camera_topics"]}')
        if spec['profile'] != 'default':
            cmd.append(f'fastdds_profile:={spec["profile"]}')
    _STATE.clear()
    _STATE.update(run=run, spec=spec, env=env,
                  fqn=f'/{spec["namespace"]}/metric3d_depth' if spec['namespace'] else '/metric3d_depth',
                  profile=str(ws / 'install' / PACKAGE / 'share' / PACKAGE / 'config' / 'fastdds_shm.xml'))
    launch_proc = ExecuteProcess(cmd=cmd, cwd=str(ws), env=env, output='screen',
                                 sigterm_timeout='60', sigkill_timeout='10')
    description = LaunchDescription([launch_proc, launch_testing.actions.ReadyToTest()])
    return description, {'launch_proc': launch_proc}


def _ros2(*args: str) -> str:
    """Run the venv's ``ros2`` (no daemon: it would outlive the test) in the sourced environment; again
    while it has not discovered the node yet ('Node not found') or ended without a word (on a loaded
    2-core machine a CLI process has been seen to end with empty output; its exit status is kept)."""
    verb, rest = args[0], args[1:]
    cmd = [str(venv_tool('ros2')), verb, *rest[:1], '--no-daemon', *rest[1:]]
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while True:
        result = subprocess.run(cmd, env=_STATE['env'], capture_output=True, text=True,
                                timeout=CLI_TIMEOUT_S, check=False)
        out = result.stdout + result.stderr
        if not out.strip():
            out = f'(ros2 {verb} printed nothing; exit status {result.returncode})'
            if 'get' not in rest[:1]:
                return out  # a set that printed nothing may have taken effect: never send it twice
        elif 'Node not found' not in out:
            return out
        if time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def _ros2_until(expected: str, *args: str, timeout_s: float = CLI_TIMEOUT_S) -> str:
    """``_ros2(*args)`` again until its output contains ``expected`` (discovery may need a moment)."""
    box = ['']

    def ok():
        box[0] = _ros2(*args)
        return expected in box[0]

    wait_until(ok, timeout_s, period_s=0.5)
    return box[0]


class TestDepthLaunch(unittest.TestCase):
    """Active tests, in name order, while ``ros2 launch`` runs."""

    def test_1_node_goes_active_with_the_params_file(self, proc_output, launch_proc):
        proc_output.assertWaitFor('active: 1 camera(s)', process=launch_proc, timeout=START_TIMEOUT_S,
                                  stream='stdout')
        fqn = _STATE['fqn']
        out = _ros2_until('String value is: fake', 'param', 'get', fqn, 'backend')
        self.assertIn('String value is: fake', out, 'the params file did not apply (backend)')
        out = _ros2_until('String value is: group_workers', 'param', 'get', fqn, 'process_layout')
        self.assertIn('String value is: group_workers', out)
        out = _ros2_until('Integer value is: 140', 'param', 'get', fqn, 'net_width_px')
        self.assertIn('Integer value is: 140', out)

    def test_2_processes_and_their_environment(self, launch_proc):
        launcher = psutil.Process(launch_proc.process_details['pid'])
        descendants = launcher.children(recursive=True)
        nodes = [p for p in descendants if any(Path(a).name == 'depth_node' for a in p.cmdline()[:2])]
        self.assertEqual(len(nodes), 1, [p.cmdline() for p in descendants])
        workers = [p for p in nodes[0].children(recursive=True) if 'multiprocessing' in ' '.join(p.cmdline())]
        self.assertTrue(workers, 'no group worker process under depth_node')
        _STATE['pids'] = [launcher, *descendants]
        env = nodes[0].environ()
        present = {v: env[v] for v in PROFILE_VARIABLES if v in env}
        if _STATE['spec']['profile'] == 'none':
            self.assertEqual(present, {})
        else:
            expected = PROFILE_VARIABLES[0] if _fastdds3() else PROFILE_VARIABLES[1]
            self.assertEqual(present, {expected: _STATE['profile']})
            self.assertEqual({v: workers[0].environ().get(v) for v in present}, present)

    def test_3_lifecycle_and_parameters_from_the_command_line(self):
        fqn = _STATE['fqn']
        self.assertIn('active [3]', _ros2_until('active [3]', 'lifecycle', 'get', fqn))
        self.assertIn('Transitioning successful', _ros2('lifecycle', 'set', fqn, 'deactivate'))
        self.assertIn('inactive [2]', _ros2('lifecycle', 'get', fqn))
        out = _ros2('param', 'set', fqn, 'max_wait_ms', '20.0')
        self.assertIn('read at configure', out)  # refused while configured, with the reason
        self.assertIn('Transitioning successful', _ros2('lifecycle', 'set', fqn, 'activate'))
        self.assertIn('active [3]', _ros2('lifecycle', 'get', fqn))
        self.assertIn('Set parameter successful', _ros2('param', 'set', fqn, 'use_sim_time', 'false'))

    def test_4_depth_image_with_the_input_header(self):
        import rclpy
        from node_support import camera_info_msg, image_msg, rgb_image, stamp_ns_of
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        spec = _STATE['spec']
        ns = f'/{spec["namespace"]}' if spec['namespace'] else ''
        driver = spec['camera_topics'].partition('=')[2]
        image_topic, info_topic = ((f'{driver}/image_raw', f'{driver}/camera_info') if driver
                                   else (f'{ns}/front/image', f'{ns}/front/camera_info'))
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=int(_STATE['env']['ROS_DOMAIN_ID']))
        node = rclpy.create_node('launch_test_cameras', context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        try:
            received = []
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            node.create_subscription(Image, f'{ns}/front/depth/image', received.append, qos)
            image_pub = node.create_publisher(Image, image_topic, qos)
            info_pub = node.create_publisher(CameraInfo, info_topic, qos)
            sent = set()
            deadline = time.monotonic() + START_TIMEOUT_S
            while not received and time.monotonic() < deadline:
                stamp_ns = node.get_clock().now().nanoseconds
                info_pub.publish(camera_info_msg(64, 48, stamp_ns, 'front_optical_frame'))
                image_pub.publish(image_msg(rgb_image(64, 48), 'rgb8', stamp_ns, 'front_optical_frame'))
                sent.add(stamp_ns)
                end = time.monotonic() + 0.2
                while time.monotonic() < end:
                    executor.spin_once(timeout_sec=0.05)
            self.assertTrue(received, f'no depth image on {ns}/front/depth/image ({len(sent)} frames sent)')
            depth = received[0]
            self.assertIn(stamp_ns_of(depth), sent)
            self.assertEqual(depth.header.frame_id, 'front_optical_frame')
            self.assertEqual((depth.width, depth.height, depth.encoding), (64, 48, '32FC1'))
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.shutdown(context=context)

    def test_5_sigint_ends_everything(self, proc_info, launch_proc):
        os.kill(launch_proc.process_details['pid'], signal.SIGINT)
        proc_info.assertWaitForShutdown(process=launch_proc, timeout=90)


@launch_testing.post_shutdown_test()
class TestAfterSigint(unittest.TestCase):

    def test_exit_code_0_and_no_process_left(self, proc_info, proc_output, launch_proc):
        launch_testing.asserts.assertExitCodes(proc_info, [launch_testing.asserts.EXIT_OK],
                                               process=launch_proc)
        pids = _STATE.get('pids', [])
        self.assertTrue(pids, 'the process tree was not recorded (test_2 failed)')
        # A zombie has ended; only its reaping is left (to the container's init once its parent is gone).
        def alive():
            running = []
            for p in pids:
                try:
                    if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                        running.append(f'{p.pid} {p.cmdline()}')
                except psutil.NoSuchProcess:
                    pass
            return running

        wait_until(lambda: not alive(), 10.0)
        self.assertEqual(alive(), [], 'processes left after SIGINT')
        text = ''.join(o.text.decode(errors='replace') for o in proc_output[launch_proc])
        self.assertNotIn('Traceback', text)
        self.assertNotIn('FATAL', text)
        self.assertNotIn('deprecated', text.lower())  # e.g. Fast DDS 3 on FASTRTPS_DEFAULT_PROFILES_FILE
        if _STATE['spec']['include']:
            self.assertIn('PROFILE_AFTER_INCLUDE=|', text)  # no profile leaked to the includer's process
