"""A fake output for the node tests (module level: catalogue entries pickle by reference into group
workers)."""
from __future__ import annotations

from contextlib import contextmanager


def inverse_depth(ctx):
    """1 / depth, on the engine's device."""
    return 1.0 / ctx.computed['depth_m']


@contextmanager
def inverse_depth_registered():
    """'inverse_depth' (<cam>/inverse_depth/image, 32FC1) in the catalogue for the duration of the block (the
    catalogue is process-wide: other tests must not see it)."""
    from metric3d_ros.core.outputs import OUTPUTS, OutputSpec, register_output

    saved = dict(OUTPUTS)
    register_output(OutputSpec(name='inverse_depth', array='inverse_depth', topic='inverse_depth/image',
                               message='image', encoding='32FC1', postprocess=inverse_depth,
                               requires=('depth',)))
    try:
        yield
    finally:
        OUTPUTS.clear()
        OUTPUTS.update(saved)
