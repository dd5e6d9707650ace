"""A Feetech arm on one bus: its servos set up as the hardware YAML says, read and commanded in
URDF joint units through its calibration. ROS-free; the follower robot (feetech.robot) and the
leader arm for teleoperation (teleop) are both one of these."""

from __future__ import annotations

import numpy as np

from librobot_drivers.feetech import protocol as p
from librobot_drivers.feetech.bus import DEFAULT_RETRIES, FeetechBus
from librobot_drivers.feetech.calibration import Calibration
from librobot_drivers.feetech.hardware import FeetechHardware
from librobot_drivers.robot import JointReading


class FeetechArm:
    def __init__(self, hardware: FeetechHardware, port: str, calibration: Calibration | None,
                 retries: int = DEFAULT_RETRIES):
        if calibration is not None:
            calibration.check(hardware)
        self.hardware, self.calibration = hardware, calibration
        self.bus = FeetechBus(port, hardware.baudrate, retries, names=hardware.names_by_id)
        self.ids = hardware.ids
        self._effort_scale = np.array([j.effort for j in hardware.spec.joints]) / 1000.0

    # -- set-up ----------------------------------------------------------------------------------
    def connect(self, torque: bool) -> None:
        """Open the bus, check every servo, write the settings and the calibration; then hold the
        present pose with torque on (`torque`) or leave the arm free to move by hand."""
        self.bus.open()
        try:
            self.bus.check_servos({servo: self.hardware.model_number for servo in self.ids})
            self.configure()
            if self.calibration is not None:
                self.write_calibration(self.calibration)
            if torque:
                self.hold()
        except BaseException:
            self.bus.close()
            raise

    def configure(self) -> None:
        """Torque off, EEPROM unlocked, the hardware's settings on every servo."""
        for joint in self.hardware.joints:
            self.bus.write(joint.id, "Torque_Enable", 0)
            self.bus.write(joint.id, "Lock", 0)
            for register, value in {**self.hardware.settings, **joint.settings}.items():
                self.bus.write(joint.id, register, value)
            phase = self.bus.read(joint.id, "Phase")
            if phase & p.PHASE_ANGLE_FEEDBACK:  # keep Present_Position within one turn
                self.bus.write(joint.id, "Phase", phase & ~p.PHASE_ANGLE_FEEDBACK)

    def write_calibration(self, calibration: Calibration) -> None:
        """Homing offsets and position limits into the servos (EEPROM; call after configure)."""
        for cal in calibration.joints.values():
            self.bus.write(cal.id, "Homing_Offset", cal.homing_offset)
            self.bus.write(cal.id, "Min_Position_Limit", cal.range_min)
            self.bus.write(cal.id, "Max_Position_Limit", cal.range_max)

    def reset_calibration(self) -> None:
        """No homing offset, the whole turn allowed: readings are the raw encoder (calibration)."""
        for servo in self.ids:
            self.bus.write(servo, "Homing_Offset", 0)
            self.bus.write(servo, "Min_Position_Limit", 0)
            self.bus.write(servo, "Max_Position_Limit", p.TICKS_PER_TURN - 1)

    def set_torque(self, on: bool) -> None:
        """Torque on locks the EEPROM; torque off unlocks it (LeRobot's order, so that both
        tools leave the servos in the same state)."""
        for servo in self.ids:
            self.bus.write(servo, "Torque_Enable", int(on))
            self.bus.write(servo, "Lock", int(on))

    def hold(self) -> None:
        """Goal = present position, then torque on: the arm stiffens where it is, no jump."""
        self.write_goal_ticks(self.read_ticks())
        self.set_torque(True)

    def disconnect(self, torque_off: bool) -> None:
        """Close the bus, leaving the arm limp (`torque_off`) or holding its present pose."""
        if not self.bus.is_open:
            return
        try:
            if torque_off:
                self.set_torque(False)
            else:
                self.hold()
        finally:
            self.bus.close()

    # -- I/O -------------------------------------------------------------------------------------
    def read_ticks(self) -> np.ndarray:
        values = self.bus.sync_read(("Present_Position",), self.ids)
        return np.array([values[i]["Present_Position"] for i in self.ids])

    def read_joints(self) -> JointReading:
        """Position (rad), velocity (rad/s) and effort (N m, from the load in % of stall torque)."""
        values = self.bus.sync_read(p.MOTION_BLOCK, self.ids)
        ticks = np.array([values[i]["Present_Position"] for i in self.ids])
        speed = np.array([values[i]["Present_Velocity"] for i in self.ids])
        load = np.array([values[i]["Present_Load"] for i in self.ids], dtype=np.float64)
        return JointReading(position=self.calibration.to_radians(ticks),
                            velocity=self.calibration.to_radians_per_second(speed),
                            effort=self.calibration.signs * load * self._effort_scale)

    def read_health(self) -> dict[int, dict[str, float]]:
        """Per servo ID: voltage (V), temperature (C) and the status error bits."""
        values = self.bus.sync_read(p.HEALTH_BLOCK, self.ids)
        return {i: {"voltage": v["Present_Voltage"] / 10.0, "temperature": float(v["Present_Temperature"]),
                    "status": v["Status"]} for i, v in values.items()}

    def write_goal_ticks(self, ticks) -> None:
        self.bus.sync_write("Goal_Position", {i: int(t) for i, t in zip(self.ids, ticks)})

    def write_goals(self, radians: np.ndarray) -> np.ndarray:
        """Command joint angles; returns the ticks sent (inside the calibrated range)."""
        ticks = self.calibration.to_ticks(radians)
        self.write_goal_ticks(ticks)
        return ticks

    def error_bits(self) -> dict[int, int]:
        """Servo ID -> the error bits of its latest reply (only those with any)."""
        return {i: bits for i, bits in self.bus.errors.items() if bits}
