"""The real arm as a `Robot`: the follower on its Feetech bus, behind the interface the simulated
twin implements (so the driver node, record and evaluate treat both alike). ROS-free.

    robot = So100Feetech(spec, port="/dev/ttyACM0", calibration="~/.librobot/so100_follower.json")
    with robot:
        robot.send_positions(robot.read_joints().position)

Every command passes the spec's joint limits (Robot.send_positions), the calibrated range, and
`max_relative_target`: no goal further than that from the measured position (rad; 0 = off). A
servo reporting an error bit (overload, overheat, voltage, ...) latches a fault: motion is
refused until `clear_faults()` finds the servos clean again. On disconnect the arm goes limp
(`on_shutdown="torque_off"`, careful: it falls) or holds its pose (`"hold"`).
"""

from __future__ import annotations

import numpy as np

from librobot_drivers.embodiment import Embodiment
from librobot_drivers.feetech.arm import FeetechArm
from librobot_drivers.feetech.bus import DEFAULT_RETRIES
from librobot_drivers.feetech.calibration import load_calibration
from librobot_drivers.feetech.hardware import load_hardware
from librobot_drivers.feetech.protocol import describe_errors
from librobot_drivers.reports import ERROR, OK, WARN, Report
from librobot_drivers.robot import JointReading, Robot, RobotFault, RobotIOError

ON_SHUTDOWN = ("torque_off", "hold")
HOT_C = 60.0  # warn above this; the STS3215 protects itself at its limit (70 C by default)


class FeetechRobot(Robot):
    hardware_name = ""  # config/hardware/<name>.yaml

    def __init__(self, spec: Embodiment, port: str, calibration: str, on_shutdown: str = "torque_off",
                 max_relative_target: float = 0.0, retries: int = DEFAULT_RETRIES):
        super().__init__(spec)
        hardware = load_hardware(self.hardware_name)
        if hardware.spec.name != spec.name:
            raise ValueError(f"{hardware.name} drives the {hardware.spec.name!r} embodiment, not {spec.name!r}")
        if not port:
            raise ValueError("no serial port given: name the arm's port, e.g. /dev/ttyACM0 "
                             "(ls /dev/serial/by-id/ lists the adapters)")
        if not calibration:
            raise ValueError("no calibration file given: calibrate the arm first "
                             "(ros2 run librobot_drivers calibrate --help)")
        if on_shutdown not in ON_SHUTDOWN:
            raise ValueError(f"on_shutdown = {on_shutdown!r}: expected one of {list(ON_SHUTDOWN)}")
        if max_relative_target < 0:
            raise ValueError(f"max_relative_target = {max_relative_target}: expected >= 0 (0: off)")
        self.hardware = hardware
        self.arm = FeetechArm(hardware, port, load_calibration(calibration, hardware), retries)
        self.on_shutdown, self.max_relative_target = on_shutdown, max_relative_target
        self._connected = False
        self._measured: JointReading | None = None
        self._fault: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def connect(self) -> None:
        self.arm.connect(torque=True)
        self._connected = True
        self.read_joints()

    def disconnect(self) -> None:
        self._connected = False
        self.arm.disconnect(torque_off=self.on_shutdown == "torque_off")

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def camera_names(self) -> list[str]:
        return []  # the cameras have drivers of their own (v4l2_camera)

    @property
    def fault(self) -> str | None:
        return self._fault

    # -- I/O -------------------------------------------------------------------------------------
    def read_joints(self) -> JointReading:
        self._measured = self.arm.read_joints()
        errors = self.arm.error_bits()
        if errors and self._fault is None:
            self._fault = "; ".join(
                f"{self.hardware.names_by_id[i]} (ID {i}): {', '.join(describe_errors(bits)) or hex(bits)}"
                for i, bits in sorted(errors.items()))
        return self._measured

    def read_camera(self, name: str) -> np.ndarray:
        raise KeyError(f"{self.spec.name} on Feetech servos has no camera {name!r}: cameras are "
                       "published by their own driver nodes")

    def _write_positions(self, positions: np.ndarray) -> None:
        if self._fault is not None:
            raise RobotFault(f"{self.spec.name}: servo fault ({self._fault}); motion refused until "
                             "the fault is cleared")
        if self.max_relative_target > 0 and self._measured is not None:
            measured = self._measured.position
            positions = measured + np.clip(positions - measured, -self.max_relative_target,
                                           self.max_relative_target)
        self.arm.write_goals(positions)

    # -- health ----------------------------------------------------------------------------------
    def clear_faults(self) -> str | None:
        health = self.arm.read_health()
        still = {i: h["status"] for i, h in health.items() if h["status"]}
        if still:
            return "; ".join(f"{self.hardware.names_by_id[i]} (ID {i}): {', '.join(describe_errors(b))}"
                             for i, b in sorted(still.items()))
        self.arm.bus.errors.clear()
        self.arm.hold()  # the protection switched torque off: stiffen where the arm is now
        self.read_joints()
        self._fault = None
        return None

    def health(self) -> list[Report]:
        name = self.spec.name
        stats = self.arm.bus.stats.as_dict()
        bus = Report(f"{name} servo bus", ERROR if self._fault else OK,
                     f"fault: {self._fault}" if self._fault else "ok",
                     {"port": self.arm.bus.port_name, **{k: str(v) for k, v in stats.items()}})
        try:
            health = self.arm.read_health()
        except RobotIOError as err:
            return [Report(bus.name, ERROR, str(err), bus.values)]
        effort = self._measured.effort if self._measured is not None else np.zeros(self.spec.dof)
        reports = [bus]
        for joint, tau, spec_joint in zip(self.hardware.joints, effort, self.spec.joints):
            h = health[joint.id]
            errors = describe_errors(h["status"])
            level, message = OK, "ok"
            if errors:
                level, message = ERROR, ", ".join(errors)
            elif h["temperature"] >= HOT_C:
                level, message = WARN, f"hot: {h['temperature']:.0f} C"
            reports.append(Report(f"{name} servo {joint.name}", level, message, {
                "id": str(joint.id), "temperature C": f"{h['temperature']:.0f}",
                "voltage V": f"{h['voltage']:.1f}", "load %": f"{100 * tau / spec_joint.effort + 0.0:.0f}",
                "error bits": hex(h["status"]),
                "retries and failures": str(self.arm.bus.stats.by_servo[joint.id]),
            }))
        return reports


class So100Feetech(FeetechRobot):
    """The SO-100 / SO-101 follower arm: six STS3215 servos, IDs 1-6 (config/hardware/so100_feetech.yaml)."""

    hardware_name = "so100_feetech"
