"""gc_tuning: start-up objects leave the collector's generations; newer garbage is still collected."""
from __future__ import annotations

import gc
import weakref

from metric3d_ros.core.gc_tuning import freeze_startup_objects


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_freeze_moves_live_objects_out_and_later_cycles_are_still_collected():
    try:
        kept = _Cycle()
        frozen = freeze_startup_objects()
        assert frozen > 1000 and gc.get_freeze_count() == frozen
        assert gc.is_tracked(kept)
        later = _Cycle()
        ref = weakref.ref(later)
        del later
        gc.collect()
        assert ref() is None  # a cycle made after the freeze is collected as usual
    finally:
        gc.unfreeze()
