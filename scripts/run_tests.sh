#!/usr/bin/env bash
# The test command. Sets up two local virtual environments and runs the suite:
#   .venv        ROS 2 Kilted wheels from PyPI + torch CPU + onnx/onnxruntime: the whole suite;
#   .venv-jazzy  ROS 2 Jazzy wheels from PyPI: the ROS tests (marker "ros") again under Jazzy's rclpy.
# Extra arguments go to pytest (for example: scripts/run_tests.sh -m "not slow").
# Set METRIC3D_SKIP_JAZZY=1 to run only the Kilted pass (for quick local iterations).
set -euo pipefail
cd "$(dirname "$0")/.."
export METRIC3D_SHARED="${METRIC3D_SHARED:-$(cd .. && pwd)/shared}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$(mktemp -d)}"
export PYTHONDONTWRITEBYTECODE=1

scripts/setup_env.sh .venv ros,onnx,dev
if [ "${METRIC3D_SKIP_JAZZY:-0}" != "1" ]; then
  scripts/setup_jazzy.sh .venv-jazzy
fi

echo "=== pytest: ROS 2 Kilted wheels (.venv), whole suite ==="
.venv/bin/python -m pytest -ra "$@"

if [ "${METRIC3D_SKIP_JAZZY:-0}" != "1" ]; then
  echo "=== pytest: ROS 2 Jazzy wheels (.venv-jazzy), ROS tests ==="
  .venv-jazzy/bin/python -m pytest -ra -m ros "$@"
fi
