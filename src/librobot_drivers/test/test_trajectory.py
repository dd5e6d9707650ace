import numpy as np
import pytest

from librobot_drivers.trajectory import TrajectoryFollower, chunk_velocities


def follower(dof=2):
    return TrajectoryFollower(np.zeros(dof))


def test_holds_initial_position_without_trajectory():
    f = follower()
    position, velocity = f.sample(5.0)
    assert np.array_equal(position, [0, 0]) and np.array_equal(velocity, [0, 0])


def test_start_time_zero_means_now_and_moves_from_current_state_to_first_point():
    f = follower()
    kept = f.set_trajectory(now=10.0, start_time=0.0, time_from_start=[1.0, 2.0],
                            positions=[[1.0, 0.0], [2.0, 0.0]])
    assert kept == 2
    assert np.allclose(f.sample(10.0)[0], [0, 0])
    assert np.allclose(f.sample(10.5)[0], [0.5, 0])  # linear from the held state
    assert np.allclose(f.sample(11.5)[0], [1.5, 0])
    assert np.allclose(f.sample(99.0)[0], [2.0, 0])  # holds the last point
    assert f.finished(12.0) and not f.finished(11.9)


def test_points_in_the_past_are_skipped():
    f = follower()
    kept = f.set_trajectory(now=10.0, start_time=9.0, time_from_start=[0.5, 1.0, 1.5, 2.0],
                            positions=[[5, 5], [6, 6], [1, 0], [2, 0]])
    assert kept == 2  # 9.5 and 10.0 are not in the future
    assert np.allclose(f.sample(10.25)[0], [0.5, 0])  # straight from the current state to (1, 0)


def test_all_points_in_the_past_rejects_and_keeps_the_active_trajectory():
    f = follower()
    f.set_trajectory(now=0.0, start_time=0.0, time_from_start=[1.0], positions=[[1.0, 1.0]])
    assert f.set_trajectory(now=5.0, start_time=1.0, time_from_start=[1.0], positions=[[9, 9]]) == 0
    assert np.allclose(f.sample(5.0)[0], [1.0, 1.0])


def test_new_trajectory_replaces_active_one_from_the_current_sample():
    f = follower(1)
    f.set_trajectory(now=0.0, start_time=0.0, time_from_start=[2.0], positions=[[2.0]])
    f.set_trajectory(now=1.0, start_time=0.0, time_from_start=[1.0], positions=[[-1.0]])
    assert np.allclose(f.sample(1.0)[0], [1.0])  # where the old one was at t=1
    assert np.allclose(f.sample(1.5)[0], [0.0])
    assert np.allclose(f.sample(2.0)[0], [-1.0])


def test_cubic_interpolation_matches_endpoint_velocities():
    f = follower(1)
    f.set_trajectory(now=0.0, start_time=0.0, time_from_start=[1.0, 2.0],
                     positions=[[1.0], [2.0]], velocities=[[1.0], [0.0]])
    eps = 1e-4
    p_before, _ = f.sample(1.0 - eps)
    p_after, v_at = f.sample(1.0 + eps)
    assert np.allclose((p_after - p_before) / (2 * eps), [1.0], atol=1e-3)
    assert np.allclose(v_at, [1.0], atol=1e-3)
    assert np.allclose(f.sample(2.0)[0], [2.0])


@pytest.mark.parametrize(
    "tfs, positions, message",
    [([1.0, 1.0], [[0, 0], [1, 1]], "strictly increasing"),
     ([1.0], [[0, 0, 0]], "expected 2"),
     ([1.0, 2.0], [[0, 0]], "2 times")],
)
def test_malformed_trajectories_are_rejected_with_a_reason(tfs, positions, message):
    with pytest.raises(ValueError, match=message):
        follower().set_trajectory(now=0.0, start_time=0.0, time_from_start=tfs, positions=positions)


@pytest.mark.parametrize("velocities", [None, np.array([[0.0, 1.0], [2.0, -1.0], [0.0, 0.0]])])
def test_sampling_many_times_at_once_agrees_with_one_at_a_time(velocities):
    follower = TrajectoryFollower(np.zeros(2))
    positions = np.array([[0.1, 0.2], [0.5, -0.3], [0.4, 0.0]])
    follower.set_trajectory(1.0, 1.0, np.array([0.1, 0.3, 0.6]), positions, velocities)
    times = np.linspace(0.5, 2.0, 61)  # before, through and after the knots
    batch = follower.positions_at(times)
    one_by_one = np.stack([follower.sample(t)[0] for t in times])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-12)
    np.testing.assert_allclose(batch[-1], positions[-1])
    assert np.all(follower.sample(5.0)[1] == 0)  # held at rest after the end


def test_chunk_velocities_end_at_rest_as_the_controller_requires():
    positions = np.array([[0.0], [0.1], [0.3], [0.6]])
    velocities = chunk_velocities(positions, 0.1)
    np.testing.assert_allclose(velocities[:, 0], [1.0, 1.5, 2.5, 0.0])
    TrajectoryFollower(np.zeros(1)).set_trajectory(0.0, 0.0, np.array([0.1, 0.2, 0.3, 0.4]),
                                                     positions, velocities)  # accepted


def test_group_followers_are_independent_controllers_over_one_robot():
    """Two groups (joints 0, 2 and joint 1): a trajectory for one group moves only its joints;
    the other keeps holding, and the whole robot's targets come back in joint order."""
    from librobot_drivers.trajectory import GroupFollowers

    followers = GroupFollowers({"arm": np.array([0, 2]), "gripper": np.array([1])}, np.array([0.0, 0.5, 1.0]))
    assert followers.groups == ["arm", "gripper"]
    assert followers.set_trajectory("arm", 10.0, 10.0, np.array([1.0]), np.array([[1.0, 3.0]])) == 1
    position, _ = followers.sample(10.5)
    np.testing.assert_allclose(position, [0.5, 0.5, 2.0])  # halfway for the arm; the gripper holds
    followers.set_trajectory("gripper", 10.5, 10.5, np.array([0.5]), np.array([[0.0]]))
    np.testing.assert_allclose(followers.positions_at(np.array([11.0, 12.0])), [[1.0, 0.0, 3.0]] * 2)
    assert followers.finished(11.0) and not followers.finished(10.9)
    followers.hold(np.array([7.0, 8.0, 9.0]))
    np.testing.assert_allclose(followers.sample(20.0)[0], [7.0, 8.0, 9.0])
    with pytest.raises(KeyError, match="unknown joint group 'legs'"):
        followers.set_trajectory("legs", 0.0, 0.0, np.array([1.0]), np.array([[0.0]]))
    with pytest.raises(ValueError, match="trajectory for 1 joints, expected 2"):
        followers.set_trajectory("arm", 0.0, 0.0, np.array([1.0]), np.array([[0.0]]))
    with pytest.raises(ValueError, match="must cover each of the 3 joints once"):
        GroupFollowers({"arm": np.array([0, 1])}, np.zeros(3))
