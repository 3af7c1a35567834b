"""GPU check of the registered shared-memory path (docs/BENCHMARKS.md, 2026-11-22): ProcessEngine (arenas
pinned, frames uploaded from and outputs downloaded into shared memory) against DepthEngine in process.

Usage: PYTHONPATH=. python3 scripts/gpu/registered_check.py (writes $OUT/reg_check.json)."""
import json
import os
import time

import numpy as np

from metric3d_ros.core.config import EngineConfig
from metric3d_ros.core.engine.engine import DepthEngine
from metric3d_ros.core.engine.process_engine import ProcessEngine
from metric3d_ros.core.engine.types import Frame, OutputRequest
from metric3d_ros.core.geometry.intrinsics import Intrinsics

OUT = os.environ.get('OUT', '/tmp')


def main():
    cfg = EngineConfig(device='cuda', precision='fp32', weights='synthetic', variant='small',
                       net_height_px=280, net_width_px=504, max_batch_size=4)
    rng = np.random.default_rng(0)
    sizes = [(720, 1280), (720, 1280), (480, 640), (1080, 1920)]
    frames = [Frame(rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                    Intrinsics(0.9 * w, 0.9 * w, w / 2, h / 2), f'c{i}', 1000 + i, f'c{i}_optical')
              for i, (h, w) in enumerate(sizes)]
    req = OutputRequest(depth=True, confidence=True, normals=True, cloud=True, cloud_rgb=True, cloud_stride=2)
    res = {}
    with DepthEngine(cfg) as local:
        local.warmup([4], [(720, 1280)])
        want = local.infer(frames, req)
        for _ in range(5):
            t = time.perf_counter()
            local.infer(frames, req)
        res['local_ms'] = (time.perf_counter() - t) * 1e3
        res['local_timings'] = want[0].timings_ms
    pe = ProcessEngine(cfg)
    try:
        pe.warmup([4], [(720, 1280)])
        for shared in (False, True, True, True):
            got = pe.infer(frames, req, shared=shared)
            for a, b in zip(got, want, strict=True):
                for name in ('depth_m', 'confidence', 'normals', 'points_xyz', 'points_rgb'):
                    x, y = getattr(a, name), getattr(b, name)
                    assert x.shape == y.shape, name
                    d = float(np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64))))
                    same_nan = bool(np.array_equal(np.isnan(x), np.isnan(y))) if x.dtype.kind == 'f' else True
                    key = f'maxdiff_{name}'
                    res[key] = max(res.get(key, 0.0), d)
                    res['nan_pattern_equal'] = res.get('nan_pattern_equal', True) and same_nan
            res[f'process_shared{int(shared)}_timings'] = got[0].timings_ms
            del got, a
        print('registered path: max differences', {k: v for k, v in res.items() if k.startswith('maxdiff')})
        for _ in range(10):
            got = pe.infer(frames, req, shared=True)
            del got
        got = pe.infer(frames, req, shared=True)
        res['process_last_timings'] = got[0].timings_ms
    finally:
        pe.close()
    print(json.dumps(res, indent=1))
    with open(f'{OUT}/reg_check.json', 'w') as f:
        json.dump(res, f, indent=1)


if __name__ == '__main__':
    main()
