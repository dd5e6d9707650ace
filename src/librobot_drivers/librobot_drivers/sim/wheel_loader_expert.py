"""Scripted expert for the wheel loader's loading task (WheelLoaderSim). ROS-free.

    >>> expert = WheelLoaderExpert(spec, sim.object_pose()[:3], sim.read_joints().position)
    >>> expert.positions_at(1.3)      # (4,) articulation, ground speed, boom, bucket, 1.3 s in
    >>> experts.rollout(sim, expert)  # feed it at 10 Hz as the controllers and the drive node would

The plan is the classic loading cycle, computed in advance on the articulated kinematics
(librobot_drivers.articulated) with every rate limit of the spec respected:

1. lower the arm, bucket flat, and drive straight into the bay's material;
2. curl the bucket while creeping in, then lift the arm to carry;
3. back out while articulating, so the machine turns towards the hopper (a Y-turn): the hopper is
   not in the cab camera's view yet, so this leg never depends on where it stands (a policy
   learning from the plans could not tell one leg from another). Given an `rng`, its length and
   articulation are drawn around the nominal ones, so that demonstrations start the approach from
   many poses and show how to steer back onto the hopper (as noise injection does for imitation
   learning, DART);
4. drive to the hopper, steering by pure pursuit onto the line through the hopper's middle,
   lifting the arm (the bucket kept at its carrying tilt) over the hopper's wall;
5. stop with the bucket over the hopper and dump.

Where the hopper stands (+-1 m, +-0.75 m) only shapes leg 4, which sees it ahead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from librobot_drivers.articulated import articulation_for_yaw_rate, body_yaw_rates
from librobot_drivers.embodiment import Embodiment
from librobot_drivers.sim.experts import PlannedTrajectory, plan_inputs

DT = 0.05  # s, planning step
DIG_BOOM = -0.61  # rad, arm down: the bucket floor on the ground (flat at bucket 0)
BUCKET_TILT = 0.61  # rad, the bucket joint's offset: its world pitch is -(boom + TILT + bucket)
CARRY_PITCH = 0.9  # rad, bucket lip up while carrying
DUMP_BOOM = 0.5  # rad, arm up: the bucket clears the hopper's walls
CARRY_BOOM = DIG_BOOM + 0.3  # rad, arm just off the ground while carrying
DUMP_BUCKET = -2.3  # rad, bucket tipped out
PILE_FRONT_X = 8.0  # m, where the material starts (the bay's mouth)
PENETRATION = 2.4  # m, how far the cutting edge goes into it: to the bay's back wall (about 25
# stones delivered; 1.8 m took about 15, close to the 12 of a success)
ARM_PIVOT = (0.9, 1.3)  # m, arm pivot ahead of the hinge and above the axle (the URDF's)
ARM_LENGTH = 3.0  # m, arm pivot to bucket pin
BUCKET_CENTRE = 0.65  # m, ahead of the pin
CUTTING_EDGE = 1.3  # m, ahead of the pin
DUMP_SHORT = 0.5  # m, the bucket's centre stops this far before the hopper's middle
APPROACH_SPEED = 1.2  # m/s
PUSH_SPEED = 1.0  # m/s, commanded into the material ...
PILE_PROGRESS = 0.7  # ... where the machine makes about this share of it (the heap resists)
CREEP_PROGRESS = 0.35  # and of its creep while curling
CREEP_SPEED = 0.3  # m/s, while curling in the material
REVERSE_SPEED = -1.5
CARRY_SPEED = 1.5
LOOKAHEAD = 4.0  # m, pure pursuit
REVERSE_ARTICULATION = -0.5  # rad, front frame turned right while backing out: the machine comes
# round to face the hopper on its left
REVERSE_DISTANCE = 6.5  # m
REVERSE_VARIATION = (0.1, 1.2)  # rad, m: the Y-turn's articulation and length vary +- these with an rng


def carry_bucket(boom: float, pitch: float = CARRY_PITCH) -> float:
    """The bucket angle that keeps the lip `pitch` rad up at arm angle `boom`."""
    return pitch - BUCKET_TILT - boom


@dataclass
class _State:
    x: float = 0.0  # rear axle centre, m
    y: float = 0.0
    heading: float = 0.0  # rear frame's yaw, rad
    gamma: float = 0.0  # articulation, rad
    speed: float = 0.0  # m/s
    boom: float = 0.0
    bucket: float = 0.0


class WheelLoaderExpert(PlannedTrajectory):
    """A planned loading cycle for one episode.

    Args:
        spec: the wheel loader embodiment.
        object_position: (3,) m, the middle of the hopper's floor.
        start_positions: (dof,) joints when the plan starts (every joint, spec order; the
            machine stands at the origin facing +x).
        rng: draws the Y-turn's articulation and length, uniformly within REVERSE_VARIATION of
            the nominal ones; None: the nominal turn.

    `alignment_error`: how far the planned dump ends from the ideal one (m of the bucket's centre
    across and along the hopper, plus twice the heading's error in rad), for diagnostics.
    """

    def __init__(self, spec: Embodiment, object_position: np.ndarray, start_positions: np.ndarray,
                 rng: np.random.Generator | None = None):
        object_position, start_positions = plan_inputs(spec, object_position, start_positions)
        self.spec = spec
        self.view = spec.commanded()
        self.drive = spec.drive
        joints = spec.joint_names
        limits = {n: spec.joints[joints.index(n)] for n in ("articulation_joint", "boom_joint", "bucket_joint")}
        self._rate = {n: limits[n].velocity for n in limits}
        self._acceleration = self.drive.speed.velocity
        start = _State(gamma=start_positions[joints.index("articulation_joint")],
                       boom=start_positions[joints.index("boom_joint")],
                       bucket=start_positions[joints.index("bucket_joint")])
        self.hopper = object_position[:2]
        self.reverse_articulation, self.reverse_distance = REVERSE_ARTICULATION, REVERSE_DISTANCE
        if rng is not None:
            self.reverse_articulation += rng.uniform(-REVERSE_VARIATION[0], REVERSE_VARIATION[0])
            self.reverse_distance += rng.uniform(-REVERSE_VARIATION[1], REVERSE_VARIATION[1])
        rows, self.alignment_error = self._plan(start, self.reverse_articulation, self.reverse_distance)
        self._times = DT * np.arange(len(rows))
        self._positions = np.array(rows)

    # -- the kinematic model ----------------------------------------------------------------------
    def _step(self, s: _State, rows: list, speed: float, gamma: float, boom: float, bucket: float,
              progress: float = 1.0) -> None:
        """Advance `s` by DT towards the given targets, each within its rate limit; record it.
        `progress`: the share of the commanded motion the machine makes (pushing into the
        material it makes less)."""
        limit = lambda now, target, rate: now + float(np.clip(target - now, -rate * DT, rate * DT))
        new_gamma = limit(s.gamma, gamma, self._rate["articulation_joint"])
        rate = (new_gamma - s.gamma) / DT
        s.speed = limit(s.speed, speed, self._acceleration)
        omega, _ = body_yaw_rates(self.drive.geometry, s.speed, 0.5 * (s.gamma + new_gamma), rate)
        mid = s.heading + 0.5 * DT * float(omega)
        s.x += progress * DT * s.speed * np.cos(mid)
        s.y += progress * DT * s.speed * np.sin(mid)
        s.heading += DT * float(omega)
        s.gamma = new_gamma
        s.boom = limit(s.boom, boom, self._rate["boom_joint"])
        s.bucket = limit(s.bucket, bucket, self._rate["bucket_joint"])
        rows.append([s.gamma, s.speed, s.boom, s.bucket])

    def _pin(self, s: _State) -> tuple[np.ndarray, float]:
        """The bucket pin's (x, y) on the ground plane, and the front frame's heading."""
        geometry = self.drive.geometry
        front = s.heading + s.gamma
        hinge = np.array([s.x, s.y]) + geometry.rear_axle * np.array([np.cos(s.heading), np.sin(s.heading)])
        reach = ARM_PIVOT[0] + ARM_LENGTH * np.cos(s.boom)
        return hinge + reach * np.array([np.cos(front), np.sin(front)]), front

    def _stopping_distance(self, s: _State) -> float:
        return s.speed**2 / (2 * self._acceleration)

    # -- the cycle ------------------------------------------------------------------------------------
    def _plan(self, start: _State, reverse_gamma: float, reverse_distance: float) -> tuple[list, float]:
        s = _State(**vars(start))
        rows: list = [[s.gamma, s.speed, s.boom, s.bucket]]
        # 1. into the material, arm down, bucket flat on the ground
        edge = lambda: self._pin(s)[0][0] + CUTTING_EDGE
        target = PILE_FRONT_X + PENETRATION
        while edge() + PILE_PROGRESS * self._stopping_distance(s) < target - 1e-3:
            inside = edge() > PILE_FRONT_X
            self._step(s, rows, PUSH_SPEED if inside else APPROACH_SPEED, 0.0, DIG_BOOM, 0.0,
                       PILE_PROGRESS if inside else 1.0)
        # 2. curl the bucket to carry while creeping in (the heap holds the machine back), then lift
        #    the arm off the ground
        while s.bucket < carry_bucket(DIG_BOOM) - 1e-6:
            self._step(s, rows, CREEP_SPEED, 0.0, DIG_BOOM, carry_bucket(DIG_BOOM), CREEP_PROGRESS)
        for _ in range(int(1.2 / DT)):
            self._step(s, rows, 0.0, 0.0, CARRY_BOOM, carry_bucket(s.boom))
        # 3. back out, turning
        travelled, last = 0.0, np.array([s.x, s.y])
        while travelled + self._stopping_distance(s) < reverse_distance:
            self._step(s, rows, REVERSE_SPEED, reverse_gamma, CARRY_BOOM, carry_bucket(s.boom))
            travelled += float(np.linalg.norm([s.x, s.y] - last))
            last = np.array([s.x, s.y])
        while s.speed < -1e-6:
            self._step(s, rows, 0.0, s.gamma, CARRY_BOOM, carry_bucket(s.boom))
        # 4. to the hopper: pure pursuit of the line x = hopper_x, heading +y
        stop_y = self.hopper[1] - DUMP_SHORT - BUCKET_CENTRE
        for _ in range(int(40.0 / DT)):
            pin, front = self._pin(s)
            if pin[1] + self._stopping_distance(s) >= stop_y:
                break
            axle = pin - (ARM_PIVOT[0] + ARM_LENGTH * np.cos(s.boom) - self.drive.geometry.front_axle) * np.array(
                [np.cos(front), np.sin(front)])
            goal = np.array([self.hopper[0], max(axle[1] + LOOKAHEAD, self.hopper[1] - 3.0)])
            alpha = np.arctan2(goal[1] - axle[1], goal[0] - axle[0]) - front
            alpha = (alpha + np.pi) % (2 * np.pi) - np.pi
            curvature = 2 * np.sin(alpha) / max(np.linalg.norm(goal - axle), 1e-3)
            gamma = articulation_for_yaw_rate(self.drive.geometry, max(s.speed, 0.3), max(s.speed, 0.3) * curvature)
            gamma = float(np.clip(gamma, -0.69, 0.69))
            near = stop_y - pin[1] < 4.0
            boom = DUMP_BOOM if near else CARRY_BOOM
            self._step(s, rows, CARRY_SPEED, gamma, boom, carry_bucket(s.boom))
        while s.speed > 1e-6:
            self._step(s, rows, 0.0, s.gamma, DUMP_BOOM, carry_bucket(s.boom))
        # 5. lift fully (if not yet) and dump
        while abs(s.boom - DUMP_BOOM) > 1e-6:
            self._step(s, rows, 0.0, s.gamma, DUMP_BOOM, carry_bucket(s.boom))
        for _ in range(int(4.5 / DT)):
            self._step(s, rows, 0.0, s.gamma, DUMP_BOOM, DUMP_BUCKET)
        pin, front = self._pin(s)
        centre = pin + BUCKET_CENTRE * np.array([np.cos(front), np.sin(front)])
        error = abs(centre[0] - self.hopper[0]) + 2.0 * abs(front - np.pi / 2) + abs(centre[1] - (self.hopper[1] - DUMP_SHORT))
        return rows, error
