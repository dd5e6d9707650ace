"""Scripted experts by embodiment, imported only when chosen. ROS-free.

An expert plans one episode from the object's position (privileged, read from the simulator)
and the joints at the start, and answers `positions_at(t)`: the policy's view of the embodiment
(`spec.commanded()`: the commanded joints, a drive's ground speed), `t` s after the start; what
a demonstration records as its action.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from librobot_drivers.embodiment import Embodiment
from librobot_drivers.trajectory import GroupFollowers

EXPERTS = {
    "so100": ("librobot_drivers.sim.expert", "ScriptedExpert"),
    "humanoid": ("librobot_drivers.sim.humanoid_expert", "HumanoidExpert"),
    "wheel_loader": ("librobot_drivers.sim.wheel_loader_expert", "WheelLoaderExpert"),
}


class Expert(Protocol):
    @property
    def duration(self) -> float: ...

    def positions_at(self, t: float) -> np.ndarray: ...


# experts whose plan has free choices that demonstrations should vary (see make_expert's rng)
VARIED = {"wheel_loader"}


def make_expert(spec: Embodiment, object_position: np.ndarray, start_positions: np.ndarray,
                rng: np.random.Generator | None = None) -> Expert:
    """The scripted expert of `spec`'s robot, planned for one episode. `rng` draws the plan's free
    choices where it has some (VARIED: the wheel loader's Y-turn); None, or another robot: the
    nominal plan."""
    try:
        module, name = EXPERTS[spec.name]
    except KeyError:
        raise ValueError(f"no scripted expert for embodiment {spec.name!r}; "
                         f"experts exist for {sorted(EXPERTS)}") from None
    options = {"rng": rng} if rng is not None and spec.name in VARIED else {}
    return getattr(importlib.import_module(module), name)(spec, object_position, start_positions, **options)



def plan_inputs(spec: Embodiment, object_position, start_positions) -> tuple[np.ndarray, np.ndarray]:
    """An expert's inputs as float arrays: the object's position (3,) m and the joints (spec.dof,)
    when the plan starts; ValueError naming the bad shape."""
    object_position = np.asarray(object_position, dtype=np.float64)
    start_positions = np.asarray(start_positions, dtype=np.float64)
    if object_position.shape != (3,):
        raise ValueError(f"object_position must have shape (3,), got {object_position.shape}")
    if start_positions.shape != (spec.dof,):
        raise ValueError(f"start_positions must have shape ({spec.dof},), got {start_positions.shape}")
    return object_position, start_positions

class PlannedTrajectory:
    """An expert's plan sampled in advance: times (N,) s from the start and joint targets (N, dof),
    linear in between. Subclasses set `_times` and `_positions` in their constructor."""

    _times: np.ndarray
    _positions: np.ndarray

    @property
    def duration(self) -> float:
        """s from the start of the plan to its last point."""
        return float(self._times[-1])

    def positions_at(self, t: float) -> np.ndarray:
        """(dof,) joint targets `t` s after the start; held constant outside [0, duration]."""
        t = float(np.clip(t, 0.0, self.duration))
        i = int(np.clip(np.searchsorted(self._times, t, side="right") - 1, 0, len(self._times) - 2))
        share = (t - self._times[i]) / (self._times[i + 1] - self._times[i])
        return (1.0 - share) * self._positions[i] + share * self._positions[i + 1]


def smoothstep(s: float) -> float:
    """Minimum-jerk progress in [0, 1] for s in [0, 1]: no velocity or acceleration at the ends."""
    return s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)


def rollout(sim, expert: Expert, settle: float = 0.5) -> bool:
    """Run `expert` on the simulated robot `sim`, then report task success.

    The plan, sampled at the embodiment's control rate, is one trajectory per commanded joint
    group (linear between the samples, as joint_trajectory_controller with positions only; a
    drive's speed as the drive node ramps it); the held groups hold. After the plan the last
    targets are held for `settle` s so that the objects come to rest.
    """
    view = sim.view
    period = view.control_period
    ticks = int(np.ceil((expert.duration + settle) / period))
    times = period * np.arange(1, ticks + 1)
    plan = np.stack([expert.positions_at(t) for t in times])
    followers = GroupFollowers.for_embodiment(view, sim.policy_state())
    for group in view.groups:
        followers.set_trajectory(group.name, sim.time, sim.time, times, plan[:, view.group_index(group)])
    sim.follow(followers, ticks * period)
    return sim.task_success()
