"""copy_parallel: threaded large copies give exactly the source."""
from __future__ import annotations

import numpy as np
import pytest

from metric3d_ros.core.parallel_copy import CHUNK_BYTES, copy_parallel


@pytest.mark.parametrize('nbytes', [10, CHUNK_BYTES * 4 + 12345])  # one thread / several threads
def test_copies_are_exact(nbytes):
    rng = np.random.default_rng(0)
    src = [rng.integers(0, 255, nbytes, dtype=np.uint8), rng.normal(size=(7, nbytes // 28 + 1)).astype('<f4')]
    dst = [np.zeros_like(a) for a in src]
    copy_parallel(list(zip(dst, src, strict=True)))
    for d, s in zip(dst, src, strict=True):
        np.testing.assert_array_equal(d, s)


def test_mismatched_or_strided_arrays_are_refused():
    with pytest.raises(ValueError, match='equal size'):
        copy_parallel([(np.zeros(4, np.uint8), np.zeros(5, np.uint8))])
    with pytest.raises(ValueError, match='C-contiguous'):
        copy_parallel([(np.zeros(4, np.uint8), np.zeros(8, np.uint8)[::2])])
