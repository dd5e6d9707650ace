"""MuJoCo twin of the wheel loader with a loading task: fill the bucket in the bay, back out and
dump the load into the hopper.

    >>> sim = WheelLoaderSim()            # the machine of description/urdf/wheel_loader.urdf.xacro
    >>> sim.connect(); sim.reset(seed=3)  # hopper placed at random on the machine's left
    >>> sim.follow(followers, 0.1)        # over the policy's view: articulation, speed, boom, bucket
    >>> sim.read_camera("cab")            # (120, 160, 3) uint8
    >>> sim.task_success()

The machine is built from the URDF (xacro-expanded, read by MuJoCo's URDF importer) and attached
on a free joint to the world of description/mujoco/wheel_loader_scene.xml, so its kinematics
are the description's by construction. Added here: position servos for the articulation, lift
arm and bucket whose targets move no faster than the hydraulics' rate limits (the spec's joint
velocities), a velocity servo per wheel (torque limited to the spec's effort), the cab camera,
tyre friction, and the material: round stones filling the bay.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import mujoco
import numpy as np

from librobot_drivers.embodiment import Embodiment, load_embodiment
from librobot_drivers.resources import share_path
from librobot_drivers.sim.twin import MujocoTwin, compile_quietly, expand_xacro, urdf_mjspec

SCENE_PATH = share_path("description", "mujoco", "wheel_loader_scene.xml")
URDF_PATH = share_path("description", "urdf", "wheel_loader.urdf.xacro")
INSTRUCTION = "fill the bucket from the pile and dump it into the blue hopper"

HOPPER_CENTER_XY = np.array([3.5, 12.0])  # m, middle of the area the hopper is placed in
HOPPER_XY_RANGE = np.array([1.0, 0.75])  # m, the hopper's centre within +-this of the middle

# Stones: a jittered grid filling the bay in layers.
STONE_RADIUS = 0.2  # m
STONE_DENSITY = 1000.0  # kg/m^3: light material (coal, wood chips); a heap of granite stalls the machine
STONE_FRICTION = [0.8, 0.05, 0.05]  # sliding, torsional, rolling: rolling friction keeps a heap
STONE_X = (8.0, 10.4)  # m, the bay's inside along x ...
STONE_Y = 1.7  # ... and +-y
STONE_SPACING = 0.42  # m, grid pitch
STONE_LAYERS = 3
STONE_JITTER = 0.03  # m, each stone's random shift in x and y per episode

# Servos. Position: stiffness (N m/rad), critically damped; velocity: gain (N m s/rad).
STIFFNESS = {"articulation_joint": 2.0e6, "boom_joint": 6.0e6, "bucket_joint": 1.5e6}
WHEEL_GAIN = 1.0e5
ARMATURE = 50.0  # kg m^2, reflected inertia of each joint's drive (keeps the stiff servos stable)
TYRE_FRICTION = [1.0, 0.02, 0.002]
CAMERA_FOVY = 75.0  # deg

DELIVERED = 12  # stones in the hopper for success (a full bucket holds 40-50)
RESTING_SPEED = 0.3  # m/s, stones slower than this count (no stone flying through)


def robot_description(use_mock_hardware: bool = True) -> str:
    """The wheel loader's URDF: description/urdf/wheel_loader.urdf.xacro expanded."""
    return expand_xacro(URDF_PATH, use_mock_hardware)


def _robot_spec() -> mujoco.MjSpec:
    """The URDF as a MuJoCo spec: every link kept as a body (camera, bucket tip)."""
    return urdf_mjspec(robot_description())


@lru_cache(maxsize=4)
def _compiled_xml(spec_path: str, timestep: float) -> str:
    """The whole scene, compiled once per process and kept as XML."""
    return compile_quietly(lambda: _build_scene(load_embodiment(spec_path), timestep))


def stone_grid() -> np.ndarray:
    """(N, 3) m: the stones' resting places before the per-episode jitter."""
    xs = np.arange(STONE_X[0] + STONE_RADIUS, STONE_X[1] - STONE_RADIUS + 1e-9, STONE_SPACING)
    ys = np.arange(-STONE_Y + STONE_RADIUS, STONE_Y - STONE_RADIUS + 1e-9, STONE_SPACING)
    places = []
    for layer in range(STONE_LAYERS):
        shift = 0.5 * STONE_SPACING * (layer % 2)  # each layer in the hollows of the one below
        z = STONE_RADIUS + layer * STONE_SPACING * 0.75
        front = STONE_X[0] + STONE_RADIUS + layer * STONE_SPACING  # a heap: each layer starts further in
        places += [(x + shift, y + shift, z) for x in xs for y in ys
                   if front <= x + shift < STONE_X[1] - STONE_RADIUS and y + shift < STONE_Y - STONE_RADIUS]
    return np.array(places)


def _build_scene(spec: Embodiment, timestep: float) -> str:
    scene = mujoco.MjSpec.from_file(str(SCENE_PATH))
    robot = _robot_spec()
    for geom in robot.geoms:
        geom.contype, geom.conaffinity = 2, 1
        if "wheel" in geom.parent.name:
            geom.friction = TYRE_FRICTION
    radius = spec.drive.geometry.wheel_radius
    chassis = scene.worldbody.add_body(name="machine", pos=[0.0, 0.0, radius])
    chassis.add_freejoint(name="machine")
    scene.attach(robot, frame=chassis.add_frame(), prefix="")  # base_link: the rear axle's centre
    effort = {j.name: j.effort for j in spec.joints}
    wheels = set(spec.drive.wheels)
    for name in spec.joint_names:
        scene.joint(name).armature = ARMATURE
        actuator = scene.add_actuator()
        actuator.name, actuator.target = name, name
        actuator.trntype = mujoco.mjtTrn.mjTRN_JOINT
        if name in wheels:
            actuator.set_to_velocity(kv=WHEEL_GAIN)
        else:
            actuator.set_to_position(kp=STIFFNESS[name], dampratio=1.0)
        actuator.forcelimited = True
        actuator.forcerange = [-effort[name], effort[name]]
    for camera in spec.cameras:
        optical = scene.body(f"{camera.name}_camera_optical_frame")
        optical.add_camera(name=camera.name, quat=[0.0, 1.0, 0.0, 0.0], fovy=CAMERA_FOVY)
    mass = STONE_DENSITY * 4.0 / 3.0 * np.pi * STONE_RADIUS**3
    for i, place in enumerate(stone_grid()):
        body = scene.worldbody.add_body(name=f"stone{i}", pos=place.tolist())
        body.add_freejoint(name=f"stone{i}")
        body.add_geom(name=f"stone{i}", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[STONE_RADIUS, 0, 0],
                      mass=mass, friction=STONE_FRICTION, condim=6, contype=1, conaffinity=3,
                      material="stone")
    scene.option.timestep = timestep
    scene.compile()
    return scene.to_xml()


class WheelLoaderSim(MujocoTwin):
    """The wheel loader in a yard with a bay of stones and a hopper, in MuJoCo.

    Args:
        spec: the wheel loader embodiment; loaded when omitted.
        render_cameras: the cameras `read_camera` renders ("cab").
        timestep: physics step in seconds.

    Besides the Robot interface: `reset(seed)`, `follow(follower, dt)`, `task_success()`,
    `instruction`, the privileged `object_pose()` (the hopper) for experts and evaluation, and
    `machine_pose()`.
    """

    episode_time_limit_s = 40.0

    def __init__(self, spec: Embodiment | None = None, *, render_cameras: Sequence[str] = ("cab",),
                 timestep: float = 0.004):
        if timestep <= 0:
            raise ValueError(f"timestep must be > 0 s, got {timestep}")
        spec = spec if spec is not None else load_embodiment("wheel_loader")
        path = share_path("config", "embodiments", f"{spec.name}.yaml")
        model = mujoco.MjModel.from_xml_string(_compiled_xml(str(path), timestep))
        super().__init__(spec, model, render_cameras)
        self._hopper = self.model.body("hopper").mocapid[0]
        self._machine_qpos = self.model.jnt_qposadr[self.model.joint("machine").id]
        names = [self.model.body(b).name for b in range(self.model.nbody)]
        self._stones = np.array([b for b, n in enumerate(names) if n.startswith("stone")])
        self._stone_qpos = np.array([self.model.jnt_qposadr[self.model.body_jntadr[b]] for b in self._stones])
        self._hydraulics = np.array([spec.joint_names.index(g) for g in STIFFNESS])
        self._ctrl_time = 0.0
        self.reset(seed=None)

    # -- features -------------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        return INSTRUCTION

    @property
    def hopper_inner_half_size(self) -> np.ndarray:
        """(3,) m: half the hopper's inside in x, y and its walls' height."""
        return self.model.site("hopper").size.copy()

    def hopper_position(self) -> np.ndarray:
        """(3,) m: middle of the hopper's floor."""
        return self.data.mocap_pos[self._hopper].copy()

    def object_pose(self) -> np.ndarray:
        """(7,) privileged pose of the hopper (the episode's random object): position, quaternion."""
        return np.concatenate([self.hopper_position(), [1.0, 0.0, 0.0, 0.0]])

    def machine_pose(self) -> np.ndarray:
        """(x, y, yaw) of the rear axle's centre on the ground (m, rad), privileged."""
        qpos = self.data.qpos[self._machine_qpos: self._machine_qpos + 7]
        w, x, y, z = qpos[3:7]
        return np.array([qpos[0], qpos[1], np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))])

    def stone_positions(self) -> np.ndarray:
        """(N, 3) m, every stone's centre."""
        return self.data.xpos[self._stones].copy()

    # -- episodes -------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Machine to the origin (arm level, bucket level, standing), time to zero, the stones
        into the bay (jittered by `seed`) and the hopper to a place drawn from `seed` (None: the
        middle of its area, stones on their grid)."""
        self._reset_robot()
        rng = np.random.default_rng(seed) if seed is not None else None
        hopper = HOPPER_CENTER_XY.copy()
        places = stone_grid()
        if rng is not None:
            hopper += rng.uniform(-HOPPER_XY_RANGE, HOPPER_XY_RANGE)
            places[:, :2] += rng.uniform(-STONE_JITTER, STONE_JITTER, size=(len(places), 2))
        self.data.mocap_pos[self._hopper] = [*hopper, 0.0]
        for address, place in zip(self._stone_qpos, places):
            self.data.qpos[address: address + 7] = [*place, 1.0, 0.0, 0.0, 0.0]
        self._ctrl_time = 0.0
        mujoco.mj_forward(self.model, self.data)

    def stones_in_hopper(self) -> int:
        """Stones whose centre lies inside the hopper's walls, below their top, moving slowly."""
        half = self.hopper_inner_half_size
        offset = np.abs(self.stone_positions() - self.hopper_position())
        inside = np.all(offset[:, :2] <= half[:2], axis=1) & (self.stone_positions()[:, 2] < 2 * half[2])
        speed = np.linalg.norm(self.data.cvel[self._stones][:, 3:], axis=1)
        return int(np.sum(inside & (speed < RESTING_SPEED)))

    def task_success(self) -> bool:
        """At least DELIVERED stones lie in the hopper."""
        return self.stones_in_hopper() >= DELIVERED

    # -- hydraulics ----------------------------------------------------------------------------------
    def _write_positions(self, positions: np.ndarray) -> None:
        """The servo targets of the articulation, arm and bucket move towards `positions` no
        faster than the spec's joint velocities: hydraulic cylinders are rate-limited by their
        oil flow, whatever the command."""
        elapsed = max(self.data.time - self._ctrl_time, self.model.opt.timestep)
        self._ctrl_time = self.data.time
        actuators = self._actuators[self._hydraulics]
        current = self.data.ctrl[actuators]
        step = self.spec.velocity_limits[self._hydraulics] * elapsed
        self.data.ctrl[actuators] = current + np.clip(positions[self._hydraulics] - current, -step, step)
