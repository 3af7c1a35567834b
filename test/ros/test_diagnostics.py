"""ros/diagnostics.py status_line: the periodic one-line status of a camera."""
from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.ros


def _snap(**kw):
    from metric3d_ros.core.stats import CameraSnapshot, Level

    values = dict(camera_id='front', level=Level.OK, message='ok', input_rate_hz=10.0, output_rate_hz=9.8,
                  inputs_total=1200, outputs_total=1187, drops_total={'queue_overflow': 13}, inputs_window=50,
                  outputs_window=49, drops_window={'queue_overflow': 1, 'stale': 0}, latency_p50_ms=48.2,
                  latency_p95_ms=71.0, latency_p99_ms=90.0, inference_mean_ms=30.0, inference_p95_ms=35.0,
                  batch_size_mean=2.0, last_input_age_s=0.1)
    values.update(kw)
    return CameraSnapshot(**values)


def test_status_line_says_rates_latency_drops_and_totals():
    from metric3d_ros.ros.diagnostics import CameraExtras, status_line

    line = status_line(_snap(), CameraExtras())
    assert line == ('camera front: in 10.0 Hz, out 9.8 Hz, latency p50 48 ms p95 71 ms, dropped 1 of 50 '
                    '(queue_overflow 1); since activation 1200 in, 1187 out, 13 dropped')


def test_status_line_names_an_unusual_state():
    from metric3d_ros.core.stats import Level
    from metric3d_ros.ros.diagnostics import CameraExtras, status_line

    idle = status_line(_snap(), CameraExtras(idle=True))
    assert idle.endswith('; idle: no subscriber on any output')
    silent = status_line(_snap(level=Level.ERROR, message='camera silent: no input for 4.2 s',
                               input_rate_hz=0.0, latency_p50_ms=math.nan, latency_p95_ms=math.nan),
                         CameraExtras())
    assert 'latency p50 n/a ms' in silent and silent.endswith('; camera silent: no input for 4.2 s')
    warned = status_line(_snap(), CameraExtras(info_warnings=('raw image with non-zero distortion',)))
    assert warned.endswith('; raw image with non-zero distortion')
