"""Large host copies split over a few threads (numpy releases the GIL while copying).

Used to stage frames into pinned memory (engine upload) and to move frames and outputs through the engine
process's shared memory. One pool of up to 4 threads per process, created on first use.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CHUNK_BYTES = 1 << 21
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix='copy')
        return _POOL


def copy_parallel(copies: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """``dst[...] = src`` for every (dst, src) pair of C-contiguous arrays of equal size; totals of 8 MiB or
    more are copied in 2 MiB pieces over up to 4 threads."""
    flat = []
    total = 0
    for dst, src in copies:
        if dst.nbytes != src.nbytes or not (dst.flags.c_contiguous and src.flags.c_contiguous):
            raise ValueError(f'copy_parallel needs C-contiguous arrays of equal size, got {dst.nbytes} B '
                             f'and {src.nbytes} B')
        flat.append((dst.reshape(-1).view(np.uint8), src.reshape(-1).view(np.uint8)))
        total += src.nbytes
    if total < 4 * CHUNK_BYTES:
        for dst, src in flat:
            np.copyto(dst, src)
        return
    pieces = [(dst[start:start + CHUNK_BYTES], src[start:start + CHUNK_BYTES])
              for dst, src in flat for start in range(0, src.size, CHUNK_BYTES)]
    for future in [_pool().submit(np.copyto, d, s) for d, s in pieces]:
        future.result()
