"""MuJoCo twin of the SO-100 with a pick-and-place task: put the red cube in the green square.

    >>> sim = SO100Sim(load_embodiment("so100"))
    >>> sim.connect(); sim.reset(seed=3)
    >>> follower = TrajectoryFollower(sim.read_joints().position)
    >>> follower.set_trajectory(sim.time, sim.time, times, targets)
    >>> sim.follow(follower, 0.1)        # 0.1 s of it, like a trajectory controller
    >>> frame = sim.read_camera("front")  # (120, 160, 3) uint8, rendered on demand
    >>> sim.task_success()

The scene (description/mujoco/so100_scene.xml) has the arm's kinematics of the URDF. Joint
positions are in the embodiment's order and ROS units (radians); positions in metres, world
frame with x forward from the robot, z up, origin on the table top under the pan axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import mujoco
import numpy as np

from librobot_drivers.embodiment import Embodiment, load_embodiment
from librobot_drivers.resources import share_path
from librobot_drivers.robot import JointReading, RobotNotConnectedError, SimulatedRobot
from librobot_drivers.trajectory import TrajectoryFollower

SCENE_PATH = share_path("description", "mujoco", "so100_scene.xml")
INSTRUCTION = "put the red cube in the green square"

CUBE_CENTER_XY = np.array([0.16, 0.08])  # m, middle of the area the cube starts in
CUBE_XY_RANGE = 0.04  # m, the cube starts within +-this of CUBE_CENTER_XY in x and in y
CUBE_YAW_RANGE = 0.25  # rad, and turned by up to +-this about the vertical

RESTING_HEIGHT_TOLERANCE = 0.005  # m above its resting height the cube still counts as down
RESTING_SPEED = 0.02  # m/s, below this the cube counts as still


class SO100Sim(SimulatedRobot):
    """The SO-100 arm, a table, a red cube and a green target square in MuJoCo.

    Args:
        spec: the SO-100 embodiment (joint order, limits, camera sizes); loaded when omitted.
        render_cameras: the scene cameras `read_camera` renders ("front", "wrist"); all of the
            same size in `spec`.
        timestep: physics step in seconds; larger is faster and less accurate.
        scene: the MJCF scene file.

    Besides the Robot interface: `reset(seed)`, `follow(follower, dt)`, `task_success()`,
    `instruction`, and the privileged `object_pose()` for experts and evaluation. `model` and
    `data` are the MuJoCo model and state, for tests and tools.
    """

    def __init__(
        self,
        spec: Embodiment | None = None,
        *,
        render_cameras: Sequence[str] = ("front",),
        timestep: float = 0.002,
        scene: str | Path = SCENE_PATH,
    ):
        super().__init__(spec if spec is not None else load_embodiment("so100"))
        if timestep <= 0:
            raise ValueError(f"timestep must be > 0 s, got {timestep}")
        self.model = mujoco.MjModel.from_xml_path(str(scene))
        self.model.opt.timestep = timestep
        self.data = mujoco.MjData(self.model)
        self._qpos, self._qvel, self._actuators = self._arm_addresses()
        self._cube_qpos = self.model.jnt_qposadr[self.model.joint("cube").id]
        self._cube_body = self.model.body("cube").id
        self._gripper_geoms = self._geoms_under("gripper_link")
        self._render_cameras = tuple(render_cameras)
        self._frame_size = self._camera_frame_size(self._render_cameras)
        self._renderer: mujoco.Renderer | None = None
        self._frames: dict[str, np.ndarray] = {}
        self._connected = False
        self._requested_time = 0.0
        self.reset(seed=None)

    # -- scene lookup ----------------------------------------------------------------------------
    def _arm_addresses(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """qpos, qvel and actuator indices of the spec's joints, in the spec's order."""
        joint_ids = []
        for name in self.spec.joint_names:
            joint_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if joint_id < 0:
                raise ValueError(f"scene has no joint {name!r} of embodiment {self.spec.name!r}")
            joint_ids.append(joint_id)
        actuator_of_joint = {
            int(self.model.actuator_trnid[a, 0]): a for a in range(self.model.nu)
        }
        missing = [
            name for name, j in zip(self.spec.joint_names, joint_ids) if j not in actuator_of_joint
        ]
        if missing:
            raise ValueError(f"scene has no position actuator for joints {missing}")
        return (
            self.model.jnt_qposadr[joint_ids],
            self.model.jnt_dofadr[joint_ids],
            np.array([actuator_of_joint[j] for j in joint_ids]),
        )

    def _geoms_under(self, body_name: str) -> frozenset[int]:
        """Ids of the geoms of `body_name` and of every body below it."""
        root = self.model.body(body_name).id
        bodies = {root}
        for body in range(root + 1, self.model.nbody):  # children follow their parent
            if self.model.body_parentid[body] in bodies:
                bodies.add(body)
        return frozenset(g for g in range(self.model.ngeom) if self.model.geom_bodyid[g] in bodies)

    def _camera_frame_size(self, names: Sequence[str]) -> tuple[int, int]:
        """(height, width) shared by the cameras `names`, from the spec."""
        for name in names:
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, name) < 0:
                raise ValueError(f"scene has no camera {name!r}; render_cameras={list(names)}")
        sizes = {(self.spec.camera(n).height, self.spec.camera(n).width) for n in names}
        if len(sizes) > 1:
            raise ValueError(f"render_cameras {list(names)} differ in size {sorted(sizes)}; "
                             "one renderer needs one (height, width)")
        return sizes.pop() if sizes else (0, 0)

    # -- lifecycle ------------------------------------------------------------------------------
    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._frames.clear()
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def _require_connection(self, action: str) -> None:
        if not self._connected:
            raise RobotNotConnectedError(f"{self.spec.name}: {action} before connect()")

    # -- features -------------------------------------------------------------------------------
    @property
    def camera_names(self) -> list[str]:
        return list(self._render_cameras)

    @property
    def instruction(self) -> str:
        return INSTRUCTION

    @property
    def rest_positions(self) -> np.ndarray:
        """(dof,) rad: the pose after reset, zeros clamped into the limits (URDF initial_value)."""
        return self.spec.clip(np.zeros(self.spec.dof))

    @property
    def target_position(self) -> np.ndarray:
        """(3,) m: centre of the green target square, on the table top."""
        return self.model.site("target").pos.copy()

    @property
    def target_half_size(self) -> float:
        """m: half the side of the green target square."""
        return float(self.model.geom("target_zone").size[0])

    @property
    def cube_half_size(self) -> float:
        """m: half the edge of the cube."""
        return float(self.model.geom("cube").size[0])

    # -- episodes -------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Arm to the rest pose, time to zero, cube to a random pose drawn from `seed`.

        `seed=None` puts the cube at the middle of its start area, unturned.
        """
        mujoco.mj_resetData(self.model, self.data)
        rest = self.rest_positions
        self.data.qpos[self._qpos] = rest
        self.data.ctrl[self._actuators] = rest
        self._last_command = rest
        self.data.qpos[self._cube_qpos : self._cube_qpos + 7] = self._cube_start_pose(seed)
        mujoco.mj_forward(self.model, self.data)
        self._requested_time = 0.0
        self._frames.clear()

    def _cube_start_pose(self, seed: int | None) -> np.ndarray:
        """(7,) position (m) and unit quaternion (w, x, y, z) of the cube resting on the table."""
        xy, yaw = CUBE_CENTER_XY, 0.0
        if seed is not None:
            rng = np.random.default_rng(seed)
            xy = CUBE_CENTER_XY + rng.uniform(-CUBE_XY_RANGE, CUBE_XY_RANGE, size=2)
            yaw = rng.uniform(-CUBE_YAW_RANGE, CUBE_YAW_RANGE)
        return np.array([*xy, self.cube_half_size, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])

    def object_pose(self) -> np.ndarray:
        """(7,) privileged cube pose: position (m, world) then quaternion (w, x, y, z).

        For scripted experts and evaluation only; a policy must see the cube through cameras.
        """
        return self.data.qpos[self._cube_qpos : self._cube_qpos + 7].copy()

    def task_success(self) -> bool:
        """The cube's centre is over the target square, it rests on the table and is let go."""
        position = self.object_pose()[:3]
        offset = np.abs(position[:2] - self.target_position[:2])
        over_target = np.all(offset <= self.target_half_size)
        lying = position[2] <= self.cube_half_size + RESTING_HEIGHT_TOLERANCE
        return bool(over_target and lying and self._cube_is_still() and not self._cube_is_held())

    def _cube_is_still(self) -> bool:
        velocity = np.empty(6)
        mujoco.mj_objectVelocity(
            self.model, self.data, mujoco.mjtObj.mjOBJ_BODY, self._cube_body, velocity, 0
        )
        return bool(np.linalg.norm(velocity[3:]) < RESTING_SPEED)

    def _cube_is_held(self) -> bool:
        """Whether any gripper geom touches the cube."""
        for contact in self.data.contact[: self.data.ncon]:
            bodies = {self.model.geom_bodyid[contact.geom1], self.model.geom_bodyid[contact.geom2]}
            if self._cube_body in bodies and {contact.geom1, contact.geom2} & self._gripper_geoms:
                return True
        return False

    # -- I/O ------------------------------------------------------------------------------------
    def read_joints(self) -> JointReading:
        """Positions (rad), velocities (rad/s) and actuator torques (N m), in the spec's order."""
        self._require_connection("read_joints")
        return JointReading(
            position=self.data.qpos[self._qpos].copy(),
            velocity=self.data.qvel[self._qvel].copy(),
            effort=self.data.actuator_force[self._actuators].copy(),
        )

    def read_camera(self, name: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB of camera `name`, rendered at most once per simulation state.

        The frame is read-only (it is cached until the next `step` or `reset`).
        """
        self._require_connection("read_camera")
        if name not in self._render_cameras:
            raise KeyError(
                f"camera {name!r} is not rendered; render_cameras={list(self._render_cameras)}"
            )
        frame = self._frames.get(name)
        if frame is None:
            frame = self._render(name)
            self._frames[name] = frame
        return frame

    def _render(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            height, width = self._frame_size
            self._renderer = mujoco.Renderer(self.model, height=height, width=width)
        self._renderer.update_scene(self.data, camera=camera)
        frame = self._renderer.render()
        frame.flags.writeable = False
        return frame

    def _write_positions(self, positions: np.ndarray) -> None:
        self.data.ctrl[self._actuators] = positions

    # -- time -----------------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Advance by `dt` s (to the nearest physics step) holding the last command."""
        self._require_connection("step")
        steps = self._advance_clock(dt)
        if steps:
            mujoco.mj_step(self.model, self.data, nstep=steps)
        self._frames.clear()

    def follow(self, follower: TrajectoryFollower, dt: float) -> None:
        """Step `dt` s, commanding the follower's target at every physics step, as
        joint_trajectory_controller does at its update rate; the simulation's clock
        (`self.time`) is the follower's. Every target passes the safety filter of
        `send_positions`."""
        self._require_connection("follow")
        steps = self._advance_clock(dt)
        start = self.data.time
        for target in follower.positions_at(start + self.model.opt.timestep * np.arange(1, steps + 1)):
            self.send_positions(target)
            mujoco.mj_step(self.model, self.data)
        self._frames.clear()

    def _advance_clock(self, dt: float) -> int:
        """Add `dt` s to the time asked for; return the physics steps that catch up with it.

        Counting from the total asked for (not per call) keeps the simulation within half a
        physics step of it whatever the `dt`s, e.g. a driver's jittery wall-clock ticks.
        """
        if not dt >= 0:
            raise ValueError(f"{self.spec.name}: cannot step by dt={dt} s; expected >= 0")
        self._requested_time += dt
        return max(0, round((self._requested_time - self.data.time) / self.model.opt.timestep))

    @property
    def time(self) -> float:
        return float(self.data.time)
