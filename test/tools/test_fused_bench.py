"""metric3d_fused_bench: the synthetic rig's depth, the figures it prints and writes."""
from __future__ import annotations

import json

import numpy as np

from metric3d_ros.tools import fused_bench


def test_rig_depths_look_around_and_stay_in_range():
    cams = fused_bench.rig_depths(4, 36, 64)
    assert [c.index for c in cams] == [0, 1, 2, 3]
    for cam in cams:
        assert cam.depth_m.shape == (36, 64) and np.isfinite(cam.depth_m).all()
        assert 0.9 < cam.depth_m.min() and cam.depth_m.max() <= 30.0
    # the cameras look along four different headings of the base's x-y plane, 1 m above it
    headings = [cam.base_from_optical.rotation_matrix()[:, 2] for cam in cams]
    np.testing.assert_allclose(headings[0], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(headings[1], [0.0, 1.0, 0.0], atol=1e-12)
    assert all(cam.base_from_optical.translation_m == (0.0, 0.0, 1.0) for cam in cams)


def test_main_prints_and_writes_every_configuration(tmp_path, capsys):
    out = tmp_path / 'fused.json'
    assert fused_bench.main(['--image-size', '36x64', '--iterations', '2', '--json', str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = {r['config']: r for r in data['results']}
    assert set(rows) == {'stride', 'voxel', 'costmap'} and 'torch' in data['environment']
    assert rows['stride']['points_in'] == 4 * 18 * 32 == rows['stride']['points_out']
    assert rows['costmap']['points_out'] < rows['voxel']['points_out'] <= rows['stride']['points_out']
    for name in rows:
        assert name in printed
    assert fused_bench.main(['--image-size', '720']) == 2
