"""Benchmark of the depth node as deployed: camera simulator process -> depth_node process -> observer.

    python -m metric3d_ros.tools.node_bench --cameras 2 --size 640x480 --rate-hz 5 --duration-s 30 \
        --net-size 140x196 --device cpu --weights synthetic

Starts ``depth_node`` (its own process, the shipped Fast DDS shared-memory profile) with the given model and
outputs, an observer node in this process that subscribes to every requested output of every camera, then
``metric3d_camera_sim`` publishing N cameras at R Hz. When the simulator is done it reports:

- delivered fraction: input frames (published by the simulator) for which EVERY requested output arrived
  at the observer;
- latency: observer receive time of the last output of a frame minus the frame's stamp (stamp = the
  simulator's publish time; same host clock), p50 / p95 / p99 / max, in ms. This includes the DDS transfer
  to the observer (raw subscriptions: the stamp is read from the serialized header, nothing else is
  deserialized, so the observer keeps up like a C++ consumer would);
- the node's own stamp-to-publish latency (p50 / p95 / p99 of the last 512 frames, measured right after
  the last message of a frame was published) and the fraction of input frames it published: the figures
  the targets (``--target-p50-ms``, ``--target-p99-ms``) are checked against;
- the node's own /diagnostics figures (stamp-to-publish latency p50/p95, inference time, batch sizes,
  drops by reason) from the last DiagnosticArray; input/output rates from the last one received while
  the simulator was still publishing (the rolling window of a later one includes the idle end).

Frames stamped in the first ``--skip-s`` seconds are left out of both figures (start-up transients); the
full-run delivered fraction is printed as well. Exit code 0 when the targets given with
``--target-published`` (the node's published fraction: the issue's "published for >= 99 % of input
frames"), ``--target-delivered`` (the observer's fraction), ``--target-p50-ms``, ``--target-p99-ms`` (the
node's stamp-to-publish latency) are met (or none are given), else 1.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import threading
import time
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
SETUP_KEYS = ('cameras', 'size', 'rate_hz', 'duration_s', 'skip_s', 'outputs', 'cloud_stride', 'backend',
              'variant', 'weights', 'device', 'precision', 'net_size', 'max_wait_ms', 'extra_param',
              'sim_per_camera')
REPO_CONFIG = Path(__file__).resolve().parents[2] / 'config'


def _profile_path() -> Path:
    """The Fast DDS profile: the source tree's, else the installed share directory's."""
    local = REPO_CONFIG / 'fastdds_shm.xml'
    if local.is_file():
        return local
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory('metric3d_ros')) / 'config' / 'fastdds_shm.xml'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='node_bench', description=__doc__.split('\n')[0])
    p.add_argument('--cameras', type=int, default=2, help='number of cameras (cam0, cam1, ...)')
    p.add_argument('--size', default='640x480', help='WIDTHxHEIGHT of every camera')
    p.add_argument('--rate-hz', type=float, default=5.0)
    p.add_argument('--duration-s', type=float, default=30.0)
    p.add_argument('--skip-s', type=float, default=2.0, help='frames stamped this early are not measured')
    p.add_argument('--outputs', default='depth,depth_info,points', help=f'of {",".join(OUTPUT_TYPES)}')
    p.add_argument('--cloud-stride', type=int, default=2)
    p.add_argument('--backend', default='torch')
    p.add_argument('--variant', default='small')
    p.add_argument('--weights', default='synthetic', help="checkpoint path, 'synthetic' or '' (official)")
    p.add_argument('--device', default='auto')
    p.add_argument('--precision', default='fp32')
    p.add_argument('--net-size', default='616x1064', help='network HEIGHTxWIDTH (multiples of 28)')
    p.add_argument('--max-batch-size', type=int, default=0, help='0: the number of cameras')
    p.add_argument('--max-wait-ms', type=float, default=15.0)
    p.add_argument('--extra-param', action='append', default=[], metavar='NAME:=VALUE',
                   help='further node parameters, e.g. cuda_graphs:=false (repeatable)')
    p.add_argument('--sim-per-camera', action='store_true',
                   help='one simulator process per camera, ticking together (independent drivers); default: '
                        'one process publishing every camera in turn')
    p.add_argument('--domain-id', type=int, default=0, help='ROS_DOMAIN_ID (0: 100 + pid %% 50)')
    p.add_argument('--startup-timeout-s', type=float, default=300.0, help='for loading and warm-up')
    p.add_argument('--json', default='', help='also write the results here')
    p.add_argument('--log-dir', default='', help='keep the node and simulator output here')
    p.add_argument('--target-delivered', type=float, default=None, help='observer fraction, e.g. 0.99')
    p.add_argument('--target-published', type=float, default=None,
                   help="the node's published fraction (every requested output), e.g. 0.99")
    p.add_argument('--target-p50-ms', type=float, default=None)
    p.add_argument('--target-p99-ms', type=float, default=None)
    args = p.parse_args(argv)
    args.outputs = [o.strip() for o in args.outputs.split(',') if o.strip()]
    unknown = sorted(set(args.outputs) - set(OUTPUT_TYPES))
    if unknown or not args.outputs:
        p.error(f'--outputs: unknown {unknown}; choose from {",".join(OUTPUT_TYPES)}')
    return args


class Observer:
    """Subscribes to the requested outputs of every camera and records arrival times per stamp."""

    def __init__(self, cameras: list[str], outputs: list[str], namespace: str, domain_id: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs import msg as sensor_msgs

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('node_bench_observer', namespace=namespace, context=self.context)
        self.lock = threading.Lock()
        self.arrivals: dict[tuple[str, int], dict[str, int]] = {}
        self.diagnostics = None
        self.diagnostics_live = None  # the last one received while the simulator was still publishing
        self.live = True
        self.outputs = outputs
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.subscriptions = []
        for cam in cameras:
            for out in outputs:
                topic, type_name = OUTPUT_TYPES[out]
                # raw: the serialized bytes, not deserialized into Python (a Python subscriber deserializing
                # every depth image and cloud falls behind and, being reliable, would slow the node down)
                self.subscriptions.append(self.node.create_subscription(
                    getattr(sensor_msgs, type_name), f'{cam}/{topic}',
                    lambda m, c=cam, o=out: self._store(c, o, m), qos, raw=True))
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

    def _store(self, cam: str, out: str, data: bytes) -> None:
        now_ns = time.time_ns()
        stamp_ns = cdr_stamp_ns(data)
        with self.lock:
            self.arrivals.setdefault((cam, stamp_ns), {})[out] = now_ns

    def _on_diag(self, msg) -> None:
        if any(s.name.endswith(': engine') for s in msg.status):
            with self.lock:
                self.diagnostics = msg
                if self.live:
                    self.diagnostics_live = msg

    def wait_for_node(self, cameras: list[str], timeout_s: float) -> bool:
        """Wait until every camera's image topic has a subscriber (the node is active)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.node.count_subscribers(f'{cam}/image') > 0 for cam in cameras):
                return True
            time.sleep(0.2)
        return False

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


def cdr_stamp_ns(data: bytes) -> int:
    """header.stamp of a serialized message whose first field is a std_msgs/Header (CDR: a 4-byte
    encapsulation header, then int32 sec and uint32 nanosec in the byte order it names)."""
    order = '<' if data[1] & 1 else '>'
    sec, nanosec = struct.unpack_from(order + 'iI', data, 4)
    return sec * 1_000_000_000 + nanosec


def _percentiles(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {'p50': float('nan'), 'p95': float('nan'), 'p99': float('nan'), 'max': float('nan')}
    arr = np.asarray(values_ms)
    return {'p50': float(np.percentile(arr, 50)), 'p95': float(np.percentile(arr, 95)),
            'p99': float(np.percentile(arr, 99)), 'max': float(arr.max())}


def evaluate(published: dict[str, list[int]], arrivals: dict, outputs: list[str], skip_ns: int) -> dict:
    """Delivered fraction and latency from the simulator's stamps and the observer's arrivals."""
    all_stamps = sorted({s for stamps in published.values() for s in stamps})
    start_ns = (all_stamps[0] + skip_ns) if all_stamps else 0
    total = measured = delivered_all = delivered = 0
    latencies_ms = []
    per_camera = {}
    for cam, stamps in published.items():
        cam_total = cam_delivered = 0
        for stamp_ns in stamps:
            got = arrivals.get((cam, stamp_ns), {})
            complete = all(out in got for out in outputs)
            total += 1
            delivered_all += complete
            if stamp_ns < start_ns:
                continue
            measured += 1
            cam_total += 1
            if complete:
                delivered += 1
                cam_delivered += 1
                latencies_ms.append((max(got[out] for out in outputs) - stamp_ns) / 1e6)
        per_camera[cam] = {'frames': cam_total, 'delivered': cam_delivered,
                           'fraction': cam_delivered / cam_total if cam_total else float('nan')}
    return {
        'frames_published': total,
        'delivered_fraction_full_run': delivered_all / total if total else float('nan'),
        'frames_measured': measured,
        'delivered_fraction': delivered / measured if measured else float('nan'),
        'latency_ms': _percentiles(latencies_ms),
        'per_camera': per_camera,
    }


def _diag_summary(msg) -> dict:
    if msg is None:
        return {}
    out = {}
    for status in msg.status:
        out[status.hardware_id] = {'level': int(status.level[0]) if status.level else 0,
                                   'message': status.message,
                                   **{kv.key: kv.value for kv in status.values}}
    return out


def node_figures(diag: dict, published: dict[str, list[int]]) -> dict:
    """The node's own view from its last /diagnostics: frames published / frames sent (whole run) and
    stamp-to-publish latency measured right after publishing (last 512 frames, all cameras)."""
    sent = sum(len(stamps) for stamps in published.values())
    outputs = sum(int(diag[cam]['outputs_total']) for cam in published if cam in diag)
    engine = next((v for v in diag.values() if 'batches_total' in v), {})
    latency = {q: float(engine[f'stamp_to_publish_{q}_ms']) for q in ('p50', 'p95', 'p99')
               if f'stamp_to_publish_{q}_ms' in engine}
    return {'published_fraction': outputs / sent if sent else float('nan'), 'latency_ms': latency}


def run(args: argparse.Namespace) -> dict:
    profile = str(_profile_path())
    domain_id = args.domain_id or 100 + os.getpid() % 50
    os.environ.update({
        'ROS_DOMAIN_ID': str(domain_id),
        'FASTDDS_DEFAULT_PROFILES_FILE': profile,
        'FASTRTPS_DEFAULT_PROFILES_FILE': profile,
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
    })
    cameras = [f'cam{i}' for i in range(args.cameras)]
    namespace = f'/node_bench_{os.getpid()}'
    net_h, net_w = (int(v) for v in args.net_size.lower().split('x'))
    params = {
        'cameras': '[' + ','.join(cameras) + ']', 'backend': args.backend, 'variant': args.variant,
        'weights': f'"{args.weights}"', 'device': args.device, 'precision': args.precision,
        'net_height_px': net_h, 'net_width_px': net_w,
        'max_batch_size': args.max_batch_size or args.cameras, 'max_wait_ms': float(args.max_wait_ms),
        'cloud_stride': args.cloud_stride, 'info_tolerance_ms': 50.0,
    }
    node_cmd = [sys.executable, '-m', 'metric3d_ros.ros.node', '--ros-args', '-r', f'__ns:={namespace}']
    node_cmd += [a for k, v in params.items() for a in ('-p', f'{k}:={v}')]
    for extra in args.extra_param:
        node_cmd += ['-p', extra]
    log_dir = Path(args.log_dir) if args.log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    node_log = open(log_dir / 'node.log', 'w') if log_dir else subprocess.DEVNULL  # noqa: SIM115
    summary_path = Path(args.json + '.sim.json' if args.json else f'/tmp/node_bench_sim_{os.getpid()}.json')
    observer = Observer(cameras, args.outputs, namespace, domain_id)
    node = subprocess.Popen(node_cmd, stdout=node_log, stderr=subprocess.STDOUT)
    sim = None
    try:
        base = [sys.executable, '-m', 'metric3d_ros.tools.camera_sim', '--size', args.size,
                '--rate-hz', str(args.rate_hz), '--duration-s', str(args.duration_s)]
        ros = ['--ros-args', '-r', f'__ns:={namespace}']
        limit_s = args.startup_timeout_s + args.duration_s + 60.0
        if args.sim_per_camera:
            if not observer.wait_for_node(cameras, args.startup_timeout_s):
                raise RuntimeError('the node did not subscribe to every camera within '
                                   f'{args.startup_timeout_s} s')
            start_at = time.time() + 4.0  # every simulator process up and discovered by then
            sims = [subprocess.Popen(base + ['--cameras', cam, '--start-at-unix-s', f'{start_at:.3f}',
                                             '--wait-for-subscribers-s', '10', '--summary-json',
                                             f'{summary_path}.{cam}'] + ros,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for cam in cameras]
            outputs = [sim.communicate(timeout=limit_s) for sim in sims]
            failed = [(sim.returncode, out) for sim, out in zip(sims, outputs, strict=True) if sim.returncode]
            if failed:
                raise RuntimeError(f'camera simulator failed: {failed}')
        else:
            sim_cmd = base + ['--cameras', ','.join(cameras), '--wait-for-subscribers-s',
                              str(args.startup_timeout_s), '--start-delay-s', '1.0', '--summary-json',
                              str(summary_path)] + ros
            sim = subprocess.run(sim_cmd, capture_output=True, text=True, timeout=limit_s)
            if sim.returncode != 0:
                raise RuntimeError(f'camera simulator failed:\n{sim.stdout}\n{sim.stderr}')
        with observer.lock:
            observer.live = False
        time.sleep(2.0)  # trailing outputs
    finally:
        interrupt_and_wait(node)
        observer.close()
    if args.sim_per_camera:
        summaries = {cam: json.loads(Path(f'{summary_path}.{cam}').read_text()) for cam in cameras}
        published = {cam: list(summaries[cam]['stamps_ns']) for cam in cameras}
        summary = summaries[cameras[0]]
    else:
        summary = json.loads(summary_path.read_text())
        published = {cam: list(summary['stamps_ns']) for cam in cameras}
    with observer.lock:
        arrivals = dict(observer.arrivals)
        diagnostics = observer.diagnostics
        live = observer.diagnostics_live
    result = evaluate(published, arrivals, args.outputs, int(args.skip_s * 1e9))
    result['node'] = node_figures(_diag_summary(diagnostics), published)
    result.update({
        'date': time.strftime('%Y-%m-%d'),
        'setup': {k: getattr(args, k) for k in SETUP_KEYS},
        'max_batch_size': params['max_batch_size'],
        'simulator_rate_hz': summary['ticks'] / summary['elapsed_s'] if summary['elapsed_s'] else 0.0,
        # per simulator process: its stamp to its last image of the tick handed to the middleware
        'simulator_stamp_to_published_ms': (
            {cam: summaries[cam].get('stamp_to_published_ms', {}) for cam in cameras} if args.sim_per_camera
            else summary.get('stamp_to_published_ms', {})),
        'node_exit_code': node.returncode,
        'node_diagnostics': _diag_summary(diagnostics),
        # rates over the rolling window are only meaningful while the cameras were publishing
        'node_diagnostics_live': _diag_summary(live),
    })
    return result


def format_result(result: dict) -> str:
    lat = result['latency_ms']
    setup = result['setup']
    lines = [
        f"node bench {result['date']}: {setup['cameras']} x {setup['size']} @ {setup['rate_hz']} Hz, "
        f"{setup['duration_s']} s, {setup['backend']} {setup['variant']} {setup['net_size']} "
        f"{setup['precision']} on {setup['device']}, outputs {','.join(setup['outputs'])} "
        f"(cloud stride {setup['cloud_stride']}), "
        f"{'one simulator process per camera' if setup.get('sim_per_camera') else 'one simulator process'}",
        f"  delivered: {100 * result['delivered_fraction']:.2f} % of {result['frames_measured']} frames "
        f"(full run {100 * result['delivered_fraction_full_run']:.2f} % of {result['frames_published']})",
        f"  latency stamp -> observer (ms): p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  "
        f"p99 {lat['p99']:.1f}  max {lat['max']:.1f}",
    ]
    node = result.get('node', {})
    node_lat = node.get('latency_ms', {})
    fraction = node.get('published_fraction', float('nan'))
    lines.append(f"  node: published {100 * fraction:.2f} % of input frames; "
                 f"stamp -> publish (ms) p50 {node_lat.get('p50', float('nan')):.1f}  "
                 f"p95 {node_lat.get('p95', float('nan')):.1f}  p99 {node_lat.get('p99', float('nan')):.1f}")
    engine = next((v for k, v in result['node_diagnostics'].items() if 'batches_total' in v), None)
    if engine:
        lines.append(f"  node: inference p50 {engine.get('inference_p50_ms')} ms, batch size mean "
                     f"{engine.get('batch_size_mean')}, histogram {engine.get('batch_size_histogram')}")
        means = {k[:-8]: v for k, v in engine.items() if k.endswith('_mean_ms') and k != 'inference_mean_ms'}
        if means:
            lines.append('  node time means (ms): ' + ', '.join(f'{k} {v}' for k, v in sorted(means.items())))
        tails = {k[:-7]: v for k, v in engine.items() if k.startswith('stamp_to_') and k.endswith('_p99_ms')}
        if tails:
            lines.append('  node p99 (ms): ' + ', '.join(f'{k} {v}' for k, v in sorted(tails.items())))
    sim_times = result.get('simulator_stamp_to_published_ms')
    if sim_times:
        lines.append(f'  simulator: stamp -> last image of the tick published (ms) {sim_times}')
    live = result.get('node_diagnostics_live', {})
    for cam, diag in sorted(result['node_diagnostics'].items()):
        if 'latency_p50_ms' in diag:
            rates = live.get(cam, {})
            drops = {k[6:]: v for k, v in diag.items() if k.startswith('drops_') and k != 'drops_total'}
            lines.append(f"  {cam}: node latency p50 {diag['latency_p50_ms']} / p95 {diag['latency_p95_ms']} "
                         f"ms, in {rates.get('input_rate_hz', '?')} Hz, "
                         f"out {rates.get('output_rate_hz', '?')} Hz (during the run), "
                         f"drops {drops or 'none'}")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(format_result(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    ok = True
    node_lat = result['node'].get('latency_ms', {})
    if args.target_delivered is not None:
        ok &= result['delivered_fraction'] >= args.target_delivered
    if args.target_published is not None:
        ok &= result['node'].get('published_fraction', 0.0) >= args.target_published
    if args.target_p50_ms is not None:
        ok &= node_lat.get('p50', float('inf')) <= args.target_p50_ms
    if args.target_p99_ms is not None:
        ok &= node_lat.get('p99', float('inf')) <= args.target_p99_ms
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
