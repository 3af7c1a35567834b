"""The core is ROS-free and torch-free at import; the ros layer alone imports rclpy and messages."""
from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO_ROOT

CORE = REPO_ROOT / 'metric3d_ros' / 'core'
FORBIDDEN_IN_CORE = ('rclpy', 'rosidl_runtime_py', 'builtin_interfaces')


def _imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_core_sources_import_no_ros():
    offenders = []
    for path in sorted(CORE.rglob('*.py')):
        for mod in _imported_modules(path):
            top = mod.split('.')[0]
            if top in FORBIDDEN_IN_CORE or top.endswith('_msgs') or mod.startswith('metric3d_ros.ros'):
                offenders.append(f'{path.relative_to(REPO_ROOT)}: {mod}')
    assert not offenders, 'core must not import ROS:\n' + '\n'.join(offenders)


def test_import_core_loads_neither_rclpy_nor_torch():
    code = (
        'import sys, importlib, pkgutil\n'
        'import metric3d_ros.core\n'
        'import metric3d_ros.core.geometry\n'
        'bad = sorted(m for m in sys.modules\n'
        '             if m.split(".")[0] in ("rclpy", "torch") or m.endswith("_msgs"))\n'
        'print(",".join(bad))\n'
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert out.stdout.strip() == '', f'importing the core pulled in: {out.stdout.strip()}'
