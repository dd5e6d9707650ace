import pytest

from librobot_drivers.episodes import EpisodeManager, EpisodeSchedule, Phase


def run(manager, solved_at=None, until=100.0, dt=0.1):
    events, t = [], 0.0
    while t < until and manager.phase is not Phase.DONE:
        event = manager.update(t, solved_at is not None and t >= solved_at(manager.index))
        if event:
            events.append((round(t, 3), event))
        t += dt
    return events


def test_episodes_start_at_once_then_after_a_pause_and_time_out_unsuccessful():
    m = EpisodeManager(EpisodeSchedule(episodes=2, first_seed=10, time_limit_s=2.0, pause_s=0.5))
    events = run(m)
    kinds = [(e.kind, e.index, e.seed, e.success) for _, e in events]
    assert kinds == [("start", 0, 10, False), ("end", 0, 10, False),
                     ("start", 1, 11, False), ("end", 1, 11, False)]
    times = [t for t, _ in events]
    assert times[:2] == pytest.approx([0.0, 2.0])  # the first at once
    assert times[2] - times[1] == pytest.approx(0.5, abs=0.11)  # the next after the pause (0.1 s steps)
    assert m.results == [False, False] and m.success_rate == 0.0


def test_a_first_pause_delays_only_the_first_episode():
    m = EpisodeManager(EpisodeSchedule(episodes=2, time_limit_s=2.0, pause_s=0.5, first_pause_s=1.0))
    times = [t for t, _ in run(m)]
    assert times[0] == pytest.approx(1.0, abs=0.11) and times[2] - times[1] == pytest.approx(0.5, abs=0.11)


def test_success_needs_the_task_solved_for_the_hold_time():
    m = EpisodeManager(EpisodeSchedule(episodes=1, time_limit_s=10.0, success_hold_s=0.5, pause_s=0.0))
    events = run(m, solved_at=lambda index: 3.0)
    assert [(e.kind, e.success) for _, e in events] == [("start", False), ("end", True)]
    assert events[1][0] == pytest.approx(3.5)
    assert m.success_rate == 1.0


def test_zero_episodes_means_no_episode_management():
    m = EpisodeManager(EpisodeSchedule(episodes=0))
    assert m.phase is Phase.DONE and m.update(0.0, True) is None


def test_minus_one_runs_episodes_until_stopped():
    m = EpisodeManager(EpisodeSchedule(episodes=-1, time_limit_s=1.0, pause_s=0.0))
    ends = 0
    for k in range(100):
        event = m.update(k * 0.5, False)
        ends += event is not None and event.kind == "end"
    assert ends >= 20 and m.phase is not Phase.DONE


def test_bad_schedule_is_rejected():
    with pytest.raises(ValueError, match="episodes must be"):
        EpisodeSchedule(episodes=-2)
