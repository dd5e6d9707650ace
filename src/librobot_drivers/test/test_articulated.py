"""Articulated-vehicle kinematics against a geometric integration of the two frames."""

import numpy as np
import pytest

from librobot_drivers.articulated import (
    ArticulatedGeometry,
    articulation_for_yaw_rate,
    body_yaw_rates,
    front_axle_speed,
    ground_speed,
    wheel_speeds,
)

LOADER = ArticulatedGeometry(front_axle=1.675, rear_axle=1.675, track=2.2, wheel_radius=0.78)
UNEVEN = ArticulatedGeometry(front_axle=1.2, rear_axle=1.9, track=1.8, wheel_radius=0.6)


def heading(theta):
    return np.array([np.cos(theta), np.sin(theta)])


def normal(theta):
    return np.array([-np.sin(theta), np.cos(theta)])


@pytest.mark.parametrize("geometry", [LOADER, UNEVEN])
@pytest.mark.parametrize("speed", [2.0, -1.5, 0.0])
def test_the_front_axle_rolls_without_slipping(geometry, speed):
    """Move the rear axle at `speed` along its heading and turn the rear frame at the formula's
    yaw rate while the articulation sweeps: the front axle centre (placed by the geometry
    alone) then moves along the front frame's heading, at the formula's speed."""
    dt, steps = 1e-4, 20000
    gamma_of = lambda t: 0.6 * np.sin(0.7 * t) + 0.1  # rad: sweeps both ways
    gamma_rate_of = lambda t: 0.42 * np.cos(0.7 * t)
    rear, theta = np.zeros(2), 0.3

    def front_axle(rear, theta, t):
        hinge = rear + geometry.rear_axle * heading(theta)
        return hinge + geometry.front_axle * heading(theta + gamma_of(t))

    worst_lateral = worst_speed = 0.0
    for k in range(steps):
        t = k * dt
        omega, _ = body_yaw_rates(geometry, speed, gamma_of(t), gamma_rate_of(t))
        before = front_axle(rear, theta, t)
        # midpoint step of the rear frame's pose
        half_theta = theta + 0.5 * dt * omega
        rear = rear + dt * speed * heading(half_theta)
        theta = theta + dt * float(omega)
        after = front_axle(rear, theta, t + dt)
        velocity = (after - before) / dt
        front_heading = theta + gamma_of(t + dt / 2)
        worst_lateral = max(worst_lateral, abs(velocity @ normal(front_heading)))
        expected = front_axle_speed(geometry, speed, gamma_of(t + dt / 2), gamma_rate_of(t + dt / 2))
        worst_speed = max(worst_speed, abs(velocity @ heading(front_heading) - expected))
    assert worst_lateral < 1e-3
    assert worst_speed < 1e-3


def test_straight_and_steady_turns():
    assert np.allclose(wheel_speeds(LOADER, 2.0, 0.0, 0.0), 2.0 / 0.78)
    # steady turn, hinge midway: both axles at the same speed, inner (left) wheels slower
    rear, front = body_yaw_rates(LOADER, 2.0, 0.4, 0.0)
    assert rear == pytest.approx(front) and rear > 0
    assert front_axle_speed(LOADER, 2.0, 0.4, 0.0) == pytest.approx(2.0)
    fl, fr, rl, rr = wheel_speeds(LOADER, 2.0, 0.4, 0.0)
    assert fl == pytest.approx(rl) and fr == pytest.approx(rr) and fl < 2.0 / 0.78 < fr
    # articulating while standing: the frames swing in opposite directions about the hinge
    rear, front = body_yaw_rates(LOADER, 0.0, 0.0, 0.3)
    assert rear == pytest.approx(-0.15) and front == pytest.approx(0.15)


@pytest.mark.parametrize("geometry", [LOADER, UNEVEN])
def test_ground_speed_inverts_wheel_speeds(geometry):
    rng = np.random.default_rng(0)
    speed, gamma, rate = rng.uniform(-3, 3, 50), rng.uniform(-0.7, 0.7, 50), rng.uniform(-0.4, 0.4, 50)
    wheels = wheel_speeds(geometry, speed, gamma, rate)
    assert wheels.shape == (50, 4)
    assert np.allclose(ground_speed(geometry, wheels), speed)


@pytest.mark.parametrize("geometry", [LOADER, UNEVEN])
@pytest.mark.parametrize("gamma", [-0.6, -0.1, 0.0, 0.25, 0.69])
def test_the_articulation_for_a_twist_turns_at_its_yaw_rate(geometry, gamma):
    speed = 1.7
    yaw_rate, _ = body_yaw_rates(geometry, speed, gamma, 0.0)
    assert articulation_for_yaw_rate(geometry, speed, float(yaw_rate)) == pytest.approx(gamma)
    assert articulation_for_yaw_rate(geometry, -speed, float(-yaw_rate)) == pytest.approx(gamma)
    assert articulation_for_yaw_rate(geometry, 0.0, 0.5) is None


def test_a_geometry_with_a_bad_length_is_refused():
    with pytest.raises(ValueError, match="track = -2.0"):
        ArticulatedGeometry(1.0, 1.0, -2.0, 0.5)
