"""Diagnostic reports, built without ROS: nodes turn each Report into a
diagnostic_msgs/DiagnosticStatus (messages.diagnostic_array). Levels are diagnostic_msgs' OK 0,
WARN 1, ERROR 2, STALE 3."""

from __future__ import annotations

from dataclasses import dataclass, field

OK, WARN, ERROR, STALE = 0, 1, 2, 3


@dataclass(frozen=True)
class Report:
    name: str
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)
