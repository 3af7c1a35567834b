"""Every console script of setup.py: ``--help`` exits 0, its usage line names the console script, and the
description is printed once (it was printed twice, as description and again inside the epilog)."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

SETUP_PY = Path(__file__).resolve().parents[2] / 'setup.py'
CONSOLE_SCRIPTS = re.findall(r"'(\w+) = ([\w.]+):main'", SETUP_PY.read_text())
RUN_HELP = 'import sys, {module} as m; sys.argv = [{name!r}, "--help"]; sys.exit(m.main())'


def test_setup_py_lists_the_tools():
    names = {name for name, _ in CONSOLE_SCRIPTS}
    assert {'metric3d_export', 'metric3d_node_bench', 'metric3d_bag', 'metric3d_eval'} <= names


@pytest.mark.parametrize('name, module', [c for c in CONSOLE_SCRIPTS if c[0] != 'depth_node'])
def test_help_names_the_console_script_and_says_its_description_once(name, module):
    # depth_node's help is test/ros/test_node_help.py's (it needs rclpy)
    proc = subprocess.run([sys.executable, '-c', RUN_HELP.format(module=module, name=name)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f'usage: {name} '), out.splitlines()[0]
    first_line = ' '.join(importlib.import_module(module).__doc__.strip().splitlines()[0].split())
    count = ' '.join(out.split()).count(first_line)  # argparse may wrap the description
    assert count == 1, f'{name} --help prints its docstring\'s first line {count} times'
