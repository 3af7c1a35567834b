#!/usr/bin/env bash
# The README run command: set up .venv (once; later runs skip it) and run the one-command demo.
#   scripts/run_demo.sh [metric3d_demo options]
# Examples:
#   scripts/run_demo.sh                                   # cache / official weights, else synthetic ones
#   scripts/run_demo.sh --offline                         # never download (synthetic weights if none cached)
#   scripts/run_demo.sh --weights ~/metric_depth_vit_small_800k.pth
# It builds a synthetic 3-camera bag, evaluates it through the engine, runs depth_node on it (ROS 2 from
# the PyPI wheels), records the node's topics and writes report.md, depth PNGs and PLY clouds to
# demo_output/ (about 10 MB; its working bags, 300 MB, are removed unless --keep-bags; metric3d_demo --help
# for every option).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh .venv ros,onnx,dev
exec .venv/bin/python -m metric3d_ros.tools.demo "$@"
