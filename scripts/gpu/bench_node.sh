#!/usr/bin/env bash
# Node benchmark on a device machine, measured at consumer processes (metric3d_node_bench, docs/NODE.md
# "Benchmarks"). The ROS 2 Kilted cp312 wheels are carried under .whl/ and installed with --prefix (no network
# there). One command per use:
#
#   scripts/gpu/bench_node.sh point [node_bench args]          one run: 4 x 1280x720 @ 30 Hz, ViT-S 616x1064
#                                                              bf16 + compile, group_workers, depth + depth
#                                                              CameraInfo + stride-2 cloud, checked against
#                                                              issue 14's 4-camera targets; later
#                                                              arguments override (e.g. --cameras 8 --layout
#                                                              group_workers --param NAME:=VALUE)
#   scripts/gpu/bench_node.sh sweep OUT_DIR [node_bench args]  the capacity curve: cameras in $SWEEP (default
#                                                              1,2,4,6,8) at the same settings, one JSON per
#                                                              point (OUT_DIR/cameras_N.json) + sweep.json
#   scripts/gpu/bench_node.sh check [node_bench args]          the consumers alone on a known stream of the
#                                                              same shape (no node): the measurement's ceiling
#
# NODE_BENCH_TIMEOUT_S: the whole command's limit (default 580 s; a device command may run 600 s). A sweep
# point restarts the node (model load and warm-up, ~1 min without torch.compile): split long sweeps, e.g.
# SWEEP=1,2,4 then SWEEP=6,8 with the same OUT_DIR.
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
mode=${1:-point}
shift || true
python3 -m pip install -q --no-index --no-deps --no-compile --prefix /tmp/rp .whl/*.whl || exit 5
SP=/tmp/rp/lib/python3.12/site-packages
LIBS=$(ls -d $SP/ros_*.libs 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH=/tmp/rp/lib:${LIBS}${LD_LIBRARY_PATH:-}
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export PYTHONPATH=$SP:$PWD
export TORCHINDUCTOR_CACHE_DIR=$PWD/.gl/inductor  # kept between calls on a warm machine (ignored path)
# issue 14's setting: ViT-S 616x1064 bf16 (weights cast once) + torch.compile (one batch size), the shipped
# layout (group_workers), depth + depth CameraInfo + stride-2 cloud
SETUP=(--size 1280x720 --rate-hz 30 --warmup-s 2 --duration-s 20 --net-size 616x1064 --device cuda
       --precision bf16 --weights synthetic --outputs depth,depth_info,points --cloud-stride 2
       --layout group_workers --param compile:=default --param autocast_scope:=cast
       --param pad_to_max_batch:=true)
bench=(timeout "${NODE_BENCH_TIMEOUT_S:-580}" python3 -m metric3d_ros.tools.node_bench)
case "$mode" in
  point) exec "${bench[@]}" --cameras 4 "${SETUP[@]}" --target-delivered 0.999 --target-published 0.999 \
           --target-p50-ms 30 --target-p99-ms 50 "$@" ;;
  sweep) out=${1:?sweep needs OUT_DIR}; shift
         exec "${bench[@]}" --sweep "${SWEEP:-1,2,4,6,8}" --out-dir "$out" "${SETUP[@]}" "$@" ;;
  check) exec "${bench[@]}" --check --cameras 4 "${SETUP[@]}" "$@" ;;
  *) echo "usage: $0 point|sweep OUT_DIR|check [node_bench args]" >&2; exit 2 ;;
esac
