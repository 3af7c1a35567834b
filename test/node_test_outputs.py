"""A fake output for the node tests (module level: catalogue entries pickle by reference into group
workers)."""
from __future__ import annotations


def inverse_depth(ctx):
    """1 / depth, on the engine's device."""
    return 1.0 / ctx.computed['depth_m']


def register_inverse_depth() -> None:
    """Add 'inverse_depth' (<cam>/inverse_depth/image, 32FC1) to the catalogue once."""
    from metric3d_ros.core.outputs import OUTPUTS, OutputSpec, register_output

    if 'inverse_depth' not in OUTPUTS:
        register_output(OutputSpec(name='inverse_depth', array='inverse_depth', topic='inverse_depth/image',
                                   message='image', encoding='32FC1', postprocess=inverse_depth,
                                   requires=('depth',)))
