"""``metric3d_demo``: the one-command demo (``scripts/run_demo.sh``) on a synthetic 3-camera rig.

Steps (everything lands in ``--output-dir``, default ``demo_output/``):

1. weights: ``--weights PATH``, else the cache, else the official download (skipped with ``--offline``);
   without any it runs with SYNTHETIC weights and says loudly that the depth values are then meaningless;
2. ``demo_bag/``: the synthetic room seen by 3 cameras (640x480, 960x540, 1280x720, different intrinsics,
   exact ground-truth depth) as a rosbag2 (``metric3d_bag synthetic``);
3. ``eval/``: offline, deterministic evaluation of that bag through the engine (``metric3d_eval``):
   report.md, report.json, figures/ and the engine's outputs in eval/output_bag;
4. ROS: ``depth_node`` in its own process with ``demo_params.yaml``, the bag played to it
   (``metric3d_play``), its depth, CameraInfo and clouds recorded into ``ros/output_bag``; per-camera
   rates and latencies are printed and written to ``summary.json``;
5. ``depth/*.png`` (colourised depth of every recorded frame, one depth scale for the 3 cameras and a colour
   bar in metres; with synthetic weights every image, the evaluation figures too, carries the warning) and
   ``clouds/*.ply`` (coloured organized clouds of each camera's last frame, for MeshLab / CloudCompare /
   Open3D).

Output size: the bags (the input bag and the recorded outputs: raw images, float depth, normals and clouds,
about 75 MB per stamp of the 3 cameras) are working files, removed at the end; ``--keep-bags`` keeps them
(``demo_bag/``, ``eval/output_bag/``, ``ros/output_bag/``) for replaying or inspecting. What stays (report,
PNGs, PLYs, logs) is a few MB per stamp; the demo prints its size at the end and ``summary.json`` records it.

The default network input (280x392, ViT-S) keeps it to a few minutes on 2 CPU cores; the node and the
offline evaluation use the same engine settings, and ``summary.json`` reports how far the node's depth is
from the offline engine's. ``--no-ros`` runs steps 1-3 only (also the fallback when rclpy is missing).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metric3d_ros.codec.cloud import read_pointcloud2_cdr
from metric3d_ros.codec.image import image_to_depth_m, read_image_cdr
from metric3d_ros.core.config import add_engine_arguments
from metric3d_ros.core.synthetic_scene import SceneConfig
from metric3d_ros.tools import eval_report
from metric3d_ros.tools.bag_builder import BagOptions, write_synthetic_bag
from metric3d_ros.tools.bagio import BagReader

BANNER = '!' * 100
DEMO_CAMERAS = ('front', 'left', 'right')


def loud(lines: Sequence[str]) -> str:
    """A block of text framed so that nobody misses it."""
    return '\n'.join([BANNER, *[f'!!! {line}' for line in lines], BANNER])


SYNTHETIC_NOTICE = loud([
    'NO METRIC3D WEIGHTS: running with SYNTHETIC (random, deterministic) weights.',
    'The pipeline (bag, engine, node, topics, clouds, reports) is real; the DEPTH VALUES ARE MEANINGLESS.',
    'Pass --weights /path/to/metric_depth_vit_small_800k.pth (or put it in the cache) for real depth.',
])


def choose_weights(weights: str, variant: str, offline: bool, log=print) -> tuple[str, str]:
    """``(engine weights, their source)``: the given path, the cache, a download, else synthetic."""
    from metric3d_ros.core.model.weights import WeightsError, resolve_weights

    if weights == 'synthetic':
        return 'synthetic', 'synthetic (asked for)'
    if weights:
        path = resolve_weights(variant, path=weights)  # raises WeightsError when it does not exist
        return str(path), 'given path'
    try:
        return str(resolve_weights(variant, download=False)), 'cache'
    except WeightsError as exc:
        cache_miss = str(exc)  # names the cache and how to fill it by hand
    if offline:  # one message per outcome: the cache miss is only worth its manual steps when offline
        log(f'[demo] --offline: not downloading. {cache_miss}')
        return 'synthetic', 'synthetic (offline, no checkpoint)'
    try:
        log('[demo] the official checkpoint is not in the cache: downloading it (Ctrl-C, or --offline, to '
            'run with synthetic weights instead)')
        return str(resolve_weights(variant, download=True, timeout_s=20.0)), 'official download'
    except (WeightsError, OSError) as exc:
        log(f'[demo] download failed: {exc}')
        return 'synthetic', 'synthetic (download failed)'


def demo_params(cameras: Sequence[str], weights: str, variant: str, net_h: int, net_w: int,
                cloud_stride: int) -> str:
    """The node's parameters file for the demo (YAML)."""
    cams = ', '.join(cameras)
    return f"""# Written by metric3d_demo: the depth node as the demo runs it (options: config/depth.yaml).
metric3d_depth:
  ros__parameters:
    autostart: true
    cameras: [{cams}]
    backend: torch
    variant: {variant}
    weights: "{weights}"
    device: cpu
    precision: fp32
    preprocess: auto
    net_height_px: {net_h}
    net_width_px: {net_w}
    warmup_iters: 0              # the first frame warms up; CPU start-up stays short
    max_batch_size: {len(cameras)}
    max_wait_ms: 250.0           # the 3 cameras of a stamp go into one batch
    max_input_age_ms: -1.0       # bag stamps are in the past: never drop them as stale
    info_tolerance_ms: -1.0
    cloud_stride: {cloud_stride}
    cloud_rgb: true
    qos:
      output:
        reliability: reliable
        depth: 5
"""


def _fast_dds_3() -> bool:
    """True when the installed Fast DDS is 3.x (the Kilted wheels' ros-fastdds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version('ros-fastdds').split('.')[0]) >= 3
    except (PackageNotFoundError, ValueError):
        return False


def setup_ros_environment(output_dir: Path, log=print) -> dict[str, str]:
    """Environment for this process and the node: own domain (unless set), log dir, Fast DDS SHM profile."""
    env: dict[str, str] = {}
    if 'ROS_DOMAIN_ID' not in os.environ:
        env['ROS_DOMAIN_ID'] = str(1 + os.getpid() % 100)
    env['ROS_LOG_DIR'] = str(output_dir / 'ros_logs')
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    profile = Path(__file__).resolve().parents[2] / 'config' / 'fastdds_shm.xml'
    if not profile.is_file():
        try:
            from ament_index_python.packages import get_package_share_directory

            profile = Path(get_package_share_directory('metric3d_ros')) / 'config' / 'fastdds_shm.xml'
        except Exception:  # noqa: BLE001 - any failure: run without the profile
            profile = Path('')
    if profile.is_file():
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
        if not _fast_dds_3():  # Fast DDS 2.x (Humble, Jazzy) reads the older name; 3.x warns about it
            env['FASTRTPS_DEFAULT_PROFILES_FILE'] = str(profile)
        env['RMW_FASTRTPS_USE_QOS_FROM_XML'] = '0'
    else:
        log('[demo] Fast DDS profile config/fastdds_shm.xml not found: large images may be dropped')
    os.environ.update(env)
    return env


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray | None) -> int:
    """Binary little-endian PLY of the finite points (with colour when given); returns the point count."""
    pts = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    keep = np.isfinite(pts).all(axis=1)
    pts = pts[keep]
    header = ['ply', 'format binary_little_endian 1.0', f'element vertex {len(pts)}',
              'property float x', 'property float y', 'property float z']
    if rgb is not None:
        header += ['property uchar red', 'property uchar green', 'property uchar blue']
        dtype = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('r', 'u1'), ('g', 'u1'), ('b', 'u1')])
    else:
        dtype = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4')])
    data = np.empty(len(pts), dtype=dtype)
    data['x'], data['y'], data['z'] = pts[:, 0], pts[:, 1], pts[:, 2]
    if rgb is not None:
        colours = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)[keep]
        data['r'], data['g'], data['b'] = colours[:, 0], colours[:, 1], colours[:, 2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as f:
        f.write(('\n'.join([*header, 'end_header']) + '\n').encode('ascii'))
        f.write(data.tobytes())
    return len(pts)


def export_artifacts(output_bag: Path, out_dir: Path, warning: str = '') -> dict[str, Any]:
    """Depth PNGs of every depth image in ``output_bag`` and a PLY of each camera's last cloud.

    Every PNG is the depth coloured with one ``DepthScale`` for all cameras and frames (2-98th percentile of
    their depth together: a colour is the same depth in every image), with a colour bar in metres and, when
    ``warning`` is given, a red warning band. Returns the paths and the scale (``depth_scale_m``).
    """
    pngs, plies = [], []
    depths: list[tuple[str, int, np.ndarray]] = []
    last_cloud: dict[str, tuple[int, Any, Any]] = {}
    with BagReader(output_bag) as reader:
        for message in reader.messages():
            camera, _, kind = message.topic.strip('/').partition('/')
            if kind == 'depth/image':
                image = read_image_cdr(message.data)
                depths.append((camera, image.stamp_ns, image_to_depth_m(image)))
            elif kind == 'points':
                cloud = read_pointcloud2_cdr(message.data)
                if cloud.stamp_ns >= last_cloud.get(camera, (-1, None, None))[0]:
                    last_cloud[camera] = (cloud.stamp_ns, cloud.xyz, cloud.rgb)
    scale = eval_report.DepthScale.of([depth for _, _, depth in depths])
    for camera, stamp, depth in depths:
        path = out_dir / 'depth' / f'{camera}_{stamp}.png'
        eval_report.save_png(path, eval_report.depth_figure(depth, scale, f'{camera} {stamp}', warning))
        pngs.append(str(path))
    for camera, (stamp, xyz, rgb) in sorted(last_cloud.items()):
        path = out_dir / 'clouds' / f'{camera}_{stamp}.ply'
        write_ply(path, xyz, rgb)
        plies.append(str(path))
    return {'depth_png': pngs, 'ply': plies, 'depth_scale_m': [scale.lo_m, scale.hi_m]}


def folder_size(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path`` (0, 0 when it does not exist)."""
    files = [p for p in Path(path).rglob('*') if p.is_file()] if Path(path).exists() else []
    return len(files), sum(p.stat().st_size for p in files)


def remove_bags(bags: Sequence[Path]) -> int:
    """Delete the bag folders ``bags`` (those that exist); returns the bytes freed."""
    freed = 0
    for bag in bags:
        if bag.is_dir():
            freed += folder_size(bag)[1]
            shutil.rmtree(bag)
    return freed


def compare_depth_bags(node_bag: Path, offline_bag: Path) -> dict[str, float | int | None]:
    """Largest relative difference between the node's and the offline engine's depth for the same frames."""
    def load(bag: Path) -> dict[tuple[str, int], np.ndarray]:
        out = {}
        with BagReader(bag) as reader:
            for message in reader.messages():
                if message.topic.endswith('/depth/image'):
                    image = read_image_cdr(message.data)
                    out[(message.topic.split('/')[1], image.stamp_ns)] = image_to_depth_m(image)
        return out

    node, offline = load(node_bag), load(offline_bag)
    common = sorted(set(node) & set(offline))
    worst = 0.0
    for key in common:
        a, b = node[key], offline[key]
        both = np.isfinite(a) & np.isfinite(b)
        if both.any():
            worst = max(worst, float(np.max(np.abs(a[both] - b[both]) / b[both])))
    return {'frames_compared': len(common), 'max_rel_diff': worst if common else None}


def _latency_summary(session, cameras: Sequence[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for cam in cameras:
        sent = {k: t for k, t in session.published.items() if k[0] == cam}
        got = {k: t for k, t in session.received.items() if k[0] == cam}
        lat = [(got[k] - sent[k]) * 1e3 for k in sent if k in got]
        times = sorted(got.values())
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
        out[cam] = {
            'inputs': len(sent), 'depth_outputs': len(got),
            'delivered': len([k for k in sent if k in got]) / len(sent) if sent else None,
            'output_rate_hz': rate,
            'latency_p50_ms': float(np.percentile(lat, 50)) if lat else None,
            'latency_p95_ms': float(np.percentile(lat, 95)) if lat else None,
        }
    return out


def _print_ros_table(per_cam: dict[str, dict[str, Any]]) -> None:
    def f(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else '-'

    print(f'{"camera":<10}{"inputs":>8}{"depth out":>11}{"delivered":>11}{"rate Hz":>9}{"lat p50 ms":>12}'
          f'{"lat p95 ms":>12}')
    for cam, s in per_cam.items():
        delivered = f'{100 * s["delivered"]:.0f}%' if s['delivered'] is not None else '-'
        print(f'{cam:<10}{s["inputs"]:>8}{s["depth_outputs"]:>11}{delivered:>11}'
              f'{f(s["output_rate_hz"], ".2f"):>9}{f(s["latency_p50_ms"], ".0f"):>12}'
              f'{f(s["latency_p95_ms"], ".0f"):>12}')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='metric3d_demo', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--output-dir', type=Path, default=Path('demo_output'))
    p.add_argument('--offline', action='store_true', help='never try to download the checkpoint')
    p.add_argument('--frames', type=int, default=4, help='frames of the synthetic rig (3 cameras each)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--cloud-stride', type=int, default=2)
    p.add_argument('--pacing', choices=('lockstep', 'realtime'), default='lockstep',
                   help='lockstep: one stamp at a time, waiting for the node (every frame is shown on a slow '
                        'CPU); realtime: the bag timing times --rate')
    p.add_argument('--rate', type=float, default=1.0, help='playback rate factor for --pacing realtime')
    p.add_argument('--no-ros', action='store_true', help='offline evaluation only (no node, no ROS)')
    p.add_argument('--keep-bags', action='store_true',
                   help='keep the input bag and the recorded output bags (full-size raw images, depth, '
                        'normals, clouds: about 75 MB per stamp); by default they are removed at the end')
    p.add_argument('--node-start-timeout-s', type=float, default=600.0)
    p.add_argument('--frame-timeout-s', type=float, default=300.0)
    add_engine_arguments(p, include=('variant', 'weights', 'net_size'), defaults={'net_size': '280x392'})
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from metric3d_ros.core.config import parse_net_size
    from metric3d_ros.core.model.specs import get_spec
    from metric3d_ros.core.model.weights import WeightsError
    from metric3d_ros.tools.evaluate import EvalOptions, evaluate_with_backend, print_summary

    t_start = time.monotonic()
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        net_h, net_w = parse_net_size(args.net_size)
        weights, source = choose_weights(args.weights, args.variant, args.offline)
    except (ValueError, WeightsError) as exc:
        print(f'metric3d_demo: error: {exc}', file=sys.stderr)
        return 2
    synthetic = weights == 'synthetic'
    print(SYNTHETIC_NOTICE if synthetic else f'[demo] weights: {weights} ({source})')

    bag = out / 'demo_bag'
    t0 = time.monotonic()
    scene = SceneConfig(seed=args.seed)
    write_synthetic_bag(bag, scene, args.frames, BagOptions(storage='mcap', overwrite=True))
    cameras = tuple(c.name for c in scene.cameras)
    print(f'[demo] synthetic bag: {bag} ({args.frames} frames x {len(cameras)} cameras '
          f'{", ".join(f"{c.name} {c.width_px}x{c.height_px}" for c in scene.cameras)}) '
          f'in {time.monotonic() - t0:.1f} s')

    engine_options = {'variant': args.variant, 'weights': weights, 'net_size': f'{net_h}x{net_w}',
                      'device': 'cpu', 'preprocess': 'auto'}
    eval_dir = out / 'eval'
    ros_ok = not args.no_ros
    if ros_ok:
        try:
            import rclpy  # noqa: F401
        except ImportError as exc:
            print(loud([f'ROS 2 (rclpy) is not available ({exc}): the node part of the demo is SKIPPED.',
                        'Install the ROS extra: scripts/setup_env.sh .venv ros,onnx,dev']))
            ros_ok = False
    # the offline engine's outputs: compared with the node's (ROS part), kept only with --keep-bags
    eval_bag = eval_dir / 'output_bag' if ros_ok or args.keep_bags else None
    options = EvalOptions(max_batch_size=len(cameras), cloud_stride=args.cloud_stride,
                          output_bag=eval_bag, overwrite=True, figure_frames_per_camera=1)
    print(f'[demo] offline evaluation through the engine ({get_spec(args.variant).display_name}, '
          f'{net_h}x{net_w}, CPU) ...')
    t0 = time.monotonic()
    report = evaluate_with_backend(bag, 'torch', engine_options, options, eval_dir)
    print(f'[demo] offline evaluation done in {time.monotonic() - t0:.1f} s')
    print_summary(report, eval_dir)

    summary: dict[str, Any] = {'weights': weights, 'weights_source': source, 'depth_meaningless': synthetic,
                               'net_size': [net_h, net_w], 'bag': str(bag),
                               'evaluation': str(eval_dir / 'report.md')}
    if ros_ok:
        from metric3d_ros.tools.demo_ros import RosSessionConfig, run_ros_session

        env = setup_ros_environment(out)
        params = out / 'demo_params.yaml'
        params.write_text(demo_params(cameras, weights, args.variant, net_h, net_w, args.cloud_stride))
        print(f'[demo] ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID")}, params {params}')
        session_cfg = RosSessionConfig(
            bag=bag, cameras=cameras, params_file=params, output_bag=out / 'ros' / 'output_bag',
            node_log=out / 'node.log', pacing=args.pacing, rate=args.rate,
            node_start_timeout_s=args.node_start_timeout_s, frame_timeout_s=args.frame_timeout_s,
        )
        try:
            session = run_ros_session(session_cfg)
        except RuntimeError as exc:
            print(f'metric3d_demo: error: {exc}', file=sys.stderr)
            return 1
        per_cam = _latency_summary(session, cameras)
        print(f'\n[demo] depth node ({args.pacing} pacing): inputs published, depth images received, '
              'stamp-to-depth latency (publish -> receive, wall clock)')
        _print_ros_table(per_cam)
        artifacts = export_artifacts(session_cfg.output_bag, out,
                                     eval_report.SYNTHETIC_FIGURE_WARNING if synthetic else '')
        agreement = compare_depth_bags(session_cfg.output_bag, eval_dir / 'output_bag')
        summary.update({'ros': per_cam, 'ros_env': env, 'node_start_s': session.node_start_s,
                        'play_s': session.play_s, 'node_returncode': session.node_returncode,
                        'output_topics': dict(session.outputs), 'node_vs_offline': agreement, **artifacts})
        print(f'[demo] node vs offline engine depth: max relative difference {agreement["max_rel_diff"]} '
              f'over {agreement["frames_compared"]} frames')
        print(f'[demo] {len(artifacts["depth_png"])} depth PNGs in {out / "depth"}, '
              f'{len(artifacts["ply"])} PLY clouds in {out / "clouds"}')
        missing = sum(s['inputs'] - s['depth_outputs'] for s in per_cam.values())
        if missing > 0 and args.pacing == 'lockstep':
            print(f'[demo] WARNING: {missing} frame(s) got no depth: see {session_cfg.node_log}')
    else:
        print('[demo] ROS part skipped (--no-ros or no rclpy): no node run, no PNG/PLY from its topics')
    bags = [bag, eval_dir / 'output_bag', out / 'ros' / 'output_bag']
    summary['bags_kept'] = args.keep_bags
    freed = 0 if args.keep_bags else remove_bags(bags)
    summary['total_s'] = time.monotonic() - t_start
    (out / 'summary.json').unlink(missing_ok=True)
    summary['output_bytes_before_summary'] = folder_size(out)[1]
    (out / 'summary.json').write_text(json.dumps(eval_report.json_safe(summary), indent=1) + '\n')
    files, size = folder_size(out)
    kept = ('the bags kept (--keep-bags)' if args.keep_bags
            else f'the working bags removed ({freed / 1e6:.1f} MB; --keep-bags keeps them)')
    print(f'\n[demo] done in {summary["total_s"]:.0f} s. Open {eval_dir / "report.md"}, {out / "depth"}, '
          f'{out / "clouds"}; summary: {out / "summary.json"}')
    print(f'[demo] output: {out} holds {files} files, {size} bytes ({size / 1e6:.1f} MB), {kept}')
    if synthetic:
        print(SYNTHETIC_NOTICE)
    return 0


if __name__ == '__main__':
    sys.exit(main())
