# shellcheck shell=bash
# Source this file to use the LibroBot workspace: `source scripts/env.sh`.
# It activates the venv, makes the ros-jazzy-* wheels (or the sourced full ROS) visible to colcon
# and CMake, sources the workspace's setup.bash when it is built, and keeps DDS on loopback
# unless you say otherwise (export LIBROBOT_DISCOVERY_RANGE=SUBNET on a robot network).
# Pass --no-workspace to skip the workspace's setup.bash (used by setup.sh before the first build).
# LIBROBOT_VENV and LIBROBOT_INSTALL_BASE choose another venv and install directory.

_librobot_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_librobot_venv=${LIBROBOT_VENV:-$_librobot_root/.venv}
_librobot_install=${LIBROBOT_INSTALL_BASE:-install}
case "$_librobot_install" in /*) ;; *) _librobot_install="$_librobot_root/$_librobot_install";; esac
if [ ! -x "$_librobot_venv/bin/python" ]; then
  echo "librobot: no venv in $_librobot_venv yet; run 'make setup' first" >&2
  unset _librobot_root _librobot_venv _librobot_install
  # shellcheck disable=SC2317  # exit: when run instead of sourced
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
source "$_librobot_venv/bin/activate"

if [ -z "${ROS_DISTRO:-}" ]; then
  # ROS from wheels: the ament index and CMake packages live under the venv prefix.
  case ":${AMENT_PREFIX_PATH:-}:" in *":$_librobot_venv:"*) ;; *)
    export AMENT_PREFIX_PATH="$_librobot_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}";; esac
  case ":${CMAKE_PREFIX_PATH:-}:" in *":$_librobot_venv:"*) ;; *)
    export CMAKE_PREFIX_PATH="$_librobot_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}";; esac
  export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
fi

export PYTHONUNBUFFERED=1

if [ "${1:-}" != "--no-workspace" ] && [ -f "$_librobot_install/setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$_librobot_install/setup.bash"
fi
# Last, because a ROS setup.bash (sourced above or before) may set SUBNET: DDS discovery stays on
# this machine unless LIBROBOT_DISCOVERY_RANGE says otherwise (SUBNET on a robot network).
export ROS_AUTOMATIC_DISCOVERY_RANGE=${LIBROBOT_DISCOVERY_RANGE:-LOCALHOST}
unset _librobot_root _librobot_venv _librobot_install
