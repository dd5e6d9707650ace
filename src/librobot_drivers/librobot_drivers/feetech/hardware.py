"""A Feetech arm's hardware description (config/hardware/<name>.yaml): servo IDs per joint, the
settings written on connect, and the words calibration uses. ROS-free."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import yaml

from librobot_drivers.embodiment import Embodiment, load_embodiment
from librobot_drivers.feetech.protocol import STS3215
from librobot_drivers.resources import share_path

LEROBOT_ZEROS = ("middle", "range_min")


@dataclass(frozen=True)
class ServoJoint:
    name: str  # ROS joint name
    id: int
    positive: str  # the motion that raises the joint angle, in words
    settings: Mapping[str, int] = field(default_factory=dict)  # this servo's own extra settings
    lerobot_zero: str = "middle"  # where a LeRobot calibration puts this joint's zero


@dataclass(frozen=True)
class FeetechHardware:
    name: str
    spec: Embodiment
    model_number: int
    baudrate: int
    joints: tuple[ServoJoint, ...]  # in the embodiment's joint order
    settings: Mapping[str, int]
    zero_pose: str

    @property
    def ids(self) -> list[int]:
        return [j.id for j in self.joints]

    @property
    def names_by_id(self) -> dict[int, str]:
        return {j.id: j.name for j in self.joints}


def _check_settings(where: str, settings: Mapping) -> dict[str, int]:
    unknown = sorted(set(settings) - set(STS3215))
    if unknown:
        raise ValueError(f"{where}: unknown registers {unknown}; expected names of {sorted(STS3215)}")
    return {k: int(v) for k, v in settings.items()}


def load_hardware(name_or_path: str | Path) -> FeetechHardware:
    """Load config/hardware/<name>.yaml (or a YAML path) and check it against its embodiment."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = share_path("config", "hardware", f"{name_or_path}.yaml")
        if not path.is_file():
            known = sorted(q.stem for q in share_path("config", "hardware").glob("*.yaml"))
            raise ValueError(f"unknown hardware {str(name_or_path)!r}; expected one of {known} or a YAML path")
    data = yaml.safe_load(path.read_text())
    spec = load_embodiment(data["embodiment"])
    joints_yaml = data["joints"]
    if sorted(joints_yaml) != sorted(spec.joint_names):
        raise ValueError(f"{path}: joints {sorted(joints_yaml)} do not match the {spec.name} "
                         f"embodiment's {spec.joint_names}")
    joints = []
    for name in spec.joint_names:
        entry = joints_yaml[name]
        zero = entry.get("lerobot_zero", "middle")
        if zero not in LEROBOT_ZEROS:
            raise ValueError(f"{path}: {name}: lerobot_zero {zero!r}; expected one of {LEROBOT_ZEROS}")
        joints.append(ServoJoint(name=name, id=int(entry["id"]), positive=entry["positive"],
                                 settings=_check_settings(f"{path}: {name}", entry.get("settings", {})),
                                 lerobot_zero=zero))
    ids = [j.id for j in joints]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: servo IDs {ids} are not unique")
    return FeetechHardware(
        name=path.stem, spec=spec, model_number=int(data["model_number"]),
        baudrate=int(data["baudrate"]), joints=tuple(joints),
        settings=_check_settings(str(path), data.get("settings", {})),
        zero_pose=" ".join(str(data.get("zero_pose", "the URDF's zero pose")).split()))
