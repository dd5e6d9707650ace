"""The hardware interface every robot implements, real or simulated. ROS-free.

What a robot offers (joints, cameras) is known from its embodiment spec before `connect()`.
Every position command passes the same safety filter: clamped into the joint limits and, when
`max_step` is given, limited in how far it may move from the last command. Velocity-commanded
joints (an articulated vehicle's wheels) take `send_velocities`, clamped to their speed limits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from librobot_drivers.embodiment import Embodiment
from librobot_drivers.reports import Report


@dataclass(frozen=True)
class JointReading:
    """One read of all joints, in the embodiment's joint order and ROS units."""

    position: np.ndarray  # (dof,)
    velocity: np.ndarray  # (dof,)
    effort: np.ndarray  # (dof,)


class RobotNotConnectedError(RuntimeError):
    pass


class RobotIOError(RuntimeError):
    """Talking to the robot failed (after the driver's own retries): its state is unknown."""


class RobotFault(RuntimeError):
    """The robot reports a fault (e.g. a servo's overload protection): it refuses motion until
    `clear_faults()` succeeds."""


class CommandAnchor:
    """Position commands from outside (ros2_control's hardware interface) are followed only once
    one arrives within `radius` (rad, every joint) of the measured pose; until then they are
    refused. The topic-based hardware interface sends its configured initial values (the URDF's
    zero pose) as soon as it starts, before joint_trajectory_controller activates and holds the
    arm where it is: a real arm would jump to zero. `reset()` re-arms the check (after the
    hardware was lost)."""

    def __init__(self, radius: float):
        if radius <= 0:
            raise ValueError(f"command anchor radius {radius}: expected > 0 rad")
        self.radius = radius
        self.anchored = False

    def accept(self, command: np.ndarray, measured: np.ndarray) -> float | None:
        """None if `command` may be followed, else how far (rad) it is from the measured pose."""
        if self.anchored:
            return None
        gap = float(np.max(np.abs(np.asarray(command) - np.asarray(measured))))
        if gap > self.radius:
            return gap
        self.anchored = True
        return None

    def reset(self) -> None:
        self.anchored = False


class Robot(ABC):
    """A robot arm (or any joint-position-controlled machine) with cameras."""

    simulated: bool = False

    def __init__(self, spec: Embodiment):
        self.spec = spec
        self._last_command: np.ndarray | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def disconnect(self) -> None: ...

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # -- features, known before connect ------------------------------------------------------
    @property
    def joint_names(self) -> list[str]:
        return self.spec.joint_names

    @property
    def camera_names(self) -> list[str]:
        """Cameras this robot delivers (a subset of the spec's)."""
        return [c.name for c in self.spec.required_cameras]

    # -- I/O -------------------------------------------------------------------------------------
    @abstractmethod
    def read_joints(self) -> JointReading: ...

    @abstractmethod
    def read_camera(self, name: str) -> np.ndarray:
        """The latest frame of camera `name` as (H, W, 3) uint8 RGB."""

    def send_positions(self, positions: np.ndarray, max_step: float | None = None) -> np.ndarray:
        """Command joint positions after the safety filter; returns what was actually sent."""
        if not self.is_connected:
            raise RobotNotConnectedError(f"{self.spec.name}: send_positions before connect()")
        target = np.asarray(positions, dtype=np.float64)
        if target.shape != (self.spec.dof,):
            raise ValueError(
                f"{self.spec.name}: command of shape {target.shape}, expected ({self.spec.dof},)"
            )
        if not np.all(np.isfinite(target)):
            raise ValueError(f"{self.spec.name}: non-finite command {target.tolist()}")
        safe = self.spec.clip(target)
        if max_step is not None and self._last_command is not None:
            safe = self._last_command + np.clip(safe - self._last_command, -max_step, max_step)
        self._write_positions(safe)
        self._last_command = safe
        return safe

    @abstractmethod
    def _write_positions(self, positions: np.ndarray) -> None:
        """Write position targets; a robot with velocity-commanded joints ignores their entries."""

    def send_velocities(self, velocities: np.ndarray) -> np.ndarray:
        """Command the velocity-commanded joints (the embodiment's velocity groups, e.g. wheels),
        in spec order, clamped to their velocity limits; returns what was sent."""
        if not self.is_connected:
            raise RobotNotConnectedError(f"{self.spec.name}: send_velocities before connect()")
        index = self.spec.velocity_index
        target = np.asarray(velocities, dtype=np.float64)
        if target.shape != (len(index),):
            raise ValueError(f"{self.spec.name}: velocity command of shape {target.shape}, expected "
                             f"({len(index)},) for {[self.spec.joint_names[i] for i in index]}")
        if not np.all(np.isfinite(target)):
            raise ValueError(f"{self.spec.name}: non-finite velocity command {target.tolist()}")
        limit = self.spec.velocity_limits[index]
        safe = np.clip(target, -limit, limit)
        self._write_velocities(safe)
        return safe

    def _write_velocities(self, velocities: np.ndarray) -> None:
        raise NotImplementedError(f"{self.spec.name} has no velocity-commanded joints")

    # -- health ----------------------------------------------------------------------------------
    def health(self) -> list[Report]:
        """Diagnostics of the hardware (servo temperatures, bus errors, ...); none by default."""
        return []

    def clear_faults(self) -> str | None:
        """Try to clear latched faults; None when the robot may move again, else why not."""
        return None


class SimulatedRobot(Robot):
    """A robot whose time only moves when `step` is called."""

    simulated = True

    @abstractmethod
    def step(self, dt: float) -> None:
        """Advance the simulation by `dt` seconds with the last command applied."""

    @property
    @abstractmethod
    def time(self) -> float:
        """Simulated seconds since the last reset."""
