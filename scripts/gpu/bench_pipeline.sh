#!/usr/bin/env bash
# Engine throughput with batches in flight (EngineConfig.pipeline_depth; docs/BENCHMARKS.md, 2026-11-22,
# third session): bf16 cast + compile default (freezing), synthetic weights, 616x1064, $OUT/*.json.
# Usage: [ITERS=150] bench_pipeline.sh PART... with PART = vit_s_p2_reg | vit_s_p3_reg | vit_s_p3 | vit_s_p2 |
# vit_s_p1_reg | vit_s_p1 | vit_s_b1 | vit_s_b1_reg | mixed_p2_reg | mixed_p3_reg | mixed_p2 | mixed_p1_reg |
# mixed_p1 | large_p2_reg |
# large_p2 | large_p1_reg | large_p1 | tests (each part one metric3d_bench process; its name is the JSON file)
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD
out=${OUT:-/tmp}
date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; git log -1 --format=%h 2>/dev/null
bench() {  # name, arguments...
  local name=$1; shift
  echo "== $name"
  timeout 300 python3 -m metric3d_ros.tools.bench --device cuda --precision bf16 --compile default \
    --autocast-scope cast --iters ${ITERS:-150} --warmup 5 --json "$out/$name.json" "$@" 2>&1 \
    | grep -v "^W1\|UserWarning\|warn" | grep "^engine\|^network\|warm-up\|ERROR\|Error\|pipeline"
}
for part in "$@"; do
  case $part in
    vit_s_p2_reg) bench "$part" --batch-sizes 8 --modes network engine --pipeline-depth 2 --host-frames registered ;;
    vit_s_p3_reg) bench "$part" --batch-sizes 8 --modes engine --pipeline-depth 3 --host-frames registered ;;
    vit_s_p3) bench "$part" --batch-sizes 8 --modes engine --pipeline-depth 3 ;;
    vit_s_p2) bench "$part" --batch-sizes 8 --modes engine --pipeline-depth 2 ;;
    vit_s_p1_reg) bench "$part" --batch-sizes 8 --modes engine --host-frames registered ;;
    vit_s_p1) bench "$part" --batch-sizes 8 --modes engine ;;
    vit_s_b1) bench "$part" --batch-sizes 1 --modes network engine ;;
    vit_s_b1_reg) bench "$part" --batch-sizes 1 --modes engine --host-frames registered ;;
    mixed_p2_reg) bench "$part" --mixed-cameras --batch-sizes 8 --modes engine --pipeline-depth 2 --host-frames registered ;;
    mixed_p3_reg) bench "$part" --mixed-cameras --batch-sizes 8 --modes engine --pipeline-depth 3 --host-frames registered ;;
    mixed_p1_reg) bench "$part" --mixed-cameras --batch-sizes 8 --modes engine --host-frames registered ;;
    mixed_p1) bench "$part" --mixed-cameras --batch-sizes 8 --modes engine ;;
    mixed_p2) bench "$part" --mixed-cameras --batch-sizes 8 --modes engine --pipeline-depth 2 ;;
    large_p2_reg) bench "$part" --variant large --batch-sizes 4 --modes network engine --pipeline-depth 2 --host-frames registered --iters 40 --warmup 2 ;;
    large_p2) bench "$part" --variant large --batch-sizes 4 --modes engine --pipeline-depth 2 --iters 40 --warmup 2 ;;
    large_p1_reg) bench "$part" --variant large --batch-sizes 4 --modes engine --host-frames registered --iters 40 --warmup 2 ;;
    large_p1) bench "$part" --variant large --batch-sizes 4 --modes engine --iters 40 --warmup 2 ;;
    tests) timeout 300 python3 -m pytest -q -p no:cacheprovider -m cuda -rs test/core \
             2>&1 | tail -5 ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
