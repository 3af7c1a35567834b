"""Shared pytest fixtures for metric3d_ros."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """The shared data folder: $METRIC3D_SHARED, else ../shared beside the repository."""
    return Path(os.environ.get('METRIC3D_SHARED', REPO_ROOT.parent / 'shared')).resolve()


def pytest_configure(config):
    """A suite started in the background of a non-interactive shell (``cmd &``, as a CI job may be) inherits
    SIGINT ignored, and every process it starts would too: ``ros2 launch`` then ignores the Ctrl-C the launch
    tests send it. A handler here makes the processes this suite starts get the default action (exec resets
    handled signals to the default; ignored ones stay ignored)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``cuda`` when torch sees no CUDA device (torch is imported only if one is
    collected)."""
    cuda_items = [item for item in items if item.get_closest_marker('cuda') is not None]
    if not cuda_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA device (torch.cuda.is_available() is False); on a GPU '
                                   'machine: python -m pytest -m cuda')
    for item in cuda_items:
        item.add_marker(skip)


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    root = shared_root()
    if not (root / 'reference' / 'metric3d').is_dir():
        raise RuntimeError(
            f'shared data not found at {root}: set METRIC3D_SHARED to the folder holding '
            'reference/metric3d and data/ (CI places it at ../shared beside the checkout)'
        )
    return root


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope='module')
def isolated_ros_env():
    """This test module's own ROS_DOMAIN_ID and ROS_LOG_DIR (for tests that need no rclpy.init).

    Use with ``pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('isolated_ros_env')]``.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as log_dir, pytest.MonkeyPatch.context() as mp:
        mp.setenv('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
        mp.setenv('ROS_LOG_DIR', log_dir)
        yield
