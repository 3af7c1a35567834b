#!/usr/bin/env bash
# Create (or update) a second virtual environment with the ROS 2 Jazzy wheels from PyPI, so that the ROS
# tests can run under Jazzy's rclpy (7.x) as well as Kilted's (9.x, scripts/setup_env.sh).
#   scripts/setup_jazzy.sh [VENV_DIR]        (VENV_DIR defaults to .venv-jazzy)
# The ros-jazzy-* packages are thin meta-packages that pin the matching ros-* wheels (ros-jazzy-rclpy 7.1.6
# -> ros-rclpy==7.1.6, cp311 manylinux wheel); the "fastrtps" extra pulls the Fast DDS RMW.
# torch is pinned to the CPU build first (as in setup_env.sh); metric3d_ros is installed editable without
# its dependencies so that nothing drags in the Kilted wheels. rosbags, onnx, onnxruntime and matplotlib are
# there because test modules with ROS tests also import them; colcon builds the package in the launch tests.
# launch, launch_ros, launch_testing and the ros2 command line (not on PyPI) come from
# $METRIC3D_SHARED/ros-tools (default ../shared beside the checkout), Jazzy build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-jazzy}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${METRIC3D_TORCH_SPEC:-torch==2.13.0}"
ROS_TOOLS="${METRIC3D_SHARED:-../shared}/ros-tools"
if [ ! -x "$ROS_TOOLS/install.sh" ]; then
  echo "[setup-jazzy] $ROS_TOOLS/install.sh not found: set METRIC3D_SHARED to the shared folder" >&2
  exit 1
fi
STAMP="$VENV/.metric3d_setup_stamp"
want="$(cat scripts/setup_jazzy.sh "$ROS_TOOLS/jazzy/SHA256SUMS" | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0  # up to date
fi
started=$SECONDS
echo "[setup-jazzy] setting up $VENV (first run: a few minutes, pip is quiet meanwhile)" >&2
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup-jazzy] creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
echo "[setup-jazzy] installing $TORCH_SPEC" >&2
"${PIP[@]}" "$TORCH_SPEC"
echo "[setup-jazzy] installing the ROS 2 Jazzy wheels" >&2
"${PIP[@]}" \
  'ros-jazzy-rclpy[fastrtps]' \
  ros-jazzy-sensor-msgs \
  ros-jazzy-std-msgs \
  ros-jazzy-diagnostic-msgs \
  ros-jazzy-lifecycle-msgs \
  ros-jazzy-rcl-interfaces \
  numpy opencv-python-headless pyyaml pytest ruff \
  rosbags onnx onnxruntime matplotlib \
  colcon-core colcon-ros colcon-python-setup-py colcon-package-selection colcon-bash
echo "[setup-jazzy] installing metric3d_ros (editable, no dependencies)" >&2
"${PIP[@]}" -e . --no-deps
echo "[setup-jazzy] installing launch, launch_ros, launch_testing and ros2 (Jazzy) from $ROS_TOOLS" >&2
"$ROS_TOOLS/install.sh" "$VENV" jazzy
"$VENV/bin/python" -c 'import rclpy, rclpy.lifecycle, sensor_msgs.msg, diagnostic_msgs.msg, lifecycle_msgs.srv'
echo "$want" > "$STAMP"
echo "[setup-jazzy] $VENV ready ($((SECONDS - started)) s)" >&2
