"""MuJoCo twin of the humanoid with a bimanual task: hand the blue bar from the right hand to the
left one and put it in the basket.

    >>> sim = HumanoidSim()               # the robot of description/urdf/humanoid.urdf.xacro
    >>> sim.connect(); sim.reset(seed=3)  # bar placed at random on the robot's right
    >>> sim.follow(followers, 0.1)        # GroupFollowers: one trajectory controller per group
    >>> sim.read_camera("head")           # (120, 160, 3) uint8
    >>> sim.task_success()

The robot is built from the URDF (xacro-expanded, read by MuJoCo's URDF importer) and attached to
the world of description/mujoco/humanoid_scene.xml, so its kinematics are the description's by
construction. Added here: a position servo per joint (stiffness per joint group, force limited to
the spec's effort), the cameras at the URDF's optical frames, and contact settings.

The lower body is held, not balanced: the pelvis is bolted to a fixed stand (the URDF's
stand_joint) and the legs' servos hold their zero pose. A whole-body balance controller is its
own project; the task is an upper-body one, and a stand keeps the figures about manipulation.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import mujoco
import numpy as np

from librobot_drivers.embodiment import Embodiment, load_embodiment
from librobot_drivers.resources import share_path
from librobot_drivers.sim.twin import MujocoTwin, compile_quietly, expand_xacro, urdf_mjspec

SCENE_PATH = share_path("description", "mujoco", "humanoid_scene.xml")
URDF_PATH = share_path("description", "urdf", "humanoid.urdf.xacro")
INSTRUCTION = "hand the blue bar to the left hand and put it in the basket"

BAR_CENTER_XY = np.array([0.25, -0.16])  # m, middle of the area the bar starts in (robot's right)
BAR_XY_RANGE = 0.03  # m, the bar starts within +-this of BAR_CENTER_XY in x and in y
BAR_YAW_RANGE = 0.2  # rad, and turned by up to +-this about the vertical

# Position servos: stiffness per joint group (N m/rad; N/m for the grippers), critically damped,
# force limited to each joint's effort in the spec. Stiff legs and waist carry the body; the
# arms are about as stiff as the G1's own joint controllers.
STIFFNESS = {"legs": 500.0, "waist": 400.0, "left_arm": 150.0, "right_arm": 150.0,
             "left_gripper": 1000.0, "right_gripper": 1000.0}
ARMATURE = 0.01  # kg m^2, reflected rotor inertia of every joint (keeps the stiff servos stable)
CAMERA_FOVY = 70.0  # deg, vertical field of view of every camera

RESTING_SPEED = 0.02  # m/s, below this the bar counts as still


def robot_description(use_mock_hardware: bool = True) -> str:
    """The humanoid's URDF: description/urdf/humanoid.urdf.xacro expanded."""
    return expand_xacro(URDF_PATH, use_mock_hardware)


def _robot_spec() -> mujoco.MjSpec:
    """The URDF as a MuJoCo spec: every link kept as a body (cameras, TCPs), collision geometry."""
    return urdf_mjspec(robot_description())


@lru_cache(maxsize=4)
def _compiled_xml(spec_path: str, timestep: float) -> str:
    """The whole scene, compiled once per process and kept as XML (a model per twin is loaded
    from it: quick, and independent of the others)."""
    return compile_quietly(lambda: _build_scene(load_embodiment(spec_path), timestep))


def _build_scene(spec: Embodiment, timestep: float) -> str:
    scene = mujoco.MjSpec.from_file(str(SCENE_PATH))
    robot = _robot_spec()
    for geom in robot.geoms:
        geom.contype, geom.conaffinity = 2, 1
        if "finger" in geom.parent.name:  # grippy pads: a held bar neither slips nor spins
            geom.friction, geom.condim = [1.5, 0.02, 0.001], 4
            geom.rgba = [0.9, 0.45, 0.1, 1.0]
    scene.attach(robot, frame=scene.worldbody.add_frame(), prefix="")
    effort = {j.name: j.effort for j in spec.joints}
    for group in spec.groups:
        for name in group.joints:
            scene.joint(name).armature = ARMATURE
            actuator = scene.add_actuator()
            actuator.name, actuator.target = name, name
            actuator.trntype = mujoco.mjtTrn.mjTRN_JOINT
            actuator.set_to_position(kp=STIFFNESS[group.name], dampratio=1.0)
            actuator.forcelimited = True
            actuator.forcerange = [-effort[name], effort[name]]
    for camera in spec.cameras:
        optical = scene.body(f"{camera.name}_camera_optical_frame")
        # an optical frame looks along z with y down; a MuJoCo camera along -z with y up
        optical.add_camera(name=camera.name, quat=[0.0, 1.0, 0.0, 0.0], fovy=CAMERA_FOVY)
    scene.option.timestep = timestep
    scene.compile()
    return scene.to_xml()


class HumanoidSim(MujocoTwin):
    """The humanoid on its stand at a table, a blue bar and a basket, in MuJoCo.

    Args:
        spec: the humanoid embodiment (joint order, limits, groups, cameras); loaded when omitted.
        render_cameras: the cameras `read_camera` renders ("head", "left_wrist", "right_wrist").
        timestep: physics step in seconds.

    Besides the Robot interface: `reset(seed)`, `follow(follower, dt)`, `task_success()`,
    `instruction`, and the privileged `object_pose()` (the bar) for experts and evaluation.
    """

    episode_time_limit_s = 20.0  # the scripted expert takes about 13 s

    def __init__(self, spec: Embodiment | None = None, *, render_cameras: Sequence[str] = ("head",),
                 timestep: float = 0.002):
        if timestep <= 0:
            raise ValueError(f"timestep must be > 0 s, got {timestep}")
        spec = spec if spec is not None else load_embodiment("humanoid")
        path = share_path("config", "embodiments", f"{spec.name}.yaml")
        model = mujoco.MjModel.from_xml_string(_compiled_xml(str(path), timestep))
        super().__init__(spec, model, render_cameras)
        self._bar_qpos = self.model.jnt_qposadr[self.model.joint("bar").id]
        self._bar_body = self.model.body("bar").id
        self._hand_geoms = self._geoms_under("left_wrist_yaw_link") | self._geoms_under("right_wrist_yaw_link")
        self.reset(seed=None)

    # -- features -------------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        return INSTRUCTION

    @property
    def bar_half_size(self) -> np.ndarray:
        """(3,) m: half the bar's extent along its own x (across), y (along it) and z."""
        return self.model.geom("bar").size.copy()

    @property
    def basket_position(self) -> np.ndarray:
        """(3,) m: middle of the basket's floor (top face)."""
        return self.model.site("basket").pos + self.model.body("basket").pos

    @property
    def basket_inner_half_size(self) -> np.ndarray:
        """(2,) m: half the basket's inside in x and y (between the walls)."""
        floor = self.model.geom("basket_floor").size
        wall = float(self.model.geom("basket_back").size[0])
        return np.array([floor[0] - 2 * wall, floor[1] - 2 * wall])

    @property
    def basket_rim_height(self) -> float:
        """m: height of the basket's walls above the world floor."""
        geom = self.model.geom("basket_back")
        return float(self.model.body("basket").pos[2] + geom.pos[2] + geom.size[2])

    # -- episodes -------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Robot to its rest pose (zeros: standing, upper arms down, forearms forward, grippers
        shut), time to zero, bar to a pose drawn from `seed` (None: the middle of its area)."""
        self._reset_robot()
        self.data.qpos[self._bar_qpos : self._bar_qpos + 7] = self._bar_start_pose(seed)
        mujoco.mj_forward(self.model, self.data)

    def _bar_start_pose(self, seed: int | None) -> np.ndarray:
        """(7,) position (m) and unit quaternion (w, x, y, z) of the bar lying on the table."""
        xy, yaw = BAR_CENTER_XY, 0.0
        if seed is not None:
            rng = np.random.default_rng(seed)
            xy = BAR_CENTER_XY + rng.uniform(-BAR_XY_RANGE, BAR_XY_RANGE, size=2)
            yaw = rng.uniform(-BAR_YAW_RANGE, BAR_YAW_RANGE)
        table = self.model.geom("table")
        height = float(table.pos[2] + table.size[2] + self.bar_half_size[2])
        return np.array([*xy, height, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])

    def object_pose(self) -> np.ndarray:
        """(7,) privileged bar pose: position (m, world) then quaternion (w, x, y, z)."""
        return self.data.qpos[self._bar_qpos : self._bar_qpos + 7].copy()

    def task_success(self) -> bool:
        """The bar lies in the basket (its centre inside the walls, below the rim), still, and no
        hand touches it."""
        position = self.object_pose()[:3]
        offset = np.abs(position[:2] - self.basket_position[:2])
        inside = bool(np.all(offset <= self.basket_inner_half_size)) and position[2] < self.basket_rim_height
        still = self._body_speed(self._bar_body) < RESTING_SPEED
        return inside and still and not self._touching(self._bar_body, self._hand_geoms)
