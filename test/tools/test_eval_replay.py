"""metric3d_eval: camera discovery, batch planning, deterministic replay (sqlite3 = mcap), outputs, CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from metric3d_ros.codec.camera_info import camera_info_from_msg
from metric3d_ros.codec.cdr import stamp_ns_of
from metric3d_ros.codec.cloud import pointcloud2_from_msg
from metric3d_ros.codec.image import image_from_msg, image_to_depth_m
from metric3d_ros.core.geometry.camera_info import CameraInfoFields
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.metrics import MetricsConfig
from metric3d_ros.core.synthetic_scene import CameraSpec, SceneConfig
from metric3d_ros.tools import evaluate as ev
from metric3d_ros.tools.bag_builder import BagOptions, write_synthetic_bag
from metric3d_ros.tools.bagio import BagReader, BagWriter, typestore
from metric3d_ros.tools.eval_report import json_safe

CAMS = (
    CameraSpec('front', 64, 48, Intrinsics(50.0, 50.0, 31.5, 24.0), pitch_deg=5.0),
    CameraSpec('left', 72, 40, Intrinsics(40.0, 41.0, 35.5, 19.5), yaw_deg=120.0),
    CameraSpec('right', 48, 48, Intrinsics(35.0, 35.0, 23.5, 23.5), yaw_deg=-120.0),
)
SCENE = SceneConfig(cameras=CAMS, rate_hz=10.0)
METRICS = MetricsConfig(min_depth_m=0.1, max_depth_m=20.0)


@pytest.fixture(scope='module')
def tiny_bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('bags')
    paths = {}
    for storage in ('sqlite3', 'mcap'):
        paths[storage] = root / storage
        write_synthetic_bag(paths[storage], SCENE, 2, BagOptions(storage=storage))
    return paths


@pytest.fixture(scope='module')
def torch_engine():
    engine, description = ev.build_engine('torch', {'weights': 'synthetic', 'net_size': '56x84',
                                                    'max_batch_size': 4})
    yield engine, description
    engine.close()


def test_discover_cameras_plain_and_compressed():
    topics = {
        '/a/camera_info': 'sensor_msgs/msg/CameraInfo', '/a/image': 'sensor_msgs/msg/Image',
        '/a/depth_gt': 'sensor_msgs/msg/Image',
        '/rig/b/camera_info': 'sensor_msgs/msg/CameraInfo',
        '/rig/b/image/compressed': 'sensor_msgs/msg/CompressedImage',
        '/c/camera_info': 'sensor_msgs/msg/CameraInfo',  # no image: not a camera
    }
    cams = ev.discover_cameras(topics, ev.EvalOptions())
    assert [(c.name, c.image_topic, c.compressed, c.gt_topic) for c in cams] == [
        ('a', '/a/image', False, '/a/depth_gt'), ('rig/b', '/rig/b/image/compressed', True, None)]
    assert [c.name for c in ev.discover_cameras(topics, ev.EvalOptions(cameras=('rig/b',)))] == ['rig/b']
    with pytest.raises(ValueError, match='not in the bag'):
        ev.discover_cameras(topics, ev.EvalOptions(cameras=('z',)))
    with pytest.raises(ValueError, match='no camera found'):
        ev.discover_cameras({'/x': 'std_msgs/msg/String'}, ev.EvalOptions())


def test_plan_batches_groups_synchronized_cameras():
    frames = [(100, 'b'), (100, 'a'), (200, 'a'), (205, 'b'), (300, 'a'), (300, 'a2'), (300, 'b'), (400, 'a'),
              (410, 'a')]
    order = ['a', 'a2', 'b']
    assert ev.plan_batches(frames, order, 8, 0) == [
        [(100, 'a'), (100, 'b')], [(200, 'a')], [(205, 'b')], [(300, 'a'), (300, 'a2'), (300, 'b')],
        [(400, 'a')], [(410, 'a')]]
    # A tolerance joins near stamps, but never two frames of one camera; the batch size caps.
    assert ev.plan_batches(frames, order, 2, 10) == [
        [(100, 'a'), (100, 'b')], [(200, 'a'), (205, 'b')], [(300, 'a'), (300, 'a2')], [(300, 'b')],
        [(400, 'a')], [(410, 'a')]]
    every = [f for b in ev.plan_batches(frames, order, 3, 50) for f in b]
    assert sorted(every) == sorted(frames)  # no frame dropped


def test_pair_camera_info_exact_then_nearest():
    info = {s: CameraInfoFields.from_intrinsics(Intrinsics(s, s, 1, 1), 4, 4) for s in (10, 20, 40)}
    assert ev.pair_camera_info(info, 20) == (info[20], True)
    assert ev.pair_camera_info(info, 28) == (info[20], False)
    assert ev.pair_camera_info(info, 30) == (info[20], False)  # tie: the earlier one
    assert ev.pair_camera_info(info, 99) == (info[40], False)
    assert ev.pair_camera_info({}, 5) is None


def _metrics_only(report):
    return json_safe({'metrics': report['metrics'], 'frames': report['frames'], 'counts': report['counts']})


def test_same_bag_twice_and_sqlite3_vs_mcap_give_identical_metrics(tiny_bags, torch_engine, tmp_path):
    engine, description = torch_engine
    options = ev.EvalOptions(metrics=METRICS, median_scaled=True, max_batch_size=4, figures=False)
    reports = [
        ev.evaluate_bag(tiny_bags['sqlite3'], engine, options, tmp_path / 'a', description),
        ev.evaluate_bag(tiny_bags['sqlite3'], engine, options, tmp_path / 'b', description),
        ev.evaluate_bag(tiny_bags['mcap'], engine, options, tmp_path / 'c', description),
    ]
    first = _metrics_only(reports[0])
    assert first['counts']['frames'] == 6 and first['counts']['batches'] == 2
    assert first['counts']['frames_with_gt'] == 6 and first['counts']['errors'] == 0
    assert math.isfinite(first['metrics']['overall']['abs_rel'])
    assert _metrics_only(reports[1]) == first
    assert _metrics_only(reports[2]) == first
    assert reports[0]['storage'] == 'sqlite3' and reports[2]['storage'] == 'mcap'
    assert reports[0]['warnings'] == [ev.SYNTHETIC_WARNING]
    assert reports[0]['metrics_median_scaled']['overall']['frames'] == 6


def test_outputs_bag_report_and_figures(tiny_bags, tmp_path):
    out_bag = tmp_path / 'out'
    options = ev.EvalOptions(metrics=METRICS, cloud_stride=3, output_bag=out_bag, figure_frames_per_camera=1)
    report = ev.evaluate_with_backend(tiny_bags['mcap'], 'gt', {'net_size': '56x84'}, options,
                                      tmp_path / 'rep')
    assert report['counts']['errors'] == 0
    assert report['cloud_check']['max_abs_diff_m'] < 1e-5
    assert report['metrics']['overall']['abs_rel'] < 0.05  # tiny 56x84 canvas: coarse resampling only
    rep = tmp_path / 'rep'
    saved = json.loads((rep / 'report.json').read_text())
    assert saved['metrics']['cameras'].keys() == {'front', 'left', 'right'}
    md = (rep / 'report.md').read_text()
    assert '## Metrics (metric scale)' in md and '| all |' in md and 'Latency per batch' in md
    for fig in saved['figures']:
        assert (rep / fig).stat().st_size > 1000, fig
    assert sum(f.startswith('figures/front_') for f in saved['figures']) == 1
    assert {'figures/error_histogram.png', 'figures/per_camera.png'} <= set(saved['figures'])
    assert set(saved['latency_ms']['stages']) >= {'network', 'postprocess', 'total', 'decode (per frame)'}

    inputs = {}
    store = typestore()
    with BagReader(tiny_bags['mcap']) as r:
        for m in r.messages():
            msg = store.deserialize_cdr(m.data, m.msgtype)
            inputs[(m.topic, stamp_ns_of(msg.header))] = msg
    with BagReader(out_bag) as r:
        outputs = ('depth/image', 'depth/camera_info', 'points', 'confidence/image')
        assert r.topics.keys() == {f'/{c.name}/{t}' for c in CAMS for t in outputs}
        counts = {}
        for m in r.messages():
            msg = store.deserialize_cdr(m.data, m.msgtype)
            stamp = stamp_ns_of(msg.header)
            cam = m.topic.split('/')[1]
            image = inputs[(f'/{cam}/image', stamp)]
            assert msg.header.frame_id == image.header.frame_id == f'{cam}_optical_frame'
            assert m.log_time_ns == stamp
            counts[m.topic] = counts.get(m.topic, 0) + 1
            if m.topic.endswith('depth/image'):
                depth = image_to_depth_m(image_from_msg(msg))
                assert depth.shape == (image.height, image.width)
                gt = image_to_depth_m(image_from_msg(inputs[(f'/{cam}/depth_gt', stamp)]))
                assert np.nanmedian(depth / gt) == pytest.approx(1.0, abs=0.01)
            elif m.topic.endswith('depth/camera_info'):
                expected = camera_info_from_msg(inputs[(f'/{cam}/camera_info', stamp)])
                assert camera_info_from_msg(msg) == expected
            elif m.topic.endswith('points'):
                xyz = pointcloud2_from_msg(msg).xyz
                assert xyz.shape == (math.ceil(image.height / 3), math.ceil(image.width / 3), 3)
        assert set(counts.values()) == {2}


def test_command_line(tiny_bags, tmp_path, capsys):
    rc = ev.main([str(tiny_bags['sqlite3']), '--backend', 'gt', '--net-size', '56x84', '--output-dir',
                  str(tmp_path / 'cli'), '--cameras', 'front,right', '--max-frames', '3', '--no-figures',
                  '--max-depth-m', '20'])
    out = capsys.readouterr().out
    assert rc == 0
    assert 'front' in out and 'right' in out and 'left' not in out and 'report:' in out
    saved = json.loads((tmp_path / 'cli' / 'report.json').read_text())
    assert saved['counts']['frames'] == 3
    assert saved['figures'] == []
    assert ev.main([str(tmp_path / 'missing'), '--backend', 'gt']) == 2
    assert 'not a rosbag2 folder' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # a usage error, checked by the option's declaration
        ev.main([str(tiny_bags['sqlite3']), '--net-size', '50x50', '--backend', 'gt'])
    assert exc.value.code == 2 and 'multiple of 28' in capsys.readouterr().err


def test_frames_without_camera_info_or_ground_truth(tmp_path):
    rgb = np.full((20, 30, 3), 90, np.uint8)
    info = CameraInfoFields.from_intrinsics(Intrinsics(20.0, 20.0, 15.0, 10.0), 30, 20)
    with BagWriter(tmp_path / 'b') as w:
        w.write_camera_info('/c/camera_info', info, 1000, 'c_optical_frame')
        for stamp in (1000, 2000, 3000):
            w.write_image('/c/image', rgb, 'rgb8', stamp, 'c_optical_frame')
        w.write_depth('/c/depth_gt', np.full((20, 30), 3.0, np.float32), 2000, 'c_optical_frame')
        w.write_image('/c/image', rgb, 'rgb8', 3000, 'c_optical_frame')  # duplicate: ignored
    report = ev.evaluate_with_backend(tmp_path / 'b', 'gt', {'net_size': '56x56'},
                                      ev.EvalOptions(figures=False), tmp_path / 'r')
    # The ground-truth backend can only run frames that have ground truth.
    assert report['counts']['frames'] == 1 and report['counts']['skipped_no_gt'] == 2
    assert report['counts']['info_nearest'] == 1
    assert report['metrics']['overall']['abs_rel'] == pytest.approx(0.0, abs=1e-6)


def test_compressed_png_images_give_the_raw_images_metrics(tiny_bags, torch_engine, tmp_path):
    engine, description = torch_engine
    png_bag = tmp_path / 'png'
    write_synthetic_bag(png_bag, SCENE, 2, BagOptions(storage='mcap', image_format='png'))
    options = ev.EvalOptions(metrics=METRICS, max_batch_size=4, figures=False)
    raw = ev.evaluate_bag(tiny_bags['sqlite3'], engine, options, tmp_path / 'raw', description, write=False)
    png = ev.evaluate_bag(png_bag, engine, options, tmp_path / 'png_report', description, write=False)
    assert _metrics_only(png) == _metrics_only(raw)  # lossless: the network saw the same pixels


def _two_camera_bag(path, gt_hw_c=(20, 30), rgb_hw_c=(20, 30)):
    rgb_d = np.full((20, 30, 3), 90, np.uint8)
    info_d = CameraInfoFields.from_intrinsics(Intrinsics(20.0, 20.0, 15.0, 10.0), 30, 20)
    h, w = rgb_hw_c
    info_c = CameraInfoFields.from_intrinsics(Intrinsics(20.0, 20.0, w / 2, h / 2), w, h)
    with BagWriter(path) as wr:
        for stamp in (1000, 2000):
            wr.write_camera_info('/c/camera_info', info_c, stamp, 'c')
            wr.write_image('/c/image', np.full((h, w, 3), 90, np.uint8), 'rgb8', stamp, 'c')
            wr.write_depth('/c/depth_gt', np.full(gt_hw_c, 3.0, np.float32), stamp, 'c')
            wr.write_camera_info('/d/camera_info', info_d, stamp, 'd')
            wr.write_image('/d/image', rgb_d, 'rgb8', stamp, 'd')
            wr.write_depth('/d/depth_gt', np.full((20, 30), 3.0, np.float32), stamp, 'd')


def test_ground_truth_of_another_size_fails_its_frames_only(tmp_path):
    _two_camera_bag(tmp_path / 'b', gt_hw_c=(10, 15))
    report = ev.evaluate_with_backend(tmp_path / 'b', 'fake', {'net_size': '56x56', 'device': 'cpu'},
                                      ev.EvalOptions(figures=False), tmp_path / 'r')
    by_cam = {(f['camera'], f['stamp_ns']): f for f in report['frames']}
    assert report['counts']['errors'] == 2
    assert all('ground truth' in by_cam[('c', s)]['error'] for s in (1000, 2000))
    assert all(by_cam[('d', s)]['error'] is None and by_cam[('d', s)]['metrics'] for s in (1000, 2000))
    assert report['metrics']['cameras']['d']['frames'] == 2


def test_latency_is_kept_when_the_first_frame_of_a_batch_fails(tmp_path):
    # camera 'c' (first in every batch) has an image the letterbox rejects: its frames fail in the engine,
    # camera 'd' runs; the batches' stage times and d's latency must still be reported.
    _two_camera_bag(tmp_path / 'b', gt_hw_c=(1, 600), rgb_hw_c=(1, 600))
    report = ev.evaluate_with_backend(tmp_path / 'b', 'fake', {'net_size': '56x56', 'device': 'cpu'},
                                      ev.EvalOptions(figures=False), tmp_path / 'r')
    assert report['counts']['errors'] == 2
    latency = report['latency_ms']
    assert latency['stages']['total']['n'] == 2 and latency['stages']['network']['n'] == 2
    assert latency['frames_per_s'] is not None and latency['frames_per_s'] > 0
    assert latency['cameras']['d']['n'] == 2
    assert latency['cameras']['d']['p50'] >= latency['stages']['total']['p50'] * 0.999
    assert latency['cameras']['c'] == {'frames': 2}  # no frame ran: no latency


@pytest.mark.slow
def test_command_line_on_onnxruntime_matches_torch(tiny_bags, tmp_path, capsys):
    """Issue 5 acceptance, evaluation side: the same bag through an exported file on ONNX Runtime gives the
    torch backend's metrics (synthetic weights both)."""
    from metric3d_ros.core.model.export import ExportOptions, export_metric3d

    onnx_path = tmp_path / 'vit_s.onnx'
    export_metric3d(ExportOptions(variant='small', weights='synthetic', output=str(onnx_path), check_hw=None))
    reports = {}
    for backend, extra in (('onnxruntime', ['--onnx-model-path', str(onnx_path)]),
                           ('torch', ['--weights', 'synthetic'])):
        out_dir = tmp_path / backend
        rc = ev.main([str(tiny_bags['sqlite3']), '--backend', backend, '--net-size', '56x84', '--output-dir',
                      str(out_dir), '--no-figures', '--max-depth-m', '20', *extra])
        assert rc == 0, capsys.readouterr().err
        reports[backend] = json.loads((out_dir / 'report.json').read_text())
    assert reports['onnxruntime']['engine']['backend'] == 'onnxruntime'
    ours, theirs = reports['onnxruntime']['metrics']['overall'], reports['torch']['metrics']['overall']
    for key in ('abs_rel', 'rmse_m', 'delta1'):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-3, abs=1e-4), key
