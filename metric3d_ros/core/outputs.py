"""The output catalogue: every output the engine can compute and the node publishes, in one table.

An output is one ``OutputSpec``: its name (what an ``OutputRequest`` asks for), the key of its array in
``FrameResult.arrays``, the topic suffix under ``<camera>/``, the message kind and image encoding, and the
engine-side function that computes it. The engine, the publishers, the node benchmark and the evaluator
iterate ``OUTPUTS``; a new output is one ``register_output`` call and its postprocess function::

    from metric3d_ros.core.outputs import OutputSpec, register_output

    def inverse_depth(ctx):                       # module level: specs pickle by reference
        return 1.0 / ctx.computed['depth_m']

    register_output(OutputSpec(name='inverse_depth', array='inverse_depth', topic='inverse_depth/image',
                               message='image', encoding='32FC1', postprocess=inverse_depth,
                               requires=('depth',)))

Postprocess functions (``metric3d_ros.core.engine.postprocess``): ``postprocess(ctx: PostContext) ->
torch.Tensor``, called once per group of batch rows that share a source size and a request, on the engine's
device. ``ctx.network`` is the backend's ``NetworkOutput`` for the whole batch, ``ctx.group`` the
``PostGroup`` (rows ``start:stop``, letterbox, request, per-row network fx and output intrinsics),
``ctx.computed`` the device tensors of the outputs this group has computed so far, keyed by
``OutputSpec.array`` (every output named in ``requires`` is there), plus ``ctx.canonical_focal_px`` of the
engine configuration and ``ctx.canonical_range``, the network's canonical depth range (a value at either end
is a clamp: ``postprocess_depth`` makes it invalid). It returns an ``(n, ...)`` tensor for the group's n
frames; the engine copies it to the host and ``FrameResult.arrays[spec.array]`` is each frame's row, passed
through ``spec.host_view`` when that is set. Outputs are computed in catalogue order, image outputs first
(stage 'postprocess'), clouds after them (stage 'cloud'); only requested outputs are copied to the host.

This module imports no torch (the postprocess functions import it when they run): the node's publishers and
the tools read the catalogue without loading it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from metric3d_ros.core.engine import postprocess as _post

#: Published beside ``depth`` and ``points`` (the CameraInfo of the output image); not computed.
DEPTH_INFO_TOPIC = 'depth/camera_info'
#: ``FrameResult.arrays`` key of a cloud's uint8 colours when the request asks for ``cloud_rgb``.
CLOUD_RGB_ARRAY = 'points_rgb'
MESSAGES = ('image', 'cloud')


@dataclass(frozen=True)
class OutputSpec:
    """One output (module docstring).

    name: what ``OutputRequest.outputs`` names ('depth', 'confidence', 'normals', 'points', ...).
    array: key of ``FrameResult.arrays`` ('depth_m', 'confidence', 'normals', 'points_xyz', ...).
    topic: suffix under '<camera>/' ('depth/image', 'points', ...).
    message: 'image' (sensor_msgs/Image with ``encoding``) or 'cloud' (sensor_msgs/PointCloud2, xyz
        float32, organized).
    encoding: the image encoding ('32FC1', '32FC3', ...); '' for clouds.
    postprocess: ``(ctx: PostContext) -> torch.Tensor`` (module docstring); a module-level function.
    requires: names of the outputs this one reads from ``ctx.computed`` (computed first, even when not
        requested).
    host_view: optional module-level ``(np.ndarray) -> np.ndarray`` applied to each frame's host array
        (the cloud's ``[..., :3]`` view of its 16-byte points).
    """

    name: str
    array: str
    topic: str
    message: str
    encoding: str
    postprocess: Callable
    requires: tuple[str, ...] = ()
    host_view: Callable[[np.ndarray], np.ndarray] | None = None


#: The catalogue, in computation order (``register_output`` appends).
OUTPUTS: dict[str, OutputSpec] = {}


def _module_level(what: str, fn: object) -> None:
    if not callable(fn):
        raise ValueError(f'{what} must be a callable, got {fn!r}')
    qualname = getattr(fn, '__qualname__', '')
    if not qualname or '<' in qualname or not getattr(fn, '__module__', None):
        raise ValueError(f'{what} must be a module-level function (specs pickle by reference into worker '
                         f'processes), got {qualname or fn!r}: define it at the top level of a module')


def register_output(spec: OutputSpec) -> None:
    """Append ``spec`` to ``OUTPUTS``; ``ValueError`` naming the field when it clashes or is malformed."""
    if not isinstance(spec, OutputSpec):
        raise ValueError(f'register_output takes an OutputSpec, got {type(spec).__name__}')
    for field_name in ('name', 'array', 'topic'):
        value = getattr(spec, field_name)
        if not isinstance(value, str) or not value:
            raise ValueError(f'OutputSpec.{field_name} must be a non-empty string, got {value!r}')
    if spec.name in OUTPUTS:
        raise ValueError(f'output {spec.name!r} is already registered: choose another name')
    if spec.array == CLOUD_RGB_ARRAY or any(s.array == spec.array for s in OUTPUTS.values()):
        raise ValueError(f'output {spec.name!r}: array key {spec.array!r} is taken: choose another')
    if spec.topic == DEPTH_INFO_TOPIC or any(s.topic == spec.topic for s in OUTPUTS.values()):
        raise ValueError(f'output {spec.name!r}: topic suffix {spec.topic!r} is taken: choose another')
    if spec.message not in MESSAGES:
        raise ValueError(f"output {spec.name!r}: message must be 'image' or 'cloud', got {spec.message!r}")
    if (spec.message == 'image') != bool(spec.encoding):
        raise ValueError(f"output {spec.name!r}: an image needs an encoding such as '32FC1', a cloud has "
                         f"none (''); got message {spec.message!r}, encoding {spec.encoding!r}")
    _module_level(f'output {spec.name!r}: postprocess', spec.postprocess)
    if spec.host_view is not None:
        _module_level(f'output {spec.name!r}: host_view', spec.host_view)
    for name in spec.requires:
        if name not in OUTPUTS:
            raise ValueError(f'output {spec.name!r} requires {name!r}, which is not registered (register '
                             f'it first; known: {", ".join(OUTPUTS)})')
        if spec.message == 'image' and OUTPUTS[name].message == 'cloud':
            raise ValueError(f'output {spec.name!r}: an image output cannot require the cloud {name!r} '
                             '(clouds are computed after images)')
    object.__setattr__(spec, 'requires', tuple(spec.requires))
    OUTPUTS[spec.name] = spec


def resolve_outputs(names: Iterable[str]) -> list[OutputSpec]:
    """The specs to compute for ``names``: those and everything they require, in computation order
    (images, then clouds, each in catalogue order). ``ValueError`` for unknown names."""
    wanted = set(names)
    unknown = sorted(wanted - set(OUTPUTS))
    if unknown:
        raise ValueError(f'unknown output(s) {unknown}: known are {", ".join(OUTPUTS)}')
    stack = list(wanted)
    while stack:
        for name in OUTPUTS[stack.pop()].requires:
            if name not in wanted:
                wanted.add(name)
                stack.append(name)
    specs = [s for s in OUTPUTS.values() if s.name in wanted]
    return [s for s in specs if s.message == 'image'] + [s for s in specs if s.message == 'cloud']


def xyz_view(points: np.ndarray) -> np.ndarray:
    """The ``[..., :3]`` view of (h, w, 4) 16-byte points (see ``geometry.cloud.padded_xyz``)."""
    return points[..., :3]


register_output(OutputSpec('depth', 'depth_m', 'depth/image', 'image', '32FC1', _post.postprocess_depth))
register_output(OutputSpec('confidence', 'confidence', 'confidence/image', 'image', '32FC1',
                           _post.postprocess_confidence))
register_output(OutputSpec('normals', 'normals', 'normals/image', 'image', '32FC3',
                           _post.postprocess_normals))
register_output(OutputSpec('points', 'points_xyz', 'points', 'cloud', '', _post.unproject_group,
                           requires=('depth',), host_view=xyz_view))
