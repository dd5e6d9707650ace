"""The humanoid's twin and its scripted expert: the Robot interface, the task's success test, and
a plan that solves the handover when followed by one trajectory controller per joint group."""

from dataclasses import replace

import mujoco
import numpy as np
import pytest

from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.robots import make_robot
from librobot_drivers.sim import HumanoidExpert, HumanoidSim
from librobot_drivers.sim.experts import make_expert, rollout

EPISODES = 10  # the note's figure is over 200 seeds (a few minutes); this keeps CI short


@pytest.fixture(scope="module")
def spec():
    return load_embodiment("humanoid")


@pytest.fixture(scope="module")
def sim(spec):
    robot = HumanoidSim(spec, render_cameras=())
    robot.connect()
    yield robot
    robot.disconnect()


def test_the_twin_renders_its_head_camera_and_stands_still_on_its_stand(spec):
    robot = make_robot("humanoid_sim", spec, render_cameras=["head"])
    robot.connect()
    robot.reset(seed=4)
    frame = robot.read_camera("head")
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8 and frame.std() > 5
    bar = robot.object_pose()
    robot.step(1.0)
    reading = robot.read_joints()
    assert np.abs(reading.position - robot.rest_positions).max() < 0.05  # the servos hold the rest pose
    legs = spec.group_index(spec.group("legs"))
    assert np.abs(reading.position[legs]).max() < 0.01
    assert np.allclose(robot.object_pose()[:3], bar[:3], atol=2e-3)  # the bar lies still
    assert robot.model.body("pelvis").pos[2] == pytest.approx(0.793)  # bolted to the stand
    assert not robot.task_success()
    robot.disconnect()


def test_reset_draws_the_bar_from_the_seed(sim):
    sim.reset(7)
    first = sim.object_pose()
    sim.reset(8)
    assert not np.allclose(sim.object_pose(), first)
    sim.reset(7)
    assert np.allclose(sim.object_pose(), first)


def test_success_is_the_bar_resting_in_the_basket_and_let_go(sim):
    sim.reset(0)
    pose = sim.object_pose()
    pose[:3] = sim.basket_position + [0.0, 0.0, sim.bar_half_size[2] + 0.001]
    sim.data.qpos[sim._bar_qpos : sim._bar_qpos + 7] = pose
    sim.data.qvel[:] = 0.0
    mujoco.mj_forward(sim.model, sim.data)
    sim.step(0.3)
    assert sim.task_success()
    pose[:2] = sim.basket_position[:2] + [0.0, sim.basket_inner_half_size[1] + 0.05]  # beyond the wall
    pose[2] = 0.76 + sim.bar_half_size[2] + 0.01
    sim.data.qpos[sim._bar_qpos : sim._bar_qpos + 7] = pose
    mujoco.mj_forward(sim.model, sim.data)
    assert not sim.task_success()


def test_expert_solves_seeded_episodes(sim, spec):
    successes = []
    for seed in range(EPISODES):
        sim.reset(seed)
        successes.append(rollout(sim, make_expert(spec, sim.object_pose()[:3], sim.read_joints().position)))
    failed = [seed for seed, ok in enumerate(successes) if not ok]
    assert len(failed) <= 1, f"failed seeds {failed}"


def test_plan_starts_at_the_given_joints_holds_the_legs_and_stays_within_limits(sim, spec):
    sim.reset(3)
    start = sim.read_joints().position
    expert = HumanoidExpert(spec, sim.object_pose()[:3], start)
    assert 10.0 <= expert.duration <= sim.episode_time_limit_s - 3.0
    view = spec.commanded()  # the plan commands the upper body only: the legs' controller holds them
    assert np.allclose(expert.positions_at(0.0), start[spec.commanded_index])
    samples = np.stack([expert.positions_at(t) for t in np.arange(0.0, expert.duration, 0.1)])
    assert samples.shape[1] == view.dof == 19
    assert np.all(samples >= view.lower_limits - 1e-9) and np.all(samples <= view.upper_limits + 1e-9)
    for name in ("waist_yaw_joint", "left_gripper_joint", "right_gripper_joint"):
        assert np.ptp(samples[:, view.joint_names.index(name)]) > 0.02, name  # waist and both hands work


def test_bad_inputs_are_named(spec):
    with pytest.raises(ValueError, match=r"object_position must have shape \(3,\)"):
        HumanoidExpert(spec, np.zeros(2), np.zeros(spec.dof))
    with pytest.raises(ValueError, match="right hand cannot reach"):
        HumanoidExpert(spec, np.array([1.5, -0.2, 0.775]), np.zeros(spec.dof))
    with pytest.raises(ValueError, match="no scripted expert for embodiment 'so101'"):
        make_expert(replace(load_embodiment("so100"), name="so101"), np.zeros(3), np.zeros(6))
