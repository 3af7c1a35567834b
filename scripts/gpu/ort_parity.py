#!/usr/bin/env python3
"""ORT (IOBinding through the engine backend) vs torch fp32 on the same uint8 frames (616x1064 on CUDA).

Usage: python3 scripts/gpu/ort_parity.py vit_s.onnx [cuda|cpu]   (cpu runs at 280x392)
"""
import sys

import numpy as np
import torch

from metric3d_ros.core.config import EngineConfig, OnnxRuntimeOptions
from metric3d_ros.core.engine.engine import DepthEngine
from metric3d_ros.core.engine.types import Frame, OutputRequest
from metric3d_ros.core.geometry.intrinsics import Intrinsics

onnx_path = sys.argv[1]
device = sys.argv[2] if len(sys.argv) > 2 else 'cuda'
net = dict(net_height_px=280, net_width_px=392) if device == 'cpu' else {}
rng = np.random.default_rng(0)
frames = []
for i, (h, w) in enumerate([(720, 1280), (480, 640), (1080, 1920)]):
    img = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    frames.append(Frame(np.ascontiguousarray(img), Intrinsics(0.8 * w, 0.8 * w, w / 2, h / 2), f'c{i}', i))
req = OutputRequest(outputs={'depth', 'confidence', 'normals'})
out = {}
for name, cfg in [
    ('torch_fp32', EngineConfig(backend='torch', device=device, precision='fp32', weights='synthetic',
                                **net)),
    ('ort_cuda_fp32', EngineConfig(backend='onnxruntime', device=device, precision='fp32', **net,
                                   onnx=OnnxRuntimeOptions(model_path=onnx_path))),
]:
    eng = DepthEngine.from_config(cfg)
    res = eng.infer(frames, req)
    for r in res:
        if r.error:
            raise SystemExit(f'{name}: {r.error}')
    out[name] = res
    print(name, 'backend ok', flush=True)
    eng.close()
    if device != 'cpu':
        torch.cuda.empty_cache()
for a, b in zip(out['torch_fp32'], out['ort_cuda_fp32'], strict=True):
    for key in ('depth_m', 'confidence', 'normals'):
        x, y = a.arrays[key], b.arrays[key]
        ok = np.isfinite(x) & np.isfinite(y)
        d = np.abs(x[ok] - y[ok])
        tol = 1e-3 + 1e-3 * np.abs(x[ok])
        rng_ = float(np.nanmax(x) - np.nanmin(x)) or 1.0
        print(f'{a.camera_id} {key}: within criterion {np.mean(d <= tol) * 100:.3f} %, '
              f'max |diff| {d.max():.3e} ({d.max() / rng_ * 100:.4f} % of range)', flush=True)
