"""ament-style lint: ruff over the package, launch files, tools and tests."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name('ruff')
    if exe.exists():
        return [str(exe)]
    found = shutil.which('ruff')
    if found is None:
        raise RuntimeError('ruff is not installed: it is part of the dev extra (pip install -e .[dev])')
    return [found]


def test_ruff_clean():
    out = subprocess.run(
        _ruff() + ['check', '--no-cache', '.'], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr
