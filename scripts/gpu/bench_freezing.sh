#!/usr/bin/env bash
# Engine figures after Inductor freezing (docs/BENCHMARKS.md, 2026-11-22): ViT-S batch 8 / 1, the 4-camera mix,
# ViT-L batch 4; bf16 cast + compile (default mode = freezing on), synthetic weights, 616x1064.
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD
date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -m metric3d_ros.tools.bench --device cuda --batch-sizes 8 1 --precision bf16 --compile default \
  --autocast-scope cast --modes network engine --iters 30 --warmup 5 --json ${OUT:-/tmp}/fz_vit_s.json 2>&1 | grep -v "^W1\|UserWarning" | tail -8
python3 -m metric3d_ros.tools.bench --device cuda --mixed-cameras --batch-sizes 8 --precision bf16 --compile default \
  --autocast-scope cast --modes engine --iters 30 --warmup 5 --json ${OUT:-/tmp}/fz_mixed.json 2>&1 | grep -v "^W1\|UserWarning" | tail -5
python3 -m metric3d_ros.tools.bench --device cuda --variant large --batch-sizes 4 --precision bf16 --compile default \
  --autocast-scope cast --modes network engine --iters 10 --warmup 2 --json ${OUT:-/tmp}/fz_vit_l.json 2>&1 | grep -v "^W1\|UserWarning" | tail -6
