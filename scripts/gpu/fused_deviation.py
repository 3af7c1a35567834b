"""Deviation of the reduced-precision networks from strict fp32 (docs/BENCHMARKS.md, 2026-11-22).

ViT-S with the synthetic weights, one batch of 2 frames (the shared NYU and KITTI RGB images when
../shared is there, else seeded noise) letterboxed to 616x1064 exactly as the engine does (device_exact),
eager on CUDA (no compile, no graphs): strict fp32, then bf16 'cast' with the fused network (the default
reduced-precision path) and with set_fused(False) (the previous path), each against fp32 with the
reference README's criterion (core/model/onnx_checks.agreement). Usage: PYTHONPATH=. python3
scripts/gpu/fused_deviation.py (one JSON line, also $OUT/fused_deviation.json).
"""
import copy
import glob

import numpy as np
import torch
from gpu_timing import report

from metric3d_ros.core.engine.preprocess import Preprocessor
from metric3d_ros.core.engine.torch_backend import TorchBackend
from metric3d_ros.core.geometry.letterbox import compute_letterbox
from metric3d_ros.core.model import load_metric3d
from metric3d_ros.core.model.onnx_checks import agreement
from metric3d_ros.core.model.synthetic import synthetic_state_dict

DEV = torch.device('cuda')
NET = (616, 1064)


def frames():
    found = sorted(glob.glob('../shared/data/nyu/rgb_*.jpg'))[:1]
    found += sorted(glob.glob('../shared/data/kitti/rgb_*'))[:1]
    if len(found) == 2:
        import cv2
        return [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in found[:2]], found[:2]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(2)], ['noise', 'noise']


def main():
    images, names = frames()
    pre = Preprocessor(NET, DEV, 'device_exact')
    lbs = [compute_letterbox(im.shape[0], im.shape[1], *NET) for im in images]
    groups = [(0, 1), (1, 2)]
    batch = torch.empty((2, 3, *NET), device=DEV)
    pre.fill(batch, pre.stage(images, lbs, groups), lbs, groups)
    pre.normalize_(batch)
    net = load_metric3d(synthetic_state_dict('small'), variant='small', device=DEV, fused_attention=True)
    out = {'device': torch.cuda.get_device_name(), 'torch': torch.__version__, 'frames': names}
    with torch.inference_mode():
        ref = TorchBackend(copy.deepcopy(net), DEV, NET, precision='fp32', cuda_graphs=False).module(batch)
        for name, fused in (('bf16_cast_fused', True), ('bf16_cast_unfused', False)):
            be = TorchBackend(copy.deepcopy(net), DEV, NET, precision='bf16', cuda_graphs=False,
                              autocast_scope='cast')
            be.module.net.set_fused(fused)
            got = be.module(batch)
            depth = agreement(got[0].cpu().numpy(), ref[0].cpu().numpy())
            rel = (got[0] - ref[0]).abs() / ref[0].abs().clamp_min(1e-6)
            p99 = float(torch.quantile(rel.flatten()[::7], 0.99))
            out[name] = {'fraction_ok': depth.fraction_ok, 'max_over_range': depth.max_over_range,
                         'median_rel': depth.median_rel, 'p99_rel': p99}
    report('fused_deviation', out)


if __name__ == '__main__':
    main()
