"""Acceptance: ``colcon build`` of a workspace holding the package works with the PyPI rclpy environment.

Recipe (what this test does, and what a user of the PyPI environment runs; colcon_support.py):

    pip install colcon-core colcon-ros colcon-python-setup-py \
        colcon-package-selection colcon-bash                       # the dev extra
    mkdir -p ws/src && cp -r <repository> ws/src/metric3d_ros
    cd ws && colcon build --packages-select metric3d_ros           # the venv's colcon
    source install/setup.bash                                      # AMENT_PREFIX_PATH, PYTHONPATH

colcon-ros reads package.xml with catkin_pkg (ament_package is not needed) and builds the
ament_python package with the interpreter that runs colcon; setup.cfg sends the console scripts to
``install/metric3d_ros/lib/metric3d_ros`` where ``ros2 run`` / launch_ros look for them.
"""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from colcon_support import PACKAGE, build_workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def built_workspace(tmp_path_factory, repo_root: Path):
    """``ws/src/metric3d_ros`` built with the README's colcon command; yields (ws, env, output)."""
    return build_workspace(repo_root, tmp_path_factory.mktemp('colcon'))


def test_colcon_builds_the_package(built_workspace):
    ws, _, output = built_workspace
    assert f'Finished <<< {PACKAGE}' in output, output[-3000:]
    assert (ws / 'install' / PACKAGE / 'share' / PACKAGE / 'package.xml').is_file()
    marker = ws / 'install' / PACKAGE / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE
    assert marker.is_file(), 'ament index marker missing: ros2 run / launch would not find the package'
    for folder in ('launch', 'config'):
        assert (ws / 'install' / PACKAGE / 'share' / PACKAGE / folder).is_dir()


def test_every_console_script_is_installed_where_ros2_run_looks(built_workspace):
    ws, _, _ = built_workspace
    lib_dir = ws / 'install' / PACKAGE / 'lib' / PACKAGE
    expected = {ep.name for ep in importlib.metadata.distribution(PACKAGE).entry_points
                if ep.group == 'console_scripts'}
    assert 'depth_node' in expected
    installed = {p.name for p in lib_dir.iterdir()} if lib_dir.is_dir() else set()
    assert expected <= installed, f'missing from {lib_dir}: {sorted(expected - installed)}'
    for name in expected:
        script = lib_dir / name
        assert os.access(script, os.X_OK), f'{script} is not executable'
        shebang = script.read_text().splitlines()[0]
        assert shebang == f'#!{sys.executable}', f'{script} runs {shebang!r}, not the build interpreter'


def test_sourced_workspace_resolves_the_package_from_install(built_workspace):
    ws, env, _ = built_workspace
    probe = (
        'import ament_index_python as a, metric3d_ros; '
        "print(a.get_package_share_directory('metric3d_ros')); print(metric3d_ros.__file__)"
    )
    result = subprocess.run(
        ['bash', '-c', f'source install/setup.bash && "{sys.executable}" -c "{probe}"'],
        cwd=ws, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    share_dir, module_file = result.stdout.split()[-2:]
    install = ws / 'install' / PACKAGE
    assert Path(share_dir) == install / 'share' / PACKAGE
    assert Path(module_file).is_relative_to(install / 'lib'), f'imported {module_file}, not the install tree'
