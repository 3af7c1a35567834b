"""scripts/run_tests.sh: the Jazzy pass keeps its ROS selection whatever pytest arguments are given, and both
passes run and report even when the first fails.

The real script runs in a scratch copy of the repository layout whose setup scripts do nothing and whose two
venv pythons are stubs: each records its arguments and exits with the code its environment variable names.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / 'scripts' / 'run_tests.sh'
STUB_PYTHON = '''#!/usr/bin/env bash
for a in "$@"; do printf '%s\\n' "$a"; done > "$STUB_LOG_DIR/{name}.args"
exit "${{STUB_RC_{name}:-0}}"
'''


def _run(tmp_path: Path, args: list[str], kilted_rc: int = 0, jazzy_rc: int = 0,
         skip_jazzy: bool = False) -> tuple[subprocess.CompletedProcess, dict[str, list[str] | None]]:
    root = tmp_path / 'repo'
    (root / 'scripts').mkdir(parents=True)
    shutil.copy(SCRIPT, root / 'scripts' / 'run_tests.sh')
    for setup in ('setup_env.sh', 'setup_jazzy.sh'):
        (root / 'scripts' / setup).write_text('#!/usr/bin/env bash\nexit 0\n')
    for venv, name in (('.venv', 'kilted'), ('.venv-jazzy', 'jazzy')):
        (root / venv / 'bin').mkdir(parents=True)
        (root / venv / 'bin' / 'python').write_text(STUB_PYTHON.format(name=name))
    for path in root.rglob('*'):
        if path.is_file():
            path.chmod(0o755)
    env = {**os.environ, 'STUB_LOG_DIR': str(tmp_path), 'STUB_RC_kilted': str(kilted_rc),
           'STUB_RC_jazzy': str(jazzy_rc), 'METRIC3D_SHARED': str(tmp_path), 'ROS_LOG_DIR': str(tmp_path),
           'METRIC3D_SKIP_JAZZY': '1' if skip_jazzy else '0'}
    proc = subprocess.run(['bash', str(root / 'scripts' / 'run_tests.sh'), *args], env=env,
                          capture_output=True, text=True, timeout=60)
    calls = {}
    for name in ('kilted', 'jazzy'):
        log = tmp_path / f'{name}.args'
        calls[name] = log.read_text().splitlines() if log.exists() else None
    return proc, calls


def test_no_arguments_jazzy_selects_ros(tmp_path):
    proc, calls = _run(tmp_path, [])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls['kilted'] == ['-m', 'pytest', '-ra']
    assert calls['jazzy'] == ['-m', 'pytest', '-ra', '-m', 'ros']


@pytest.mark.parametrize('user_args, jazzy_tail', [
    (['-m', 'not slow'], ['-m', 'ros and (not slow)']),
    (['-mnot slow', '-x'], ['-m', 'ros and (not slow)', '-x']),
    (['-x', '-m', 'slow', '-k', 'camera info'], ['-x', '-m', 'ros and (slow)', '-k', 'camera info']),
    (['-k', 'bag', 'test/tools'], ['-m', 'ros', '-k', 'bag', 'test/tools']),
])
def test_user_marker_narrows_the_jazzy_selection(tmp_path, user_args, jazzy_tail):
    proc, calls = _run(tmp_path, user_args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls['kilted'] == ['-m', 'pytest', '-ra', *user_args]
    assert calls['jazzy'] == ['-m', 'pytest', '-ra', *jazzy_tail]


@pytest.mark.parametrize('kilted_rc, jazzy_rc, expect_ok', [(1, 0, False), (0, 1, False), (1, 1, False),
                                                             (0, 5, True), (0, 0, True)])
def test_both_passes_run_and_report(tmp_path, kilted_rc, jazzy_rc, expect_ok):
    proc, calls = _run(tmp_path, ['-m', 'not slow'], kilted_rc=kilted_rc, jazzy_rc=jazzy_rc)
    assert calls['kilted'] is not None and calls['jazzy'] is not None
    assert (proc.returncode == 0) == expect_ok, proc.stdout + proc.stderr
    summary = proc.stdout.split('=== summary ===', 1)[1]
    assert ('Kilted pass: FAILED' in summary) == (kilted_rc != 0)
    assert ('Jazzy pass: FAILED' in summary) == (jazzy_rc not in (0, 5))
    assert ('Jazzy pass: no ROS test selected' in summary) == (jazzy_rc == 5)


def test_skip_jazzy_reports_the_skip(tmp_path):
    proc, calls = _run(tmp_path, [], kilted_rc=0, skip_jazzy=True)
    assert proc.returncode == 0
    assert calls['jazzy'] is None
    assert 'Jazzy pass: skipped' in proc.stdout
