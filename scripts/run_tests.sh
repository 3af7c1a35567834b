#!/usr/bin/env bash
# The test command. Sets up two local virtual environments and runs the suite:
#   .venv        ROS 2 Kilted wheels from PyPI + torch CPU + onnx/onnxruntime: the whole suite;
#   .venv-jazzy  ROS 2 Jazzy wheels from PyPI: the ROS tests (marker "ros") again under Jazzy's rclpy.
# Extra arguments go to pytest (for example: scripts/run_tests.sh -m "not slow"). A marker expression
# given with -m narrows the Jazzy pass's selection instead of replacing it: -m "not slow" runs the Jazzy
# pass with -m "ros and (not slow)".
# Both passes always run (the Jazzy pass also after a failed Kilted pass); a summary line reports each, and
# the exit code is non-zero when either failed. A Jazzy pass that selects no test (pytest exit code 5, e.g.
# -k naming only non-ROS tests) is reported as such and is not a failure.
# Set METRIC3D_SKIP_JAZZY=1 to run only the Kilted pass (for quick local iterations).
set -euo pipefail
cd "$(dirname "$0")/.."
export METRIC3D_SHARED="${METRIC3D_SHARED:-$(cd .. && pwd)/shared}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$(mktemp -d)}"
export PYTHONDONTWRITEBYTECODE=1
skip_jazzy=0
[ "${METRIC3D_SKIP_JAZZY:-0}" = "1" ] && skip_jazzy=1

# The Jazzy pass's arguments: the user's, with every -m EXPR (or -mEXPR) turned into -m "ros and (EXPR)";
# without one, -m ros first. (pytest applies the last -m given.)
jazzy_args=()
marker_given=0
expect_marker=0
for arg in "$@"; do
  if [ "$expect_marker" = 1 ]; then
    jazzy_args+=("ros and ($arg)")
    expect_marker=0
  elif [ "$arg" = "-m" ]; then
    jazzy_args+=("-m")
    marker_given=1
    expect_marker=1
  elif [ "${arg:0:2}" = "-m" ]; then
    jazzy_args+=("-m" "ros and (${arg:2})")
    marker_given=1
  else
    jazzy_args+=("$arg")
  fi
done
if [ "$marker_given" = 0 ]; then
  jazzy_args=("-m" "ros" ${jazzy_args[@]+"${jazzy_args[@]}"})
fi

scripts/setup_env.sh .venv ros,onnx,dev
if [ "$skip_jazzy" = 0 ]; then
  scripts/setup_jazzy.sh .venv-jazzy
fi

echo "=== pytest: ROS 2 Kilted wheels (.venv), whole suite ==="
kilted_rc=0
.venv/bin/python -m pytest -ra "$@" || kilted_rc=$?

jazzy_rc=0
if [ "$skip_jazzy" = 0 ]; then
  echo "=== pytest: ROS 2 Jazzy wheels (.venv-jazzy), ROS tests: pytest ${jazzy_args[*]} ==="
  .venv-jazzy/bin/python -m pytest -ra "${jazzy_args[@]}" || jazzy_rc=$?
fi

echo "=== summary ==="
if [ "$kilted_rc" = 0 ]; then
  echo "Kilted pass: passed"
else
  echo "Kilted pass: FAILED (pytest exit code $kilted_rc)"
fi
if [ "$skip_jazzy" = 1 ]; then
  echo "Jazzy pass: skipped (METRIC3D_SKIP_JAZZY=1)"
elif [ "$jazzy_rc" = 0 ]; then
  echo "Jazzy pass: passed"
elif [ "$jazzy_rc" = 5 ]; then
  echo "Jazzy pass: no ROS test selected"
  jazzy_rc=0
else
  echo "Jazzy pass: FAILED (pytest exit code $jazzy_rc)"
fi
[ "$kilted_rc" = 0 ] && [ "$jazzy_rc" = 0 ]
