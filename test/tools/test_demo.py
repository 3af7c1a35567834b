"""metric3d_demo: weights choice, node parameters, PLY output, and the whole demo end to end (slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from metric3d_ros.core.model.weights import WeightsError
from metric3d_ros.tools import demo


def test_choose_weights_given_synthetic_and_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('METRIC3D_CACHE', str(tmp_path / 'empty_cache'))
    ckpt = tmp_path / 'my.pth'
    ckpt.write_bytes(b'x')
    chosen = demo.choose_weights(str(ckpt), 'small', offline=True, log=lambda *_: None)
    assert chosen == (str(ckpt), 'given path')
    assert demo.choose_weights('synthetic', 'small', offline=False)[0] == 'synthetic'
    logs = []
    weights, source = demo.choose_weights('', 'small', offline=True, log=logs.append)
    assert weights == 'synthetic' and 'offline' in source
    assert any('not in the cache directory' in line for line in logs)
    with pytest.raises(WeightsError, match='does not exist'):
        demo.choose_weights(str(tmp_path / 'missing.pth'), 'small', offline=True)


def test_synthetic_notice_is_loud():
    assert 'MEANINGLESS' in demo.SYNTHETIC_NOTICE and demo.SYNTHETIC_NOTICE.startswith('!' * 100)


def test_demo_params_are_node_parameters():
    from metric3d_ros.ros.params import SPECS

    text = demo.demo_params(('front', 'left', 'right'), 'synthetic', 'small', 280, 392, 2)
    params = yaml.safe_load(text)['metric3d_depth']['ros__parameters']

    def flatten(d, prefix=''):
        for key, value in d.items():
            if isinstance(value, dict):
                yield from flatten(value, f'{prefix}{key}.')
            else:
                yield f'{prefix}{key}', value

    flat = dict(flatten(params))
    unknown = sorted(set(flat) - set(SPECS))
    assert not unknown, f'demo parameters the node does not declare: {unknown}'
    assert flat['cameras'] == ['front', 'left', 'right']
    assert (flat['net_height_px'], flat['net_width_px'], flat['max_batch_size']) == (280, 392, 3)
    assert flat['max_input_age_ms'] == -1.0  # bag stamps are old: the node must not drop them


def test_write_ply(tmp_path):
    xyz = np.array([[[0.0, 1.0, 2.0], [np.nan, np.nan, np.nan]], [[3.0, 4.0, 5.5], [-1.0, 0.5, 9.0]]],
                   dtype=np.float32)
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert demo.write_ply(tmp_path / 'c.ply', xyz, rgb) == 3
    raw = (tmp_path / 'c.ply').read_bytes()
    header, body = raw.split(b'end_header\n')
    assert b'element vertex 3' in header and b'property uchar red' in header
    dtype = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('r', 'u1'), ('g', 'u1'), ('b', 'u1')])
    data = np.frombuffer(body, dtype=dtype)
    assert data['z'].tolist() == [2.0, 5.5, 9.0]
    assert data[['r', 'g', 'b']].tolist() == [(0, 1, 2), (6, 7, 8), (9, 10, 11)]
    assert demo.write_ply(tmp_path / 'n.ply', xyz, None) == 3


def _run_demo(tmp_path, *extra):
    from node_support import REPO_ROOT, ros_env

    env = {**os.environ, **ros_env(53)}
    env.pop('METRIC3D_CACHE', None)
    env['METRIC3D_CACHE'] = str(tmp_path / 'no_weights_here')
    out = tmp_path / 'demo_output'
    proc = subprocess.run(
        [sys.executable, '-m', 'metric3d_ros.tools.demo', '--output-dir', str(out), '--offline',
         '--frames', '2', '--net-size', '56x84', '--cloud-stride', '4', *extra],
        capture_output=True, text=True, timeout=900, env=env, cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow
def test_demo_offline_only(tmp_path):
    out, stdout = _run_demo(tmp_path, '--no-ros')
    assert 'MEANINGLESS' in stdout and 'ROS part skipped' in stdout
    assert (out / 'eval' / 'report.md').is_file()
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['depth_meaningless'] is True and 'ros' not in summary


@pytest.mark.slow
@pytest.mark.ros
def test_demo_end_to_end_with_the_node(tmp_path):
    out, stdout = _run_demo(tmp_path)
    assert stdout.count('DEPTH VALUES ARE MEANINGLESS') == 2  # at the start and at the end
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['weights'] == 'synthetic' and summary['node_returncode'] == 0
    for cam in ('front', 'left', 'right'):
        s = summary['ros'][cam]
        assert (s['inputs'], s['depth_outputs'], s['delivered']) == (2, 2, 1.0), (cam, s)
        assert s['latency_p50_ms'] > 0
        assert summary['output_topics'][f'/{cam}/depth/camera_info'] == 2
        assert summary['output_topics'][f'/{cam}/points'] == 2
    # The node's depth is the offline engine's depth (same engine settings and batches; the order of the
    # frames inside a batch may differ, which moves float32 results slightly: 1.2e-4 measured).
    assert summary['node_vs_offline']['frames_compared'] == 6
    assert summary['node_vs_offline']['max_rel_diff'] < 1e-3
    assert len(summary['depth_png']) == 6 and len(summary['ply']) == 3
    for path in summary['depth_png'] + summary['ply']:
        assert os.path.getsize(path) > 1000, path
    assert (out / 'eval' / 'report.md').is_file() and (out / 'eval' / 'figures' / 'per_camera.png').is_file()
    assert 'camera' in stdout and 'lat p50 ms' in stdout
