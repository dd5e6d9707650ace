"""The safety layer: every case is a clear refusal or a bounded command."""

import numpy as np
import pytest

from librobot_models.safety import SafetyFilter, SafetyLimits, UnsafeCommand

LIMITS = SafetyLimits(lower=np.array([-1.0, -1.0]), upper=np.array([1.0, 1.0]),
                      max_velocity=np.array([1.0, 2.0]), max_step=0.3)
TIMES = 0.1 * np.arange(1, 6)  # five control periods from now = 0


def plan(*rows):
    return np.array(rows, dtype=float)


def test_a_reachable_plan_inside_the_limits_passes_unchanged():
    safety = SafetyFilter(LIMITS)
    targets = np.stack([0.05 * np.arange(1, 6), -0.1 * np.arange(1, 6)], axis=1)
    np.testing.assert_array_equal(safety.filter(TIMES, targets, np.zeros(2), 0.0), targets)
    assert safety.last_report == ""


@pytest.mark.parametrize("targets, measured, message", [
    (np.full((5, 2), np.nan), np.zeros(2), "non-finite target nan for joint 0 at point 0"),
    (np.zeros((5, 2)), np.array([np.inf, 0.0]), "non-finite measured"),
    (np.zeros((5, 3)), np.zeros(2), r"plan of shape \(5, 3\)"),
    (np.full((5, 2), 0.5), np.zeros(2), "joint 0 is 0.500 rad from the measured 0.000 rad"),
])
def test_bad_plans_are_refused_naming_the_value(targets, measured, message):
    with pytest.raises(UnsafeCommand, match=message):
        SafetyFilter(LIMITS).filter(TIMES, targets, measured, 0.0)


def test_targets_are_clamped_and_speed_is_limited_from_the_measured_position():
    safety = SafetyFilter(LIMITS)
    targets = np.tile([0.2, 0.2], (5, 1))
    targets[1:] = [5.0, -5.0]  # beyond the limits and far away
    safe = safety.filter(TIMES, targets, np.array([0.0, 0.0]), 0.0)
    assert np.all(np.abs(np.diff(np.vstack([[0, 0], safe]), axis=0)) <= [0.1 + 1e-9, 0.2 + 1e-9])
    np.testing.assert_allclose(safe[-1], [0.5, -0.6])  # approaching the limits at full speed
    assert "clamped" in safety.last_report and "slowed" in safety.last_report


def test_acceleration_limit_ramps_the_speed_up():
    limits = SafetyLimits(LIMITS.lower, LIMITS.upper, LIMITS.max_velocity,
                          max_acceleration=np.array([2.0, 2.0]), max_step=0.3)
    safe = SafetyFilter(limits).filter(TIMES, np.tile([0.2, 0.0], (5, 1)), np.zeros(2), 0.0)
    speeds = np.diff(np.concatenate([[0.0], safe[:, 0]])) / 0.1
    assert np.all(np.diff(speeds) <= 0.2 + 1e-9)  # at most 2 rad/s^2 * 0.1 s per period
    assert speeds[0] == pytest.approx(0.2)


def test_ramp_in_starts_at_the_measured_position_and_reaches_the_plan():
    safety = SafetyFilter(LIMITS, ramp_in_s=0.5)
    safety.activate()
    targets = np.tile([0.3, 0.0], (5, 1))
    safe = safety.filter(TIMES, targets, np.array([0.1, 0.0]), 0.0)
    np.testing.assert_allclose(safe[:, 0], [0.14, 0.18, 0.22, 0.26, 0.3])
    assert "ramping in" in safety.last_report
    np.testing.assert_allclose(safety.filter(TIMES + 1.0, targets, np.array([0.3, 0.0]), 1.0), targets)


def test_the_e_stop_latches_until_released_then_ramps_in_again():
    safety = SafetyFilter(LIMITS, ramp_in_s=0.5)
    safety.estop("operator")
    for _ in range(2):
        with pytest.raises(UnsafeCommand, match=r"e-stop latched \(operator\)"):
            safety.filter(TIMES, np.zeros((5, 2)), np.zeros(2), 0.0)
    safety.estop("second")  # the first reason stays
    assert safety.estop_reason == "operator"
    safety.release()
    assert not safety.estopped
    safe = safety.filter(TIMES, np.zeros((5, 2)), np.array([0.2, 0.0]), 0.0)
    assert safe[0, 0] == pytest.approx(0.16)  # blending from where the robot is


def test_limits_are_checked_when_made():
    with pytest.raises(ValueError, match="expected lower < upper"):
        SafetyLimits(np.array([1.0]), np.array([0.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="max_velocity"):
        SafetyLimits(np.array([0.0]), np.array([1.0]), np.array([0.0]))
    with pytest.raises(ValueError, match="max_step = 0"):
        SafetyLimits(np.array([0.0]), np.array([1.0]), np.array([1.0]), max_step=0)


def test_max_step_per_joint_checks_each_joint_against_its_own():
    limits = SafetyLimits(LIMITS.lower, LIMITS.upper, LIMITS.max_velocity, max_step=np.array([0.3, 2.0]))
    safety = SafetyFilter(limits, ramp_in_s=0.0)
    far_second = np.tile([0.0, 0.9], (5, 1))  # 0.9 from the measured 0: allowed for joint 1 only
    out = safety.filter(TIMES, far_second, np.zeros(2), 0.0)
    np.testing.assert_allclose(out[:, 1], np.minimum(0.9, 2.0 * TIMES))  # approached at its speed limit
    with pytest.raises(UnsafeCommand, match=r"joint 0 is 0.400 rad .* \(max_step 0.3 rad\)"):
        safety.filter(TIMES, np.tile([0.4, 0.0], (5, 1)), np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="one per joint"):
        SafetyLimits(LIMITS.lower, LIMITS.upper, LIMITS.max_velocity, max_step=np.array([0.3, 0.3, 0.3]))
