"""The output catalogue: a registered output comes out of DepthEngine.infer with no other change."""
from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from metric3d_ros.core.config import EngineConfig
from metric3d_ros.core.engine.engine import DepthEngine
from metric3d_ros.core.engine.test_backends import FakeBackend
from metric3d_ros.core.engine.types import Frame, OutputRequest
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.outputs import (
    DEPTH_INFO_TOPIC,
    OUTPUTS,
    OutputSpec,
    register_output,
    resolve_outputs,
)

torch.set_num_threads(2)


def inverse_depth(ctx):
    """1 / depth (NaN stays NaN): a module-level postprocess, as the catalogue requires."""
    return 1.0 / ctx.computed['depth_m']


def _noop(ctx):
    return ctx.computed['depth_m']


INVERSE = OutputSpec(name='inverse_depth', array='inverse_depth_per_m', topic='inverse_depth/image',
                     message='image', encoding='32FC1', postprocess=inverse_depth, requires=('depth',))


@pytest.fixture
def catalogue():
    """OUTPUTS restored after the test (registering is process-wide)."""
    saved = dict(OUTPUTS)
    yield OUTPUTS
    OUTPUTS.clear()
    OUTPUTS.update(saved)


def _frame(h=90, w=120, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Frame(image, Intrinsics(0.9 * w, 0.9 * w, w / 2, h / 2), f'cam{seed}', 1000 + seed)


def _engine():
    return DepthEngine(EngineConfig(net_height_px=140, net_width_px=196, max_batch_size=4), FakeBackend())


def test_builtin_catalogue():
    assert list(OUTPUTS) == ['depth', 'confidence', 'normals', 'points']
    rows = {n: (s.array, s.topic, s.message, s.encoding) for n, s in OUTPUTS.items()}
    assert rows == {
        'depth': ('depth_m', 'depth/image', 'image', '32FC1'),
        'confidence': ('confidence', 'confidence/image', 'image', '32FC1'),
        'normals': ('normals', 'normals/image', 'image', '32FC3'),
        'points': ('points_xyz', 'points', 'cloud', ''),
    }
    assert OUTPUTS['points'].requires == ('depth',)
    assert DEPTH_INFO_TOPIC == 'depth/camera_info'


def test_catalogue_imports_no_torch():
    code = ('import sys; import metric3d_ros.core.outputs as o; '
            'assert "torch" not in sys.modules, "torch imported"; print(len(o.OUTPUTS))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '4'


def test_resolve_adds_requirements_images_before_clouds():
    assert [s.name for s in resolve_outputs({'points'})] == ['depth', 'points']
    assert [s.name for s in resolve_outputs({'points', 'normals'})] == ['depth', 'normals', 'points']
    with pytest.raises(ValueError, match=r"unknown output\(s\) \['colour'\]: known are depth"):
        resolve_outputs({'colour'})


def test_registered_output_comes_out_of_infer(catalogue):
    register_output(INVERSE)
    frames = [_frame(90, 120, 0), _frame(60, 80, 1)]
    engine = _engine()
    results = engine.infer(frames, OutputRequest(outputs={'inverse_depth', 'points'}))
    full = engine.infer(frames, OutputRequest(outputs={'depth'}))
    for r, f in zip(results, full, strict=True):
        assert r.ok, r.error
        # depth was computed (required) but not requested: not in the result
        assert set(r.arrays) == {'inverse_depth_per_m', 'points_xyz'}
        inv = r.arrays['inverse_depth_per_m']
        assert inv.dtype == np.float32 and inv.shape == f.arrays['depth_m'].shape
        np.testing.assert_allclose(inv, 1.0 / f.arrays['depth_m'], rtol=1e-6)
    # the spec pickles by reference (worker processes receive it)
    assert pickle.loads(pickle.dumps(INVERSE)).postprocess is inverse_depth


def test_only_requested_outputs_and_request_errors_per_frame(catalogue):
    engine = _engine()
    frames = [_frame(seed=0), _frame(seed=1), _frame(seed=2), _frame(seed=3)]
    results = engine.infer(frames, [OutputRequest(outputs={'confidence'}), OutputRequest(outputs=set()),
                                    OutputRequest(outputs={'inverse_depth'}),
                                    OutputRequest(outputs={'depth'}, cloud_rgb=True)])
    assert results[0].ok and set(results[0].arrays) == {'confidence'}
    assert 'at least one output' in results[1].error
    assert "unknown output(s) ['inverse_depth']" in results[2].error
    assert 'cloud_rgb needs a cloud output' in results[3].error and 'points' in results[3].error


def test_failing_postprocess_fails_its_group_only(catalogue):
    register_output(OutputSpec('broken', 'broken', 'broken/image', 'image', '32FC1', _broken))
    engine = _engine()
    results = engine.infer([_frame(90, 120, 0), _frame(60, 80, 1)],
                           [OutputRequest(outputs={'broken'}), OutputRequest()])
    assert 'ValueError: broken on purpose' in results[0].error and not results[0].arrays
    assert results[1].ok and 'depth_m' in results[1].arrays


def _broken(ctx):
    raise ValueError('broken on purpose')


def _bad_specs():
    return [
        (OutputSpec('depth', 'x', 'x/image', 'image', '32FC1', _noop), "'depth' is already registered"),
        (OutputSpec('x', 'depth_m', 'x/image', 'image', '32FC1', _noop), "array key 'depth_m' is taken"),
        (OutputSpec('x', 'points_rgb', 'x/image', 'image', '32FC1', _noop), "'points_rgb' is taken"),
        (OutputSpec('x', 'x', 'points', 'image', '32FC1', _noop), "topic suffix 'points' is taken"),
        (OutputSpec('x', 'x', DEPTH_INFO_TOPIC, 'image', '32FC1', _noop), 'topic suffix'),
        (OutputSpec('x', 'x', 'x', 'mesh', '', _noop), "message must be 'image' or 'cloud'"),
        (OutputSpec('x', 'x', 'x', 'image', '', _noop), 'an image needs an encoding'),
        (OutputSpec('x', 'x', 'x', 'cloud', '32FC1', _noop), 'a cloud has none'),
        (OutputSpec('x', 'x', 'x', 'image', '32FC1', lambda ctx: ctx), 'module-level function'),
        (OutputSpec('x', 'x', 'x', 'image', '32FC1', _noop, requires=('nope',)), "requires 'nope'"),
        (OutputSpec('x', 'x', 'x', 'image', '32FC1', _noop, requires=('points',)),
         'cannot require the cloud'),
        (OutputSpec('', 'x', 'x', 'image', '32FC1', _noop), 'OutputSpec.name must be a non-empty string'),
    ]


@pytest.mark.parametrize('case', range(len(_bad_specs())))
def test_register_output_rejects_bad_specs(catalogue, case):
    spec, message = _bad_specs()[case]
    before = dict(OUTPUTS)
    with pytest.raises(ValueError) as info:
        register_output(spec)
    assert message in str(info.value)
    assert OUTPUTS == before
