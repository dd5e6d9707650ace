"""Scripted expert for the humanoid's bimanual task: demonstrations without a human.

From the bar's position (privileged, read from the simulator) and the joints at the start it
plans one episode: lean and turn to the right, pick the bar's right end with the right hand,
bring it to the middle, take its other half with the left hand, let go with the right, turn to
the left and lower the bar into the basket. Each hand moves along straight lines pointing down,
turned into joints by damped-least-squares IK on the twin's own kinematics (the URDF's); the
waist follows a scripted posture per phase; the legs stay where they are.

    >>> expert = HumanoidExpert(spec, sim.object_pose()[:3], sim.read_joints().position)
    >>> expert.positions_at(1.3)    # (19,) commanded joint targets, 1.3 s after the episode start
    >>> experts.rollout(sim, expert)  # feed them at 10 Hz as the trajectory controllers would
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from librobot_drivers.embodiment import Embodiment
from librobot_drivers.sim.experts import PlannedTrajectory, plan_inputs, smoothstep
from librobot_drivers.sim.humanoid_sim import HumanoidSim

OPEN = 0.035  # m, each finger from the middle: a 7 cm gap around the 3 cm bar
SHUT = 0.0  # m, commanded shut: the bar stops the fingers, the servo's pull is the grip
GRIP_OFFSET = 0.065  # m, each hand grasps the bar this far from its middle
APPROACH = 0.07  # m, hands come down onto a grasp from this far above
TCP_ABOVE_CENTER = 0.008  # m, grasp point above the bar's centre: fingertips clear the table
HANDOVER = np.array([0.25, 0.0, 0.88])  # m, the bar's centre while it changes hands
DROP_ABOVE_RIM = 0.04  # m, bar bottom above the basket's rim when the left hand opens
SAMPLE_PERIOD = 0.04  # s, resolution of the planned trajectory

IK_ITERATIONS = 300
IK_TOLERANCE = 1e-5  # norm of the (m, rad) pose error that counts as reached
IK_DAMPING = 1e-4

# waist (yaw, roll, pitch), rad, per posture: lean forward over the table and turn to a side
WAIST = {"rest": (0.0, 0.0, 0.0), "pick": (-0.45, 0.0, 0.35), "middle": (0.0, 0.0, 0.2),
         "place": (0.5, 0.0, 0.35)}

# (phase, duration s, waist posture) in order; see HumanoidExpert._waypoints
PHASES = (
    ("reach", 2.0, "pick"),
    ("descend", 1.0, "pick"),
    ("grip", 0.6, "pick"),
    ("lift", 0.8, "pick"),
    ("to_middle", 1.8, "middle"),
    ("left_slide", 0.9, "middle"),
    ("left_grip", 0.6, "middle"),
    ("right_release", 0.5, "middle"),
    ("right_retreat", 0.7, "middle"),
    ("to_basket", 1.8, "place"),
    ("lower", 0.7, "place"),
    ("release", 0.5, "place"),
    ("retreat", 0.6, "place"),
)


TUCK = "tuck"  # a hand's goal: its arm to the start pose with the forearm raised, in joint space
TUCKED_ELBOW = -0.8  # rad: forearm raised clear of the table while the body leans over it

# closing direction of each hand's fingers, rad from world x: mirror images of each other
HAND_YAW = {"right": 0.0, "left": np.pi}


def pointing_down(yaw: float) -> np.ndarray:
    """(3, 3) hand rotation: fingers (x) pointing down, closing (y) along `yaw` rad from world x."""
    c, s = np.cos(yaw), np.sin(yaw)
    x, y = np.array([0.0, 0.0, -1.0]), np.array([c, s, 0.0])
    return np.column_stack([x, y, np.cross(x, y)])


@dataclass(frozen=True)
class _Hands:
    """Both hands' goal at the end of a phase: TCP positions (m; None: the arm keeps its joints;
    TUCK: out of the way, see _tucked) and finger openings (m)."""

    right: np.ndarray | str | None
    right_grip: float
    left: np.ndarray | str | None
    left_grip: float


class _Kinematics:
    """The twin's forward kinematics and a per-arm IK, on a scratch copy of its model."""

    def __init__(self, spec: Embodiment):
        sim = HumanoidSim(spec, render_cameras=())
        self.model, self.data = sim.model, mujoco.MjData(sim.model)
        self.qpos = sim._qpos  # qpos address of each spec joint
        self.dof = sim._qvel
        self.index = {name: i for i, name in enumerate(spec.joint_names)}
        self.lower, self.upper = spec.lower_limits, spec.upper_limits
        self.arms = {side: spec.group_index(spec.group(f"{side}_arm")) for side in ("left", "right")}
        self.tcp = {side: self.model.body(f"{side}_tcp_link").id for side in ("left", "right")}
        # the scene the plan aims at: basket floor centre (3,) m, rim height m, bar half height m
        self.basket = (sim.basket_position, sim.basket_rim_height, float(sim.bar_half_size[2]))

    def tcp_pose(self, q: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self.qpos] = q
        mujoco.mj_kinematics(self.model, self.data)
        body = self.tcp[side]
        return self.data.xpos[body].copy(), self.data.xmat[body].reshape(3, 3).copy()

    def solve(self, q: np.ndarray, side: str, position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
        """`q` (all joints) with `side`'s arm moved to put its TCP at `position` with `rotation`."""
        q = q.copy()
        arm = self.arms[side]
        columns = self.dof[arm]
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        for _ in range(IK_ITERATIONS):
            tcp, tcp_rotation = self.tcp_pose(q, side)
            turn = 0.5 * np.sum(np.cross(tcp_rotation.T, rotation.T), axis=0)
            error = np.concatenate([position - tcp, turn])
            if np.linalg.norm(error) < IK_TOLERANCE:
                return q
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacBody(self.model, self.data, jacp, jacr, self.tcp[side])
            jacobian = np.vstack([jacp[:, columns], jacr[:, columns]])
            step = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + IK_DAMPING * np.eye(6), error)
            q[arm] = np.clip(q[arm] + step, self.lower[arm], self.upper[arm])
        if np.linalg.norm(error[:3]) > 2e-3 or np.linalg.norm(error[3:]) > 2e-2:
            raise ValueError(f"the {side} hand cannot reach {np.round(position, 3).tolist()} m pointing "
                             f"down: residual {np.round(error, 4).tolist()}")
        return q


_KINEMATICS: dict[tuple[str, ...], _Kinematics] = {}


def _kinematics(spec: Embodiment) -> _Kinematics:
    """The twin's kinematics for `spec`, built once per process (a model and scratch state)."""
    key = (spec.name, *spec.joint_names)
    if key not in _KINEMATICS:
        _KINEMATICS[key] = _Kinematics(spec)
    return _KINEMATICS[key]


class HumanoidExpert(PlannedTrajectory):
    """A planned handover-and-place trajectory for one episode.

    Args:
        spec: the humanoid embodiment (joint order, limits, groups).
        object_position: (3,) m, the bar's centre at the start of the episode.
        start_positions: (dof,) joints when the plan starts (every joint, spec order).
    """

    def __init__(self, spec: Embodiment, object_position: np.ndarray, start_positions: np.ndarray):
        object_position, start_positions = plan_inputs(spec, object_position, start_positions)
        self.spec = spec
        self._kin = _kinematics(spec)
        self._waist = spec.group_index(spec.group("waist"))
        self._grippers = {side: self._kin.index[f"{side}_gripper_joint"] for side in ("left", "right")}
        times, positions = self._plan(object_position, start_positions)
        # the policy's view: the commanded joints (the legs are held by their controller)
        self._times, self._positions = times, positions[:, spec.commanded_index]

    # -- planning -------------------------------------------------------------------------------
    def _tucked(self, start: np.ndarray, side: str) -> np.ndarray:
        """(7,) `side`'s arm as it started, the forearm raised: when the body leans over the
        table, a forearm pointing forward would sweep the table top."""
        arm = start[self._kin.arms[side]].copy()
        arm[3] = TUCKED_ELBOW  # shoulder pitch, roll, yaw, elbow, ...
        return arm

    def _waypoints(self, bar: np.ndarray, start: np.ndarray) -> dict[str, _Hands]:
        """Where each phase of PHASES ends."""
        up = np.array([0.0, 0.0, APPROACH])
        grasp_height = np.array([0.0, 0.0, TCP_ABOVE_CENTER])
        pick = bar + grasp_height - [0.0, GRIP_OFFSET, 0.0]
        hand_right = HANDOVER - [0.0, GRIP_OFFSET, 0.0]
        hand_left = HANDOVER + [0.0, GRIP_OFFSET, 0.0]
        basket, rim, half_height = self._kin.basket
        drop = np.array([basket[0], basket[1] + GRIP_OFFSET, rim + DROP_ABOVE_RIM + half_height])
        drop += grasp_height
        right_away = hand_right + [0.0, -0.04, 0.05]  # off the bar's end and up
        return {
            "reach": _Hands(pick + up, OPEN, TUCK, SHUT),
            "descend": _Hands(pick, OPEN, None, SHUT),
            "grip": _Hands(pick, SHUT, None, SHUT),
            "lift": _Hands(pick + 1.5 * up, SHUT, None, OPEN),
            # the left hand slides onto the bar along it, from its free end
            "to_middle": _Hands(hand_right, SHUT, hand_left + [0.0, APPROACH, 0.0], OPEN),
            "left_slide": _Hands(hand_right, SHUT, hand_left, OPEN),
            "left_grip": _Hands(hand_right, SHUT, hand_left, SHUT),
            "right_release": _Hands(hand_right, OPEN, hand_left, SHUT),
            "right_retreat": _Hands(right_away, OPEN, hand_left, SHUT),
            "to_basket": _Hands(TUCK, SHUT, drop + up, SHUT),
            "lower": _Hands(None, SHUT, drop, SHUT),
            "release": _Hands(None, SHUT, drop, OPEN),
            "retreat": _Hands(None, SHUT, drop + up, OPEN),
        }

    def _plan(self, bar: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sample the episode: times (N,) s and joint targets (N, dof).

        Within a phase the waist moves in joint space and each hand along a straight line from
        where the previous phase left it, all with minimum-jerk timing. A hand's first move (from
        wherever its arm started) is in joint space, to the IK solution of its goal.
        """
        waypoints = self._waypoints(bar, start)
        q = start.copy()
        hands: dict[str, np.ndarray | None] = {"right": None, "left": None}
        times, positions = [0.0], [start.copy()]
        waist = start[self._waist]
        grips = {side: start[self._grippers[side]] for side in ("left", "right")}
        for name, duration, posture in PHASES:
            goal = waypoints[name]
            goal_waist = np.array(WAIST[posture])
            targets = {"right": (goal.right, goal.right_grip), "left": (goal.left, goal.left_grip)}
            arms_from, arms_to = {}, {}
            for side, (tcp, _) in targets.items():
                arm = self._kin.arms[side]
                if isinstance(tcp, str):  # TUCK: joint space
                    arms_from[side], arms_to[side] = q[arm].copy(), self._tucked(start, side)
                elif tcp is not None and hands[side] is None:  # first move: joint space
                    seed = q.copy()
                    seed[self._waist] = goal_waist
                    seed[arm] = _nominal_arm(side)
                    arms_from[side] = q[arm].copy()
                    arms_to[side] = self._kin.solve(seed, side, tcp, pointing_down(HAND_YAW[side]))[arm]
            steps = max(1, round(duration / SAMPLE_PERIOD))
            for k in range(1, steps + 1):
                s = smoothstep(k / steps)
                q[self._waist] = waist + s * (goal_waist - waist)
                for side, (tcp, grip) in targets.items():
                    if side in arms_to:
                        arm = self._kin.arms[side]
                        q[arm] = arms_from[side] + s * (arms_to[side] - arms_from[side])
                    elif tcp is not None:
                        q = self._kin.solve(q, side, hands[side] + s * (tcp - hands[side]),
                                            pointing_down(HAND_YAW[side]))
                    q[self._grippers[side]] = grips[side] + s * (grip - grips[side])
                times.append(times[-1] + duration / steps)
                positions.append(q.copy())
            waist = goal_waist
            hands = {side: None if isinstance(tcp, str) else tcp for side, (tcp, _) in targets.items()}
            grips = {"right": goal.right_grip, "left": goal.left_grip}
        return np.array(times), np.array(positions)


def _nominal_arm(side: str) -> np.ndarray:
    """(7,) rad, an arm reaching forward with the hand pointing down: where the IK of a hand's
    first goal starts (shoulder pitch, roll, yaw, elbow, wrist roll, pitch, yaw)."""
    s = 1.0 if side == "left" else -1.0
    return np.array([-0.3, 0.2 * s, 0.0, 0.5, 1.57 * s, 1.0, 0.0])
