#!/usr/bin/env bash
# Create (or update) a local virtual environment with metric3d_ros and its dependencies.
#   scripts/setup_env.sh [VENV_DIR] [EXTRAS]
# VENV_DIR defaults to .venv, EXTRAS to "ros,onnx,dev".
# torch is pinned to the CPU build first: an unpinned torch pulls several GB of CUDA wheels.
# Set METRIC3D_TORCH_SPEC to choose another torch (for example "torch" on a GPU machine).
# With the ros extra, the ROS 2 tools that PyPI lacks (launch, launch_ros, launch_testing, the ros2 command
# line) come from $METRIC3D_SHARED/ros-tools (default ../shared beside the checkout), Kilted build.
# A stamp file skips everything when setup.py, this script, the extras, torch and the ros-tools are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
EXTRAS="${2:-ros,onnx,dev}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${METRIC3D_TORCH_SPEC:-torch==2.13.0}"
ROS_TOOLS="${METRIC3D_SHARED:-../shared}/ros-tools"
with_ros=0
case ",$EXTRAS," in *,ros,*) with_ros=1 ;; esac
if [ "$with_ros" = 1 ] && [ ! -x "$ROS_TOOLS/install.sh" ]; then
  echo "[setup] $ROS_TOOLS/install.sh not found: set METRIC3D_SHARED to the shared folder" >&2
  exit 1
fi
tools_sum="$([ "$with_ros" = 1 ] && sha256sum "$ROS_TOOLS/kilted/SHA256SUMS" | cut -c1-16 || echo none)"
STAMP="$VENV/.metric3d_setup_stamp"
want="$(cat setup.py scripts/setup_env.sh | sha256sum | cut -c1-16) $EXTRAS $TORCH_SPEC ros-tools:$tools_sum"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0  # up to date
fi
started=$SECONDS
echo "[setup] setting up $VENV (first run: a few minutes, pip is quiet meanwhile)" >&2
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
echo "[setup] installing $TORCH_SPEC" >&2
"${PIP[@]}" "$TORCH_SPEC"
echo "[setup] installing metric3d_ros[$EXTRAS] (editable)" >&2
"${PIP[@]}" -e ".[$EXTRAS]"
if [ "$with_ros" = 1 ]; then
  echo "[setup] installing launch, launch_ros, launch_testing and ros2 (Kilted) from $ROS_TOOLS" >&2
  "$ROS_TOOLS/install.sh" "$VENV" kilted
fi
echo "$want" > "$STAMP"
echo "[setup] $VENV ready ($((SECONDS - started)) s)" >&2
