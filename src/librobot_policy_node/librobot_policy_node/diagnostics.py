"""What the policy node reports on /diagnostics, built without ROS (the node turns each Report into
a diagnostic_msgs/DiagnosticStatus)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from librobot_drivers.reports import ERROR, OK, STALE, WARN, Report  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class PolicySnapshot:
    """The node's state as the diagnostics see it."""

    state: str  # running, waiting, holding, error, unconfigured
    message: str
    framework: str
    checkpoint_id: str
    execution: str
    delay_steps: int  # inference delay in control periods, measured over the recent chunks
    estop_reason: str | None
    dry_run: bool
    latency_ms: tuple[float, float, float]  # p50, p99, max
    chunks_published: int
    dropped_frames: int
    streams: dict[str, tuple[float, float]]  # input -> (age ms, rate Hz)
    max_age_ms: float


def reports(node: str, snap: PolicySnapshot) -> list[Report]:
    """One report for the model and one per input stream."""
    level = {"running": OK, "waiting": WARN, "holding": WARN, "unconfigured": WARN}.get(snap.state, ERROR)
    message = snap.message or snap.state
    if snap.estop_reason is not None:
        level, message = ERROR, f"e-stop latched: {snap.estop_reason}"
    elif snap.dry_run and level == OK:
        level, message = WARN, "dry run: commanding nothing"
    p50, p99, worst = snap.latency_ms
    model = Report(f"{node}: policy", level, message, {
        "state": snap.state, "framework": snap.framework or "-", "checkpoint": snap.checkpoint_id or "-",
        "execution": snap.execution, "delay steps": str(snap.delay_steps),
        "dry run": str(snap.dry_run).lower(),
        "inference p50 ms": f"{p50:.1f}", "inference p99 ms": f"{p99:.1f}",
        "inference max ms": f"{worst:.1f}", "chunks published": str(snap.chunks_published),
        "dropped frames": str(snap.dropped_frames),
    })
    streams = []
    for stream, (age, rate) in sorted(snap.streams.items()):
        if math.isinf(age):
            level, text = STALE, "nothing received"
        elif age > snap.max_age_ms:
            level, text = WARN, f"stale: {age:.0f} ms old (max {snap.max_age_ms:.0f} ms)"
        else:
            level, text = OK, f"{rate:.1f} Hz"
        streams.append(Report(f"{node}: input {stream}", level, text, {
            "age ms": "none" if math.isinf(age) else f"{age:.0f}", "rate Hz": f"{rate:.1f}"}))
    return [model, *streams]
