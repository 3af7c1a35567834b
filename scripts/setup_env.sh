#!/usr/bin/env bash
# Create (or update) a local virtual environment with metric3d_ros and its dependencies.
#   scripts/setup_env.sh [VENV_DIR] [EXTRAS]
# VENV_DIR defaults to .venv, EXTRAS to "ros,onnx,dev".
# torch is pinned to the CPU build first: an unpinned torch pulls several GB of CUDA wheels.
# Set METRIC3D_TORCH_SPEC to choose another torch (for example "torch" on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
EXTRAS="${2:-ros,onnx,dev}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${METRIC3D_TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.metric3d_setup_stamp"
want="$(cat setup.py scripts/setup_env.sh | sha256sum | cut -c1-16) $EXTRAS $TORCH_SPEC"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0  # up to date
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
echo "[setup] installing $TORCH_SPEC" >&2
"${PIP[@]}" "$TORCH_SPEC"
echo "[setup] installing metric3d_ros[$EXTRAS] (editable)" >&2
"${PIP[@]}" -e ".[$EXTRAS]"
echo "$want" > "$STAMP"
