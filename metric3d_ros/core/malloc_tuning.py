"""Keep large buffers in the heap: glibc ``mallopt`` so that per-frame arrays do not page-fault every time.

By default glibc serves allocations above its mmap threshold (128 KiB, raised dynamically up to 32 MiB)
with a fresh ``mmap`` and returns them with ``munmap`` when freed, and trims the heap top eagerly. A depth
node allocates several 1-8 MiB arrays per frame (image copies, depth, clouds, message buffers); every fresh
mapping is zero-filled page by page on first touch (one page fault per 4 KiB, serialized on the process's
memory-map lock against every other thread). Measured on the 2-core dev machine: copying 4 frames' outputs
(26 MB) out of shared memory took 2-16 ms with glibc's defaults and a steady 1.5 ms with
``keep_large_allocations()``.

``keep_large_allocations`` raises the mmap threshold to 32 MiB (glibc's maximum for it on 64-bit) and the
trim threshold to 256 MiB, so freed buffers are reused from the heap and what an oversized frame leaves
behind is returned once more than 256 MiB of the heap top is free (bounded, not kept for good). It is a
process-wide setting that each process layout applies to the processes that carry frames
(``ros.layout``: the node process in ``in_process`` mode, each group worker); a no-op (returns False)
where the C library has no ``mallopt`` (musl, macOS).
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_B = 32 * 1024 * 1024
TRIM_THRESHOLD_B = 256 * 1024 * 1024


def keep_large_allocations(mmap_threshold_b: int = MMAP_THRESHOLD_B,
                           trim_threshold_b: int = TRIM_THRESHOLD_B) -> bool:
    """Apply the thresholds with glibc's ``mallopt``; True when both were accepted."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok_mmap = mallopt(M_MMAP_THRESHOLD, int(mmap_threshold_b)) == 1
    ok_trim = mallopt(M_TRIM_THRESHOLD, int(trim_threshold_b)) == 1
    return ok_mmap and ok_trim
