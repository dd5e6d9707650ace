"""The safety layer between a plan of joint targets and the robot. ROS-free, one for every robot.

    safety = SafetyFilter(SafetyLimits(lower, upper, max_velocity, max_step=0.5))
    safety.activate()                               # the next plan ramps in from the robot
    targets = safety.filter(times, plan, measured, now_s)   # or raises UnsafeCommand

What it does, in order, to a plan (times (N,) from now on, targets (N, D)):
1. refuses (UnsafeCommand, nothing is commanded) a non-finite plan or measurement, a plan for
   another number of joints, and any plan while the e-stop is latched;
2. refuses a plan whose first target is further than `max_step` (one for all joints, or one per
   joint) from the measured position (a prediction that does not start where the robot is);
3. clamps every target into the joint limits;
4. blends from the measured position at activation to the plan over `ramp_in_s` after
   `activate()` (and after an e-stop is released);
5. limits each joint's speed along the plan to `max_velocity` (and, when given, the change of
   speed to `max_acceleration`), walking from the measured position: a target out of reach is
   approached at the limit instead of jumped to.
What it changed is in `last_report` (a line for the status and the logs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


DEFAULT_MAX_STEP = 0.5  # rad: how far a plan's first target may be from the measured position


class UnsafeCommand(ValueError):
    """A plan the safety layer refuses; the message says which value and why."""


@dataclass(frozen=True)
class SafetyLimits:
    """Per-joint limits (D,): positions rad, velocity rad/s, acceleration rad/s^2 (optional);
    max_step rad, for all joints or (D,) per joint: the largest distance of a plan's first target
    from the measured position."""

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray | None = None
    max_step: float | np.ndarray = DEFAULT_MAX_STEP

    def __post_init__(self):
        for name in ("lower", "upper", "max_velocity", "max_acceleration"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, np.asarray(value, dtype=np.float64))
        if self.lower.shape != self.upper.shape or np.any(self.lower >= self.upper):
            raise ValueError(f"joint limits lower {self.lower.tolist()} / upper "
                             f"{self.upper.tolist()}: expected lower < upper per joint")
        if self.max_velocity.shape != self.lower.shape or np.any(self.max_velocity <= 0):
            raise ValueError(f"max_velocity {self.max_velocity.tolist()}: expected one > 0 per joint")
        if self.max_acceleration is not None and (
                self.max_acceleration.shape != self.lower.shape or np.any(self.max_acceleration <= 0)):
            raise ValueError(f"max_acceleration {self.max_acceleration.tolist()}: expected one > 0 "
                             "per joint")
        step = np.asarray(self.max_step, dtype=np.float64)
        if step.shape not in ((), self.lower.shape) or not np.all(step > 0):
            raise ValueError(f"max_step = {step.tolist()}: expected rad > 0, one for all joints or "
                             f"one per joint ({len(self.lower)})")
        object.__setattr__(self, "max_step", np.broadcast_to(step, self.lower.shape).copy())

    @classmethod
    def for_robot(cls, spec, max_step: float = DEFAULT_MAX_STEP) -> SafetyLimits:
        """The limits of a robot's joints from its embodiment spec (librobot_drivers' Embodiment,
        or its commanded() view: lower/upper/velocity/acceleration limits, first_target_steps):
        `max_step` for every position, a drive's speed channel its whole range."""
        return cls(spec.lower_limits, spec.upper_limits, spec.velocity_limits, spec.acceleration_limits,
                   max_step=spec.first_target_steps(max_step))


class SafetyFilter:
    def __init__(self, limits: SafetyLimits, ramp_in_s: float = 1.0):
        if ramp_in_s < 0:
            raise ValueError(f"ramp_in_s = {ramp_in_s}: expected seconds >= 0")
        self.limits = limits
        self.ramp_in_s = ramp_in_s
        self._ramp: tuple[float, np.ndarray] | None = None  # (activation time, measured then)
        self._ramp_pending = False
        self.estop_reason: str | None = None
        self.last_report = ""

    # -- state -----------------------------------------------------------------------------------
    def activate(self) -> None:
        """Start commanding: the plans blend in over ramp_in_s from the measured position and
        time given with the next one."""
        self._ramp_pending = True

    def estop(self, reason: str) -> None:
        """Latch the e-stop: every plan is refused until release()."""
        if self.estop_reason is None:
            self.estop_reason = reason or "e-stop"

    def release(self) -> None:
        """Unlatch the e-stop; the next plan ramps in again from where the robot is then."""
        self.estop_reason = None
        self.activate()

    @property
    def estopped(self) -> bool:
        return self.estop_reason is not None

    # -- filtering -------------------------------------------------------------------------------
    def filter(self, times: np.ndarray, targets: np.ndarray, measured: np.ndarray,
               now_s: float, velocity: np.ndarray | None = None) -> np.ndarray:
        """Safe targets (N, D) for `times` (N,) after `now_s`; `measured` (D,) the joint positions
        now, `velocity` (D,) the commanded speed now (for the acceleration limit; 0 if None)."""
        limits = self.limits
        if self.estopped:
            raise UnsafeCommand(f"e-stop latched ({self.estop_reason}); release it to command")
        times = np.asarray(times, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.float64)
        measured = self._checked_measurement(measured)
        if targets.ndim != 2 or targets.shape[1] != len(limits.lower) or len(targets) != len(times):
            raise UnsafeCommand(f"plan of shape {targets.shape} for {len(times)} times: expected "
                                f"({len(times)}, {len(limits.lower)})")
        if not np.all(np.isfinite(targets)):
            bad = np.argwhere(~np.isfinite(targets))[0]
            raise UnsafeCommand(f"non-finite target {targets[tuple(bad)]} for joint {bad[1]} at point {bad[0]}")
        if len(targets) == 0:
            return targets
        step = np.abs(targets[0] - measured)
        if np.any(step > limits.max_step):
            joint = int(np.argmax(step))
            raise UnsafeCommand(f"first target {targets[0, joint]:.3f} rad of joint {joint} is "
                                f"{step[joint]:.3f} rad from the measured {measured[joint]:.3f} rad "
                                f"(max_step {limits.max_step[joint]} rad)")
        notes = []
        if self._ramp_pending:
            self._ramp, self._ramp_pending = (now_s, measured), False
        safe = np.clip(targets, limits.lower, limits.upper)
        if np.any(safe != targets):
            notes.append("clamped into the joint limits")
        if self._ramp is not None:
            since, start = self._ramp
            w = np.clip((times - since) / self.ramp_in_s, 0.0, 1.0)[:, None] if self.ramp_in_s > 0 \
                else np.ones((len(times), 1))
            if np.all(w >= 1.0):
                self._ramp = None
            else:
                safe = start * (1.0 - w) + safe * w
                notes.append("ramping in")
        limited = self._rate_limit(times, safe, measured, now_s, velocity)
        if np.any(np.abs(limited - safe) > 1e-9):
            notes.append("slowed to the velocity/acceleration limits")
        self.last_report = "; ".join(notes)
        return limited

    def _rate_limit(self, times, targets, measured, now_s, velocity) -> np.ndarray:
        limits = self.limits
        out = np.empty_like(targets)
        position, t = measured, now_s
        speed = np.zeros_like(measured) if velocity is None else np.asarray(velocity, dtype=np.float64)
        for k, (time_k, target) in enumerate(zip(times, targets)):
            dt = max(time_k - t, 1e-9)
            wanted = (target - position) / dt
            if limits.max_acceleration is not None:
                reach = limits.max_acceleration * dt
                wanted = np.clip(wanted, speed - reach, speed + reach)
            speed = np.clip(wanted, -limits.max_velocity, limits.max_velocity)
            position = position + speed * dt
            out[k], t = position, time_k
        return out

    def _checked_measurement(self, measured: np.ndarray) -> np.ndarray:
        measured = np.asarray(measured, dtype=np.float64)
        if measured.shape != self.limits.lower.shape:
            raise UnsafeCommand(f"measured joint positions of shape {measured.shape}: expected "
                                f"{self.limits.lower.shape}")
        if not np.all(np.isfinite(measured)):
            raise UnsafeCommand(f"non-finite measured joint positions {measured.tolist()}")
        return measured
