"""glibc malloc tuning used by the node and the engine process."""
from __future__ import annotations

import platform

import pytest

from metric3d_ros.core import malloc_tuning


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt is glibc-specific')
def test_thresholds_are_accepted_by_glibc():
    assert malloc_tuning.keep_large_allocations() is True
    assert malloc_tuning.MMAP_THRESHOLD_B == 32 * 1024 * 1024


def test_without_glibc_it_is_a_reported_no_op(monkeypatch):
    def missing(*_a, **_k):
        raise OSError('no C library')

    monkeypatch.setattr(malloc_tuning.ctypes, 'CDLL', missing)
    assert malloc_tuning.keep_large_allocations() is False
