"""metric3d_bench runs unattended and writes a self-describing JSON (tiny sizes on the CPU)."""
from __future__ import annotations

import json

import pytest

from metric3d_ros.tools import bench


def test_bench_fake_backend_engine_and_network(tmp_path, capsys):
    out = tmp_path / 'fake.json'
    rc = bench.main(['--device', 'cpu', '--backend', 'fake', '--modes', 'network', 'engine',
                     '--net-size', '56x84', '--batch-sizes', '1', '3', '--precision', 'fp32',
                     '--iters', '2', '--warmup', '1',
                     '--mixed-cameras', '--json', str(out)])
    assert rc == 0, capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data['environment']['device'] == 'cpu' and data['environment']['torch']
    rows = {(r['mode'], r['batch']) for r in data['results']}
    assert rows == {('network', 1), ('engine', 1), ('network', 3), ('engine', 3)}
    engine_row = next(r for r in data['results'] if r['mode'] == 'engine' and r['batch'] == 3)
    assert engine_row['fps'] > 0 and len(engine_row['latency_ms']) == 2
    assert set(engine_row['stages_median_ms']) == set(bench.STAGES)
    assert 'fps' in capsys.readouterr().out


@pytest.mark.slow
def test_bench_torch_baseline_and_precision_deviation(tmp_path):
    out = tmp_path / 'torch.json'
    rc = bench.main(['--device', 'cpu', '--threads', '2', '--modes', 'baseline', 'network',
                     '--net-size', '56x56', '--batch-sizes', '1', '--precision', 'fp32', 'bf16',
                     '--iters', '1', '--warmup', '0',
                     '--image-size', '48x64', '--json', str(out)])
    assert rc == 0
    results = json.loads(out.read_text())['results']
    assert {(r['mode'], r['precision']) for r in results} == {
        ('baseline', 'fp32'), ('network', 'fp32'), ('baseline', 'bf16'), ('network', 'bf16')}
    bf16 = next(r for r in results if r['mode'] == 'network' and r['precision'] == 'bf16')
    assert 0.0 <= bf16['deviation_from_fp32']['median_rel'] < 1.0


@pytest.mark.parametrize('args, message', [
    (['--batch-sizes', '0'], '--batch-sizes'),
    (['--net-size', '10x10'], 'multiple of 28'),
    (['--image-size', 'axb'], 'HxW'),
    (['--image-size', '0x640'], 'HxW'),
    (['--precision', 'fp64'], '--precision'),
    (['--iters', '0'], '--iters'),
    (['--warmup', '-1'], '--warmup'),
    (['--variant', 'huge'], 'variant'),
])
def test_bad_arguments_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(['--device', 'cpu', '--backend', 'fake', '--modes', 'engine', '--net-size', '56x84',
                    '--image-size', '48x64', '--batch-sizes', '1', '--precision', 'fp32', '--iters', '1',
                    '--warmup', '0', *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err


def test_registered_host_frames_need_cuda(capsys):
    rc = bench.main(['--device', 'cpu', '--backend', 'fake', '--modes', 'engine', '--net-size', '56x84',
                     '--image-size', '48x64', '--batch-sizes', '1', '--precision', 'fp32', '--iters', '1',
                     '--warmup', '0', '--host-frames', 'registered'])
    assert rc == 2
    assert '--host-frames registered needs --device cuda' in capsys.readouterr().err
