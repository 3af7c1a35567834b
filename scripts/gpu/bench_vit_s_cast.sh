#!/usr/bin/env bash
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD
date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; git log -1 --oneline 2>/dev/null
python3 -m metric3d_ros.tools.bench --device cuda --batch-sizes 8 1 --precision bf16 --compile default \
  --autocast-scope cast --modes network engine --iters 30 --warmup 5 --json ${OUT:-/tmp}/vit_s_cast.json 2>&1 | grep -v "^W1\|UserWarning" | tail -8
python3 -m metric3d_ros.tools.bench --device cuda --mixed-cameras --batch-sizes 8 4 --precision bf16 --compile default \
  --autocast-scope cast --modes network engine --iters 30 --warmup 5 --json ${OUT:-/tmp}/mixed_cast.json 2>&1 | grep -v "^W1\|UserWarning" | tail -8
