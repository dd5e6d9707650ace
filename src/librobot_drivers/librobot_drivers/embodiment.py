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

A group's command interface is `position` (a joint_trajectory_controller: one target position per
joint) or `velocity` (a velocity controller). The one velocity group of today is an articulated
vehicle's wheels (`drive:`): the policy commands them through one channel, the ground speed, in
place of the wheels in its state and action; the drive node turns it into one speed per wheel
(librobot_drivers.articulated) behind a deadman.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import yaml

from librobot_drivers.articulated import WHEELS, ArticulatedGeometry, ground_speed
from librobot_drivers.resources import share_path

INTERFACES = ("position", "velocity")


@dataclass(frozen=True)
class JointSpec:
    name: str
    lower: float
    upper: float
    velocity: float
    effort: float
    aliases: tuple[str, ...] = ()
    acceleration: float | None = None  # rad/s^2 (m/s^2 for a prismatic joint); None: not limited

    @property
    def continuous(self) -> bool:
        """A joint without position limits (a wheel)."""
        return self.lower == -np.inf and self.upper == np.inf

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
    interface: str = "position"  # the controller's command interface: position or velocity
    topic: str | None = None  # where the policy's trajectories go; None: the controller's

    def __post_init__(self) -> None:
        if self.interface not in INTERFACES:
            raise ValueError(f"group {self.name!r}: interface {self.interface!r}; expected one of "
                             f"{list(INTERFACES)}")

    @property
    def command_topic(self) -> str:
        """The JointTrajectory topic the policy commands this group on."""
        return self.topic or f"/{self.controller}/joint_trajectory"

    @property
    def controller_commands_topic(self) -> str:
        """A velocity group's controller input (std_msgs/Float64MultiArray, one per joint)."""
        return f"/{self.controller}/commands"


@dataclass(frozen=True)
class ArticulatedDrive:
    """The wheels of a centre-articulated vehicle, commanded through one ground-speed channel.

    `speed` is that channel as the policy sees it, a JointSpec in m/s: lower = the fastest
    reverse, upper = the fastest forward, velocity = the largest acceleration (m/s^2). The drive
    node stops the wheels when no command came within `command_timeout_s`.
    """

    group: str  # the wheels' joint group (velocity interface)
    articulation_joint: str
    wheels: tuple[str, str, str, str]  # joint names in articulated.WHEELS order
    geometry: ArticulatedGeometry
    speed: JointSpec
    command_timeout_s: float
    trajectory_topic: str  # the policy's wheel-speed trajectories, the drive node's input
    wheel_commands_topic: str  # sensor_msgs/JointState of every wheel command the drive node sends
    cmd_vel_topic: str  # geometry_msgs/Twist for driving by hand

    def __post_init__(self) -> None:
        if not 0 < self.command_timeout_s <= 1.0:
            raise ValueError(f"drive: command_timeout_s {self.command_timeout_s}; expected 0 < t <= 1 s")
        if not self.speed.lower < 0 < self.speed.upper:
            raise ValueError(f"drive: speed range [{self.speed.lower}, {self.speed.upper}] m/s must "
                             "hold 0 (reverse below it, forward above)")

    def ground_speed(self, wheel_velocities: np.ndarray) -> np.ndarray:
        """m/s of the reference point from (..., 4) wheel velocities in `wheels` order."""
        return ground_speed(self.geometry, wheel_velocities)


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
    end_effector_links: tuple[str, ...] = ()  # URDF links whose paths are drawn for predicted chunks (RViz)
    drive: ArticulatedDrive | None = None  # an articulated vehicle's wheels (velocity group)
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
        velocity_groups = [g.name for g in self.groups if g.interface == "velocity"]
        drive_group = [self.drive.group] if self.drive is not None else []
        if velocity_groups != drive_group:
            raise ValueError(f"{self.name}: velocity groups {velocity_groups}; expected exactly the "
                             f"drive's wheels {drive_group} (a velocity group needs a drive: section)")

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
    def velocity_index(self) -> np.ndarray:
        """Indices of the velocity-commanded joints (velocity groups) in this spec's joint order."""
        velocity = {name for g in self.groups if g.interface == "velocity" for name in g.joints}
        return np.array([i for i, n in enumerate(self.joint_names) if n in velocity], dtype=np.intp)

    @property
    def commanded_index(self) -> np.ndarray:
        """Indices of the commanded joints in this spec's joint order."""
        commanded = {name for g in self.commanded_groups for name in g.joints}
        return np.array([i for i, n in enumerate(self.joint_names) if n in commanded], dtype=np.intp)

    def commanded(self) -> Embodiment:
        """The embodiment as the policy sees it: the commanded groups and their joints only, a
        drive's wheels replaced by its one speed channel (where the first wheel was).

        Its joints are the policy's state and action, in spec order. Itself when every group is
        commanded and there is no drive (the SO-100, or a view already).
        """
        drive = self.drive
        wheels = () if drive is None or drive.speed.name in self.joint_names else drive.wheels
        if all(g.commanded for g in self.groups) and not wheels:
            return self
        keep = set(self.commanded_index.tolist())
        joints, groups = [], []
        for i, joint in enumerate(self.joints):
            if i in keep and joint.name not in wheels[1:]:
                joints.append(drive.speed if wheels and joint.name == wheels[0] else joint)
        for group in self.commanded_groups:
            groups.append(replace(group, joints=(drive.speed.name,)) if wheels and group.name == drive.group
                          else group)
        return replace(self, joints=tuple(joints), groups=tuple(groups))

    @property
    def speed_index(self) -> int | None:
        """Index of the drive's speed channel in this spec's joints (a commanded view), or None."""
        if self.drive is None or self.drive.speed.name not in self.joint_names:
            return None
        return self.joint_names.index(self.drive.speed.name)

    def first_target_steps(self, max_step: float) -> np.ndarray:
        """(D,) how far a plan's first target may lie from the measured value, per channel, for
        the safety layer: `max_step` for every joint; a drive's speed channel its whole range.
        A speed is reached at the acceleration limit, not jumped to, and a vehicle that starts to
        drive is commanded a speed it has not reached yet: a far first speed is no sign of a plan
        that does not start where the machine is."""
        steps = np.full(self.dof, float(max_step))
        if self.speed_index is not None:
            steps[self.speed_index] = self.drive.speed.upper - self.drive.speed.lower
        return steps

    def state_values(self, names: Sequence[str], positions: Sequence[float],
                     velocities: Sequence[float] = ()) -> np.ndarray:
        """(dof,) in this spec's joint order from a joint state (`names` in any order, aliases
        allowed): each joint's position; a drive's speed channel from its wheels' velocities."""
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape[0] != len(names):
            raise ValueError(f"joint state with {len(names)} names but {positions.shape[0]} positions")
        speed = self.speed_index
        if speed is None:
            return positions[self.joint_index(names)]
        velocities = np.asarray(velocities, dtype=np.float64)
        if velocities.shape[0] != len(names):
            raise ValueError(f"{self.name}: joint state with {len(names)} names but "
                             f"{velocities.shape[0]} velocities; the wheels' velocities give the "
                             f"{self.drive.speed.name} channel")
        joints = [n for n in self.joint_names if n != self.drive.speed.name]
        values = np.empty(self.dof)
        values[[i for i in range(self.dof) if i != speed]] = positions[self.joint_index(names, joints)]
        position = {name: i for i, name in enumerate(names)}
        missing = [w for w in self.drive.wheels if w not in position]
        if missing:
            raise KeyError(f"{self.name}: wheels {missing} missing from {list(names)}")
        values[speed] = self.drive.ground_speed(velocities[[position[w] for w in self.drive.wheels]])
        return values

    def at_rest(self, values: np.ndarray) -> np.ndarray:
        """(..., dof) values with a drive's speed channel at 0: what a hold commands (positions
        stay where they are, the wheels stop)."""
        values = np.array(values, dtype=np.float64)
        if self.speed_index is not None:
            values[..., self.speed_index] = 0.0
        return values

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
                lower=-np.inf if j.get("continuous") else float(j["lower"]),
                upper=np.inf if j.get("continuous") else float(j["upper"]),
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
        drive = _drive_from_dict(data["drive"], canonical) if data.get("drive") else None
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
                interface=g.get("interface", "position"),
                topic=drive.trajectory_topic if drive is not None and g["name"] == drive.group else None,
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
            end_effector_links=_end_effector_links(data),
            drive=drive,
        )
    except KeyError as err:
        raise ValueError(f"embodiment spec is missing the field {err.args[0]!r}") from None


def _end_effector_links(data: Mapping) -> tuple[str, ...]:
    """`end_effector_links: [a, b]` (a bimanual robot draws both hands), or the single link of
    `end_effector_link: a`."""
    if "end_effector_link" in data and "end_effector_links" in data:
        raise ValueError("give end_effector_links or end_effector_link, not both")
    links = data.get("end_effector_links", data.get("end_effector_link"))
    if links is None:
        return ()
    links = [links] if isinstance(links, str) else links
    if not isinstance(links, list) or not all(isinstance(link, str) and link for link in links):
        raise ValueError(f"end_effector_links must be a list of URDF link names, got {links!r}")
    return tuple(links)


def _drive_from_dict(data: Mapping, canonical: Mapping[str, str]) -> ArticulatedDrive:
    if data.get("type") != "articulated":
        raise ValueError(f"drive type {data.get('type')!r}; expected 'articulated'")
    unknown = [n for n in (data["articulation_joint"], *data["wheels"].values()) if n not in canonical]
    if unknown:
        raise ValueError(f"drive: unknown joints {unknown}")
    if sorted(data["wheels"]) != sorted(WHEELS):
        raise ValueError(f"drive: wheels {sorted(data['wheels'])}; expected one joint for each of {list(WHEELS)}")
    speed = data["speed"]
    topics = data["topics"]
    return ArticulatedDrive(
        group=data["group"],
        articulation_joint=canonical[data["articulation_joint"]],
        wheels=tuple(canonical[data["wheels"][w]] for w in WHEELS),
        geometry=ArticulatedGeometry(float(data["front_axle"]), float(data["rear_axle"]),
                                     float(data["track"]), float(data["wheel_radius"])),
        speed=JointSpec(name=speed["name"], lower=-float(speed["reverse"]), upper=float(speed["forward"]),
                        velocity=float(speed["acceleration"]), effort=0.0),
        command_timeout_s=float(data["command_timeout_s"]),
        trajectory_topic=topics["trajectory"],
        wheel_commands_topic=topics["wheel_commands"],
        cmd_vel_topic=topics["cmd_vel"],
    )


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
