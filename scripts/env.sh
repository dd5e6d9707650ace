# Source this file to use the LibroBot workspace: `source scripts/env.sh`.
# It activates .venv, makes the ros-jazzy-* wheels (or the sourced system ROS) visible to colcon
# and CMake, sources install/setup.bash when the workspace is built, and keeps DDS on loopback
# unless you say otherwise (export ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET on a robot network).
# Pass --no-workspace to skip install/setup.bash (used by setup.sh before the first build).

_librobot_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -x "$_librobot_root/.venv/bin/python" ]; then
  echo "librobot: no .venv yet; run 'make setup' first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
source "$_librobot_root/.venv/bin/activate"

if [ -z "${ROS_DISTRO:-}" ]; then
  # ROS from wheels: the ament index and CMake packages live under the venv prefix.
  _librobot_prefix="$_librobot_root/.venv"
  case ":${AMENT_PREFIX_PATH:-}:" in *":$_librobot_prefix:"*) ;; *)
    export AMENT_PREFIX_PATH="$_librobot_prefix${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}";; esac
  case ":${CMAKE_PREFIX_PATH:-}:" in *":$_librobot_prefix:"*) ;; *)
    export CMAKE_PREFIX_PATH="$_librobot_prefix${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}";; esac
  export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
  unset _librobot_prefix
fi

export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export PYTHONUNBUFFERED=1

if [ "${1:-}" != "--no-workspace" ] && [ -f "$_librobot_root/install/setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$_librobot_root/install/setup.bash"
fi
unset _librobot_root
