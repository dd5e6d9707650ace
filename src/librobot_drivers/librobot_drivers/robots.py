"""Robot classes by name, imported only when chosen (the simulator pulls in MuJoCo)."""

from __future__ import annotations

import importlib
from typing import NamedTuple

from librobot_drivers.embodiment import Embodiment
from librobot_drivers.robot import Robot


class RobotClass(NamedTuple):
    module: str
    cls: str
    embodiment: str  # the embodiment it drives
    options: tuple[str, ...]  # the constructor's keyword options (driver node parameters)


ROBOTS = {
    "so100_sim": RobotClass("librobot_drivers.sim.so100_sim", "SO100Sim", "so100", ("render_cameras",)),
    "humanoid_sim": RobotClass("librobot_drivers.sim.humanoid_sim", "HumanoidSim", "humanoid", ("render_cameras",)),
    "wheel_loader_sim": RobotClass("librobot_drivers.sim.wheel_loader_sim", "WheelLoaderSim", "wheel_loader",
                                   ("render_cameras",)),
    "so100_feetech": RobotClass("librobot_drivers.feetech.robot", "So100Feetech", "so100",
                                ("port", "calibration", "on_shutdown", "max_relative_target")),
}


def robot_class(name: str) -> RobotClass:
    try:
        return ROBOTS[name]
    except KeyError:
        raise ValueError(f"unknown robot {name!r}; expected one of {sorted(ROBOTS)}") from None


def make_robot(name: str, spec: Embodiment, **options) -> Robot:
    """Build robot `name` for `spec`; `options` go to its constructor (e.g. render_cameras)."""
    entry = robot_class(name)
    if spec.name != entry.embodiment:
        raise ValueError(f"robot {name!r} drives the {entry.embodiment!r} embodiment, not {spec.name!r}")
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise ValueError(f"robot {name!r} takes no options {unknown}; it takes {list(entry.options)}")
    return getattr(importlib.import_module(entry.module), entry.cls)(spec, **options)
