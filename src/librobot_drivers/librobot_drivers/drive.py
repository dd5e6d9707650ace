"""The deadman in front of an articulated vehicle's wheels: what the drive node sends the wheels'
velocity controller at every tick. ROS-free.

A forward velocity controller (forward_command_controller on the velocity interface) keeps its last
command for ever; a wheel loader must not. `DriveGuard` decides each tick's four wheel speeds:

- from the policy's wheel trajectory, or from a geometry_msgs/Twist. Either gives a ground speed:
  a Twist's linear.x, or the trajectory's (recovered from each point's wheel speeds;
  JointTrajectory semantics: a start of 0 means the time it arrived, a later start holds the
  speed until then; linear from that speed to the first point, then point to point; after the
  last point the wheels stop). The wheel speeds come from the articulated kinematics at the
  *measured* angle and rate: speeds planned for an angle the steering cylinders have not reached
  yet would make the wheels fight the frames;
- **deadman**: without a new command within the drive's `command_timeout_s` the wheels stop at
  once (the brakes, not a ramp), and stay stopped until the next command;
- **limits** on every command: the ground speed within the drive's range and each wheel within
  its joint's velocity limit (the whole set scaled, so the turn keeps its shape), and each
  wheel's change within `max_wheel_acceleration` per tick (stopping is never slowed down);
- **e-stop**: latched; the wheels stop and commands are refused until `release()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from librobot_drivers.articulated import wheel_speeds
from librobot_drivers.embodiment import ArticulatedDrive

DRIVING, IDLE, TIMED_OUT, ESTOPPED = "driving", "idle", "timed out", "e-stop"


@dataclass(frozen=True)
class WheelCommand:
    """One tick's decision: wheel speeds (4,) rad/s in the drive's wheel order, the state, why,
    and whether the machine stopped on this tick, by the deadman or an e-stop (the node then
    also holds the implements)."""

    wheels: np.ndarray
    state: str
    reason: str
    tripped: bool = False


class DriveGuard:
    """Args:
        drive: the vehicle's drive (geometry, speed channel, timeout).
        wheel_velocity_limits: (4,) rad/s, the wheel joints' velocity limits.
        max_wheel_acceleration: rad/s^2, how fast a wheel's command may change (not when stopping).
    """

    def __init__(self, drive: ArticulatedDrive, wheel_velocity_limits: np.ndarray,
                 max_wheel_acceleration: float):
        self.drive = drive
        self.limits = np.asarray(wheel_velocity_limits, dtype=np.float64)
        if self.limits.shape != (4,) or not np.all(self.limits > 0):
            raise ValueError(f"wheel velocity limits {self.limits.tolist()}: expected 4 values > 0 rad/s")
        if not max_wheel_acceleration > 0:
            raise ValueError(f"max_wheel_acceleration {max_wheel_acceleration}: expected > 0 rad/s^2")
        self.max_wheel_acceleration = float(max_wheel_acceleration)
        self._times: np.ndarray | None = None  # the trajectory's knots (absolute s) ...
        self._speeds: np.ndarray | None = None  # ... and ground speeds there (N,) m/s
        self._twist_speed: float | None = None  # or a Twist's ground speed
        self._received: float | None = None  # when the newest command arrived
        self._output = np.zeros(4)
        self._last_tick: float | None = None
        self._stopped_for_timeout = False
        self._estop_reported = False
        self.estop_reason: str | None = None

    # -- commands --------------------------------------------------------------------------------
    def set_trajectory(self, now: float, start: float, time_from_start: np.ndarray,
                       velocities: np.ndarray) -> None:
        """A wheel trajectory: `start` (s, 0: now), times (N,) s from it, wheel speeds (N, 4)
        (their ground speed is what the machine drives). ValueError (naming the problem) for a
        malformed one, which changes nothing."""
        times = np.asarray(time_from_start, dtype=np.float64)
        velocities = np.asarray(velocities, dtype=np.float64)
        if len(times) == 0:
            raise ValueError("wheel trajectory without points")
        if velocities.shape != (len(times), 4):
            raise ValueError(f"wheel trajectory velocities of shape {velocities.shape}; expected "
                             f"({len(times)}, 4): one speed per wheel per point")
        if not np.all(np.isfinite(velocities)) or not np.all(np.isfinite(times)):
            raise ValueError("wheel trajectory with non-finite values")
        if np.any(np.diff(times) <= 0):
            raise ValueError(f"wheel trajectory times {times.tolist()} are not strictly increasing")
        if self.estop_reason is not None:
            raise ValueError(f"e-stop latched ({self.estop_reason}): command refused")
        start = now if start == 0 else start
        before = [now, start] if start > now else [now]  # held until a later start, as JTC does
        self._times = np.concatenate([before, start + times])
        current = float(self.drive.ground_speed(self._output))
        self._speeds = np.concatenate([np.full(len(before), current), self.drive.ground_speed(velocities)])
        keep = np.concatenate([self._times[1:] > self._times[:-1], [True]])  # a start in the past
        self._times, self._speeds = self._times[keep], self._speeds[keep]
        self._twist_speed = None
        self._fresh(now)

    def set_twist(self, now: float, speed: float) -> None:
        """Drive at `speed` m/s (a Twist's linear.x); the wheels follow the articulation as it is."""
        if not np.isfinite(speed):
            raise ValueError(f"Twist linear.x {speed}: expected a finite speed in m/s")
        if self.estop_reason is not None:
            raise ValueError(f"e-stop latched ({self.estop_reason}): command refused")
        self._twist_speed = float(speed)
        self._times = self._speeds = None
        self._fresh(now)

    def _drop_commands(self) -> None:
        """Forget the trajectory or Twist being driven: nothing drives until the next command."""
        self._times = self._speeds = self._twist_speed = None
        self._received = None

    def _fresh(self, now: float) -> None:
        self._received = now
        self._stopped_for_timeout = False

    def estop(self, reason: str) -> None:
        """Latch: the wheels stop now and every command is refused until release()."""
        if self.estop_reason is None:
            self.estop_reason, self._estop_reported = reason, False
        self._drop_commands()

    def release(self) -> None:
        self.estop_reason = None

    # -- every tick -----------------------------------------------------------------------------
    def command(self, now: float, gamma: float, gamma_rate: float) -> WheelCommand:
        """The wheel speeds to send now; `gamma`, `gamma_rate`: the measured articulation, which
        the wheel speeds follow."""
        jumped_back = self._last_tick is not None and now < self._last_tick
        dt = 0.0 if self._last_tick is None or jumped_back else now - self._last_tick
        last, self._last_tick = self._last_tick, now
        if self.estop_reason is not None:
            tripped, self._estop_reported = not self._estop_reported, True
            return self._stop(ESTOPPED, f"e-stop latched: {self.estop_reason}", tripped)
        if jumped_back:
            # The clock went back (a simulator or a bag restarted under use_sim_time): what was
            # commanded belongs to another time line. Stop and hold until the next command.
            self._drop_commands()
            return self._stop(IDLE, f"the clock jumped back {last - now:.2f} s: stopped until the next command",
                              tripped=True)
        if self._received is None:
            return self._stop(IDLE, "no command yet")
        age = now - self._received
        if age > self.drive.command_timeout_s:
            tripped = not self._stopped_for_timeout
            self._stopped_for_timeout = True
            self._times = self._speeds = self._twist_speed = None
            return self._stop(TIMED_OUT, f"no command for {age:.2f} s (deadman "
                              f"{self.drive.command_timeout_s:.2f} s): wheels stopped", tripped)
        speed = self._twist_speed if self._twist_speed is not None else self._sample(now)
        wanted = wheel_speeds(self.drive.geometry, speed, gamma, gamma_rate)
        limited, why = self._limit(wanted, dt)
        self._output = limited
        return WheelCommand(limited.copy(), DRIVING, why)

    def _sample(self, now: float) -> float:
        """The trajectory's ground speed (m/s) at `now`."""
        times, speeds = self._times, self._speeds
        if now >= times[-1]:
            return 0.0  # the trajectory is over: stop
        k = int(np.searchsorted(times, now, side="right")) - 1
        s = (now - times[k]) / (times[k + 1] - times[k])
        return float(speeds[k] + s * (speeds[k + 1] - speeds[k]))

    def _limit(self, wanted: np.ndarray, dt: float) -> tuple[np.ndarray, str]:
        reasons = []
        speed = float(self.drive.ground_speed(wanted))
        low, high = self.drive.speed.lower, self.drive.speed.upper
        if not low <= speed <= high:
            wanted = wanted * (np.clip(speed, low, high) / speed)
            reasons.append(f"ground speed {speed:.2f} m/s limited to [{low:g}, {high:g}]")
        over = float(np.max(np.abs(wanted) / self.limits))
        if over > 1.0:
            wanted = wanted / over
            reasons.append(f"wheel speeds scaled by {1 / over:.2f} to their limits")
        step = self.max_wheel_acceleration * dt
        slowing = np.abs(wanted) <= np.abs(self._output)
        limited = np.where(slowing & (wanted * self._output >= 0), wanted,
                           np.clip(wanted, self._output - step, self._output + step))
        if not np.allclose(limited, wanted):
            reasons.append("acceleration limited")
        return limited, "; ".join(reasons) or "ok"

    def _stop(self, state: str, reason: str, tripped: bool = False) -> WheelCommand:
        self._output = np.zeros(4)
        return WheelCommand(np.zeros(4), state, reason, tripped)
