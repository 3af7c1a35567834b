"""Benchmark of the depth node measured at its consumers: camera simulator -> depth_node -> one consumer
process per camera, each receiving that camera's outputs as a downstream node would.

    metric3d_node_bench --cameras 2 --size 640x480 --rate-hz 5 --duration-s 30 \
        --net-size 140x196 --device cpu --weights synthetic
    metric3d_node_bench --sweep 1,2,4,6,8 --rate-hz 30 --size 1280x720 --out-dir DIR ...
    metric3d_node_bench --check --cameras 4 --size 1280x720 --rate-hz 30

Processes (all on this host, the shipped Fast DDS shared-memory profile ``config/fastdds_shm.xml``):
``metric3d_camera_sim`` (one process, or one per camera with ``--sim-per-camera``) publishes N cameras at R
Hz;
``depth_node`` (its own process, parameters from a params file: the model options below, ``--layout`` for
``process_layout`` and any ``--param NAME:=VALUE``) infers; ``metric3d_ros.tools.consumer`` processes, one
per camera (``--consumers per-topic``: one per topic), subscribe to that camera's requested outputs
(``--outputs``, default depth image, depth CameraInfo and cloud) with raw subscriptions: each reads the
stamp from the serialized header and records its receive time, nothing else, so it keeps up like a C++
consumer would (``--check`` shows what it reaches). This process only reads /diagnostics.

The node runs its start-up (model load, warm-up) before the cameras start; the cameras then publish for
``--warmup-s`` + ``--duration-s``; frames stamped in the first ``--warmup-s`` are not measured. Reported per
topic, from the consumers' records:

- expected: frames the simulator published in the measured window (its own list of stamps);
- delivered: the fraction of them whose message reached the topic's consumer (stamp matched);
- stamp-to-receive p50 / p95 / p99 / max (ms): the consumer's receive time minus the frame's stamp (the
  simulator's publish time; same host clock), i.e. the whole path camera -> node -> consumer;
- per camera the fraction of frames complete (every topic received) and the frame latency (last topic);

and beside them the node's own figures from its last /diagnostics: outputs published / frames sent (whole
run), inputs, drops by reason, its stamp-to-publish p50 / p95 / p99 per camera and the engine's timing
series (``stamp_to_*``), inference time and batch sizes. Output: a table on stdout, the whole result with
``--json FILE``.

``--sweep 1,2,4,6,8``: one run per camera count (same rate and settings; ``--max-batch-size 0`` = the camera
count), one JSON per point in ``--out-dir`` (``cameras_<N>.json``) and the curve (offered and delivered
frames/s, delivered %, frame latency p50/p99) on stdout and in ``sweep.json``.

``--check``: no simulator and no node: one ``metric3d_ros.tools.output_sim`` process per camera publishes a
known stream shaped like the node's outputs (same sizes, reliable) at the rate, and the same consumers
measure it. What they miss there is the limit of the measurement itself.

Exit code 0 when the targets given are met (or none are given), else 1: ``--target-delivered`` (fraction of
frames complete at the consumers, every camera), ``--target-published`` (the node's own published fraction,
every camera), ``--target-p50-ms`` and ``--target-p99-ms`` (consumer frame latency: stamp to the last output
received, all cameras).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from metric3d_ros.tools.processes import interrupt_and_wait

OUTPUT_TYPES = {
    'depth': ('depth/image', 'Image'),
    'depth_info': ('depth/camera_info', 'CameraInfo'),
    'points': ('points', 'PointCloud2'),
    'normals': ('normals/image', 'Image'),
    'confidence': ('confidence/image', 'Image'),
}
CONSUMER_MODES = ('per-camera', 'per-topic')
SETUP_KEYS = ('cameras', 'size', 'rate_hz', 'duration_s', 'warmup_s', 'outputs', 'cloud_stride', 'backend',
              'variant', 'weights', 'device', 'precision', 'net_size', 'max_batch_size', 'max_wait_ms',
              'layout', 'param', 'sim_per_camera', 'consumers', 'consumer_reliability', 'consumer_depth',
              'consumer_executor', 'check')
REPO_CONFIG = Path(__file__).resolve().parents[2] / 'config'
NAN = float('nan')


def _profile_path() -> Path:
    """The Fast DDS profile: the source tree's, else the installed share directory's."""
    local = REPO_CONFIG / 'fastdds_shm.xml'
    if local.is_file():
        return local
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory('metric3d_ros')) / 'config' / 'fastdds_shm.xml'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog='metric3d_node_bench', formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__,
        epilog='Delivered fraction and stamp-to-receive latency are measured at the consumers (one process '
               "per camera, raw subscriptions); the node's /diagnostics figures are printed beside them.")
    p.add_argument('--cameras', type=int, default=2, help='number of cameras (cam0, cam1, ...)')
    p.add_argument('--sweep', default='', metavar='N,N,...',
                   help='run once per camera count (e.g. 1,2,4,6,8); needs --out-dir')
    p.add_argument('--out-dir', default='', help='--sweep: one JSON per point and sweep.json here')
    p.add_argument('--size', default='640x480', help='WIDTHxHEIGHT of every camera')
    p.add_argument('--rate-hz', type=float, default=5.0)
    p.add_argument('--duration-s', type=float, default=30.0, help='measured time (after --warmup-s)')
    p.add_argument('--warmup-s', type=float, default=2.0,
                   help='the cameras publish this long before the measured window (frames not counted)')
    p.add_argument('--outputs', default='depth,depth_info,points', help=f'of {",".join(OUTPUT_TYPES)}')
    p.add_argument('--cloud-stride', type=int, default=2)
    p.add_argument('--backend', default='torch', help="node backend ('fake': the test backend, no weights)")
    p.add_argument('--variant', default='small')
    p.add_argument('--weights', default='synthetic', help="checkpoint path, 'synthetic' or '' (official)")
    p.add_argument('--device', default='auto')
    p.add_argument('--precision', default='fp32')
    p.add_argument('--net-size', default='616x1064', help='network HEIGHTxWIDTH (multiples of 28)')
    p.add_argument('--max-batch-size', type=int, default=0, help='0: the number of cameras')
    p.add_argument('--max-wait-ms', type=float, default=15.0)
    p.add_argument('--layout', default='', help="the node's process_layout (in_process, group_workers); "
                                                "'' leaves the node's default")
    p.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                   help='any further node parameter, value in YAML (e.g. cuda_graphs:=false, '
                        'camera_groups:="[cam0 cam1, cam2 cam3]"); repeatable, applied last')
    p.add_argument('--sim-per-camera', action='store_true',
                   help='one simulator process per camera, ticking together (independent drivers); default: '
                        'one process publishing every camera in turn')
    p.add_argument('--consumers', default='per-camera', choices=CONSUMER_MODES,
                   help='one consumer process per camera (default) or per topic')
    p.add_argument('--consumer-reliability', default='reliable', choices=('reliable', 'best_effort'))
    p.add_argument('--consumer-depth', type=int, default=10, help="consumers' QoS history depth")
    p.add_argument('--consumer-executor', default='events', choices=('events', 'single'),
                   help="consumers' rclpy executor (EventsExecutor: less CPU per message)")
    p.add_argument('--check', action='store_true',
                   help='measure the consumers alone: a known stream shaped like the outputs, no node')
    p.add_argument('--domain-id', type=int, default=0, help='ROS_DOMAIN_ID (0: 100 + pid %% 50)')
    p.add_argument('--startup-timeout-s', type=float, default=300.0, help='for loading and warm-up')
    p.add_argument('--tail-s', type=float, default=2.0, help='wait this long for trailing outputs')
    p.add_argument('--json', default='', help='also write the result here')
    p.add_argument('--log-dir', default='', help='keep the logs, params file and raw reports here')
    p.add_argument('--target-delivered', type=float, default=None,
                   help='frames complete at the consumers, every camera, e.g. 0.99')
    p.add_argument('--target-published', type=float, default=None,
                   help="the node's own published fraction, every camera, e.g. 0.99")
    p.add_argument('--target-p50-ms', type=float, default=None, help='consumer frame latency p50')
    p.add_argument('--target-p99-ms', type=float, default=None, help='consumer frame latency p99')
    args = p.parse_args(argv)
    args.outputs = [o.strip() for o in args.outputs.split(',') if o.strip()]
    unknown = sorted(set(args.outputs) - set(OUTPUT_TYPES))
    if unknown or not args.outputs:
        p.error(f'--outputs: unknown {unknown}; choose from {",".join(OUTPUT_TYPES)}')
    try:
        args.sweep = [int(n) for n in args.sweep.split(',') if n.strip()]
        args.params = parse_params(args.param)
    except ValueError as exc:
        p.error(str(exc))
    if args.sweep and not args.out_dir:
        p.error('--sweep needs --out-dir')
    if any(n < 1 for n in args.sweep) or args.cameras < 1:
        p.error('camera counts must be >= 1')
    if args.duration_s <= 0.0 or args.warmup_s < 0.0 or args.rate_hz <= 0.0:
        p.error('need --duration-s > 0, --warmup-s >= 0, --rate-hz > 0')
    return args


def parse_params(items: Sequence[str]) -> dict[str, object]:
    """``['a.b:=1', 'c:=[x, y]']`` -> ``{'a.b': 1, 'c': ['x', 'y']}`` (values parsed as YAML)."""
    import yaml

    params = {}
    for item in items:
        name, sep, value = item.partition(':=')
        if not sep or not name.strip():
            raise ValueError(f'--param looks like NAME:=VALUE, got {item!r}')
        params[name.strip()] = yaml.safe_load(value) if value.strip() else ''
    return params


# --------------------------------------------------------------------------------------------- accounting
def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 (linear interpolation) and max of ``values_ms``; NaN for none."""
    if len(values_ms) == 0:
        return {'p50': NAN, 'p95': NAN, 'p99': NAN, 'max': NAN}
    arr = np.asarray(values_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {'p50': float(p50), 'p95': float(p95), 'p99': float(p99), 'max': float(arr.max())}


def measured_stamps(published_ns: Sequence[int], warmup_ns: int) -> list[int]:
    """The published stamps of the measured window: from the first stamp + ``warmup_ns`` on."""
    if not published_ns:
        return []
    start_ns = min(published_ns) + warmup_ns
    return sorted(s for s in published_ns if s >= start_ns)


def first_receipts(record: Mapping[str, Sequence[int]]) -> dict[int, int]:
    """stamp -> first receive time of one topic's consumer record (``stamp_ns``, ``receive_ns`` lists)."""
    first: dict[int, int] = {}
    for stamp_ns, receive_ns in zip(record['stamp_ns'], record['receive_ns'], strict=True):
        if stamp_ns not in first or receive_ns < first[stamp_ns]:
            first[stamp_ns] = receive_ns
    return first


def topic_figures(expected_ns: Sequence[int], record: Mapping[str, Sequence[int]], span_s: float) -> dict:
    """One topic: expected frames, delivered (count, fraction), stamp-to-receive percentiles (ms), duplicates,
    messages stamped in the window with a stamp that was never published (``unexpected``), MB/s received in
    the window, messages too short for a header (``bad``, whole run)."""
    expected = set(expected_ns)
    first = first_receipts(record)
    got = [s for s in expected_ns if s in first]
    latencies_ms = [(first[s] - s) / 1e6 for s in got]
    start_ns = min(expected_ns) if expected_ns else 0
    in_window = [(s, n) for s, n in zip(record['stamp_ns'], record['size'], strict=True) if s in expected]
    window_stamps = [s for s in record['stamp_ns'] if s >= start_ns]
    return {
        'expected': len(expected_ns),
        'delivered': len(got),
        'delivered_fraction': len(got) / len(expected_ns) if expected_ns else NAN,
        'stamp_to_receive_ms': percentiles(latencies_ms),
        'duplicates': len(in_window) - len(got),
        'unexpected': sum(1 for s in window_stamps if s not in expected),
        'received_mb_per_s': sum(n for _, n in in_window) / 1e6 / span_s if span_s > 0 else NAN,
        'bad': int(record.get('bad', 0)),
    }


def camera_figures(expected_ns: Sequence[int], records: Sequence[Mapping[str, Sequence[int]]]) -> dict:
    """One camera over all its topics: frames complete (every topic received) and their latency (stamp to
    the last topic received)."""
    firsts = [first_receipts(r) for r in records]
    latencies_ms = []
    for stamp_ns in expected_ns:
        times = [f.get(stamp_ns) for f in firsts]
        if all(t is not None for t in times):
            latencies_ms.append((max(times) - stamp_ns) / 1e6)
    return {
        'expected': len(expected_ns),
        'complete': len(latencies_ms),
        'complete_fraction': len(latencies_ms) / len(expected_ns) if expected_ns else NAN,
        'frame_latency_ms': percentiles(latencies_ms),
        'latencies_ms': latencies_ms,
    }


def evaluate(published: Mapping[str, Sequence[int]], records: Mapping[str, Mapping],
             topics_of: Mapping[str, Sequence[str]], warmup_ns: int) -> dict:
    """Per topic and per camera figures and the totals from the simulator's stamps (``published``: camera ->
    stamps) and the consumers' records (topic -> record); ``topics_of``: camera -> its topics."""
    topics = {}
    cameras = {}
    all_latencies: list[float] = []
    spans = []
    for cam, stamps in published.items():
        expected = measured_stamps(stamps, warmup_ns)
        # n frames cover n periods: the mean period times n
        n = len(expected)
        span_s = (expected[-1] - expected[0]) / 1e9 * n / (n - 1) if n > 1 else 0.0
        spans.append(span_s)
        empty = {'stamp_ns': [], 'receive_ns': [], 'size': []}
        for topic in topics_of[cam]:
            topics[topic] = topic_figures(expected, records.get(topic, empty), span_s)
        figures = camera_figures(expected, [records.get(t, empty) for t in topics_of[cam]])
        all_latencies.extend(figures.pop('latencies_ms'))
        cameras[cam] = figures
    expected_total = sum(c['expected'] for c in cameras.values())
    complete_total = sum(c['complete'] for c in cameras.values())
    span_s = max(spans, default=0.0)
    return {
        'topics': topics,
        'cameras': cameras,
        'total': {
            'expected': expected_total,
            'complete': complete_total,
            'complete_fraction': complete_total / expected_total if expected_total else NAN,
            'span_s': span_s,
            'offered_frames_per_s': expected_total / span_s if span_s else NAN,
            'delivered_frames_per_s': complete_total / span_s if span_s else NAN,
            'frame_latency_ms': percentiles(all_latencies),
            'worst_topic_delivered_fraction': min((t['delivered_fraction'] for t in topics.values()),
                                                  default=NAN),
        },
    }


def diagnostics_table(statuses: Sequence) -> dict[str, dict[str, str]]:
    """hardware_id -> {'level', 'message', key: value} of a DiagnosticArray's statuses (duck-typed)."""
    out = {}
    for status in statuses:
        out[status.hardware_id] = {'level': int(status.level[0]) if status.level else 0,
                                   'message': status.message, **{kv.key: kv.value for kv in status.values}}
    return out


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else NAN
    except ValueError:
        return NAN


def _count(text: str | None) -> int:
    value = _number(text)
    return int(value) if value == value else 0


def node_figures(diag: Mapping[str, Mapping[str, str]], published: Mapping[str, Sequence[int]]) -> dict:
    """The node's own view from its last /diagnostics, per camera (outputs published over frames the
    simulator sent, whole run; inputs; drops by reason; stamp-to-publish p50/p95/p99) and its engine status
    (every ``stamp_to_*`` series, inference time, batch sizes)."""
    cameras = {}
    for cam, stamps in published.items():
        values = diag.get(cam)
        if values is None:
            continue
        outputs = _count(values.get('outputs_total'))
        cameras[cam] = {
            'sent': len(stamps),
            'inputs': _count(values.get('inputs_total')),
            'published': outputs,
            'published_fraction': outputs / len(stamps) if stamps else NAN,
            'drops': {k[6:]: _count(v) for k, v in values.items()
                      if k.startswith('drops_') and k != 'drops_total'},
            'stamp_to_publish_ms': {q: _number(values.get(f'latency_{q}_ms')) for q in ('p50', 'p95', 'p99')},
        }
    engine = next((v for v in diag.values() if 'batches_total' in v), {})
    engine_figures = {k: _number(v) for k, v in engine.items()
                      if k.startswith('stamp_to_') or k.endswith('_ms')
                      or k in ('batches_total', 'batch_size_mean')}
    if 'batch_size_histogram' in engine:
        engine_figures['batch_size_histogram'] = engine['batch_size_histogram']
    return {'cameras': cameras, 'engine': engine_figures}


# ------------------------------------------------------------------------------------------------ processes
def consumer_topics(cameras: Sequence[str], outputs: Sequence[str], mode: str) -> list[list[tuple[str, str]]]:
    """The (topic, type) lists of the consumer processes: one list per camera or one per topic."""
    per_camera = [[(f'{cam}/{OUTPUT_TYPES[o][0]}', OUTPUT_TYPES[o][1]) for o in outputs] for cam in cameras]
    if mode == 'per-camera':
        return per_camera
    if mode == 'per-topic':
        return [[t] for topics in per_camera for t in topics]
    raise ValueError(f'consumer mode must be one of {CONSUMER_MODES}, got {mode!r}')


def node_parameters(args: argparse.Namespace, cameras: Sequence[str]) -> dict[str, object]:
    """Flat parameter names -> values of the node under test (``--param`` last)."""
    net_h, net_w = (int(v) for v in args.net_size.lower().split('x'))
    params: dict[str, object] = {
        'cameras': list(cameras), 'backend': args.backend, 'variant': args.variant, 'weights': args.weights,
        'device': args.device, 'precision': args.precision, 'net_height_px': net_h, 'net_width_px': net_w,
        'max_batch_size': args.max_batch_size or len(cameras), 'max_wait_ms': float(args.max_wait_ms),
        'cloud_stride': args.cloud_stride,
    }
    if args.layout:
        params['process_layout'] = args.layout
    params.update(args.params)
    return params


def params_file_text(params: Mapping[str, object]) -> str:
    """A ROS 2 params file (every node: ``/**``) with dotted names nested."""
    import yaml

    tree: dict = {}
    for name, value in params.items():
        *parents, leaf = name.split('.')
        branch = tree
        for part in parents:
            branch = branch.setdefault(part, {})
        branch[leaf] = value
    return yaml.safe_dump({'/**': {'ros__parameters': tree}}, sort_keys=False)


class DiagnosticsListener:
    """This process's only ROS node: keeps the node's last /diagnostics and counts its subscribers."""

    def __init__(self, namespace: str, domain_id: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('node_bench_diagnostics', namespace=namespace, context=self.context)
        self.lock = threading.Lock()
        self.last = None
        self.last_live = None  # the last one received while the cameras were publishing
        self.live = True
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - ends with the context
            pass

    def _on_diag(self, msg) -> None:
        if any('batches_total' in {kv.key for kv in s.values} for s in msg.status):
            with self.lock:
                self.last = msg
                if self.live:
                    self.last_live = msg

    def subscribed(self, topics: Sequence[str]) -> bool:
        return all(self.node.count_subscribers(t) > 0 for t in topics)

    def snapshot(self) -> tuple[dict, dict]:
        """(last, last while live) as diagnostics tables."""
        with self.lock:
            return (diagnostics_table(self.last.status) if self.last else {},
                    diagnostics_table(self.last_live.status) if self.last_live else {})

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])
    except OSError:
        return ''


def _wait(condition, timeout_s: float, what: str, alive=()) -> None:
    """Poll ``condition`` until true; RuntimeError on timeout or when a process of ``alive`` has exited."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for process, log in alive:
            if process.poll() is not None:
                raise RuntimeError(f'{what}: a process exited with {process.returncode}:\n{_tail(log)}')
        if time.monotonic() > deadline:
            raise RuntimeError(f'{what}: not within {timeout_s} s')
        time.sleep(0.2)


def run_point(args: argparse.Namespace, n_cameras: int, work: Path) -> dict:
    """One benchmark run with ``n_cameras``; logs, params file and raw reports under ``work``."""
    profile = str(_profile_path())
    domain_id = args.domain_id or 100 + os.getpid() % 50
    env = {**os.environ, 'ROS_DOMAIN_ID': str(domain_id), 'FASTDDS_DEFAULT_PROFILES_FILE': profile,
           'FASTRTPS_DEFAULT_PROFILES_FILE': profile, 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
           'PYTHONUNBUFFERED': '1'}
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'FASTDDS_DEFAULT_PROFILES_FILE',
                                           'FASTRTPS_DEFAULT_PROFILES_FILE',
                                           'ROS_AUTOMATIC_DISCOVERY_RANGE')})
    work.mkdir(parents=True, exist_ok=True)
    cameras = [f'cam{i}' for i in range(n_cameras)]
    namespace = f'/node_bench_{os.getpid()}_{n_cameras}'
    ros = ['--ros-args', '-r', f'__ns:={namespace}']
    python = sys.executable
    processes: list[tuple[subprocess.Popen, Path]] = []

    def start(name: str, cmd: list[str]) -> subprocess.Popen:
        log = work / f'{name}.log'
        with open(log, 'w') as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        processes.append((process, log))
        return process

    params = node_parameters(args, cameras)
    listener = None if args.check else DiagnosticsListener(namespace, domain_id)
    node = None
    consumers = []
    try:
        if not args.check:
            (work / 'node_params.yaml').write_text(params_file_text(params))
            node = start('node', [python, '-m', 'metric3d_ros.ros.node'] + ros
                         + ['--params-file', str(work / 'node_params.yaml')])
        groups = consumer_topics(cameras, args.outputs, args.consumers)
        for i, topics in enumerate(groups):
            cmd = [python, '-m', 'metric3d_ros.tools.consumer', '--report', str(work / f'consumer{i}.json'),
                   '--reliability', args.consumer_reliability, '--depth', str(args.consumer_depth),
                   '--executor', args.consumer_executor]
            cmd += [a for topic, type_name in topics for a in ('--topic', f'{topic}:{type_name}')]
            consumers.append(start(f'consumer{i}', cmd + ros))
        consumer_logs = [work / f'consumer{i}.log' for i in range(len(groups))]
        _wait(lambda: all('"subscribed"' in p.read_text() for p in consumer_logs), 60.0,
              'consumers subscribing', processes)
        if not args.check:
            # the node is active once it subscribes to every camera and publishes every consumed topic
            _wait(lambda: listener.subscribed([f'{c}/image' for c in cameras])
                  and all('"matched"' in p.read_text() for p in consumer_logs),
                  args.startup_timeout_s, 'the node starting', processes)
        total_s = args.warmup_s + args.duration_s
        start_at = time.time() + 3.0  # every camera process up and discovered by then
        sims = []
        per_camera = args.sim_per_camera or args.check
        for i, cam_list in enumerate([[c] for c in cameras] if per_camera else [cameras]):
            summary = work / f'sim{i}.json'
            if args.check:
                cmd = [python, '-m', 'metric3d_ros.tools.output_sim', '--outputs', ','.join(args.outputs),
                       '--cloud-stride', str(args.cloud_stride)]
            else:
                cmd = [python, '-m', 'metric3d_ros.tools.camera_sim']
            cmd += ['--cameras', ','.join(cam_list), '--size', args.size, '--rate-hz', str(args.rate_hz),
                    '--duration-s', str(total_s), '--start-at-unix-s', f'{start_at:.3f}',
                    '--wait-for-subscribers-s', '10', '--summary-json', str(summary)]
            sims.append((start(f'sim{i}', cmd + ros), cam_list, summary))
        for i, (sim, _, _) in enumerate(sims):
            try:
                sim.wait(timeout=total_s + 60.0)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f'camera process sim{i} did not finish in time') from exc
            if sim.returncode:
                raise RuntimeError(f'camera process sim{i} failed ({sim.returncode}):\n'
                                   f'{_tail(work / f"sim{i}.log")}')
        if listener is not None:
            with listener.lock:
                listener.live = False
        time.sleep(args.tail_s)  # trailing outputs
    finally:
        consumer_codes = [interrupt_and_wait(c, timeout_s=20.0) for c in consumers]
        node_code = interrupt_and_wait(node) if node is not None else None
        for process, _ in processes:
            if process.poll() is None:
                interrupt_and_wait(process, timeout_s=5.0)
        diag, diag_live = listener.snapshot() if listener is not None else ({}, {})
        if listener is not None:
            listener.close()
    published: dict[str, list[int]] = {}
    sim_figures = {}
    for i, (_, cam_list, summary_path) in enumerate(sims):
        summary = json.loads(summary_path.read_text())
        for cam in cam_list:
            published[cam] = list(summary['stamps_ns'])
        sim_figures[f'sim{i}'] = {'ticks': summary['ticks'], 'elapsed_s': summary['elapsed_s'],
                                  'stamp_to_published_ms': summary.get('stamp_to_published_ms', {})}
    records = {}
    consumer_runs = []
    for i, group in enumerate(groups):
        path = work / f'consumer{i}.json'
        if not path.is_file():  # the consumer died: its topics count as not delivered, and the run says so
            consumer_runs.append({'topics': sorted(t for t, _ in group), 'cpu_s': NAN, 'wall_s': NAN,
                                  'matched': False, 'exit_code': consumer_codes[i],
                                  'error': f'no report:\n{_tail(work / f"consumer{i}.log")}'})
            continue
        report = json.loads(path.read_text())
        records.update(report['topics'])
        consumer_runs.append({'topics': sorted(report['topics']), 'cpu_s': report['cpu_s'],
                              'wall_s': report['wall_s'], 'matched': report['matched'],
                              'exit_code': consumer_codes[i]})
    topics_of = {cam: [t for group in groups for t, _ in group if t.startswith(f'{cam}/')] for cam in cameras}
    result = evaluate(published, records, topics_of, int(args.warmup_s * 1e9))
    setup = {k: getattr(args, k) for k in SETUP_KEYS}
    setup['cameras'] = n_cameras
    result.update({
        'date': time.strftime('%Y-%m-%dT%H:%M:%S'),
        'setup': setup,
        'node_parameters': params if not args.check else {},
        'node': node_figures(diag, published) if not args.check else {},
        'node_exit_code': node_code,
        'consumers': consumer_runs,
        'simulators': sim_figures,
        'node_diagnostics': diag,
        # rates over the rolling window are only meaningful while the cameras were publishing
        'node_diagnostics_live': diag_live,
    })
    return result


# ------------------------------------------------------------------------------------------------- report
def _ms(figures: Mapping[str, float]) -> str:
    return ' '.join(f'{figures.get(q, NAN):7.1f}' for q in ('p50', 'p95', 'p99', 'max'))


def format_result(result: dict) -> str:
    setup = result['setup']
    what = ('consumer check (output_sim, no node)' if setup['check'] else
            f"{setup['backend']} {setup['variant']} {setup['net_size']} {setup['precision']} on "
            f"{setup['device']}, layout {setup['layout'] or 'default'}")
    lines = [
        f"node bench {result['date']}: {setup['cameras']} x {setup['size']} @ {setup['rate_hz']} Hz, "
        f"{setup['duration_s']} s measured after {setup['warmup_s']} s, {what}, outputs "
        f"{','.join(setup['outputs'])} (cloud stride {setup['cloud_stride']}); "
        f"consumers {setup['consumers']}, "
        f"{setup['consumer_reliability']} depth {setup['consumer_depth']}, "
        f"{setup['consumer_executor']} executor",
        f"{'topic (at its consumer)':34s} {'expected':>8s} {'delivered':>9s} {'%':>7s}   stamp->receive ms:"
        f" {'p50':>5s} {'p95':>7s} {'p99':>7s} {'max':>7s}  {'MB/s':>6s}",
    ]
    for topic, t in result['topics'].items():
        lines.append(f"{topic:34s} {t['expected']:8d} {t['delivered']:9d} "
                     f"{100 * t['delivered_fraction']:7.2f}"
                     f"                     {_ms(t['stamp_to_receive_ms'])}  {t['received_mb_per_s']:6.1f}"
                     + (f"  dup {t['duplicates']}" if t['duplicates'] else '')
                     + (f"  unexpected {t['unexpected']}" if t['unexpected'] else ''))
    node = result.get('node') or {}
    for cam, c in result['cameras'].items():
        line = (f"{cam}: complete {c['complete']}/{c['expected']} ({100 * c['complete_fraction']:.2f} %), "
                f"frame latency ms {_ms(c['frame_latency_ms'])}")
        n = node.get('cameras', {}).get(cam)
        if n:
            s2p = n['stamp_to_publish_ms']
            line += (f" | node: published {n['published']}/{n['sent']} "
                     f"({100 * n['published_fraction']:.2f} %, whole run), inputs {n['inputs']}, "
                     f"drops {n['drops'] or 'none'}, stamp->publish p50/p95/p99 "
                     f"{s2p['p50']:.1f}/{s2p['p95']:.1f}/{s2p['p99']:.1f} ms")
        lines.append(line)
    total = result['total']
    lines.append(f"total: {total['complete']}/{total['expected']} frames complete "
                 f"({100 * total['complete_fraction']:.2f} %), offered {total['offered_frames_per_s']:.1f} "
                 f"frames/s, delivered {total['delivered_frames_per_s']:.1f} frames/s, frame latency ms "
                 f"{_ms(total['frame_latency_ms'])} (p50 p95 p99 max)")
    engine = node.get('engine')
    if engine:
        series = ', '.join(f'{k} {v:.1f}' for k, v in sorted(engine.items())
                           if k.startswith('stamp_to_') and isinstance(v, float))
        lines.append(f"node engine: batches {engine.get('batches_total', NAN):.0f}, batch size mean "
                     f"{engine.get('batch_size_mean', NAN):.2f} ({engine.get('batch_size_histogram', '')}), "
                     f"inference p50 {engine.get('inference_p50_ms', NAN):.1f} ms")
        if series:
            lines.append(f'node timing (ms): {series}')
    for name, sim in result['simulators'].items():
        lines.append(f"{name}: {sim['ticks']} ticks in {sim['elapsed_s']} s, "
                     "stamp -> last message handed over "
                     f"(ms) {sim['stamp_to_published_ms'] or '-'}")
    cpu = ', '.join(f"{c['cpu_s']:.1f}" for c in result['consumers'])
    lines.append(f'consumer processes: {len(result["consumers"])}, CPU s each: {cpu}')
    lines.extend(f"consumer of {', '.join(c['topics'])} FAILED ({c['exit_code']}): {c['error']}"
                 for c in result['consumers'] if 'error' in c)
    return '\n'.join(lines)


def sweep_row(result: dict) -> dict:
    """One point of the capacity curve."""
    total = result['total']
    node = result.get('node') or {}
    published = [c['published_fraction'] for c in node.get('cameras', {}).values()]
    return {'cameras': result['setup']['cameras'], 'rate_hz': result['setup']['rate_hz'],
            'offered_frames_per_s': total['offered_frames_per_s'],
            'delivered_frames_per_s': total['delivered_frames_per_s'],
            'complete_fraction': total['complete_fraction'],
            'frame_latency_p50_ms': total['frame_latency_ms']['p50'],
            'frame_latency_p99_ms': total['frame_latency_ms']['p99'],
            'node_published_fraction_min': min(published, default=NAN)}


def format_sweep(rows: Sequence[dict]) -> str:
    lines = [f"{'cameras':>7s} {'offered/s':>9s} {'delivered/s':>11s} {'complete %':>10s} {'p50 ms':>7s} "
             f"{'p99 ms':>7s} {'node published % (min)':>22s}"]
    for r in rows:
        if 'error' in r:
            lines.append(f"{r['cameras']:7d} failed: {r['error']}")
            continue
        lines.append(f"{r['cameras']:7d} {r['offered_frames_per_s']:9.1f} "
                     f"{r['delivered_frames_per_s']:11.1f} "
                     f"{100 * r['complete_fraction']:10.2f} {r['frame_latency_p50_ms']:7.1f} "
                     f"{r['frame_latency_p99_ms']:7.1f} {100 * r['node_published_fraction_min']:22.2f}")
    return '\n'.join(lines)


def targets_met(args: argparse.Namespace, result: dict) -> bool:
    ok = True
    cams = result['cameras'].values()
    latency = result['total']['frame_latency_ms']
    if args.target_delivered is not None:
        ok &= all(c['complete_fraction'] >= args.target_delivered for c in cams)
    if args.target_published is not None:
        node_cams = (result.get('node') or {}).get('cameras', {})
        ok &= bool(node_cams) and all(c['published_fraction'] >= args.target_published
                                      for c in node_cams.values())
    if args.target_p50_ms is not None:
        ok &= latency['p50'] <= args.target_p50_ms
    if args.target_p99_ms is not None:
        ok &= latency['p99'] <= args.target_p99_ms
    return bool(ok)


def _json_safe(value):
    """NaN -> None (strict JSON)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``metric3d_node_bench``."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='node_bench_') as tmp:
        root = Path(args.log_dir) if args.log_dir else Path(tmp)
        if not args.sweep:
            result = run_point(args, args.cameras, root)
            print(format_result(result), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(_json_safe(result), indent=1))
            return 0 if targets_met(args, result) else 1
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        ok = True
        for n in args.sweep:
            try:
                result = run_point(args, n, root / f'cameras_{n}')
            except RuntimeError as exc:
                print(f'{n} cameras: failed: {exc}', flush=True)
                rows.append({'cameras': n, 'error': str(exc).splitlines()[0]})
                ok = False
                continue
            print(format_result(result), flush=True)
            (out_dir / f'cameras_{n}.json').write_text(json.dumps(_json_safe(result), indent=1))
            rows.append(sweep_row(result))
            ok &= targets_met(args, result)
            (out_dir / 'sweep.json').write_text(json.dumps(_json_safe(rows), indent=1))
        print(format_sweep(rows), flush=True)
        (out_dir / 'sweep.json').write_text(json.dumps(_json_safe(rows), indent=1))
        return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
