"""Scripted experts by embodiment, imported only when chosen. ROS-free.

An expert plans one episode from the object's position (privileged, read from the simulator)
and the joints at the start, and answers `positions_at(t)`: every joint of the embodiment, in
its order, `t` s after the start (the held groups stay where they started).
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from librobot_drivers.embodiment import Embodiment

EXPERTS = {
    "so100": ("librobot_drivers.sim.expert", "ScriptedExpert"),
    "humanoid": ("librobot_drivers.sim.humanoid_expert", "HumanoidExpert"),
}


class Expert(Protocol):
    @property
    def duration(self) -> float: ...

    def positions_at(self, t: float) -> np.ndarray: ...


def make_expert(spec: Embodiment, object_position: np.ndarray, start_positions: np.ndarray) -> Expert:
    """The scripted expert of `spec`'s robot, planned for one episode."""
    try:
        module, name = EXPERTS[spec.name]
    except KeyError:
        raise ValueError(f"no scripted expert for embodiment {spec.name!r}; "
                         f"experts exist for {sorted(EXPERTS)}") from None
    return getattr(importlib.import_module(module), name)(spec, object_position, start_positions)
