"""Kinematics of a centre-articulated vehicle (a wheel loader): pure functions, ROS-free.

Two rigid frames joined by a vertical hinge; each carries one axle with a wheel at each end and
no steering of its own. The articulation angle `gamma` is the front frame's yaw relative to the
rear frame (REP 103: x forward, y left, z up; gamma > 0 turns the front to the left).

Reference point: the centre of the rear axle (the rear frame's `base_link`). The ground speed `v`
is that point's speed along the rear frame's x axis, positive forward.

With the wheels rolling without slipping, each axle's centre moves along its own frame's x
axis. Writing the front axle's lateral velocity through the hinge gives, for the rear frame's yaw
rate,

    omega_rear  = (v sin(gamma) - L_f gamma_rate) / (L_r cos(gamma) + L_f)
    omega_front = omega_rear + gamma_rate
    v_front     = v cos(gamma) + omega_rear L_r sin(gamma)     (front axle centre, along the front frame)

with L_r the rear axle's distance behind the hinge and L_f the front axle's ahead of it. Each wheel
rolls at its axle centre's speed minus (left) or plus (right) the frame's yaw rate times half the
track. At a steady angle with L_f = L_r both axles run at the same speed.

    >>> g = ArticulatedGeometry(front_axle=1.6, rear_axle=1.6, track=2.2, wheel_radius=0.75)
    >>> wheel_speeds(g, speed=2.0, gamma=0.0, gamma_rate=0.0)   # rad/s: FL, FR, RL, RR
    array([2.66666667, 2.66666667, 2.66666667, 2.66666667])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WHEELS = ("front_left", "front_right", "rear_left", "rear_right")  # the order of every wheel array


@dataclass(frozen=True)
class ArticulatedGeometry:
    """Metres: the hinge-to-axle distances along each frame, the track (wheel centre to wheel
    centre across an axle) and the rolling radius of the wheels."""

    front_axle: float  # L_f, hinge to the front axle
    rear_axle: float  # L_r, rear axle to the hinge
    track: float
    wheel_radius: float

    def __post_init__(self) -> None:
        for name in ("front_axle", "rear_axle", "track", "wheel_radius"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"articulated geometry: {name} = {value}; expected a length > 0 m")

    @property
    def wheelbase(self) -> float:
        """Axle to axle (m) when straight."""
        return self.front_axle + self.rear_axle


def body_yaw_rates(geometry: ArticulatedGeometry, speed, gamma, gamma_rate) -> tuple[np.ndarray, np.ndarray]:
    """(rear frame's, front frame's) yaw rates, rad/s, for the rear axle centre's `speed` (m/s),
    the articulation angle (rad) and its rate (rad/s). Arrays broadcast."""
    speed, gamma, gamma_rate = (np.asarray(x, dtype=np.float64) for x in (speed, gamma, gamma_rate))
    rear = (speed * np.sin(gamma) - geometry.front_axle * gamma_rate) / (
        geometry.rear_axle * np.cos(gamma) + geometry.front_axle)
    return rear, rear + gamma_rate


def front_axle_speed(geometry: ArticulatedGeometry, speed, gamma, gamma_rate) -> np.ndarray:
    """m/s of the front axle's centre along the front frame."""
    rear, _ = body_yaw_rates(geometry, speed, gamma, gamma_rate)
    return np.asarray(speed) * np.cos(gamma) + rear * geometry.rear_axle * np.sin(gamma)


def wheel_speeds(geometry: ArticulatedGeometry, speed, gamma, gamma_rate) -> np.ndarray:
    """(..., 4) wheel angular velocities, rad/s, in WHEELS order (front left, front right, rear
    left, rear right), that roll the vehicle at `speed` while it articulates as given."""
    rear, front = body_yaw_rates(geometry, speed, gamma, gamma_rate)
    v_front = front_axle_speed(geometry, speed, gamma, gamma_rate)
    half = geometry.track / 2.0
    v_rear = np.asarray(speed, dtype=np.float64)
    linear = np.stack(np.broadcast_arrays(v_front - front * half, v_front + front * half,
                                          v_rear - rear * half, v_rear + rear * half), axis=-1)
    return linear / geometry.wheel_radius


def ground_speed(geometry: ArticulatedGeometry, wheel_velocities) -> np.ndarray:
    """The reference point's speed (m/s) from (..., 4) wheel angular velocities (WHEELS order):
    the mean of the rear wheels' rolling speeds (the inverse of `wheel_speeds` for any angle and
    rate)."""
    wheel_velocities = np.asarray(wheel_velocities, dtype=np.float64)
    return geometry.wheel_radius * (wheel_velocities[..., 2] + wheel_velocities[..., 3]) / 2.0


def articulation_for_yaw_rate(geometry: ArticulatedGeometry, speed: float, yaw_rate: float) -> float | None:
    """The articulation angle (rad) at which the rear frame turns at `yaw_rate` (rad/s) when
    driving steadily at `speed` (m/s): the turn a geometry_msgs/Twist asks for. None when the
    vehicle is (nearly) standing, where no angle turns it. A turn tighter than any angle gives
    comes out beyond +-90 degrees: the caller clamps it into the joint's range.

    Steady state (gamma_rate = 0): yaw_rate (L_r cos(gamma) + L_f) = speed sin(gamma).
    """
    if abs(speed) < 1e-3:
        return None
    k = yaw_rate / speed  # curvature of the rear axle's path, 1/m
    amplitude = np.hypot(1.0, k * geometry.rear_axle)
    phase = np.arctan(k * geometry.rear_axle)
    return float(phase + np.arcsin(np.clip(k * geometry.front_axle / amplitude, -1.0, 1.0)))
