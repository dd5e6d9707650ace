"""The scripted expert solves the pick-and-place when followed as a trajectory controller would."""

import numpy as np
import pytest

from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.sim import SO100Sim, ScriptedExpert, rollout

EPISODES = 50


@pytest.fixture(scope="module")
def spec():
    return load_embodiment("so100")


@pytest.fixture(scope="module")
def sim(spec):
    robot = SO100Sim(spec, render_cameras=())
    robot.connect()
    yield robot
    robot.disconnect()


def plan(sim, spec, seed):
    sim.reset(seed)
    return ScriptedExpert(spec, sim.object_pose()[:3], sim.read_joints().position)


def test_expert_solves_at_least_95_percent_of_seeded_episodes(sim, spec):
    successes = [rollout(sim, plan(sim, spec, seed)) for seed in range(EPISODES)]
    failed = [seed for seed, ok in enumerate(successes) if not ok]
    assert len(failed) <= 0.05 * EPISODES, f"failed seeds {failed}"


def test_plan_starts_at_the_given_joints_and_stays_within_limits(sim, spec):
    start = np.array([0.1, -0.2, 0.3, 0.0, 0.2, 0.1])
    sim.reset(3)
    expert = ScriptedExpert(spec, sim.object_pose()[:3], start)
    assert expert.duration <= 10.0
    assert np.allclose(expert.positions_at(0.0), start)
    assert np.allclose(expert.positions_at(-1.0), start)
    end = expert.positions_at(expert.duration)
    assert np.allclose(expert.positions_at(expert.duration + 5.0), end)
    samples = np.stack([expert.positions_at(t) for t in np.arange(0.0, expert.duration, 0.05)])
    assert samples.shape[1] == spec.dof
    assert np.all(samples >= spec.lower_limits) and np.all(samples <= spec.upper_limits)


def test_bad_inputs_are_named(spec):
    with pytest.raises(ValueError, match=r"object_position must have shape \(3,\)"):
        ScriptedExpert(spec, np.zeros(2), np.zeros(spec.dof))
    with pytest.raises(ValueError, match="no joint solution"):
        ScriptedExpert(spec, np.array([1.0, 0.0, 0.014]), np.zeros(spec.dof))
