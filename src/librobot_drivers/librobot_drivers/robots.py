"""Robot classes by name, imported only when chosen (the simulator pulls in MuJoCo)."""

from __future__ import annotations

import importlib

from librobot_drivers.embodiment import Embodiment
from librobot_drivers.robot import Robot

# name -> (module, class, embodiment it drives)
ROBOTS = {
    "so100_sim": ("librobot_drivers.sim.so100_sim", "SO100Sim", "so100"),
}


def make_robot(name: str, spec: Embodiment, **options) -> Robot:
    """Build robot `name` for `spec`; `options` go to its constructor (e.g. render_cameras)."""
    try:
        module, cls, embodiment = ROBOTS[name]
    except KeyError:
        raise ValueError(f"unknown robot {name!r}; expected one of {sorted(ROBOTS)}") from None
    if spec.name != embodiment:
        raise ValueError(f"robot {name!r} drives the {embodiment!r} embodiment, not {spec.name!r}")
    return getattr(importlib.import_module(module), cls)(spec, **options)
