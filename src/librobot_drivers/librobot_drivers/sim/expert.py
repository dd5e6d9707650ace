"""Scripted expert for the SO-100 pick-and-place scene: demonstrations without a human.

From the cube's position (privileged, read from the simulator) and the arm's joints at the start
of an episode it plans one joint-space trajectory: open the jaw on the way to above the cube,
descend, close, lift, carry to above the green square, lower, open and back off. Straight lines
of the grasp point (TCP) are turned into joints with a small damped-least-squares IK on the
arm's own kinematics, read from the scene file (which a test checks against the URDF).

    >>> expert = ScriptedExpert(spec, sim.object_pose()[:3], sim.read_joints().position)
    >>> expert.positions_at(1.3)    # (6,) joint targets, rad, 1.3 s after the episode start
    >>> experts.rollout(sim, expert)  # feed them at 10 Hz as a trajectory controller would
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import mujoco
import numpy as np

from librobot_drivers.embodiment import Embodiment
from librobot_drivers.sim.experts import PlannedTrajectory, plan_inputs, smoothstep
from librobot_drivers.sim.so100_sim import SCENE_PATH

ARM_JOINTS = 5  # the joints that place the TCP; the sixth is the jaw
TCP_SITE = "tcp"

JAW_OPEN = 1.0  # rad, wide enough to come down around the cube
JAW_CLOSED = 0.0  # rad, jaws touching; the cube stops the jaw before, which makes the grip force
APPROACH_HEIGHT = 0.05  # m, above the grasp and place points the TCP comes down from
GRASP_ABOVE_CENTER = 0.006  # m, TCP above the cube centre in the grasp: jaw tips clear the table
FIXED_JAW_CLEARANCE = 0.004  # m, gap left between the fixed jaw and the cube while coming down
RELEASE_HEIGHT = 0.004  # m, cube bottom above the table when the jaw opens
SAMPLE_PERIOD = 0.04  # s, resolution of the planned trajectory

IK_ITERATIONS = 100
IK_TOLERANCE = 1e-6  # norm of the (m, rad) pose error that counts as reached
IK_DAMPING = 1e-6  # damped least squares: keeps steps finite near singular poses

# (phase, duration in s) in order; see ScriptedExpert._plan
PHASES = (
    ("reach", 1.8),
    ("descend", 1.0),
    ("close", 0.6),
    ("settle", 0.2),
    ("lift", 0.8),
    ("carry", 1.4),
    ("lower", 0.8),
    ("release", 0.5),
    ("retreat", 0.6),
)


@dataclass(frozen=True)
class ArmKinematics:
    """Forward kinematics from the world to the TCP over the first five joints, and IK.

    Joint i turns about `axes[i]` (its frame) at the origin of its frame, which sits at
    `offsets[i]` (m) in its parent's frame turned by `rotations[i]`; shapes (5, 3) and (5, 3, 3).
    The chain starts at `base_position`/`base_rotation` in the world and ends at `tcp` (3,), m,
    in the last joint's frame.
    """

    base_position: np.ndarray
    base_rotation: np.ndarray
    offsets: np.ndarray
    rotations: np.ndarray
    axes: np.ndarray
    tcp: np.ndarray

    @classmethod
    def from_model(cls, model: mujoco.MjModel, joint_names: list[str]) -> ArmKinematics:
        """Read the chain of `joint_names` and the `tcp` site from a MuJoCo model."""
        joints = [model.joint(name) for name in joint_names]
        bodies = [int(joint.bodyid[0]) for joint in joints]
        for joint in joints:
            if np.any(joint.pos != 0):
                raise ValueError(f"joint {joint.name!r} is off its body's origin: pos {joint.pos}")
        site = model.site(TCP_SITE)
        if site.bodyid[0] != bodies[-1]:
            raise ValueError(f"site {TCP_SITE!r} must sit on the body of joint {joint_names[-1]!r}")
        data = mujoco.MjData(model)
        mujoco.mj_kinematics(model, data)  # the base is fixed: any configuration will do
        base = model.body_parentid[bodies[0]]
        return cls(
            base_position=data.xpos[base].copy(),
            base_rotation=data.xmat[base].reshape(3, 3).copy(),
            offsets=model.body_pos[bodies].copy(),
            rotations=np.stack([_quaternion_matrix(model.body_quat[b]) for b in bodies]),
            axes=np.stack([joint.axis.copy() for joint in joints]),
            tcp=site.pos.copy(),
        )

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """TCP position (3,) and rotation (3, 3), joint origins (5, 3) and world axes (5, 3)."""
        position, rotation = self.base_position, self.base_rotation
        origins, axes = [], []
        for offset, local_rotation, axis, angle in zip(self.offsets, self.rotations, self.axes, q):
            position = position + rotation @ offset
            rotation = rotation @ local_rotation
            origins.append(position)
            axes.append(rotation @ axis)
            rotation = rotation @ _axis_angle_matrix(axis, angle)
        return position + rotation @ self.tcp, rotation, np.array(origins), np.array(axes)

    def solve(
        self,
        position: np.ndarray,
        rotation: np.ndarray,
        seed: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
    ) -> np.ndarray:
        """Joint angles (5,) that put the TCP at `position` (3,) m with `rotation` (3, 3).

        Damped least squares from `seed`, kept inside [`lower`, `upper`]. Raises ValueError
        when the pose is out of reach.
        """
        q = np.clip(seed, lower, upper)
        for _ in range(IK_ITERATIONS):
            tcp, tcp_rotation, origins, axes = self.forward(q)
            turn = 0.5 * np.sum(np.cross(tcp_rotation.T, rotation.T), axis=0)  # small-angle, rad
            error = np.concatenate([position - tcp, turn])  # (6,) m and rad
            if np.linalg.norm(error) < IK_TOLERANCE:
                return q
            jacobian = np.vstack([np.cross(axes, tcp - origins).T, axes.T])  # (6, 5)
            damped = jacobian @ jacobian.T + IK_DAMPING * np.eye(6)
            q = np.clip(q + jacobian.T @ np.linalg.solve(damped, error), lower, upper)
        raise ValueError(
            f"no joint solution puts the TCP at {np.round(position, 4).tolist()} m pointing "
            f"{np.round(rotation[:, 0], 3).tolist()}: residual {np.round(error, 5).tolist()}"
        )


def _axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by `angle` rad about the unit vector `axis` (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _quaternion_matrix(quaternion: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of a unit quaternion (w, x, y, z)."""
    matrix = np.empty(9)
    mujoco.mju_quat2Mat(matrix, np.asarray(quaternion, dtype=np.float64))
    return matrix.reshape(3, 3)


def pointing_down(yaw: float) -> np.ndarray:
    """(3, 3) TCP rotation with the gripper pointing down and the jaws closing along `yaw`.

    Columns are the TCP frame's axes in the world: x (along the fingers) down, z (from the
    fixed to the moving jaw) horizontal at angle `yaw` rad from the world x axis.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[0.0, -s, c], [0.0, c, s], [-1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class _Waypoint:
    """A gripper pose: TCP position (3,) m, jaw closing direction `yaw` rad, jaw angle rad."""

    position: np.ndarray
    yaw: float
    jaw: float

    def towards(self, other: _Waypoint, s: float) -> _Waypoint:
        """The pose a share `s` in [0, 1] of the straight way from this one to `other`."""
        return _Waypoint(
            self.position + s * (other.position - self.position),
            self.yaw + s * (other.yaw - self.yaw),
            self.jaw + s * (other.jaw - self.jaw),
        )


@dataclass(frozen=True)
class _Scene:
    """What the expert knows of the scene besides the cube's position."""

    kinematics: ArmKinematics
    target: np.ndarray  # (3,) m, centre of the target square on the table
    cube_half_size: float  # m


@lru_cache(maxsize=4)
def _scene(joint_names: tuple[str, ...]) -> _Scene:
    """Read the scene file once: arm kinematics over `joint_names`, target square, cube size."""
    model = mujoco.MjModel.from_xml_path(str(SCENE_PATH))
    return _Scene(
        kinematics=ArmKinematics.from_model(model, list(joint_names[:ARM_JOINTS])),
        target=model.site("target").pos.copy(),
        cube_half_size=float(model.geom("cube").size[0]),
    )


class ScriptedExpert(PlannedTrajectory):
    """A planned pick-and-place trajectory for one episode.

    Args:
        spec: the SO-100 embodiment (joint order and limits).
        object_position: (3,) m, the cube's centre in the world at the start of the episode.
        start_positions: (6,) rad, the joints when the plan starts.
        object_yaw: rad, the cube's turn about the vertical when known; the jaws then close on
            its faces. Turns of a few tenths of a radian are squared up by the jaws anyway.
    """

    def __init__(
        self,
        spec: Embodiment,
        object_position: np.ndarray,
        start_positions: np.ndarray,
        *,
        object_yaw: float = 0.0,
    ):
        if spec.dof != ARM_JOINTS + 1:
            raise ValueError(
                f"ScriptedExpert plans for {ARM_JOINTS} arm joints and a jaw; "
                f"embodiment {spec.name!r} has {spec.dof} joints"
            )
        self.spec = spec
        self._scene = _scene(tuple(spec.joint_names))
        self._lower = spec.lower_limits[:ARM_JOINTS]
        self._upper = spec.upper_limits[:ARM_JOINTS]
        object_position, start_positions = plan_inputs(spec, object_position, start_positions)
        self._times, self._positions = self._plan(object_position, object_yaw, start_positions)

    # -- planning -------------------------------------------------------------------------------
    def _plan(
        self, cube: np.ndarray, cube_yaw: float, start: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sample the whole episode: times (N,) s and joint targets (N, 6) rad.

        The first phase moves in joint space from `start` to above the cube; the others move
        the TCP along straight lines between the waypoints, with minimum-jerk timing.
        """
        waypoints = self._waypoints(cube, cube_yaw)
        above_cube = waypoints["reach"]
        above_cube_joints = self._solve(above_cube, self._seed_for(above_cube.position))
        times, positions = [0.0], [start]
        previous = None
        for name, duration in PHASES:
            goal = waypoints[name]
            steps = max(1, round(duration / SAMPLE_PERIOD))
            for k in range(1, steps + 1):
                s = smoothstep(k / steps)
                if previous is None:
                    arm = start[:ARM_JOINTS] + s * (above_cube_joints - start[:ARM_JOINTS])
                    jaw = start[ARM_JOINTS] + s * (goal.jaw - start[ARM_JOINTS])
                else:
                    arm = self._solve(previous.towards(goal, s), positions[-1][:ARM_JOINTS])
                    jaw = previous.jaw + s * (goal.jaw - previous.jaw)
                times.append(times[-1] + duration / steps)
                positions.append(np.append(arm, jaw))
            previous = goal
        return np.array(times), np.array(positions)

    def _waypoints(self, cube: np.ndarray, cube_yaw: float) -> dict[str, _Waypoint]:
        """Where each phase of PHASES ends."""
        grasp_yaw = self._grasp_yaw(cube, cube_yaw)
        closing = np.array([np.cos(grasp_yaw), np.sin(grasp_yaw), 0.0])
        grasp = cube + [0.0, 0.0, GRASP_ABOVE_CENTER] - FIXED_JAW_CLEARANCE * closing
        target = self._scene.target
        # Same wrist roll while carrying: the jaw direction turns with the arm.
        place_yaw = grasp_yaw + _bearing(target) - _bearing(cube)
        place_height = self._scene.cube_half_size + RELEASE_HEIGHT + GRASP_ABOVE_CENTER
        place = target + [0.0, 0.0, place_height]
        up = np.array([0.0, 0.0, APPROACH_HEIGHT])
        return {
            "reach": _Waypoint(grasp + up, grasp_yaw, JAW_OPEN),
            "descend": _Waypoint(grasp, grasp_yaw, JAW_OPEN),
            "close": _Waypoint(grasp, grasp_yaw, JAW_CLOSED),
            "settle": _Waypoint(grasp, grasp_yaw, JAW_CLOSED),
            "lift": _Waypoint(grasp + up, grasp_yaw, JAW_CLOSED),
            "carry": _Waypoint(place + up, place_yaw, JAW_CLOSED),
            "lower": _Waypoint(place, place_yaw, JAW_CLOSED),
            "release": _Waypoint(place, place_yaw, JAW_OPEN),
            "retreat": _Waypoint(place + up, place_yaw, JAW_OPEN),
        }

    def _grasp_yaw(self, cube: np.ndarray, cube_yaw: float) -> float:
        """Jaw closing direction (rad) along a cube face normal, nearest the arm's own bearing.

        With the wrist roll at zero and the gripper pointing down the jaws close along the
        horizontal line from the robot to the cube, so this keeps the roll small.
        """
        bearing = _bearing(cube)
        quarter_turns = np.round((bearing - cube_yaw) / (np.pi / 2))
        return float(cube_yaw + quarter_turns * np.pi / 2)

    def _seed_for(self, position: np.ndarray) -> np.ndarray:
        """(5,) rad, near the usual pose reaching down to `position`: elbow up, wrist down."""
        return np.array([-_bearing(position), 0.3, 1.0, 0.3, 0.0])

    def _solve(self, waypoint: _Waypoint, seed: np.ndarray) -> np.ndarray:
        """(5,) arm joints, rad, for the TCP at `waypoint`, starting the IK from `seed`."""
        return self._scene.kinematics.solve(
            waypoint.position, pointing_down(waypoint.yaw), seed, self._lower, self._upper
        )


def _bearing(position: np.ndarray) -> float:
    """rad: direction of `position` seen from above the robot's pan axis (world z)."""
    return float(np.arctan2(position[1], position[0]))
