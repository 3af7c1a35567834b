#!/usr/bin/env bash
# ONNX Runtime CUDA on the lent H100 (docs/ONNX.md, 2026-11-21). The onnxruntime-gpu 1.31.1 wheel (255 MB) is
# brought over in parts (split -b 58M) under .gpu_carry/ in back-to-back calls, its sha256 in .gpu/whl.sha256.
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
mkdir -p /tmp/ortparts && cp .gpu_carry/part_* /tmp/ortparts/ 2>/dev/null
W=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
cat /tmp/ortparts/part_a? > $W
echo "$(cut -d' ' -f1 .gpu/whl.sha256)  $W" | sha256sum -c - || exit 3
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $W || exit 4
export PYTHONPATH=/tmp/site:$PWD
python3 -m metric3d_ros.tools.export --variant small --weights synthetic --output /tmp/vit_s.onnx
python3 -m metric3d_ros.tools.export --variant small --weights synthetic --output /tmp/vit_s_fp16.onnx --fp16 --check-size none
python3 scripts/gpu/ort_parity.py /tmp/vit_s.onnx
python3 -m metric3d_ros.tools.bench --device cuda --backend onnxruntime --onnx-model-path /tmp/vit_s.onnx --precision fp32 tf32 \
  --batch-sizes 1 8 --modes network engine --iters 20 --warmup 3 --json "${OUT:-/tmp}/ort_fp32.json"
python3 -m metric3d_ros.tools.bench --device cuda --backend onnxruntime --onnx-model-path /tmp/vit_s_fp16.onnx --precision fp32 \
  --batch-sizes 1 8 --modes network engine --iters 20 --warmup 3 --json "${OUT:-/tmp}/ort_fp16file.json"
