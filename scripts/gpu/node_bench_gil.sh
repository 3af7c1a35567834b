#!/usr/bin/env bash
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
date -u; nvidia-smi --query-gpu=name --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --prefix /tmp/rp .whl/*.whl || exit 5
SP=/tmp/rp/lib/python3.12/site-packages
LIBS=$(ls -d $SP/ros_*.libs 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH=/tmp/rp/lib:${LIBS}${LD_LIBRARY_PATH:-}
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export PYTHONPATH=$SP:$PWD
python3 -c "import rclpy, sensor_msgs.msg, diagnostic_msgs.msg; print('rclpy ok')" || exit 6
for gil in 0.0 0.5; do
timeout 120 python3 -m metric3d_ros.tools.node_bench --cameras 4 --size 1280x720 --rate-hz 30 --duration-s 20 \
  --net-size 616x1064 --device cuda --precision bf16 --weights synthetic --outputs depth,depth_info,points --cloud-stride 2 \
  --extra-param autocast_scope:=all --extra-param gil_switch_interval_ms:=$gil --target-delivered 0.99 --target-p50-ms 35 --target-p99-ms 70 \
  --json $OUT/node_bench_gil$gil.json 2>&1 | grep -v "^\[WARN\]" | tail -12
done
