"""Lifecycle of the depth node: transitions through the lifecycle_msgs services, parameter validation at
configure, resources released at deactivate/cleanup, and the ``depth_node`` executable (params file,
Ctrl-C, failing autostart) in a subprocess."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from node_support import (
    FAST_NODE,
    REPO_ROOT,
    Harness,
    assert_accounted,
    group_of,
    node_overrides,
    rgb_image,
    ros_env,
    stamp_ns_of,
    unique_namespace,
    wait_until,
)

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module', autouse=True)
def env():
    return ros_env(41)


@pytest.fixture(scope='module')
def harness(env):
    h = Harness(int(env['ROS_DOMAIN_ID']), unique_namespace('lifecycle'))
    yield h
    h.close()


def _call(harness, srv_type, name, request, timeout_s=30.0):
    client = harness.helper.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=10.0), f'service {name} not available'
        future = client.call_async(request)
        assert wait_until(future.done, timeout_s), f'{name} did not answer'
        return future.result()
    finally:
        harness.on_executor(lambda: harness.helper.destroy_client(client))


def _change(harness, node_path, transition_id):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    return _call(harness, ChangeState, f'{node_path}/change_state',
                 ChangeState.Request(transition=Transition(id=transition_id))).success


def _state(harness, node_path) -> str:
    from lifecycle_msgs.srv import GetState

    return _call(harness, GetState, f'{node_path}/get_state', GetState.Request()).current_state.label


def test_transitions_through_the_lifecycle_services(harness):
    from lifecycle_msgs.msg import Transition
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    from metric3d_ros.ros.node import DepthNode

    sub_ns = 'services'
    ns = f'{harness.namespace}/{sub_ns}'
    node = DepthNode(namespace=ns, context=harness.context, parameter_overrides=node_overrides(
        **{**FAST_NODE, 'autostart': False, 'cameras': ['cam']}))
    harness.add_node(node)
    path = f'{ns}/metric3d_depth'
    assert _state(harness, path) == 'unconfigured'

    # A bad parameter fails configure (the node stays unconfigured and says why); fixed, it configures.
    assert node.set_parameters([Parameter('cameras', value=['ok', '2bad'])])[0].successful
    assert not _change(harness, path, Transition.TRANSITION_CONFIGURE)
    assert _state(harness, path) == 'unconfigured' and node.engine is None
    assert node.set_parameters([Parameter('cameras', value=['cam'])])[0].successful
    assert _change(harness, path, Transition.TRANSITION_CONFIGURE)
    assert _state(harness, path) == 'inactive' and node.engine is not None
    # Parameters are read at configure: changes are refused while configured.
    result = node.set_parameters([Parameter('max_wait_ms', value=20.0)])[0]
    assert not result.successful and 'configure' in result.reason
    # Inactive: no subscriptions, no outputs.
    image_pub = harness.publisher(Image, f'{sub_ns}/cam/image')
    harness.publisher(CameraInfo, f'{sub_ns}/cam/camera_info')
    assert image_pub.get_subscription_count() == 0

    assert _change(harness, path, Transition.TRANSITION_ACTIVATE)
    assert _state(harness, path) == 'active'
    harness.subscribe(Image, f'{sub_ns}/cam/depth/image')
    assert wait_until(lambda: image_pub.get_subscription_count() == 1, 10.0)
    assert wait_until(lambda: group_of(node).outputs('cam').wanted_request() is not None, 10.0)
    stamp = node.get_clock().now().nanoseconds
    harness.publish_frame(f'{sub_ns}/cam', rgb_image(64, 48), stamp)
    depth_topic = f'{sub_ns}/cam/depth/image'
    assert wait_until(lambda: [stamp_ns_of(m) for m in harness.messages(depth_topic)] == [stamp], 10.0)
    assert_accounted(node)

    assert _change(harness, path, Transition.TRANSITION_DEACTIVATE)
    assert _state(harness, path) == 'inactive'
    assert wait_until(lambda: image_pub.get_subscription_count() == 0, 10.0)
    assert group_of(node).scheduler is None and group_of(node).outputs('cam') is None
    engine = node.engine
    assert _change(harness, path, Transition.TRANSITION_CLEANUP)
    assert _state(harness, path) == 'unconfigured'
    assert node.engine is None and engine._closed
    # Configure and activate again, then shut down from active.
    assert _change(harness, path, Transition.TRANSITION_CONFIGURE)
    assert _change(harness, path, Transition.TRANSITION_ACTIVATE)
    assert _change(harness, path, Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert _state(harness, path) == 'finalized'
    assert node.engine is None and node.layout is None


def test_startup_values_rclpy_refuses_fail_configure_not_the_constructor(harness):
    from metric3d_ros.ros.node import DepthNode
    from metric3d_ros.ros.params import ConfigError, read_node_config

    ns = f'{harness.namespace}/refused'
    node = DepthNode(namespace=ns, context=harness.context, parameter_overrides=node_overrides(
        **{**FAST_NODE, 'autostart': False, 'net_height_px': 600, 'max_batch_size': 0, 'precision': 'fp64'}))
    try:
        assert not node.autostart()
        assert node.state == 'unconfigured'
        with pytest.raises(ConfigError) as info:
            read_node_config(node, list(node._startup_problems.values()))
        text = str(info.value)
        assert 'net_height_px' in text and 'multiple of 28' in text
        assert 'max_batch_size' in text and 'precision' in text and 'fp32' in text
    finally:
        node.destroy_node()


@pytest.mark.parametrize('scope', ['encoder', 'all', 'cast'])
def test_every_autocast_scope_of_the_engine_configures(harness, scope):
    """The node accepts each autocast scope the engine offers ('cast' was once refused at configure)."""
    from metric3d_ros.core.config import AUTOCAST_SCOPES
    from metric3d_ros.ros.node import DepthNode
    from metric3d_ros.ros.params import read_node_config

    assert scope in AUTOCAST_SCOPES
    node = DepthNode(namespace=f'{harness.namespace}/scope_{scope}', context=harness.context,
                     parameter_overrides=node_overrides(
                         **{**FAST_NODE, 'autostart': False, 'precision': 'bf16', 'autocast_scope': scope}))
    try:
        config = read_node_config(node, list(node._startup_problems.values()))
        assert config.engine.autocast_scope == scope and config.engine.precision == 'bf16'
    finally:
        node.destroy_node()

def _node_process(*ros_args: str) -> subprocess.Popen:
    env = dict(os.environ)
    args = [sys.executable, '-m', 'metric3d_ros.ros.node', '--ros-args',
            '--params-file', str(REPO_ROOT / 'config' / 'depth.yaml'),
            '-r', f'__ns:={unique_namespace("proc")}', *ros_args]
    return subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _fast_args() -> list[str]:
    values = {**FAST_NODE, 'cameras': "['front','left']"}
    return [a for k, v in values.items() for a in ('-p', f'{k}:={v}')]


def _read_until(proc: subprocess.Popen, marker: str, timeout_s: float = 90.0) -> list[str]:
    """The process's output lines up to the first one containing ``marker`` (asserted to appear)."""
    lines = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f'{marker!r} not in the output:\n' + ''.join(lines))


def _interrupt_after(proc: subprocess.Popen, marker: str, timeout_s: float) -> tuple[list[str], str]:
    """Ctrl-C ``proc`` once ``marker`` appeared in its output; (lines up to the marker, the rest of it)."""
    try:
        lines = _read_until(proc, marker)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return lines, out


def test_depth_node_executable_runs_with_the_params_file_and_exits_cleanly_on_ctrl_c():
    proc = _node_process(*_fast_args())
    lines, out = _interrupt_after(proc, 'active: 2 camera(s)', timeout_s=30.0)
    started = "groups group0 ['front', 'left'] on cpu, backend fake"
    assert any(started in line for line in lines), ''.join(lines)
    assert proc.returncode == 0, ''.join(lines) + out
    assert 'Traceback' not in out, out


def test_depth_node_exits_with_an_error_when_autostart_fails():
    proc = _node_process(*_fast_args(), '-p', 'net_height_px:=600')
    try:
        out, _ = proc.communicate(timeout=90.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out
    assert 'net_height_px' in out and 'multiple of 28' in out, out
    assert 'Traceback' not in out, out


_SLOW_START = '''
import sys, time
import rclpy
from metric3d_ros.core.engine.backend import register_backend
from metric3d_ros.core.engine.test_backends import FakeBackend


def slow_build(config, device):
    print('building the engine', flush=True)
    # Loading and warming up the real torch backend (native code) does not see the interrupt as a
    # KeyboardInterrupt (measured: ViT-S warm-up ran on for 9 s after SIGINT); only rclpy's handler acts and
    # shuts the context down. Emulate that: work on until the context is shut down.
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and rclpy.ok():
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
    time.sleep(0.2)
    return FakeBackend(device)


register_backend('slow_build', slow_build)
from metric3d_ros.ros.node import main
sys.exit(main())
'''


def test_ctrl_c_during_start_up_exits_cleanly_with_code_0():
    """Ctrl-C while configure loads the weights: the activation that follows fails on the shut-down context;
    that is a requested exit (code 0), not a failed autostart (code 1, FATAL)."""
    params_file = str(REPO_ROOT / 'config' / 'depth.yaml')
    args = [sys.executable, '-c', _SLOW_START, '--ros-args', '--params-file', params_file,
            '-r', f'__ns:={unique_namespace("slowstart")}', *_fast_args(), '-p', 'backend:=slow_build',
            '-p', 'process_layout:=in_process']  # slow_build is registered in this process only
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, out = _interrupt_after(proc, 'building the engine', timeout_s=60.0)
    out = ''.join(lines) + out
    assert proc.returncode == 0, out
    assert 'Traceback' not in out and 'FATAL' not in out, out


_RACING_SPIN = '''
import sys
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy


def spin(self, *args, **kwargs):
    # rclpy's Ctrl-C handler shuts the context down between spin's ok() check and the wait set it builds:
    # WaitSet() then raises RCLError "the given context is not valid" (seen on a loaded machine)
    print('spinning', flush=True)
    rclpy.shutdown()
    raise _rclpy.RCLError('failed to initialize wait set: the given context is not valid')


SingleThreadedExecutor.spin = spin
from metric3d_ros.ros.node import main
sys.exit(main())
'''


def test_ctrl_c_racing_the_executor_exits_cleanly_with_code_0():
    """Ctrl-C that shuts the context down while the executor builds its wait set is a requested exit (code
    0, no traceback), not a crash (it exited 1 with RCLError)."""
    params_file = str(REPO_ROOT / 'config' / 'depth.yaml')
    args = [sys.executable, '-c', _RACING_SPIN, '--ros-args', '--params-file', params_file,
            '-r', f'__ns:={unique_namespace("racingspin")}', *_fast_args(),
            '-p', 'process_layout:=in_process']
    proc = subprocess.run(args, cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=90.0, check=False)
    out = proc.stdout + proc.stderr
    assert 'spinning' in out, out
    assert proc.returncode == 0, out
    assert 'Traceback' not in out, out


def test_deleting_a_parameter_is_refused_and_configure_still_works(harness):
    """``ros2 param delete`` of a float parameter (dynamic typing) was accepted and bricked configure."""
    from rclpy.parameter_client import AsyncParameterClient

    from metric3d_ros.ros.node import DepthNode

    ns = f'{harness.namespace}/deleted'
    node = DepthNode(namespace=ns, context=harness.context,
                     parameter_overrides=node_overrides(**{**FAST_NODE, 'autostart': False}))
    harness.add_node(node)
    # its service clients live on the helper node until the harness closes (rclpy has no destroy for it)
    client = AsyncParameterClient(harness.helper, f'{ns}/metric3d_depth')
    assert client.wait_for_services(timeout_sec=10.0)
    for name in ('max_wait_ms', 'info_tolerance_ms', 'cameras', 'camera_groups'):
        future = client.delete_parameters([name])
        assert wait_until(future.done, 10.0), name
        result = future.result().results[0]
        assert not result.successful, name
        if name.endswith('_ms'):  # dynamic typing: rclpy would undeclare it, the node refuses
            assert name in result.reason and 'cannot be deleted' in result.reason, result.reason
        assert node.has_parameter(name), name
    assert node.get_parameter('max_wait_ms').value == FAST_NODE['max_wait_ms']
    assert node.autostart(), 'configure/activate must still work'


def _params_file_process(tmp_path, text: str) -> tuple[int, str]:
    params = tmp_path / 'params.yaml'
    params.write_text(text)
    fast = [a for k, v in FAST_NODE.items() for a in ('-p', f'{k}:={v}')]
    # only this file: config/depth.yaml ('/**') would set the cameras that an empty list cannot replace
    args = [sys.executable, '-m', 'metric3d_ros.ros.node', '--ros-args', '--params-file', str(params),
            '-r', f'__ns:={unique_namespace("paramsfile")}', *fast]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=90.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out


def test_an_empty_camera_list_in_a_params_file_names_the_parameter_and_typos_are_reported(tmp_path):
    code, out = _params_file_process(tmp_path, '/**:\n  ros__parameters:\n    cameras: []\n'
                                               '    max_wiat_ms: 3.0\n    qos.input.relability: reliable\n')
    assert code == 1, out
    assert 'cameras: not set (an empty list' in out and "like the default ['camera']" in out, out
    assert 'ignoring parameter(s) max_wiat_ms, qos.input.relability: not parameters of this node' in out, out
    assert 'lifecycle error' not in out and 'Traceback' not in out, out


def test_configure_reports_an_undeclared_parameter_by_name(harness):
    from rclpy.lifecycle import TransitionCallbackReturn

    from metric3d_ros.ros.node import DepthNode
    from metric3d_ros.ros.params import ConfigError, read_node_config

    node = DepthNode(namespace=f'{harness.namespace}/undeclared', context=harness.context,
                     parameter_overrides=node_overrides(**{**FAST_NODE, 'autostart': False}))
    try:
        node.undeclare_parameter('max_wait_ms')  # code can still undeclare; configure must say so
        with pytest.raises(ConfigError, match='max_wait_ms: not declared on the node any more'):
            read_node_config(node)
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.state == 'unconfigured'
    finally:
        node.destroy_node()
