#!/usr/bin/env bash
# Recipe used on the lent H100 (2026-11-21): the onnxruntime-gpu wheel arrives in parts under .gpu_carry/ (split -b 58M),
# the ROS Kilted cp312 wheels under .whl/. See docs/ONNX.md and docs/NODE.md for the results.
# Final GPU run: ORT CUDA (onnxruntime-gpu 1.31.1 carried in parts) + node benchmark (ROS Kilted cp312 wheels).
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
date -u
mkdir -p /tmp/ortparts && cp .gpu_carry/part_* /tmp/ortparts/ 2>/dev/null
ls -la /tmp/ortparts
W=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
cat /tmp/ortparts/part_a? > $W
echo "$(cat .gpu/whl.sha256 | cut -d' ' -f1)  $W" | sha256sum -c - || exit 3
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $W || exit 4
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, onnxruntime as o; print('ort', o.__version__, o.get_available_providers())"
python3 -m metric3d_ros.tools.export --variant small --weights synthetic --output /tmp/vit_s.onnx 2>&1 | tail -8
python3 -m metric3d_ros.tools.export --variant small --weights synthetic --output /tmp/vit_s_fp16.onnx --fp16 --check-size none 2>&1 | tail -3
python3 scripts/gpu/ort_parity.py /tmp/vit_s.onnx 2>&1 | grep -v "^WARNING" | tail -14
python3 -m metric3d_ros.tools.bench --device cuda --backend onnxruntime --onnx /tmp/vit_s.onnx --precision fp32 \
  --batch-sizes 1 8 --modes network engine --iters 20 --warmup 3 --json $OUT/ort_fp32.json 2>&1 | tail -12
python3 -m metric3d_ros.tools.bench --device cuda --backend onnxruntime --onnx /tmp/vit_s_fp16.onnx --precision fp32 \
  --batch-sizes 1 8 --modes network engine --iters 20 --warmup 3 --json $OUT/ort_fp16file.json 2>&1 | tail -12
# node benchmark: ROS Kilted wheels in a venv that sees the system torch
python3 -m venv --system-site-packages /tmp/rv && /tmp/rv/bin/python -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 5
export PYTHONPATH=$PWD
timeout 240 /tmp/rv/bin/python -m metric3d_ros.tools.node_bench --cameras 4 --size 1280x720 --rate-hz 30 --duration-s 20 \
  --net-size 616x1064 --device cuda --precision bf16 --weights synthetic --outputs depth,depth_info,points --cloud-stride 2 \
  --extra-param autocast_scope:=cast --target-delivered 0.99 --target-p50-ms 35 --target-p99-ms 70 \
  --json $OUT/node_bench.json --log-dir $OUT/nodelogs 2>&1 | tail -30
