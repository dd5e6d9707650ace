import numpy as np
import pytest

from librobot_models.execution import make_executor
from librobot_models.safety import SafetyFilter, SafetyLimits, UnsafeCommand
from librobot_policy_node.chunking import LatencyWindow, schedule_chunk
from librobot_policy_node.observation import ObservationBuffer, ObservationNotReady

MS = 1_000_000


def test_the_plan_keeps_observation_timing_and_starts_after_now():
    actions = np.arange(10, dtype=float)[:, None] * np.ones((1, 2))  # (10, 2): 1 unit per period
    executor = make_executor("receding", 0.1)
    chunk = schedule_chunk(executor, actions, observation_stamp_ns=1_000 * MS, now_ns=1_250 * MS)
    # action k is due at 1.0 + 0.1 k s: published from now (1.25 s), one point per period
    assert chunk.start_ns == 1_250 * MS
    np.testing.assert_allclose(chunk.time_from_start, 0.1 * np.arange(1, 8))  # to the chunk's end
    np.testing.assert_allclose(chunk.positions[:, 0], [3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.0])
    assert np.allclose(chunk.velocities[:5], 10.0) and np.all(chunk.velocities[-1] == 0)  # ends at rest


def test_a_chunk_entirely_in_the_past_is_not_sent():
    assert schedule_chunk(make_executor("receding", 0.1), np.zeros((3, 2)), 0, 10_000 * MS) is None


def test_min_lead_and_the_safety_layer():
    safety = SafetyFilter(SafetyLimits(np.array([-1.0]), np.array([1.0]), np.array([100.0]), max_step=9.0))
    chunk = schedule_chunk(make_executor("receding", 0.1), np.full((5, 1), 9.0), 0, 0,
                           min_lead_s=0.15, safety=safety, measured=np.array([0.0]))
    np.testing.assert_allclose(chunk.time_from_start, [0.2, 0.3, 0.4])
    assert np.all(chunk.positions == 1.0)  # clamped into the joint limits
    with pytest.raises(UnsafeCommand, match="max_step"):  # 9 rad away from where the arm is
        schedule_chunk(make_executor("receding", 0.1), np.full((5, 1), 9.0), 0, 0,
                       safety=SafetyFilter(SafetyLimits(np.array([-10.0]), np.array([10.0]),
                                                        np.array([100.0]))),
                       measured=np.array([0.0]))


def test_the_acceleration_limit_continues_from_the_commanded_speed_not_from_rest():
    """A plan moving at 1 rad/s: started from rest it is held back to 2 rad/s^2; started at the
    speed the arm is already commanded, it passes as it is (no slow-down at every replan)."""
    limits = SafetyLimits(np.array([-5.0]), np.array([5.0]), np.array([3.0]), np.array([2.0]), max_step=1.0)
    actions = 0.1 * np.arange(10, dtype=float)[:, None]  # 1 rad/s from 0: action k due at 0.1 k s

    def plan(velocity):
        return schedule_chunk(make_executor("receding", 0.1), actions, 0, 0, safety=SafetyFilter(limits),
                              measured=np.array([0.0]), velocity=velocity).positions[:, 0]

    from_rest = plan(None)
    assert from_rest[0] == pytest.approx(0.02)  # 2 rad/s^2 * 0.1 s reached in the first period
    np.testing.assert_allclose(plan(np.array([1.0])), actions[1:, 0], atol=1e-9)


def test_the_executor_mode_shapes_what_is_published():
    ensemble = make_executor("temporal_ensemble", 0.1, m=0.0)
    schedule_chunk(ensemble, np.zeros((10, 1)), 0, 0)
    chunk = schedule_chunk(ensemble, np.ones((10, 1)), 200 * MS, 200 * MS)
    np.testing.assert_allclose(chunk.positions[:6, 0], 0.5)  # both chunks vote while they overlap
    np.testing.assert_allclose(chunk.positions[-1, 0], 1.0)


@pytest.mark.parametrize("bad", [np.zeros((0, 2)), np.zeros(3), np.array([[np.nan, 0.0]])])
def test_bad_chunks_are_rejected(bad):
    with pytest.raises(ValueError):
        schedule_chunk(make_executor("receding", 0.1), bad, 0, 0)


def make_buffer():
    return ObservationBuffer(["front"], decode_state=lambda m: m, decode_image=lambda m: m)


def test_snapshot_needs_every_input_and_names_the_missing_one():
    buffer = make_buffer()
    buffer.put("state", [1.0, 2.0], 100 * MS)
    with pytest.raises(ObservationNotReady, match="front"):
        buffer.snapshot(110 * MS, 0.5)


def test_snapshot_refuses_stale_inputs():
    buffer = make_buffer()
    buffer.put("state", [1.0], 1_000 * MS)
    buffer.put("front", np.zeros((2, 2, 3), np.uint8), 100 * MS)
    with pytest.raises(ObservationNotReady, match="front 900 ms"):
        buffer.snapshot(1_000 * MS, 0.5)


def test_snapshot_uses_latest_and_counts_dropped_camera_frames():
    buffer = make_buffer()
    buffer.instruction = "pick"
    for k in range(3):
        buffer.put("front", np.full((2, 2, 3), k, np.uint8), (100 + k) * MS)
        buffer.put("state", [float(k)], (100 + k) * MS)
    snap = buffer.snapshot(105 * MS, 0.5)
    assert snap.observation["images"]["front"][0, 0, 0] == 2
    assert snap.observation["state"].tolist() == [2.0]
    assert snap.observation["instruction"] == "pick"
    assert snap.stamp_ns == 102 * MS
    assert buffer.dropped_frames == 2  # two frames replaced before use; joint states don't count
    buffer.clear()
    with pytest.raises(ObservationNotReady):
        buffer.snapshot(105 * MS, 0.5)


def test_snapshot_time_is_the_frame_the_model_sees_not_the_newer_joint_state():
    buffer = make_buffer()
    buffer.put("front", np.zeros((2, 2, 3), np.uint8), 100 * MS)
    buffer.put("state", [0.0], 190 * MS)  # joint states run at 100 Hz, frames at 10 Hz
    snap = buffer.snapshot(195 * MS, 0.5)
    assert snap.stamp_ns == 100 * MS and snap.oldest_stamp_ns == 100 * MS


def test_chunks_end_at_rest_as_jazzy_joint_trajectory_controller_requires():
    actions = np.linspace(0.0, 1.0, 10)[:, None]  # still moving at the last point
    chunk = schedule_chunk(make_executor("receding", 0.1), actions, 0, 0)
    assert np.all(chunk.velocities[-1] == 0.0) and np.all(chunk.velocities[:-1] > 0.0)


def test_latency_window_percentiles():
    window = LatencyWindow(size=100)
    for v in range(1, 101):
        window.add(float(v))
    assert window.percentile(50) == pytest.approx(50.5) and window.max == 100.0


def test_a_malformed_input_is_reported_as_not_ready_naming_the_input():
    def bad_image(message):
        raise ValueError("unsupported image encoding 'yuv422'")

    buffer = ObservationBuffer(["front"], decode_state=lambda m: m, decode_image=bad_image)
    buffer.put("state", [0.0], 100 * MS)
    buffer.put("front", object(), 100 * MS)
    with pytest.raises(ObservationNotReady, match="invalid front: unsupported image encoding"):
        buffer.snapshot(100 * MS, 0.5)


def test_a_refused_plan_does_not_become_the_executors_state():
    executor = make_executor("receding", 0.1)
    safety = SafetyFilter(SafetyLimits(np.array([-5.0]), np.array([5.0]), np.array([100.0]), max_step=0.5))
    with pytest.raises(UnsafeCommand):  # 3 rad away from where the arm is
        schedule_chunk(executor, np.full((5, 1), 3.0), 0, 0, safety=safety, measured=np.array([0.0]))
    assert executor.chunks == []
    chunk = schedule_chunk(executor, np.full((5, 1), 0.2), 100 * MS, 100 * MS, safety=safety,
                           measured=np.array([0.0]))
    np.testing.assert_allclose(chunk.positions[:, 0], 0.2)  # no hand-over from the refused one
