"""Embodiment specs: one YAML per robot, read by the driver, the converter, the trainer and the node.

ROS-free on purpose (no rclpy, no messages): training code imports it.

    >>> spec = load_embodiment("so100")
    >>> spec.joint_names[0]
    'shoulder_pan_joint'
    >>> spec.canonical_joint_name("shoulder_pan")
    'shoulder_pan_joint'
    >>> [g.controller for g in spec.groups]
    ['arm_controller']

Joint groups: every joint belongs to one group, and each group has its own ros2_control
controller. The policy commands the `commanded` groups (its state and action are their joints,
in spec order: `spec.commanded()`); the others are held where they are (a humanoid's legs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import yaml

from librobot_drivers.resources import share_path


@dataclass(frozen=True)
class JointSpec:
    name: str
    lower: float
    upper: float
    velocity: float
    effort: float
    aliases: tuple[str, ...] = ()
    acceleration: float | None = None  # rad/s^2 (m/s^2 for a prismatic joint); None: not limited

    def __post_init__(self) -> None:
        if not self.lower < self.upper:
            raise ValueError(
                f"joint {self.name!r}: lower limit {self.lower} must be below upper limit {self.upper}"
            )
        if self.velocity <= 0:
            raise ValueError(f"joint {self.name!r}: velocity limit {self.velocity} must be > 0")
        if self.acceleration is not None and not self.acceleration > 0:
            raise ValueError(f"joint {self.name!r}: acceleration limit {self.acceleration} must be > 0")


@dataclass(frozen=True)
class CameraSpec:
    name: str
    topic: str
    width: int
    height: int
    rate_hz: float
    optional: bool = False

    @property
    def compressed_topic(self) -> str:
        """image_transport's name for the JPEG/PNG stream of this camera."""
        return f"{self.topic}/compressed"


@dataclass(frozen=True)
class JointGroup:
    """Joints driven by one ros2_control controller (a joint_trajectory_controller when commanded)."""

    name: str
    joints: tuple[str, ...]  # canonical names, in the spec's joint order
    controller: str
    controller_type: str
    commanded: bool = True  # False: held (e.g. standing legs); the policy never commands it

    @property
    def command_topic(self) -> str:
        return f"/{self.controller}/joint_trajectory"


@dataclass(frozen=True)
class Embodiment:
    name: str
    description: str
    control_rate_hz: float
    joint_states_rate_hz: float
    joints: tuple[JointSpec, ...]
    cameras: tuple[CameraSpec, ...]
    topics: Mapping[str, str]
    groups: tuple[JointGroup, ...]
    action_type: str
    end_effector_link: str | None = None  # URDF link drawn for predicted chunks (RViz markers)
    _alias_to_name: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.control_rate_hz <= 0:
            raise ValueError(f"{self.name}: control_rate_hz {self.control_rate_hz} must be > 0")
        lookup: dict[str, str] = {}
        for joint in self.joints:
            for key in (joint.name, *joint.aliases):
                if key in lookup and lookup[key] != joint.name:
                    raise ValueError(
                        f"{self.name}: name {key!r} refers to both {lookup[key]!r} and {joint.name!r}"
                    )
                lookup[key] = joint.name
        object.__setattr__(self, "_alias_to_name", lookup)
        grouped = [name for group in self.groups for name in group.joints]
        if sorted(grouped) != sorted(self.joint_names) or len(set(grouped)) != len(grouped):
            raise ValueError(
                f"{self.name}: groups {[list(g.joints) for g in self.groups]} must hold every joint "
                f"of {self.joint_names} exactly once"
            )
        for group in self.groups:
            if list(group.joints) != [j for j in self.joint_names if j in group.joints]:
                raise ValueError(f"{self.name}: group {group.name!r} lists {list(group.joints)}; "
                                 "expected them in the spec's joint order")
        if not any(group.commanded for group in self.groups):
            raise ValueError(f"{self.name}: no group is commanded; expected at least one")

    # -- joints --------------------------------------------------------------------------------
    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def dof(self) -> int:
        return len(self.joints)

    @property
    def lower_limits(self) -> np.ndarray:
        return np.array([j.lower for j in self.joints], dtype=np.float64)

    @property
    def upper_limits(self) -> np.ndarray:
        return np.array([j.upper for j in self.joints], dtype=np.float64)

    @property
    def velocity_limits(self) -> np.ndarray:
        return np.array([j.velocity for j in self.joints], dtype=np.float64)

    @property
    def acceleration_limits(self) -> np.ndarray | None:
        """(D,) per joint, or None when the spec gives none (every joint or none has one)."""
        if self.joints[0].acceleration is None:
            return None
        return np.array([j.acceleration for j in self.joints], dtype=np.float64)

    @property
    def control_period(self) -> float:
        return 1.0 / self.control_rate_hz

    def canonical_joint_name(self, name: str) -> str:
        """The ROS joint name for `name`, which may be an alias (e.g. LeRobot's `shoulder_pan`)."""
        try:
            return self._alias_to_name[name]
        except KeyError:
            raise KeyError(
                f"{self.name}: unknown joint {name!r}; expected one of {self.joint_names} "
                f"or their aliases"
            ) from None

    def joint_index(self, names: Sequence[str], joints: Sequence[str] | None = None) -> np.ndarray:
        """For each joint of this embodiment (in order), its index in `names`.

        `names` may use aliases and extra joints; every embodiment joint must appear.
        `joints` (canonical names, e.g. a group's) asks for those joints only.
        """
        position: dict[str, int] = {}
        for i, n in enumerate(names):
            canonical = self._alias_to_name.get(n)
            if canonical is not None:
                position[canonical] = i
        wanted = self.joint_names if joints is None else list(joints)
        missing = [j for j in wanted if j not in position]
        if missing:
            raise KeyError(
                f"{self.name}: joints {missing} missing from {list(names)} "
                f"(aliases accepted: {[a for j in self.joints for a in j.aliases]})"
            )
        return np.array([position[j] for j in wanted], dtype=np.intp)

    def clip(self, positions: np.ndarray) -> np.ndarray:
        """Clamp joint positions (..., dof) into the joint limits."""
        return np.clip(positions, self.lower_limits, self.upper_limits)

    # -- cameras / topics ---------------------------------------------------------------------
    def camera(self, name: str) -> CameraSpec:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"{self.name}: unknown camera {name!r}; expected one of {self.camera_names}")

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def required_cameras(self) -> list[CameraSpec]:
        return [c for c in self.cameras if not c.optional]

    # -- groups -------------------------------------------------------------------------------
    @property
    def commanded_groups(self) -> list[JointGroup]:
        return [g for g in self.groups if g.commanded]

    def group(self, name: str) -> JointGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"{self.name}: unknown joint group {name!r}; expected one of "
                       f"{[g.name for g in self.groups]}")

    def group_index(self, group: JointGroup) -> np.ndarray:
        """Indices of `group`'s joints in this spec's joint order."""
        order = {name: i for i, name in enumerate(self.joint_names)}
        return np.array([order[name] for name in group.joints], dtype=np.intp)

    @property
    def commanded_index(self) -> np.ndarray:
        """Indices of the commanded joints in this spec's joint order."""
        commanded = {name for g in self.commanded_groups for name in g.joints}
        return np.array([i for i, n in enumerate(self.joint_names) if n in commanded], dtype=np.intp)

    def commanded(self) -> Embodiment:
        """The embodiment as the policy sees it: the commanded groups and their joints only.

        Its joints are the policy's state and action, in spec order. Itself when every group is
        commanded (the SO-100).
        """
        if all(g.commanded for g in self.groups):
            return self
        keep = set(self.commanded_index.tolist())
        return replace(self, joints=tuple(j for i, j in enumerate(self.joints) if i in keep),
                       groups=tuple(self.commanded_groups))

    @property
    def command_topic(self) -> str:
        """The one commanded group's trajectory topic; an error when there are several."""
        groups = self.commanded_groups
        if len(groups) != 1:
            raise ValueError(f"{self.name} has {len(groups)} commanded groups "
                             f"{[g.name for g in groups]}: use each group's command_topic")
        return groups[0].command_topic

    def topic(self, key: str) -> str:
        try:
            return self.topics[key]
        except KeyError:
            raise KeyError(
                f"{self.name}: no topic {key!r}; expected one of {sorted(self.topics)}"
            ) from None


def embodiment_from_dict(data: Mapping) -> Embodiment:
    """Build and validate an Embodiment from the YAML mapping."""
    try:
        joints = tuple(
            JointSpec(
                name=j["name"],
                lower=float(j["lower"]),
                upper=float(j["upper"]),
                velocity=float(j["velocity"]),
                effort=float(j["effort"]),
                aliases=tuple(j.get("aliases", ())),
                acceleration=float(j["acceleration"]) if j.get("acceleration") is not None else None,
            )
            for j in data["joints"]
        )
        given = [j.name for j in joints if j.acceleration is not None]
        if given and len(given) != len(joints):
            raise ValueError(f"acceleration limits for {given} only: expected one for every joint or none")
        cameras = tuple(
            CameraSpec(
                name=c["name"],
                topic=c["topic"],
                width=int(c["width"]),
                height=int(c["height"]),
                rate_hz=float(c["rate_hz"]),
                optional=bool(c.get("optional", False)),
            )
            for c in data.get("cameras", ())
        )
        canonical = {}
        for j in joints:
            for key in (j.name, *j.aliases):
                canonical[key] = j.name
        groups = []
        for g in data["groups"]:
            unknown = [n for n in g["joints"] if n not in canonical]
            if unknown:
                raise ValueError(f"group {g.get('name')!r}: unknown joints {unknown}; expected "
                                 f"names of {[j.name for j in joints]}")
            groups.append(JointGroup(
                name=g["name"],
                joints=tuple(canonical[n] for n in g["joints"]),
                controller=g["controller"],
                controller_type=g["type"],
                commanded=bool(g.get("commanded", True)),
            ))
        return Embodiment(
            name=data["name"],
            description=data.get("description", ""),
            control_rate_hz=float(data["control_rate_hz"]),
            joint_states_rate_hz=float(data.get("joint_states_rate_hz", 100.0)),
            joints=joints,
            cameras=cameras,
            topics=dict(data.get("topics", {})),
            groups=tuple(groups),
            action_type=data["action"]["type"],
            end_effector_link=data.get("end_effector_link"),
        )
    except KeyError as err:
        raise ValueError(f"embodiment spec is missing the field {err.args[0]!r}") from None


def available_embodiments() -> list[str]:
    return sorted(p.stem for p in share_path("config", "embodiments").glob("*.yaml"))


def load_embodiment(name_or_path: str | Path) -> Embodiment:
    """Load a spec by robot name (`so100`) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = share_path("config", "embodiments", f"{name_or_path}.yaml")
        if not path.is_file():
            raise ValueError(
                f"unknown embodiment {str(name_or_path)!r}; expected one of {available_embodiments()} "
                "or a path to a YAML file"
            )
    elif not path.is_file():
        raise FileNotFoundError(f"embodiment spec {path} does not exist")
    with open(path) as f:
        return embodiment_from_dict(yaml.safe_load(f))


def reorder(values: np.ndarray, names: Iterable[str], spec: Embodiment) -> np.ndarray:
    """Take (..., len(names)) values given in `names` order into the spec's joint order."""
    return np.asarray(values)[..., spec.joint_index(list(names))]
