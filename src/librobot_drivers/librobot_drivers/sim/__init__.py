"""Simulated twins (MuJoCo) of our robots and their scripted experts. ROS-free.

SO-100: SO100Sim (pick and place) and ScriptedExpert; humanoid: HumanoidSim (bimanual handover)
and HumanoidExpert. `experts.make_expert` picks a robot's expert by embodiment.

MuJoCo picks its OpenGL backend when it is first imported, so the headless default (software
EGL, no display needed) is set here, before anything imports `mujoco`. Set `MUJOCO_GL` (and
`EGL_PLATFORM`) yourself to use another backend.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("EGL_PLATFORM", "surfaceless")

from librobot_drivers.sim.so100_sim import SO100Sim  # noqa: E402
from librobot_drivers.sim.expert import ScriptedExpert  # noqa: E402
from librobot_drivers.sim.experts import rollout  # noqa: E402
from librobot_drivers.sim.humanoid_sim import HumanoidSim  # noqa: E402
from librobot_drivers.sim.humanoid_expert import HumanoidExpert  # noqa: E402

__all__ = ["SO100Sim", "ScriptedExpert", "rollout", "HumanoidSim", "HumanoidExpert"]
