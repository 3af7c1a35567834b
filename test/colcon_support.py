"""Helpers (no tests here): a colcon workspace holding this package, built as the README says, and the
environment of a shell that sourced its ``install/setup.bash``.

    ws, env, output = build_workspace(REPO_ROOT, tmp_dir)     # ws/src/metric3d_ros, colcon build
    sourced = sourced_env(ws, env)                            # os.environ-like dict after the source

The build runs the venv's ``colcon`` (beside ``sys.executable``) with the README's arguments
(``colcon build --packages-select metric3d_ros``) in a clean environment: no sourced workspace, colcon's
home isolated, its own ROS_DOMAIN_ID and ROS_LOG_DIR.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = 'metric3d_ros'
COLCON_MODULES = ('colcon_core', 'colcon_ros', 'colcon_package_selection', 'colcon_bash')
_NOT_SOURCE = ('.git', '.venv', '.venv-jazzy', 'build', 'install', 'log', '__pycache__', '*.egg-info',
               '.pytest_cache', '.ruff_cache')


def venv_tool(name: str) -> Path:
    """The console script ``name`` of the running interpreter's environment (``.venv/bin/<name>``)."""
    return Path(sys.executable).parent / name


def copy_package(repo_root: Path, dest: Path) -> None:
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


def clean_env(tmp_path: Path, domain_id: int | None = None) -> dict[str, str]:
    """The caller's environment without any sourced ROS/colcon workspace, colcon config isolated, its own
    ROS_DOMAIN_ID (``domain_id``, default from the pid) and ROS_LOG_DIR."""
    sourced = ('AMENT_PREFIX_PATH', 'COLCON_PREFIX_PATH', 'CMAKE_PREFIX_PATH', 'COLCON_DEFAULTS_FILE')
    env = {k: v for k, v in os.environ.items() if k not in sourced}
    env['COLCON_HOME'] = str(tmp_path / 'colcon_home')
    env['ROS_LOG_DIR'] = str(tmp_path / 'ros_log')
    env['ROS_DOMAIN_ID'] = str(1 + os.getpid() % 100 if domain_id is None else domain_id)
    env['PYTHONDONTWRITEBYTECODE'] = '1'
    return env


def build_workspace(repo_root: Path, tmp_path: Path, domain_id: int | None = None,
                    ) -> tuple[Path, dict[str, str], str]:
    """Copy the package to ``tmp_path/ws/src/metric3d_ros`` and run ``colcon build --packages-select
    metric3d_ros`` there; returns (ws, env, colcon output). Raises RuntimeError when colcon is missing or
    the build fails."""
    missing = [m for m in COLCON_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(
            f'colcon is incomplete in this environment (missing {missing}): install the dev extra '
            "(pip install -e '.[dev]') or run scripts/setup_env.sh / scripts/setup_jazzy.sh"
        )
    ws = tmp_path / 'ws'
    copy_package(repo_root, ws / 'src' / PACKAGE)
    env = clean_env(tmp_path, domain_id)
    result = subprocess.run(
        [str(venv_tool('colcon')), 'build', '--packages-select', PACKAGE, '--executor', 'sequential'],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f'colcon build failed (exit {result.returncode}):\n{output[-6000:]}')
    return ws, env, output


def sourced_env(ws: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` as a bash shell has it after ``source install/setup.bash`` in ``ws``."""
    result = subprocess.run(['bash', '-c', 'source install/setup.bash && env -0'], cwd=ws, env=env,
                            capture_output=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f'source install/setup.bash failed: {result.stderr.decode()[-3000:]}')
    pairs = (item.split('=', 1) for item in result.stdout.decode().split('\0') if '=' in item)
    return dict(pairs)
