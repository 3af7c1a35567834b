"""Acceptance: ``colcon build`` of a workspace holding the package works with the PyPI rclpy environment.

Recipe (what this test does, and what a user of the PyPI environment runs):

    pip install colcon-core colcon-ros colcon-python-setup-py     # part of the dev extra
    mkdir -p ws/src && cp -r <repository> ws/src/metric3d_ros
    cd ws && python -m colcon build                                # the venv's python
    . install/setup.sh                                             # AMENT_PREFIX_PATH, PYTHONPATH

colcon-ros reads package.xml with catkin_pkg (ament_package is not needed) and builds the
ament_python package with the interpreter that runs colcon; setup.cfg sends the console scripts to
``install/metric3d_ros/lib/metric3d_ros`` where ``ros2 run`` / launch_ros look for them.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PACKAGE = 'metric3d_ros'
_NOT_SOURCE = ('.git', '.venv', 'build', 'install', 'log', '__pycache__', '*.egg-info', '.pytest_cache',
               '.ruff_cache')


def _copy_package(repo_root: Path, dest: Path) -> None:
    """The package sources as a clean checkout has them (tracked files when git knows the tree)."""
    listed = subprocess.run(['git', 'ls-files', '-z'], cwd=repo_root, capture_output=True, check=False) \
        if shutil.which('git') and (repo_root / '.git').exists() else None
    if listed is not None and listed.returncode == 0 and listed.stdout:
        for rel in listed.stdout.decode().split('\0'):
            src = repo_root / rel
            if rel and src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
    else:
        shutil.copytree(repo_root, dest, ignore=shutil.ignore_patterns(*_NOT_SOURCE))


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment without any sourced ROS/colcon workspace, colcon config isolated."""
    sourced = ('AMENT_PREFIX_PATH', 'COLCON_PREFIX_PATH', 'CMAKE_PREFIX_PATH', 'COLCON_DEFAULTS_FILE')
    env = {k: v for k, v in os.environ.items() if k not in sourced}
    env['COLCON_HOME'] = str(tmp_path / 'colcon_home')
    env['ROS_LOG_DIR'] = str(tmp_path / 'ros_log')
    env['ROS_DOMAIN_ID'] = str(1 + os.getpid() % 100)
    env['PYTHONDONTWRITEBYTECODE'] = '1'
    return env


@pytest.fixture(scope='module')
def built_workspace(tmp_path_factory, repo_root: Path):
    """A workspace ``ws/src/metric3d_ros`` built with ``python -m colcon build``; yields (ws, env, output)."""
    if importlib.util.find_spec('colcon_core') is None or importlib.util.find_spec('colcon_ros') is None:
        raise RuntimeError(
            'colcon is not installed in this environment: install the dev extra '
            "(pip install -e '.[dev]'), which brings colcon-core, colcon-ros and colcon-python-setup-py"
        )
    tmp_path = tmp_path_factory.mktemp('colcon')
    ws = tmp_path / 'ws'
    _copy_package(repo_root, ws / 'src' / PACKAGE)
    env = _clean_env(tmp_path)
    result = subprocess.run(
        [sys.executable, '-m', 'colcon', 'build', '--executor', 'sequential'],
        cwd=ws, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f'colcon build failed (exit {result.returncode}):\n{output[-6000:]}'
    return ws, env, output


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
        ['sh', '-c', f'. install/setup.sh && "{sys.executable}" -c "{probe}"'],
        cwd=ws, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    share_dir, module_file = result.stdout.split()[-2:]
    install = ws / 'install' / PACKAGE
    assert Path(share_dir) == install / 'share' / PACKAGE
    assert Path(module_file).is_relative_to(install / 'lib'), f'imported {module_file}, not the install tree'
