"""The wheel loader's MuJoCo twin: the URDF's kinematics, the articulated kinematics against the
rigid-body simulation, hydraulics rate limits, the task and its scripted expert."""


import mujoco
import numpy as np
import pytest

from librobot_drivers.articulated import body_yaw_rates
from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.kinematics import UrdfKinematics
from librobot_drivers.sim.experts import make_expert, rollout
from librobot_drivers.sim.wheel_loader_expert import REVERSE_VARIATION, WheelLoaderExpert
from librobot_drivers.sim.wheel_loader_sim import HOPPER_CENTER_XY, HOPPER_XY_RANGE, WheelLoaderSim, robot_description

SPEC = load_embodiment("wheel_loader")


@pytest.fixture(scope="module")
def sim():
    twin = WheelLoaderSim(render_cameras=())
    twin.connect()
    yield twin
    twin.disconnect()


def test_servos_match_the_spec_wheels_by_velocity(sim):
    model = sim.model
    for expected in SPEC.joints:
        joint = model.joint(expected.name)
        (actuator,) = [a for a in range(model.nu) if model.actuator_trnid[a, 0] == joint.id]
        assert model.actuator_forcerange[actuator].tolist() == [-expected.effort, expected.effort]
        velocity_servo = model.actuator_biasprm[actuator, 1] == 0  # no position feedback
        assert velocity_servo == expected.continuous, expected.name
        if not expected.continuous:
            assert joint.range.tolist() == pytest.approx([expected.lower, expected.upper])
    assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "cab") >= 0


def test_urdf_forward_kinematics_equals_the_twins(sim):
    """On the machine's own frame (base_link): the bucket tip, the cab camera and every link."""
    fk = UrdfKinematics(robot_description())
    assert fk.root == "base_link"
    model, data = sim.model, mujoco.MjData(sim.model)
    links = ["front_frame_link", "boom_link", "bucket_link", "bucket_tip_link", "cab_camera_optical_frame",
             "front_left_wheel_link", "rear_right_wheel_link"]
    rng = np.random.default_rng(0)
    qs = rng.uniform(np.where(np.isinf(SPEC.lower_limits), -3, SPEC.lower_limits),
                     np.where(np.isinf(SPEC.upper_limits), 3, SPEC.upper_limits), size=(6, SPEC.dof))
    for q in qs:
        data.qpos[[model.joint(n).qposadr[0] for n in SPEC.joint_names]] = q
        mujoco.mj_kinematics(model, data)
        base_position = data.body("base_link").xpos
        base_rotation = data.body("base_link").xmat.reshape(3, 3)
        for link in links:
            position, rotation = fk.link_poses(link, SPEC.joint_names, q[None])
            assert np.allclose(base_rotation.T @ (data.body(link).xpos - base_position), position[0], atol=1e-6), link
            assert np.allclose(base_rotation.T @ data.body(link).xmat.reshape(3, 3), rotation[0], atol=1e-6), link


def test_the_articulated_kinematics_match_the_rigid_body_simulation(sim):
    """Reversing at 1.5 m/s while the articulation sweeps: the rear frame's yaw rate in MuJoCo
    (tyres on the ground, friction, no kinematic constraint) against body_yaw_rates of the
    measured speed, angle and rate. Within 0.03 rad/s (tyre scrub) of up to 0.25 rad/s."""
    sim.reset(0)
    base = sim.model.body("base_link").id
    errors, largest = [], 0.0
    for k in range(700):
        sim.command_view(np.array([0.5 * np.sin(0.5 * k * 0.01), -1.5, 0.0, 0.3]))
        sim.step(0.01)
        if k > 100 and k % 10 == 0:
            reading = sim.read_joints()
            speed = sim.policy_state()[1]
            predicted, _ = body_yaw_rates(SPEC.drive.geometry, speed, reading.position[0], reading.velocity[0])
            measured = sim.data.cvel[base][2]  # world-frame angular velocity about z
            errors.append(abs(measured - predicted))
            largest = max(largest, abs(measured))
    assert largest > 0.2
    assert max(errors) < 0.03, max(errors)


def test_the_hydraulics_move_no_faster_than_their_rate_limits(sim):
    sim.reset(0)
    boom = SPEC.joint_names.index("boom_joint")
    start = sim.read_joints().position[boom]
    for _ in range(10):  # a jump of the target to the top, held for 1 s
        sim.command_view(np.array([0.0, 0.0, 0.85, 0.0]))
        sim.step(0.1)
    moved = sim.read_joints().position[boom] - start
    assert 0.2 < moved <= SPEC.joints[boom].velocity * 1.0 + 0.02


def test_reset_places_the_hopper_by_seed_and_nothing_is_delivered_at_the_start(sim):
    sim.reset(7)
    first = sim.hopper_position()
    assert np.all(np.abs(first[:2] - HOPPER_CENTER_XY) <= HOPPER_XY_RANGE)
    assert sim.stones_in_hopper() == 0 and not sim.task_success()
    sim.reset(8)
    assert not np.allclose(sim.hopper_position(), first)
    sim.reset(7)
    assert np.allclose(sim.hopper_position(), first)
    assert np.allclose(sim.machine_pose(), 0.0) and np.allclose(sim.policy_state(), 0.0, atol=1e-9)


def test_the_expert_fills_the_bucket_and_dumps_it_into_the_hopper(sim):
    sim.reset(3)
    expert = make_expert(SPEC, sim.object_pose()[:3], sim.read_joints().position)
    assert expert.duration < sim.episode_time_limit_s - 5.0
    samples = np.stack([expert.positions_at(t) for t in np.arange(0.0, expert.duration, 0.1)])
    view = SPEC.commanded()
    assert samples.shape[1] == 4
    assert np.all(samples >= view.lower_limits - 1e-9) and np.all(samples <= view.upper_limits + 1e-9)
    assert np.all(np.abs(np.diff(samples, axis=0)) <= view.velocity_limits * 0.1 + 1e-6)  # rate limits kept
    assert samples[:, 1].min() < -1.0 and samples[:, 1].max() > 1.0  # it reverses and drives
    assert rollout(sim, expert, settle=2.0)
    assert sim.stones_in_hopper() >= 12


class _Extreme:
    """An rng whose every draw is the low or the high end of its range, in the given order."""

    def __init__(self, *high: bool):
        self.high = list(high)

    def uniform(self, low: float, high: float) -> float:
        return high if self.high.pop(0) else low


def test_demonstrations_vary_the_y_turn_and_the_expert_still_solves_its_extremes(sim):
    sim.reset(1)
    args = (SPEC, sim.object_pose()[:3], sim.read_joints().position)
    nominal = make_expert(*args)
    drawn = [make_expert(*args, rng=np.random.default_rng(seed)) for seed in range(20)]
    again = make_expert(*args, rng=np.random.default_rng(5))
    assert np.allclose(again.positions_at(12.0), drawn[5].positions_at(12.0))  # reproducible from the seed
    turns = np.array([(e.reverse_articulation, e.reverse_distance) for e in drawn])
    variation = np.array(REVERSE_VARIATION)
    assert np.all(np.abs(turns - [nominal.reverse_articulation, nominal.reverse_distance]) <= variation)
    assert np.all(np.ptp(turns, axis=0) > variation)  # spread over most of the range
    assert len({round(e.duration, 2) for e in drawn}) > 10
    # the hardest corner seen offline: the gentlest, shortest turn (the machine comes round least)
    hardest = WheelLoaderExpert(*args, rng=_Extreme(True, False))
    assert hardest.reverse_distance == pytest.approx(nominal.reverse_distance - variation[1])
    assert rollout(sim, hardest, settle=2.0)
