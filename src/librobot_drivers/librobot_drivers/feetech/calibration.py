"""Calibration of a Feetech arm: servo ticks <-> URDF joint radians. ROS-free.

Each joint's calibration keeps LeRobot's fields (`id`, `drive_mode`, `homing_offset`,
`range_min`, `range_max`: the homing offset and position limits are written into the servo,
ranges are in ticks as the servo reports them after the offset) and adds `zero`, the reading at
the URDF's zero angle:

    radians = (+1 if drive_mode == 0 else -1) * (ticks - zero) * 2 pi / 4096

LibroBot's own calibration (librobot_drivers.calibrate) finds `zero` from the zero pose and
`drive_mode` from the direction the user moves each joint first. A LeRobot calibration file
(dict of motor name -> those five fields) loads unchanged: its zero is LeRobot's own zero, the
middle of the range (LeRobot's degrees mode), or for joints whose hardware YAML says
`lerobot_zero: range_min` (the gripper) the range_min end (LeRobot's 0 %).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from librobot_drivers.feetech.hardware import FeetechHardware
from librobot_drivers.feetech.protocol import TICKS_PER_TURN

FORMAT = "librobot-feetech-calibration"
HALF_TURN = (TICKS_PER_TURN - 1) // 2  # 2047: the zero pose reads this after the homing offset
RADIANS_PER_TICK = 2 * math.pi / TICKS_PER_TURN
LEROBOT_FIELDS = ("id", "drive_mode", "homing_offset", "range_min", "range_max")


@dataclass(frozen=True)
class JointCalibration:
    id: int
    drive_mode: int  # 0: ticks grow with the URDF angle, 1: they fall
    homing_offset: int
    range_min: int
    range_max: int
    zero: float

    def __post_init__(self) -> None:
        if self.drive_mode not in (0, 1):
            raise ValueError(f"servo ID {self.id}: drive_mode {self.drive_mode}, expected 0 or 1")
        if not 0 <= self.range_min < self.range_max < TICKS_PER_TURN:
            raise ValueError(f"servo ID {self.id}: range {self.range_min}..{self.range_max}, expected "
                             f"0 <= range_min < range_max < {TICKS_PER_TURN}")
        if abs(self.homing_offset) >= 2048:
            raise ValueError(f"servo ID {self.id}: homing_offset {self.homing_offset}, expected "
                             f"-2047..2047")

    @property
    def sign(self) -> int:
        return 1 if self.drive_mode == 0 else -1


@dataclass(frozen=True)
class Calibration:
    joints: dict[str, JointCalibration]  # ROS joint name -> calibration, in the embodiment's order

    @property
    def signs(self) -> np.ndarray:
        return np.array([c.sign for c in self.joints.values()], dtype=np.float64)

    def _arrays(self):
        cals = list(self.joints.values())
        return (np.array([c.sign for c in cals], dtype=np.float64),
                np.array([c.zero for c in cals], dtype=np.float64),
                np.array([c.range_min for c in cals]), np.array([c.range_max for c in cals]))

    def to_radians(self, ticks) -> np.ndarray:
        sign, zero, _, _ = self._arrays()
        return sign * (np.asarray(ticks, dtype=np.float64) - zero) * RADIANS_PER_TICK

    def to_radians_per_second(self, ticks_per_second) -> np.ndarray:
        sign, _, _, _ = self._arrays()
        return sign * np.asarray(ticks_per_second, dtype=np.float64) * RADIANS_PER_TICK

    def to_ticks(self, radians) -> np.ndarray:
        """Goal ticks for joint angles, rounded and kept inside the calibrated range."""
        sign, zero, low, high = self._arrays()
        ticks = np.rint(zero + sign * np.asarray(radians, dtype=np.float64) / RADIANS_PER_TICK)
        return np.clip(ticks, low, high).astype(np.int64)

    def check(self, hardware: FeetechHardware) -> None:
        names = [j.name for j in hardware.joints]
        if list(self.joints) != names:
            raise ValueError(f"calibration joints {list(self.joints)} do not match {hardware.name}'s {names}")
        for joint in hardware.joints:
            if self.joints[joint.name].id != joint.id:
                raise ValueError(f"calibration of {joint.name}: servo ID {self.joints[joint.name].id}, "
                                 f"but {hardware.name} has ID {joint.id}")

    # -- files -----------------------------------------------------------------------------------
    def save(self, path: str | Path, hardware: FeetechHardware) -> None:
        """Write the file atomically (a crash never leaves half a calibration)."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT, "hardware": hardware.name,
                "joints": {name: asdict(cal) for name, cal in self.joints.items()}}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)


def from_lerobot(data: dict, hardware: FeetechHardware) -> Calibration:
    """A LeRobot calibration ({motor: {id, drive_mode, homing_offset, range_min, range_max}}),
    motors named by LeRobot (shoulder_pan, ..., gripper) or by ROS joint name."""
    spec = hardware.spec
    by_joint = {}
    for motor, fields in data.items():
        missing = [f for f in LEROBOT_FIELDS if f not in fields]
        if missing:
            raise ValueError(f"LeRobot calibration of {motor!r} lacks {missing}")
        by_joint[spec.canonical_joint_name(motor)] = fields
    missing = [j.name for j in hardware.joints if j.name not in by_joint]
    if missing:
        raise ValueError(f"LeRobot calibration has no entry for {missing}")
    joints = {}
    for joint in hardware.joints:
        f = by_joint[joint.name]
        low, high, drive_mode = int(f["range_min"]), int(f["range_max"]), int(f["drive_mode"])
        if joint.lerobot_zero == "middle":
            zero = (low + high) / 2
        else:  # LeRobot's 0 % end of the range
            zero = float(high if drive_mode else low)
        joints[joint.name] = JointCalibration(int(f["id"]), drive_mode, int(f["homing_offset"]),
                                              low, high, zero)
    return Calibration(joints)


def load_calibration(path: str | Path, hardware: FeetechHardware) -> Calibration:
    """Load LibroBot's calibration file or a LeRobot one, and check it fits `hardware`."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no calibration file {path}; calibrate the arm first "
                                f"(ros2 run librobot_drivers calibrate --help)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"calibration file {path} is not JSON: {err}") from None
    try:
        if data.get("format") == FORMAT:
            calibration = Calibration({name: JointCalibration(**fields)
                                       for name, fields in data["joints"].items()})
        else:
            calibration = from_lerobot(data, hardware)
        calibration.check(hardware)
    except (TypeError, KeyError, ValueError) as err:
        raise ValueError(f"calibration file {path}: {err}") from None
    return calibration


class RangeTracker:
    """Follows one joint while the user moves it: the range it covered, and which way it went
    first (at least `threshold` ticks from where it started), which gives the drive mode."""

    def __init__(self, start: int, threshold: int = 100):
        self.start, self.threshold = start, threshold
        self.low = self.high = start
        self.first_direction = 0  # +1: ticks grew first, -1: they fell

    def update(self, ticks: int) -> None:
        self.low, self.high = min(self.low, ticks), max(self.high, ticks)
        if self.first_direction == 0 and abs(ticks - self.start) >= self.threshold:
            self.first_direction = 1 if ticks > self.start else -1

    @property
    def drive_mode(self) -> int:
        if self.first_direction == 0:
            raise ValueError(f"the joint moved less than {self.threshold} ticks from {self.start}")
        return 0 if self.first_direction > 0 else 1
