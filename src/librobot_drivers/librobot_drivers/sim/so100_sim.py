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
from librobot_drivers.sim.twin import MujocoTwin

SCENE_PATH = share_path("description", "mujoco", "so100_scene.xml")
INSTRUCTION = "put the red cube in the green square"

CUBE_CENTER_XY = np.array([0.16, 0.08])  # m, middle of the area the cube starts in
CUBE_XY_RANGE = 0.04  # m, the cube starts within +-this of CUBE_CENTER_XY in x and in y
CUBE_YAW_RANGE = 0.25  # rad, and turned by up to +-this about the vertical

RESTING_HEIGHT_TOLERANCE = 0.005  # m above its resting height the cube still counts as down
RESTING_SPEED = 0.02  # m/s, below this the cube counts as still


class SO100Sim(MujocoTwin):
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
        if timestep <= 0:
            raise ValueError(f"timestep must be > 0 s, got {timestep}")
        model = mujoco.MjModel.from_xml_path(str(scene))
        model.opt.timestep = timestep
        super().__init__(spec if spec is not None else load_embodiment("so100"), model, render_cameras)
        self._cube_qpos = self.model.jnt_qposadr[self.model.joint("cube").id]
        self._cube_body = self.model.body("cube").id
        self._gripper_geoms = self._geoms_under("gripper_link")
        self.reset(seed=None)

    # -- features -------------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        return INSTRUCTION

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
        self._reset_robot()
        self.data.qpos[self._cube_qpos : self._cube_qpos + 7] = self._cube_start_pose(seed)
        mujoco.mj_forward(self.model, self.data)

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
        still = self._body_speed(self._cube_body) < RESTING_SPEED
        held = self._touching(self._cube_body, self._gripper_geoms)
        return bool(over_target and lying and still and not held)
