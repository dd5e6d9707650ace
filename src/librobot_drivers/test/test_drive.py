"""The deadman in front of the wheels (DriveGuard): timeout, trajectories, limits, e-stop."""

import numpy as np
import pytest

from librobot_drivers.articulated import ground_speed, wheel_speeds
from librobot_drivers.drive import DRIVING, ESTOPPED, IDLE, TIMED_OUT, DriveGuard
from librobot_drivers.embodiment import load_embodiment

SPEC = load_embodiment("wheel_loader")
DRIVE = SPEC.drive
TIMEOUT = DRIVE.command_timeout_s
LIMITS = np.full(4, 14.2)


def guard(acceleration=100.0, limits=LIMITS, ticking_since=-1.0):
    """A guard whose ticks began at `ticking_since` (the first tick cannot accelerate: no dt)."""
    g = DriveGuard(DRIVE, limits, acceleration)
    g.command(ticking_since, 0.0, 0.0)
    return g


def straight(speed):
    return wheel_speeds(DRIVE.geometry, speed, 0.0, 0.0)


def test_nothing_moves_before_a_command():
    command = DriveGuard(DRIVE, LIMITS, 1.0).command(0.0, 0.0, 0.0)
    assert command.state == IDLE and not command.wheels.any() and not command.tripped


def test_the_deadman_stops_the_wheels_once_commands_stop():
    g = guard()
    g.set_twist(10.0, 2.0)
    for t in np.arange(10.0, 10.0 + TIMEOUT, 0.02):
        command = g.command(t, 0.0, 0.0)
        assert command.state == DRIVING and np.allclose(ground_speed(DRIVE.geometry, command.wheels), 2.0)
    late = g.command(10.0 + TIMEOUT + 0.02, 0.0, 0.0)
    assert late.state == TIMED_OUT and not late.wheels.any() and late.tripped
    again = g.command(10.0 + TIMEOUT + 0.04, 0.0, 0.0)
    assert again.state == TIMED_OUT and not again.wheels.any() and not again.tripped  # reported once
    g.set_twist(11.0, 1.0)  # a fresh command drives again
    assert g.command(11.0, 0.0, 0.0).state == DRIVING


def test_a_trajectory_is_followed_in_time_and_ends_at_rest():
    g = guard()
    # start 0 = now; 1 m/s after 0.1 s, 2 m/s after 0.2 s
    g.set_trajectory(5.0, 0.0, np.array([0.1, 0.2]), np.stack([straight(1.0), straight(2.0)]))
    speed = lambda t: float(ground_speed(DRIVE.geometry, g.command(t, 0.0, 0.0).wheels))
    assert speed(5.05) == pytest.approx(0.5)  # from standing towards the first point
    assert speed(5.1) == pytest.approx(1.0)
    assert speed(5.15) == pytest.approx(1.5)
    command = g.command(5.21, 0.0, 0.0)  # the trajectory is over: stop (before the deadman trips)
    assert command.state == DRIVING and not command.wheels.any()
    # a stamped start in the future: standing until then
    g.set_trajectory(6.0, 6.1, np.array([0.1]), straight(1.0)[None])
    assert speed(6.05) == 0.0 and speed(6.15) == pytest.approx(0.5)


def test_a_trajectory_drives_its_ground_speed_on_the_measured_articulation():
    """Wheel speeds planned for a turn the steering has not reached yet: the machine drives the
    planned ground speed with wheel speeds for the angle and rate it is measured at."""
    g = guard()
    planned = wheel_speeds(DRIVE.geometry, 1.5, 0.4, 0.2)  # the plan expects 0.4 rad, turning
    g.set_trajectory(0.0, 0.0, np.array([0.1, 1.0]), np.stack([planned, planned]))
    command = g.command(0.2, 0.1, 0.05)  # the frames are still at 0.1 rad
    assert np.allclose(command.wheels, wheel_speeds(DRIVE.geometry, 1.5, 0.1, 0.05))
    assert not np.allclose(command.wheels, planned)


def test_malformed_trajectories_are_refused_and_change_nothing():
    g = guard()
    g.set_twist(0.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        g.set_trajectory(0.1, 0.0, np.array([0.1]), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="not strictly increasing"):
        g.set_trajectory(0.1, 0.0, np.array([0.2, 0.1]), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        g.set_trajectory(0.1, 0.0, np.array([0.1]), np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="finite speed"):
        g.set_twist(0.1, float("inf"))
    assert ground_speed(DRIVE.geometry, g.command(0.1, 0.0, 0.0).wheels) == pytest.approx(1.0)


def test_speed_wheel_and_acceleration_limits_hold_on_every_command():
    g = guard()
    g.set_twist(0.0, 10.0)  # over the 3 m/s the drive allows
    command = g.command(0.0, 0.0, 0.0)
    assert ground_speed(DRIVE.geometry, command.wheels) == pytest.approx(DRIVE.speed.upper)
    assert "ground speed" in command.reason
    g.set_twist(0.1, -10.0)
    assert ground_speed(DRIVE.geometry, g.command(0.1, 0.0, 0.0).wheels) == pytest.approx(DRIVE.speed.lower)
    # a wheel over its own limit scales the set (the turn keeps its shape)
    tight = guard(limits=np.full(4, 3.0))
    tight.set_twist(0.0, 2.9)
    wheels = tight.command(0.0, 0.6, 0.0).wheels
    wanted = wheel_speeds(DRIVE.geometry, 2.9, 0.6, 0.0)
    assert np.max(np.abs(wheels)) == pytest.approx(3.0) and np.allclose(wheels / wanted, wheels[0] / wanted[0])
    # acceleration: 2 rad/s^2 at 50 Hz is 0.04 rad/s a tick; slowing down is not limited
    slow = guard(acceleration=2.0, ticking_since=0.0)
    slow.set_twist(0.0, 2.0)
    assert np.allclose(slow.command(0.02, 0.0, 0.0).wheels, 0.04)
    assert np.allclose(slow.command(0.04, 0.0, 0.0).wheels, 0.08)
    slow.set_twist(0.05, 0.0)
    assert not slow.command(0.06, 0.0, 0.0).wheels.any()


def test_a_twist_follows_the_measured_articulation():
    g = guard()
    g.set_twist(0.0, 2.0)
    wheels = g.command(0.0, 0.3, 0.1).wheels
    assert np.allclose(wheels, wheel_speeds(DRIVE.geometry, 2.0, 0.3, 0.1))


def test_the_estop_latches_until_released():
    g = guard()
    g.set_twist(0.0, 2.0)
    assert g.command(0.0, 0.0, 0.0).state == DRIVING
    g.estop("test")
    first = g.command(0.02, 0.0, 0.0)
    assert first.state == ESTOPPED and first.tripped and not first.wheels.any()
    assert not g.command(0.04, 0.0, 0.0).tripped
    with pytest.raises(ValueError, match="e-stop latched"):
        g.set_twist(0.05, 1.0)
    with pytest.raises(ValueError, match="e-stop latched"):
        g.set_trajectory(0.05, 0.0, np.array([0.1]), np.zeros((1, 4)))
    assert g.command(0.06, 0.0, 0.0).state == ESTOPPED
    g.release()
    assert g.command(0.08, 0.0, 0.0).state == IDLE  # released: still nothing until a new command
    g.set_twist(0.1, 1.0)
    assert g.command(0.1, 0.0, 0.0).state == DRIVING


def test_a_clock_that_jumps_back_stops_the_wheels_until_the_next_command():
    g = guard()
    g.set_trajectory(100.0, 0.0, np.array([1.0, 2.0]), np.stack([straight(1.0), straight(1.0)]))
    assert g.command(100.1, 0.0, 0.0).state == DRIVING
    assert g.command(100.1 + TIMEOUT + 0.1, 0.0, 0.0).state == TIMED_OUT
    # A simulator restarted under use_sim_time: its clock is back before the last command.
    back = g.command(100.05, 0.0, 0.0)
    assert back.state == IDLE and not back.wheels.any() and back.tripped
    assert "clock jumped back" in back.reason
    assert g.command(100.07, 0.0, 0.0).state == IDLE  # and nothing of the old trajectory drives
    # Going back while driving stops too.
    g.set_twist(101.0, 1.0)
    assert g.command(101.02, 0.0, 0.0).state == DRIVING
    assert g.command(50.0, 0.0, 0.0).state == IDLE
    g.set_twist(50.1, 1.0)
    assert g.command(50.12, 0.0, 0.0).state == DRIVING
