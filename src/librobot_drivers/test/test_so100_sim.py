"""SO100Sim: the Robot interface on MuJoCo, its cameras and its episode API."""

import numpy as np
import pytest

from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.robot import RobotNotConnectedError
from librobot_drivers.sim import SO100Sim
from librobot_drivers.trajectory import TrajectoryFollower


@pytest.fixture(scope="module")
def spec():
    return load_embodiment("so100")


@pytest.fixture
def sim(spec):
    robot = SO100Sim(spec)
    robot.connect()
    yield robot
    robot.disconnect()


def red_pixels(frame: np.ndarray) -> np.ndarray:
    """(N, 2) row, column of the strongly red pixels of an RGB frame."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return np.argwhere((r > 120) & (r > 2 * g) & (r > 2 * b))


def test_front_camera_renders_the_red_cube(sim):
    sim.reset(seed=1)
    frame = sim.read_camera("front")
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    first = red_pixels(frame)
    assert len(first) >= 10
    assert sim.read_camera("front") is frame  # rendered once per simulation state

    sim.reset(seed=2)  # the cube starts elsewhere, and is seen elsewhere
    second = red_pixels(sim.read_camera("front"))
    assert len(second) >= 10
    assert np.linalg.norm(first.mean(axis=0) - second.mean(axis=0)) > 1.0


def test_only_the_chosen_cameras_render(sim):
    assert sim.camera_names == ["front"]
    with pytest.raises(KeyError, match="wrist"):
        sim.read_camera("wrist")


def test_wrist_camera_renders_when_asked_for(spec):
    robot = SO100Sim(spec, render_cameras=("front", "wrist"))
    robot.connect()
    try:
        assert robot.camera_names == ["front", "wrist"]
        assert robot.read_camera("wrist").shape == (120, 160, 3)
    finally:
        robot.disconnect()


def test_send_positions_clamps_into_the_joint_limits(sim, spec):
    sent = sim.send_positions(np.full(spec.dof, 10.0))
    assert np.array_equal(sent, spec.upper_limits)
    sent = sim.send_positions(np.full(spec.dof, -10.0))
    assert np.array_equal(sent, spec.lower_limits)
    sim.step(1.0)
    position = sim.read_joints().position
    assert np.all(position >= spec.lower_limits - 0.01)
    assert np.all(position <= spec.upper_limits + 0.01)
    with pytest.raises(ValueError, match="non-finite"):
        sim.send_positions(np.full(spec.dof, np.nan))


def test_commands_need_a_connection(spec):
    with pytest.raises(RobotNotConnectedError):
        SO100Sim(spec).send_positions(np.zeros(spec.dof))


def test_step_and_follow_advance_time_and_reach_the_target(sim):
    target = np.array([0.3, 0.2, 0.4, -0.2, 0.5, 0.6])
    follower = TrajectoryFollower(sim.read_joints().position)
    follower.set_trajectory(sim.time, sim.time, np.array([0.4]), target[None])
    sim.follow(follower, 0.2)
    halfway = sim.read_joints().position
    sim.follow(follower, 0.3)
    assert sim.time == pytest.approx(0.5)
    assert np.all(np.abs(halfway - target) > 0.05)  # on its way: interpolated, not a jump
    np.testing.assert_allclose(sim._last_command, target)  # the trajectory ended at 0.4 s
    sim.step(1.0)
    assert sim.time == pytest.approx(1.5)
    assert np.allclose(sim.read_joints().position, target, atol=0.02)
    with pytest.raises(ValueError, match="dt=-1"):
        sim.step(-1.0)


def test_reset_draws_the_cube_from_the_seed_and_rests_the_arm(sim, spec):
    sim.reset(seed=7)
    first = sim.object_pose()
    sim.step(0.3)
    sim.reset(seed=7)
    assert sim.time == 0.0
    assert np.allclose(sim.object_pose(), first)
    assert np.array_equal(sim.read_joints().position, np.zeros(spec.dof))
    sim.reset(seed=8)
    assert not np.allclose(sim.object_pose()[:2], first[:2])
    assert first[2] == pytest.approx(sim.cube_half_size)


def test_the_task_is_not_solved_at_the_start(sim):
    sim.reset(seed=0)
    assert not sim.task_success()
    assert "red cube" in sim.instruction and "green square" in sim.instruction
