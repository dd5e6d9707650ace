"""A physical SO-100 for the emulated bus: each servo's encoder relates to its URDF joint angle
by a mounting (zero tick and direction) the driver does not know, and a scripted user who moves
the arm by hand the way the calibration asks. Shared by the Feetech tests."""

from __future__ import annotations

import math

import numpy as np

from librobot_drivers.calibrate import Console
from librobot_drivers.feetech.calibration import HALF_TURN, Calibration, JointCalibration
from librobot_drivers.feetech.emulator import EmulatorProcess, make_servos
from librobot_drivers.feetech.hardware import load_hardware

TICKS_PER_RAD = 4096 / (2 * math.pi)
IDS = [1, 2, 3, 4, 5, 6]
# where each encoder sits at the URDF zero, and whether it turns with (+1) or against the joint
MOUNT_ZERO = np.array([1000.0, 3000.0, 2048.0, 1500.0, 3900.0, 2200.0])
MOUNT_SIGN = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])


def encoders_for(q) -> np.ndarray:
    return MOUNT_ZERO + MOUNT_SIGN * np.asarray(q, dtype=np.float64) * TICKS_PER_RAD


def joints_from(encoders) -> np.ndarray:
    return MOUNT_SIGN * (np.asarray(encoders, dtype=np.float64) - MOUNT_ZERO) / TICKS_PER_RAD


class PhysicalArm:
    """The emulated servos seen as one arm with joint angles."""

    def __init__(self, emu: EmulatorProcess, ids=IDS):
        self.emu, self.ids = emu, list(ids)

    def set_joints(self, q) -> None:
        for servo, ticks in zip(self.ids, encoders_for(q)):
            self.emu.set_encoder(servo, ticks)

    def set_joint(self, index: int, angle: float, q=None) -> None:
        self.emu.set_encoder(self.ids[index], encoders_for(np.eye(6)[index] * angle)[index])

    def joints(self) -> np.ndarray:
        return joints_from([self.emu.state(i)["encoder"] for i in self.ids])

    def goal_joints(self) -> np.ndarray:
        return joints_from([self.emu.state(i)["goal_encoder"] for i in self.ids])


def start_arm(q=None) -> EmulatorProcess:
    """The emulated arm, standing at joint angles `q` (default the zero pose)."""
    encoders = encoders_for(np.zeros(6) if q is None else q)
    return EmulatorProcess(make_servos(IDS, encoders=dict(zip(IDS, encoders))))


def write_calibration(path, spec) -> str:
    """The calibration the procedure finds for this mounting (as test_feetech checks), written
    without the walk-through."""
    hardware = load_hardware("so100_feetech")
    joints = {}
    for joint, servo, zero, sign in zip(spec.joints, IDS, MOUNT_ZERO, MOUNT_SIGN):
        offset = int(round(zero)) - HALF_TURN
        low = HALF_TURN + sign * joint.lower * TICKS_PER_RAD
        high = HALF_TURN + sign * joint.upper * TICKS_PER_RAD
        joints[joint.name] = JointCalibration(servo, 0 if sign > 0 else 1, offset,
                                              int(min(low, high)) - 5, int(max(low, high)) + 5, float(HALF_TURN))
    Calibration(joints).save(path, hardware)
    return str(path)


class ScriptedUser(Console):
    """Answers the calibration's prompts: at each prompt it runs the next hand motion (a list of
    joint-angle moves, one per poll), then presses Enter."""

    def __init__(self, arm: PhysicalArm, spec):
        self.arm, self.spec = arm, spec
        self.prompts: list[str] = []
        self._moves: list = []
        self.live = False

    def say(self, text: str) -> None:
        self.prompts.append(text)
        if text.startswith("Step 1/2"):
            self._moves = [lambda: self.arm.set_joints(np.zeros(6))]
        elif text.startswith("Step 2/2"):
            index = next(i for i, j in enumerate(self.spec.joints) if f": {j.name}:" in text)
            joint = self.spec.joints[index]
            # positive first, to the upper limit, down to the lower one, back to zero
            path = np.concatenate([np.linspace(0, joint.upper, 6), np.linspace(joint.upper, joint.lower, 10),
                                   np.linspace(joint.lower, 0, 6)])
            self._moves = [lambda a=a, i=index: self.arm.set_joint(i, a) for a in path]

    def enter_pressed(self, timeout: float) -> bool:
        if self._moves:
            self._moves.pop(0)()
            return False
        return True
