"""A robot twin in MuJoCo: the Robot interface over a MuJoCo model whose joints carry the
embodiment's names, each with a position actuator (a velocity actuator for the joints of a
velocity group: an articulated vehicle's wheels). ROS-free.

Subclasses add the scene's task: `reset(seed)`, `instruction`, `task_success()` and the
privileged `object_pose()` for experts and evaluation.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable, Sequence

import mujoco
import numpy as np
import xacro

from librobot_drivers.articulated import wheel_speeds
from librobot_drivers.embodiment import Embodiment
from librobot_drivers.robot import JointReading, RobotNotConnectedError, SimulatedRobot
from librobot_drivers.trajectory import TrajectoryFollower



def expand_xacro(path: str | Path, use_mock_hardware: bool = True) -> str:
    """A robot's URDF from its xacro (the description ROS gets)."""
    return xacro.process_file(str(path), mappings={"use_mock_hardware": str(use_mock_hardware).lower()}).toxml()


def urdf_mjspec(urdf: str) -> mujoco.MjSpec:
    """A URDF as a MuJoCo spec: <ros2_control> dropped, every link kept as a body (cameras,
    tool frames), collision geometry only."""
    urdf = re.sub(r"<ros2_control.*?</ros2_control>", "", urdf, flags=re.S)
    urdf = re.sub(r"(<robot [^>]*>)", r'\1<mujoco><compiler fusestatic="false" discardvisual="true"/></mujoco>',
                  urdf, count=1)
    return mujoco.MjSpec.from_string(urdf)


def compile_quietly(build: Callable[[], str]) -> str:
    """`build()` (a scene's XML) with MuJoCo's warnings silenced: a robot attached without a
    prefix keeps the URDF's names, as ROS knows them, and MuJoCo warns (twice) that saving such a
    model may lose names."""
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda text: None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build()
    finally:
        mujoco.set_mju_user_warning(previous)


class MujocoTwin(SimulatedRobot):
    """The Robot interface on a MuJoCo model.

    `episode_time_limit_s`: how long an episode of the scene's task may take (the scripted
    expert's plan and a margin), the default of evaluations without ROS.

    Args:
        spec: the embodiment (joint order, limits, camera sizes).
        model: the compiled scene: a joint and a position actuator per spec joint, the cameras.
        render_cameras: the scene cameras `read_camera` renders; all of the same size in `spec`.

    `model` and `data` are the MuJoCo model and state, for tests and tools.
    """

    episode_time_limit_s = 15.0

    def __init__(self, spec: Embodiment, model: mujoco.MjModel, render_cameras: Sequence[str]):
        super().__init__(spec)
        self.model = model
        self.data = mujoco.MjData(self.model)
        self._qpos, self._qvel, self._actuators = self._joint_addresses()
        velocity = np.zeros(spec.dof, dtype=bool)
        velocity[spec.velocity_index] = True
        self._position_joints = np.flatnonzero(~velocity)
        self._velocity_joints = np.flatnonzero(velocity)
        # the policy's view (commanded joints; a drive's speed channel): what `follow` takes
        self.view = spec.commanded()
        self._view_columns = np.array([i for i, n in enumerate(self.view.joint_names) if n in spec.joint_names],
                                      dtype=np.intp)
        self._view_joints = np.array([spec.joint_names.index(self.view.joint_names[i]) for i in self._view_columns],
                                     dtype=np.intp)
        velocity_joints = [spec.joint_names[i] for i in self._velocity_joints]
        self._wheel_slots = (None if spec.drive is None else  # each wheel's place among the velocity joints
                             np.array([velocity_joints.index(w) for w in spec.drive.wheels], dtype=np.intp))
        self._render_cameras = tuple(render_cameras)
        self._frame_size = self._camera_frame_size(self._render_cameras)
        self._renderer: mujoco.Renderer | None = None
        self._frames: dict[str, np.ndarray] = {}
        self._connected = False
        self._requested_time = 0.0

    # -- scene lookup ----------------------------------------------------------------------------
    def _joint_addresses(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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

    def _touching(self, body: int, geoms: frozenset[int]) -> bool:
        """Whether any of `geoms` touches `body`."""
        for contact in self.data.contact[: self.data.ncon]:
            bodies = {self.model.geom_bodyid[contact.geom1], self.model.geom_bodyid[contact.geom2]}
            if body in bodies and {contact.geom1, contact.geom2} & geoms:
                return True
        return False

    def _body_speed(self, body: int) -> float:
        """m/s, linear speed of `body`'s origin."""
        velocity = np.empty(6)
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_BODY, body, velocity, 0)
        return float(np.linalg.norm(velocity[3:]))

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
    def rest_positions(self) -> np.ndarray:
        """(dof,) rad: the pose after reset, zeros clamped into the limits (URDF initial_value)."""
        return self.spec.clip(np.zeros(self.spec.dof))

    # -- episodes -------------------------------------------------------------------------------
    def _reset_robot(self) -> None:
        """Physics to the model's initial state, joints and their actuators at the rest pose,
        time to zero (a subclass then places its objects and calls mj_forward)."""
        mujoco.mj_resetData(self.model, self.data)
        rest = self.rest_positions
        self.data.qpos[self._qpos] = rest
        self.data.ctrl[self._actuators] = rest
        self._last_command = rest
        self._requested_time = 0.0
        self._frames.clear()

    # -- I/O ------------------------------------------------------------------------------------
    def read_joints(self) -> JointReading:
        """Positions (rad), velocities (rad/s) and actuator forces (N m), in the spec's order."""
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
        self.data.ctrl[self._actuators[self._position_joints]] = positions[self._position_joints]

    def _write_velocities(self, velocities: np.ndarray) -> None:
        if not len(self._velocity_joints):
            super()._write_velocities(velocities)
        self.data.ctrl[self._actuators[self._velocity_joints]] = velocities

    def policy_state(self) -> np.ndarray:
        """(view dof,) the state as the policy sees it (`spec.commanded()`): commanded joints'
        positions, a drive's ground speed from its wheels."""
        reading = self.read_joints()
        return self.view.state_values(self.spec.joint_names, reading.position, reading.velocity)

    def command_view(self, target: np.ndarray) -> None:
        """Command a target of the policy's view (view dof,): its joints' positions (the held
        joints keep their last command) and, for a drive, wheel speeds for its ground speed at
        the measured articulation angle and rate, as the drive node does for /cmd_vel."""
        positions = (self._last_command if self._last_command is not None else self.rest_positions).copy()
        positions[self._view_joints] = target[self._view_columns]
        self.send_positions(positions)
        drive = self.spec.drive
        if drive is not None:
            articulation = self.spec.joint_names.index(drive.articulation_joint)
            gamma = self.data.qpos[self._qpos[articulation]]
            rate = self.data.qvel[self._qvel[articulation]]
            velocities = np.zeros(len(self._velocity_joints))
            velocities[self._wheel_slots] = wheel_speeds(drive.geometry, target[self.view.speed_index], gamma, rate)
            self.send_velocities(velocities)

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
        (`self.time`) is the follower's. `follower`: anything with `positions_at(times)` over
        the policy's view (`self.view`: the commanded joints, a drive's ground speed), e.g.
        GroupFollowers with one follower per commanded group; every target goes through
        `command_view` and the safety filter of `send_positions`."""
        self._require_connection("follow")
        steps = self._advance_clock(dt)
        start = self.data.time
        for target in follower.positions_at(start + self.model.opt.timestep * np.arange(1, steps + 1)):
            self.command_view(target)
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
