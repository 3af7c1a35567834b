"""metric3d_node_bench: the accounting (percentiles, delivered fractions, the node's figures, the params file)
and short real runs measured by consumer processes (the fake backend; ``--check`` without a node)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from metric3d_ros.tools.node_bench import (
    camera_figures,
    consumer_topics,
    evaluate,
    measured_stamps,
    node_figures,
    params_file_text,
    parse_args,
    parse_params,
    percentiles,
    targets_met,
    topic_figures,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
S = 1_000_000_000
MS = 1_000_000


def record(pairs, size=100):
    """A consumer record from (stamp_ns, receive_ns) pairs."""
    return {'stamp_ns': [s for s, _ in pairs], 'receive_ns': [r for _, r in pairs],
            'size': [size] * len(pairs)}


def test_percentiles_interpolate_linearly_and_take_the_max():
    got = percentiles([float(v) for v in range(1, 101)])
    assert got['p50'] == pytest.approx(50.5)
    assert got['p95'] == pytest.approx(95.05)
    assert got['p99'] == pytest.approx(99.01)
    assert got['max'] == 100.0
    assert all(math.isnan(v) for v in percentiles([]).values())


def test_measured_window_starts_warmup_after_the_first_stamp():
    stamps = [5 * S, 1 * S, 2 * S, 3 * S]
    assert measured_stamps(stamps, 2 * S) == [3 * S, 5 * S]
    assert measured_stamps([], S) == []


def test_topic_figures_count_each_expected_stamp_once():
    expected = [10 * S, 11 * S, 12 * S, 13 * S]
    rec = record([(9 * S, 9 * S + 5 * MS),            # warm-up: neither counted nor unexpected
                  (10 * S, 10 * S + 20 * MS),
                  (10 * S, 10 * S + 30 * MS),          # a duplicate: the first receipt counts
                  (12 * S, 12 * S + 40 * MS),
                  (12 * S + 1, 12 * S + 50 * MS)])     # never published
    got = topic_figures(expected, rec, span_s=4.0)
    assert (got['expected'], got['delivered']) == (4, 2)
    assert got['delivered_fraction'] == 0.5
    assert got['duplicates'] == 1 and got['unexpected'] == 1
    assert got['stamp_to_receive_ms']['p50'] == pytest.approx(30.0)
    assert got['stamp_to_receive_ms']['max'] == pytest.approx(40.0)
    assert got['received_mb_per_s'] == pytest.approx(3 * 100 / 1e6 / 4.0)


def test_camera_frame_is_complete_only_with_every_topic_and_its_latency_is_the_last():
    expected = [10 * S, 11 * S]
    depth = record([(10 * S, 10 * S + 20 * MS), (11 * S, 11 * S + 20 * MS)])
    cloud = record([(10 * S, 10 * S + 35 * MS)])
    got = camera_figures(expected, [depth, cloud])
    assert (got['complete'], got['complete_fraction']) == (1, 0.5)
    assert got['latencies_ms'] == [pytest.approx(35.0)]


def test_evaluate_totals_match_the_cameras():
    published = {'cam0': [0, 1 * S, 2 * S, 3 * S], 'cam1': [0, 1 * S, 2 * S, 3 * S]}
    topics_of = {'cam0': ['cam0/depth/image'], 'cam1': ['cam1/depth/image']}
    records = {'cam0/depth/image': record([(s, s + 10 * MS) for s in published['cam0']]),
               'cam1/depth/image': record([(2 * S, 2 * S + 30 * MS)])}
    got = evaluate(published, records, topics_of, warmup_ns=1 * S)
    assert got['topics']['cam0/depth/image']['expected'] == 3
    assert got['cameras']['cam1']['complete'] == 1
    total = got['total']
    assert (total['expected'], total['complete']) == (6, 4)
    assert total['complete_fraction'] == pytest.approx(4 / 6)
    assert total['span_s'] == pytest.approx(3.0)  # 3 frames, 1 s apart: 3 periods
    assert total['offered_frames_per_s'] == pytest.approx(2.0)
    assert total['worst_topic_delivered_fraction'] == pytest.approx(1 / 3)
    # a topic nobody reported is all missing, not an error
    got = evaluate(published, {}, topics_of, warmup_ns=0)
    assert got['total']['complete'] == 0 and got['topics']['cam0/depth/image']['delivered'] == 0


def test_node_figures_from_diagnostics():
    diag = {
        'cam0': {'level': 0, 'message': '', 'inputs_total': '10', 'outputs_total': '8', 'drops_total': '2',
                 'drops_queue_overflow': '2', 'latency_p50_ms': '30.5', 'latency_p95_ms': '40',
                 'latency_p99_ms': 'nan'},
        'metric3d_depth': {'batches_total': '5', 'batch_size_mean': '1.60', 'batch_size_histogram': '1:2 2:3',
                           'stamp_to_publish_p99_ms': '44.0', 'inference_p50_ms': '12.0', 'state': 'active'},
    }
    got = node_figures(diag, {'cam0': list(range(10)), 'cam1': list(range(10))})
    cam = got['cameras']['cam0']
    assert (cam['sent'], cam['inputs'], cam['published']) == (10, 10, 8)
    assert cam['published_fraction'] == 0.8 and cam['drops'] == {'queue_overflow': 2}
    assert cam['stamp_to_publish_ms']['p50'] == 30.5 and math.isnan(cam['stamp_to_publish_ms']['p99'])
    assert 'cam1' not in got['cameras']  # no status for it
    assert got['engine']['stamp_to_publish_p99_ms'] == 44.0 and got['engine']['batches_total'] == 5.0
    assert got['engine']['batch_size_histogram'] == '1:2 2:3' and 'state' not in got['engine']


def test_consumers_per_camera_or_per_topic():
    per_camera = consumer_topics(['a', 'b'], ['depth', 'points'], 'per-camera')
    assert per_camera == [[('a/depth/image', 'Image'), ('a/points', 'PointCloud2')],
                          [('b/depth/image', 'Image'), ('b/points', 'PointCloud2')]]
    assert len(consumer_topics(['a', 'b'], ['depth', 'points'], 'per-topic')) == 4
    with pytest.raises(ValueError):
        consumer_topics(['a'], ['depth'], 'one')


def test_params_file_nests_dotted_names_and_takes_yaml_values():
    params = parse_params(['qos.output.depth:=5', 'camera_groups:=[cam0 cam1, cam2]', 'cuda_graphs:=false',
                           "weights:=''"])
    assert params == {'qos.output.depth': 5, 'camera_groups': ['cam0 cam1', 'cam2'], 'cuda_graphs': False,
                      'weights': ''}
    with pytest.raises(ValueError):
        parse_params(['cuda_graphs=false'])
    tree = yaml.safe_load(params_file_text(params))
    assert tree['/**']['ros__parameters']['qos'] == {'output': {'depth': 5}}


def test_layout_and_params_reach_the_node_parameters():
    from metric3d_ros.tools.node_bench import node_parameters

    args = parse_args(['--cameras', '3', '--layout', 'group_workers', '--param', 'max_wait_ms:=7.5'])
    params = node_parameters(args, ['cam0', 'cam1', 'cam2'])
    assert params['process_layout'] == 'group_workers'
    assert params['max_wait_ms'] == 7.5 and params['max_batch_size'] == 3
    assert 'process_layout' not in node_parameters(parse_args([]), ['cam0'])


def test_targets():
    result = {'cameras': {'cam0': {'complete_fraction': 0.995}},
              'total': {'frame_latency_ms': {'p50': 30.0, 'p99': 60.0}},
              'node': {'cameras': {'cam0': {'published_fraction': 0.98}}}}
    ok = SimpleNamespace(target_delivered=0.99, target_published=None, target_p50_ms=35.0, target_p99_ms=70.0)
    assert targets_met(ok, result)
    assert not targets_met(SimpleNamespace(**{**vars(ok), 'target_published': 0.99}), result)
    assert not targets_met(SimpleNamespace(**{**vars(ok), 'target_p99_ms': 50.0}), result)


def test_help_says_it_measures_at_the_consumers(capsys):
    with pytest.raises(SystemExit):
        parse_args(['--help'])
    text = capsys.readouterr().out
    assert 'consumer process per camera' in text and 'observer' not in text


def _run_bench(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / 'result.json'
    env = {**os.environ, 'PYTHONPATH': f'{REPO_ROOT}{os.pathsep}{os.environ.get("PYTHONPATH", "")}',
           'ROS_LOG_DIR': str(tmp_path / 'roslog')}
    cmd = [sys.executable, '-m', 'metric3d_ros.tools.node_bench', '--cameras', '2', '--size', '160x120',
           '--rate-hz', '5', '--duration-s', '3', '--warmup-s', '1', '--tail-s', '1', '--json', str(out),
           '--log-dir', str(tmp_path / 'logs'), '--startup-timeout-s', '90', *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def _check_consistent(result: dict, cameras: list[str], topics: list[str], per_topic: bool = False) -> None:
    assert sorted(result['cameras']) == cameras
    assert sorted(result['topics']) == sorted(f'{c}/{t}' for c in cameras for t in topics)
    for topic, t in result['topics'].items():
        assert 0 <= t['delivered'] <= t['expected'], topic
        assert t['delivered_fraction'] == pytest.approx(t['delivered'] / t['expected'])
        assert t['bad'] == 0 and t['unexpected'] == 0
        if t['delivered']:
            lat = t['stamp_to_receive_ms']
            assert 0 < lat['p50'] <= lat['p95'] <= lat['p99'] <= lat['max']
    for cam, c in result['cameras'].items():
        cam_topics = [t for name, t in result['topics'].items() if name.startswith(f'{cam}/')]
        assert all(t['expected'] == c['expected'] for t in cam_topics)
        assert c['complete'] <= min(t['delivered'] for t in cam_topics)
    total = result['total']
    assert total['expected'] == sum(c['expected'] for c in result['cameras'].values())
    assert total['complete'] == sum(c['complete'] for c in result['cameras'].values())
    assert total['expected'] > 0
    # one consumer process per camera (or per topic), each with its own topics
    groups = [[f'{cam}/{t}'] for cam in cameras for t in topics] if per_topic else [
        sorted(f'{cam}/{t}' for t in topics) for cam in cameras]
    assert sorted(c['topics'] for c in result['consumers']) == sorted(groups)
    assert all(c['matched'] and c['exit_code'] == 0 for c in result['consumers'])


@pytest.mark.ros
@pytest.mark.slow
def test_short_run_with_the_fake_backend(tmp_path):
    pytest.importorskip('rclpy')
    proc, result = _run_bench(
        tmp_path, '--backend', 'fake', '--device', 'cpu', '--net-size', '112x140',
        '--param', 'warmup_iters:=0', '--param', 'preprocess:=reference',
        '--param', 'max_input_age_ms:=-1')
    _check_consistent(result, ['cam0', 'cam1'], ['depth/camera_info', 'depth/image', 'points'])
    assert result['node_parameters']['backend'] == 'fake'
    node = result['node']['cameras']
    assert sorted(node) == ['cam0', 'cam1']
    for cam, n in node.items():
        # the node published no more than it was sent, and the consumers got no more than it published
        assert n['published'] <= n['sent']
        assert result['cameras'][cam]['complete'] <= n['published']
        assert n['sent'] == len(json.loads((tmp_path / 'logs' / 'sim0.json').read_text())['stamps_ns'])
    assert result['total']['complete'] > 0  # 5 Hz of 160x120 through the fake backend gets through
    assert 'node: published' in proc.stdout and 'stamp->receive' in proc.stdout
    assert result['node_exit_code'] == 0


@pytest.mark.ros
def test_consumers_alone_on_a_known_stream(tmp_path):
    pytest.importorskip('rclpy')
    _, result = _run_bench(tmp_path, '--check', '--outputs', 'depth,points', '--consumers', 'per-topic',
                           '--consumer-executor', 'single')
    _check_consistent(result, ['cam0', 'cam1'], ['depth/image', 'points'], per_topic=True)
    assert result['node'] == {} and result['node_exit_code'] is None
    assert result['total']['complete'] > 0
    depth = result['topics']['cam0/depth/image']
    span_s = result['total']['span_s']
    # 160x120 32FC1 images: 76800 bytes of pixels (+ header) per frame received
    assert depth['received_mb_per_s'] == pytest.approx(depth['delivered'] * 76_800 / 1e6 / span_s, rel=0.05)
    assert np.isfinite(result['total']['frame_latency_ms']['p99'])


def test_sweep_rows_and_table():
    from metric3d_ros.tools.node_bench import format_sweep, sweep_row

    latency = {'p50': 31.0, 'p95': 40.0, 'p99': 45.0, 'max': 60.0}
    result = {'setup': {'cameras': 4, 'rate_hz': 30.0},
              'total': {'offered_frames_per_s': 120.0, 'delivered_frames_per_s': 118.8,
                        'complete_fraction': 0.99, 'frame_latency_ms': latency},
              'node': {'cameras': {'cam0': {'published_fraction': 0.995},
                                   'cam1': {'published_fraction': 0.99}}}}
    row = sweep_row(result)
    assert row == {'cameras': 4, 'rate_hz': 30.0, 'offered_frames_per_s': 120.0,
                   'delivered_frames_per_s': 118.8, 'complete_fraction': 0.99, 'frame_latency_p50_ms': 31.0,
                   'frame_latency_p99_ms': 45.0, 'node_published_fraction_min': 0.99}
    table = format_sweep([row, {'cameras': 8, 'error': 'the node starting: not within 300 s'}]).splitlines()
    assert len(table) == 3 and '118.8' in table[1] and 'failed: the node starting' in table[2]
    assert parse_args(['--sweep', '1,2,4', '--out-dir', 'x']).sweep == [1, 2, 4]
    with pytest.raises(SystemExit):
        parse_args(['--sweep', '1,2'])  # no --out-dir
