#!/usr/bin/env bash
# Node benchmark on the lent H100 (docs/NODE.md, 2026-11-21): ROS 2 Kilted cp312 wheels carried under .whl/,
# installed with --prefix (no network there), then metric3d_node_bench with the target settings.
# Extra arguments go to node_bench, e.g.:  --extra-param autocast_scope:=cast
# (NODE_BENCH_TIMEOUT_S: the whole run's limit, default 400 s: torch.compile warm-up takes minutes)
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --prefix /tmp/rp .whl/*.whl || exit 5
SP=/tmp/rp/lib/python3.12/site-packages
LIBS=$(ls -d $SP/ros_*.libs 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH=/tmp/rp/lib:${LIBS}${LD_LIBRARY_PATH:-}
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export PYTHONPATH=$SP:$PWD
timeout "${NODE_BENCH_TIMEOUT_S:-400}" python3 -m metric3d_ros.tools.node_bench --cameras 4 --size 1280x720 --rate-hz 30 --duration-s 20 \
  --net-size 616x1064 --device cuda --precision bf16 --weights synthetic --outputs depth,depth_info,points \
  --cloud-stride 2 --target-published 0.99 --target-p50-ms 35 --target-p99-ms 70 "$@"
