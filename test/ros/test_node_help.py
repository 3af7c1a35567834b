"""depth_node's first-contact messages: --help (no start, no download), the synthetic-weights warning at
configure, and where the outputs go once active."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from node_support import FAST_NODE, ros_env, unique_namespace

pytestmark = pytest.mark.ros


def test_help_prints_usage_and_every_parameter_and_exits_0_without_starting():
    from metric3d_ros.ros.params import SPECS

    env = {**os.environ, 'METRIC3D_CACHE': '/nonexistent/metric3d_cache'}  # a download attempt would show
    result = subprocess.run([sys.executable, '-m', 'metric3d_ros.ros.node', '--help'], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith('usage: depth_node')
    assert 'ros2 launch metric3d_ros depth.launch.py' in out and 'docs/NODE.md' in out
    missing = [name for name in SPECS if f'  {name} (' not in out]
    assert not missing, missing
    assert "net_height_px (616; 28..2828, [read-only])" in out
    assert result.stderr == '' and '[INFO]' not in out  # nothing started, nothing logged


@pytest.mark.parametrize(('args', 'wanted'), [
    (['--help'], True), (['-h'], True), (['--ros-args', '-p', 'a:=1'], False),
    (['--ros-args', '--help'], False),  # after --ros-args the arguments belong to ROS
])
def test_help_only_before_ros_args(args, wanted):
    from metric3d_ros.ros.node import _wants_help

    assert _wants_help(args) is wanted


def test_synthetic_weights_warn_at_configure_and_active_says_where_outputs_go():
    ros_env(19)
    ns = unique_namespace('help')
    params = {**FAST_NODE, 'cameras': "['front']", 'weights': 'synthetic'}
    args = [sys.executable, '-m', 'metric3d_ros.ros.node', '--ros-args', '-r', f'__ns:={ns}']
    args += [a for k, v in params.items() for a in ('-p', f'{k}:={v}')]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if 'active:' in line or len(lines) > 200:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    text = ''.join(lines) + (out or '')
    assert proc.returncode == 0, text
    warning = next((line for line in lines if 'THE DEPTH IS MEANINGLESS' in line), '')
    assert '[WARN]' in warning, text
    active = next(line for line in lines if 'active:' in line)
    assert f'{ns}/front/depth/image' in active and f'{ns}/front/image' in active, active
