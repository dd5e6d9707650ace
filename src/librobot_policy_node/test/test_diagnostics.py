import math

from librobot_policy_node.diagnostics import ERROR, OK, STALE, WARN, PolicySnapshot, reports


def snapshot(**changes):
    base = dict(state="running", message="", framework="act", checkpoint_id="abc", execution="rtc",
                delay_steps=1, estop_reason=None, dry_run=False, latency_ms=(20.0, 35.0, 40.0), chunks_published=7,
                dropped_frames=2, streams={"state": (10.0, 100.0), "front": (40.0, 30.0)},
                max_age_ms=500.0)
    return PolicySnapshot(**{**base, **changes})


def test_a_running_policy_reports_ok_with_its_figures():
    model, front, state = reports("/policy", snapshot())
    assert (model.name, model.level) == ("/policy: policy", OK)
    assert model.values["inference p99 ms"] == "35.0" and model.values["execution"] == "rtc"
    assert model.values["delay steps"] == "1"
    assert model.values["dropped frames"] == "2"
    assert (front.name, front.level, front.message) == ("/policy: input front", OK, "30.0 Hz")
    assert state.values == {"age ms": "10", "rate Hz": "100.0"}


def test_problems_raise_the_level_and_say_why():
    model, front, state = reports("/policy", snapshot(
        estop_reason="operator", streams={"state": (900.0, 5.0), "front": (math.inf, 0.0)}))
    assert model.level == ERROR and model.message == "e-stop latched: operator"
    assert front.level == STALE and front.message == "nothing received"
    assert state.level == WARN and state.message == "stale: 900 ms old (max 500 ms)"
    (dry, *_) = reports("/policy", snapshot(dry_run=True))
    assert dry.level == WARN and "dry run" in dry.message
    (failed, *_) = reports("/policy", snapshot(state="error", message="inference failed"))
    assert failed.level == ERROR and failed.message == "inference failed"
