#!/usr/bin/env bash
# The test command: sets up .venv (Kilted ROS 2 wheels) and runs the whole suite.
# ROS tests also run under the Jazzy wheels when a Jazzy environment is available
# (scripts/setup_jazzy.sh creates it; CI does so).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh .venv ros,onnx,dev
export METRIC3D_SHARED="${METRIC3D_SHARED:-$(cd .. && pwd)/shared}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$(mktemp -d)}"
.venv/bin/python -m pytest -ra "$@"
