#!/usr/bin/env bash
# Engine figures with the fused network and fused preprocessing (docs/BENCHMARKS.md, 2026-11-22): bf16 cast +
# compile (default mode = Inductor freezing), synthetic weights, 616x1064. Usage: bench_fused.sh [vit_s] [mixed]
# [large] (all three without arguments). Extra metric3d_bench arguments in $BENCH_EXTRA (e.g. "--host-frames
# registered"), a suffix for the JSON files in $TAG.
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD
parts=${*:-vit_s mixed large}
date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
# shellcheck disable=SC2206
common=(--device cuda --precision bf16 --compile default --autocast-scope cast ${BENCH_EXTRA:-})
tag=${TAG:-}
for part in $parts; do
  case $part in
    vit_s) python3 -m metric3d_ros.tools.bench "${common[@]}" --batch-sizes 8 1 --modes network engine --iters 30 \
             --warmup 5 --json "${OUT:-/tmp}/fused_vit_s${tag}.json" 2>&1 | grep -v "^W1\|UserWarning\|warn" | tail -8 ;;
    mixed) python3 -m metric3d_ros.tools.bench "${common[@]}" --mixed-cameras --batch-sizes 8 --modes engine \
             --iters 30 --warmup 5 --json "${OUT:-/tmp}/fused_mixed${tag}.json" 2>&1 | grep -v "^W1\|UserWarning\|warn" | tail -5 ;;
    large) python3 -m metric3d_ros.tools.bench "${common[@]}" --variant large --batch-sizes 4 --modes network engine \
             --iters 10 --warmup 2 --json "${OUT:-/tmp}/fused_vit_l${tag}.json" 2>&1 | grep -v "^W1\|UserWarning\|warn" | tail -6 ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
