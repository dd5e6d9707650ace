"""Chunk executors: time alignment, weights, hand-overs and the errors they refuse."""

import math

import numpy as np
import pytest

from librobot_models.execution import MODES, make_executor

P = 0.1  # control period, s


def ramp(start: float, slope: float, steps: int = 10, joints: int = 2) -> np.ndarray:
    """A chunk whose joints all move `slope` rad per period from `start`."""
    return np.repeat((start + slope * np.arange(steps))[:, None], joints, axis=1)


def test_receding_follows_the_newest_chunk_after_a_one_period_hand_over():
    executor = make_executor("receding", P, blend_s=P)
    assert executor.target(0.0) is None and executor.plan(0.0) is None
    executor.add(ramp(0.0, 0.1), start_s=0.0, now_s=0.0)
    np.testing.assert_allclose(executor.target(0.35), [0.35, 0.35])  # linear between actions
    executor.add(ramp(1.0, 0.0), start_s=0.3, now_s=0.4)  # jumps to 1.0, arrives 100 ms late
    np.testing.assert_allclose(executor.target(0.4), [0.4, 0.4])  # nothing moves at arrival
    np.testing.assert_allclose(executor.target(0.45), [0.7, 0.7])  # halfway through the hand-over
    np.testing.assert_allclose(executor.target(0.5), [1.0, 1.0])
    np.testing.assert_allclose(executor.target(5.0), [1.0, 1.0])  # held after the end


def test_temporal_ensemble_weights_chunks_by_age_aligned_by_time():
    m = 0.5
    executor = make_executor("temporal_ensemble", P, m=m)
    executor.add(np.full((10, 1), 1.0), start_s=0.0, now_s=0.0)
    executor.add(np.full((10, 1), 3.0), start_s=0.25, now_s=0.3)  # off the first chunk's grid
    expected = (1.0 + 3.0 * math.exp(-m)) / (1.0 + math.exp(-m))  # oldest first: weight 1
    np.testing.assert_allclose(executor.target(0.3), [expected])
    np.testing.assert_allclose(executor.target(0.2), [1.0])  # only the first covers 0.2 s
    np.testing.assert_allclose(executor.target(1.0), [3.0])  # the first ended at 0.9 s
    executor.add(np.full((10, 1), 5.0), start_s=1.0, now_s=1.0)  # the first one is dropped now
    assert [c.actions[0, 0] for c in executor.chunks] == [3.0, 5.0]


def test_rtc_keeps_the_committed_targets_at_arrival_and_hands_over_by_the_old_chunk_end():
    executor = make_executor("rtc", P)
    executor.add(ramp(0.0, 0.1), start_s=0.0, now_s=0.0)  # 0.0 .. 0.9 over 0 .. 0.9 s
    executor.add(ramp(2.0, 0.0), start_s=0.2, now_s=0.4)
    assert executor.delay_steps == 2  # 200 ms at 100 ms periods
    np.testing.assert_allclose(executor.target(0.4), [0.4, 0.4])  # continuous at arrival
    np.testing.assert_allclose(executor.target(0.9), [2.0, 2.0])  # the new chunk alone at the end
    times, targets = executor.plan(0.4)
    assert np.all(np.diff(targets[:, 0]) >= 0)  # from the old path to the new one, no way back
    assert times[-1] == pytest.approx(1.1)  # up to the end of the newest chunk


def largest_step(executor) -> float:
    """Chunks every 4 periods, 100 ms late, each off the last by up to 0.2 rad: the largest
    change of the target in one period (a normal one is 0.05 rad)."""
    t, targets = 0.0, []
    rng = np.random.default_rng(0)
    for k in range(8):
        executor.add(ramp(0.05 * 4 * k + rng.uniform(-0.2, 0.2), 0.05), start_s=t - 0.1, now_s=t)
        for _ in range(4):
            t += P
            targets.append(executor.target(t)[0])
    return float(np.abs(np.diff(targets)).max())


@pytest.mark.parametrize("mode", MODES)
def test_no_mode_jumps_at_a_chunk_boundary(mode):
    assert largest_step(make_executor(mode, P)) < 0.25
    assert largest_step(make_executor("receding", P, blend_s=0.0)) > 0.3  # what a bare switch does


def test_executors_refuse_bad_chunks_and_modes_with_the_reason():
    executor = make_executor("receding", P)
    with pytest.raises(ValueError, match="non-finite"):
        executor.add(np.array([[np.nan, 0.0]]), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        executor.add(np.zeros(3), 0.0, 0.0)
    executor.add(np.zeros((4, 2)), 0.0, 0.0)
    with pytest.raises(ValueError, match="chunk of 3 joints after chunks of 2"):
        executor.add(np.zeros((4, 3)), 0.1, 0.1)
    with pytest.raises(ValueError, match="before its observation"):
        executor.add(np.zeros((4, 2)), 1.0, 0.5)
    with pytest.raises(ValueError, match="expected one of receding, temporal_ensemble, rtc"):
        make_executor("blend", P)
    with pytest.raises(ValueError, match="period = 0"):
        make_executor("rtc", 0)
    executor.reset()
    assert executor.target(0.0) is None


def test_rtc_inpainting_freezes_the_delay_and_fades_over_the_overlap():
    executor = make_executor("rtc", P)
    assert executor.inpainting(0.0, 10) is None  # nothing planned yet
    executor.add(ramp(0.0, 0.1), start_s=0.0, now_s=0.25)  # 250 ms late: d = 3
    assert executor.delay_steps == 3
    targets, weights = executor.inpainting(0.4, 10)  # the next chunk, observed at 0.4 s
    # the plan in force at the new chunk's times (0.4 .. 1.3 s; the old chunk ends at 0.9 s)
    np.testing.assert_allclose(targets[:, 0], [min(0.4 + 0.1 * k, 0.9) for k in range(10)])
    overlap = 6  # new steps 0..5 lie inside the old chunk
    assert list(weights[:3]) == [1.0, 1.0, 1.0]  # they run before the new chunk can arrive
    assert np.all(np.diff(weights[3:overlap]) < 0) and 0 < weights[overlap - 1] < weights[3] < 1
    assert np.all(weights[overlap:] == 0)  # nothing to agree with after the old chunk's end
    for mode in ("receding", "temporal_ensemble"):  # the other modes do not guide
        other = make_executor(mode, P)
        other.add(ramp(0.0, 0.1), start_s=0.0, now_s=0.25)
        assert other.inpainting(0.4, 10) is None
