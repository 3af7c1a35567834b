"""metric3d_fused_bench: the cost of the fused multi-camera cloud (``fused_points``) per batch.

Times ``core.geometry.fusion.fuse_depths`` (upload of the strided depth, unprojection, range crop, transform
into the base frame, height band, voxel decimation, download of the kept points) and the PointCloud2 writer
(``codec.cloud.unorganized_cloud_cdr``) for one batch of ``--cameras`` depth images of ``--image-size``, in
the configurations of ``--configs``:

- ``stride``: stride decimation only (every point within ``max_range_m`` 100 m);
- ``voxel``: stride, then one point per 5 cm voxel;
- ``costmap``: stride, range 0.2-10 m, height band 0.05-2.0 m, 5 cm voxels (a Nav2 obstacle source).

The depth images are a synthetic scene seen from a rig of cameras looking around (a floor, walls and
boxes at 1-30 m; values do not change the cost much, the kept point count does). torch runs with
``--threads`` CPU threads (default: every core but one, the node's rule for a CPU camera group,
``ros.layout.group.torch_threads``; on a loaded machine more threads than free cores make every torch call
many times slower). Prints, per configuration,
the median and p95 of fusing and of writing the message (ms) and the points kept; ``--json FILE`` writes
them with the environment.

    metric3d_fused_bench --device cpu                       # 4 x 1280x720 at stride 2
    metric3d_fused_bench --device cuda --iterations 200
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metric3d_ros.codec.cloud import unorganized_cloud_cdr
from metric3d_ros.core.geometry.fusion import CameraDepth, FusionConfig, RigidTransform, fuse_depths
from metric3d_ros.core.geometry.intrinsics import Intrinsics

CONFIGS = {
    'stride': {},
    'voxel': {'voxel_m': 0.05},
    'costmap': {'voxel_m': 0.05, 'min_range_m': 0.2, 'max_range_m': 10.0, 'min_height_m': 0.05,
                'max_height_m': 2.0},
}


def rig_depths(cameras: int, height: int, width: int) -> list[CameraDepth]:
    """``cameras`` depth images of a room-like scene, cameras 1 m up looking around at equal yaw steps."""
    rng = np.random.default_rng(0)
    k = Intrinsics(0.8 * width, 0.8 * width, (width - 1) / 2.0, (height - 1) / 2.0)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for i in range(cameras):
        yaw = 2.0 * math.pi * i / cameras
        # floor 1 m below the camera where the ray points down, else a wall at 5-30 m with boxes
        ray_y = (rows - k.cy_px) / k.fy_px
        floor = np.where(ray_y > 0.02, 1.0 / np.maximum(ray_y, 1e-6), np.inf)
        wall = 5.0 + 25.0 * (0.5 + 0.5 * np.sin(cols / width * 3.0 + i))
        depth = np.minimum(floor, wall)
        for _ in range(6):
            r0, c0 = rng.integers(0, height // 2), rng.integers(0, width - width // 8)
            depth[r0:r0 + height // 3, c0:c0 + width // 8] = rng.uniform(1.0, 8.0)
        c, s = math.cos(yaw), math.sin(yaw)
        # base_from_optical: optical z -> the camera's heading in the base's x-y plane
        matrix = np.array([[s, 0.0, c, 0.0], [-c, 0.0, s, 0.0], [0.0, -1.0, 0.0, 1.0]])
        out.append(CameraDepth(i, depth.astype(np.float32), k, RigidTransform.from_matrix(matrix)))
    return out


def _percentiles(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values)
    return float(np.median(arr)), float(np.percentile(arr, 95))


def run(cameras: int, height: int, width: int, stride: int, device: str, iterations: int,
        configs: Sequence[str]) -> list[dict]:
    """One result dict per configuration (module docstring)."""
    depths = rig_depths(cameras, height, width)
    rows = []
    for name in configs:
        config = FusionConfig(stride=stride, **CONFIGS[name])
        fuse_ms, write_ms = [], []
        cloud = None
        for i in range(iterations + 2):  # two warm-up calls
            t0 = time.perf_counter()
            cloud = fuse_depths(depths, config, device)
            t1 = time.perf_counter()
            unorganized_cloud_cdr(cloud.xyz, 0, 'base_link', camera_index=cloud.camera_index)
            t2 = time.perf_counter()
            if i >= 2:
                fuse_ms.append((t1 - t0) * 1e3)
                write_ms.append((t2 - t1) * 1e3)
        fuse_p50, fuse_p95 = _percentiles(fuse_ms)
        write_p50, write_p95 = _percentiles(write_ms)
        rows.append({'config': name, 'cameras': cameras, 'image': f'{width}x{height}', 'stride': stride,
                     'device': device, 'points_in': sum(math.ceil(height / stride) * math.ceil(width / stride)
                                                        for _ in depths),
                     'points_out': len(cloud), 'fuse_ms_p50': fuse_p50, 'fuse_ms_p95': fuse_p95,
                     'write_ms_p50': write_p50, 'write_ms_p95': write_p95, 'iterations': iterations})
    return rows


def _environment(device: str) -> dict:
    import torch

    env = {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'cpu': platform.processor() or
           platform.machine(), 'python': platform.python_version(),
           'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), 'command': ' '.join(sys.argv)}
    if device.startswith('cuda'):
        env['gpu'] = torch.cuda.get_device_name(torch.device(device))
    return env


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='metric3d_fused_bench', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cpu', help="torch device of the fusion ('cpu', 'cuda', 'cuda:1')")
    p.add_argument('--cameras', type=int, default=4)
    p.add_argument('--image-size', default='720x1280', help='HxW of each depth image')
    p.add_argument('--stride', type=int, default=2)
    p.add_argument('--iterations', type=int, default=30)
    p.add_argument('--threads', type=int, default=max(1, len(os.sched_getaffinity(0)) - 1),
                   help="torch CPU threads (default: every core but one, as the node's CPU camera group)")
    p.add_argument('--configs', nargs='+', choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument('--json', type=Path, default=None, help='write the figures and the environment here')
    args = p.parse_args(argv)
    try:
        height, width = (int(v) for v in args.image_size.lower().split('x'))
        if min(height, width, args.cameras, args.stride, args.iterations) < 1:
            raise ValueError('sizes, cameras, stride and iterations must be positive')
    except ValueError as exc:
        print(f'metric3d_fused_bench: error: {exc} (--image-size is HxW, e.g. 720x1280)', file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    rows = run(args.cameras, height, width, args.stride, args.device, args.iterations, args.configs)
    print(f'{"config":<10}{"cameras":>8}{"image":>11}{"stride":>7}{"points in":>11}{"points out":>11}'
          f'{"fuse p50":>10}{"fuse p95":>10}{"write p50":>10}{"write p95":>10}  (ms, {args.device})')
    for r in rows:
        print(f'{r["config"]:<10}{r["cameras"]:>8}{r["image"]:>11}{r["stride"]:>7}{r["points_in"]:>11}'
              f'{r["points_out"]:>11}{r["fuse_ms_p50"]:>10.2f}{r["fuse_ms_p95"]:>10.2f}'
              f'{r["write_ms_p50"]:>10.2f}{r["write_ms_p95"]:>10.2f}')
    if args.json is not None:
        args.json.write_text(json.dumps({'environment': _environment(args.device), 'results': rows},
                                        indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
