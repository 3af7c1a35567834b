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


def test_choose_weights_says_one_thing_when_it_downloads(tmp_path, monkeypatch):
    """A cache miss that goes on to download must not first say that download is disabled."""
    import metric3d_ros.core.model.weights as weights_module

    monkeypatch.setenv('METRIC3D_CACHE', str(tmp_path / 'empty_cache'))
    real = weights_module.resolve_weights

    def no_network(variant, download=False, **kwargs):
        if download:
            raise WeightsError('network unreachable (test)')
        return real(variant, download=False, **kwargs)

    monkeypatch.setattr(weights_module, 'resolve_weights', no_network)
    logs = []
    weights, source = demo.choose_weights('', 'small', offline=False, log=logs.append)
    assert (weights, source) == ('synthetic', 'synthetic (download failed)')
    assert not any('download is disabled' in line for line in logs), logs
    assert 'downloading it' in logs[0] and 'network unreachable' in logs[-1], logs


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


def _depth_bag(path, depths: dict):
    from metric3d_ros.tools.bagio import BagWriter

    with BagWriter(path, 'mcap') as writer:
        for camera, depth in depths.items():
            writer.write_image(f'/{camera}/depth/image', depth.astype(np.float32), '32FC1', 7, f'{camera}_f')


def test_export_artifacts_one_depth_scale_for_the_camera_set(tmp_path):
    import cv2

    # the near camera sees 1-3 m, the far one 2-40 m; both see the same 2 m wall in their bottom rows
    near = np.tile(np.linspace(1.0, 3.0, 80), (60, 1))
    far = np.tile(np.linspace(2.0, 40.0, 120), (90, 1))
    near[-10:], far[-10:] = 2.0, 2.0
    bag = tmp_path / 'out_bag'
    _depth_bag(bag, {'near': near, 'far': far})
    result = demo.export_artifacts(bag, tmp_path / 'figs')
    lo, hi = result['depth_scale_m']
    assert lo < 1.2 and hi > 30.0  # one scale over both cameras
    images = {p.split('/')[-1].split('_')[0]: cv2.imread(p) for p in result['depth_png']}
    assert images['near'].shape[0] == 60 and images['far'].shape[0] == 90  # no warning band
    wall_near, wall_far = images['near'][-5, 40], images['far'][-5, 60]
    assert np.array_equal(wall_near, wall_far)  # the same depth has the same colour in every image
    # the colour bar beside each image: the same scale (top colour = near end, bottom = far end)
    assert np.array_equal(images['near'][0, -80], images['far'][0, -80])
    assert np.array_equal(images['near'][-1, -80], images['far'][-1, -80])
    warned = demo.export_artifacts(bag, tmp_path / 'warned', demo.eval_report.SYNTHETIC_FIGURE_WARNING)
    for path in warned['depth_png']:
        image = cv2.imread(path)
        assert image.shape[0] > 60 and np.all(image[1, 1] == (0, 0, 200))  # the red band on top


def test_remove_bags_and_folder_size(tmp_path):
    (tmp_path / 'keep').mkdir()
    (tmp_path / 'keep' / 'a.png').write_bytes(b'x' * 10)
    bag = tmp_path / 'bag'
    bag.mkdir()
    (bag / 'b.mcap').write_bytes(b'y' * 100)
    assert demo.folder_size(tmp_path) == (2, 110)
    assert demo.remove_bags([bag, tmp_path / 'missing']) == 100
    assert demo.folder_size(tmp_path) == (1, 10) and not bag.exists()


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
    # the working bags are gone; the demo states the size of what it left
    assert not (out / 'demo_bag').exists() and not (out / 'eval' / 'output_bag').exists()
    files, size = demo.folder_size(out)
    assert f'holds {files} files, {size} bytes' in stdout


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
    # modest by default: the bags (raw images, float depth, normals, clouds) are removed, the size is stated
    for bag in ('demo_bag', 'eval/output_bag', 'ros/output_bag'):
        assert not (out / bag).exists(), bag
    files, size = demo.folder_size(out)
    assert f'holds {files} files, {size} bytes' in stdout and size < 20e6
    # every image carries the synthetic-weights warning band (red top rows)
    import cv2

    for path in summary['depth_png'] + [str(p) for p in (out / 'eval' / 'figures').glob('*.png')]:
        image = cv2.imread(path)
        assert np.mean(np.all(image[:3].reshape(-1, 3) == (0, 0, 200), axis=1)) > 0.5 or \
            _red_title(image), path


def _red_title(image):
    """matplotlib charts: the warning is a red box in the top 10 % of the figure."""
    top = image[: max(image.shape[0] // 10, 1)].reshape(-1, 3).astype(int)
    red = (top[:, 2] > 200) & (top[:, 1] < 60) & (top[:, 0] < 60)
    return red.mean() > 0.02
