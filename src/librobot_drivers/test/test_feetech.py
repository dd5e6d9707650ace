"""The Feetech driver against the emulated STS3215 bus, through feetech-servo-sdk's own port
handler on a pseudo-terminal: protocol, ID scan, retries and faults, calibration, the robot."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from feetech_arm import (  # noqa: E402
    IDS, MOUNT_SIGN, MOUNT_ZERO, TICKS_PER_RAD, PhysicalArm, ScriptedUser, start_arm, write_calibration)

from librobot_drivers.calibrate import calibrate, setup_ids  # noqa: E402
from librobot_drivers.embodiment import load_embodiment  # noqa: E402
from librobot_drivers.feetech import protocol as p  # noqa: E402
from librobot_drivers.feetech.arm import FeetechArm  # noqa: E402
from librobot_drivers.feetech.bus import BusError, FeetechBus  # noqa: E402
from librobot_drivers.feetech.calibration import from_lerobot, load_calibration  # noqa: E402
from librobot_drivers.feetech.emulator import EmulatedBus, EmulatedServo, EmulatorProcess, make_servos  # noqa: E402
from librobot_drivers.feetech.hardware import load_hardware  # noqa: E402
from librobot_drivers.feetech.robot import So100Feetech  # noqa: E402
from librobot_drivers.robot import RobotFault, RobotIOError  # noqa: E402

SPEC = load_embodiment("so100")
HARDWARE = load_hardware("so100_feetech")


# -- protocol and the emulator's wire ----------------------------------------------------------
def test_packets_and_sign_magnitude_encodings_follow_the_sts_protocol():
    assert p.packet(1, p.PING) == bytes([0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB])
    offset = p.STS3215["Homing_Offset"]
    assert offset.encode(-710) == (710 | 1 << 11).to_bytes(2, "little")
    assert offset.decode(offset.encode(-710)) == -710
    assert p.STS3215["Present_Load"].decode((300 | 1 << 10).to_bytes(2, "little")) == -300
    with pytest.raises(ValueError, match="Homing_Offset: 2048"):
        offset.encode(2048)
    # one control cycle of six servos: sync read of 6 bytes, sync write of goal positions
    assert p.wire_bytes_per_cycle(6, 6, 2) == (8 + 6) + 6 * 12 + (8 + 6 * 3)


def test_emulated_servos_answer_reads_ignore_corrupted_instructions_and_keep_eeprom_locked():
    bus = EmulatedBus([EmulatedServo(3, encoder=1000.0)])
    reply = bus.receive(p.packet(3, p.READ, bytes([56, 2])))
    assert reply == p.packet(3, 0, (1000).to_bytes(2, "little"))
    bad = bytearray(p.packet(3, p.READ, bytes([56, 2])))
    bad[-1] ^= 0xFF
    assert bus.receive(bytes(bad)) == b""  # a servo ignores a packet whose checksum is wrong
    bus.receive(p.packet(3, p.WRITE, bytes([31]) + p.STS3215["Homing_Offset"].encode(100)))
    assert bus.servo(3).get("Homing_Offset") == 0  # Lock = 1: the EEPROM write has no effect
    bus.receive(p.packet(3, p.WRITE, bytes([55, 0])))
    bus.receive(p.packet(3, p.WRITE, bytes([31]) + p.STS3215["Homing_Offset"].encode(100)))
    assert bus.servo(3).get("Present_Position") == 900  # Present = encoder - homing offset


# -- the bus through the SDK -------------------------------------------------------------------
def test_id_scan_names_a_missing_a_duplicate_and_a_wrong_model_servo():
    servos = make_servos([1, 2, 3, 3, 5], models={5: 1284})  # 4 missing, two at 3, 5 is an SCS0009
    with EmulatorProcess(servos) as emu:
        bus = FeetechBus(emu.port, retries=1, names=HARDWARE.names_by_id)
        bus.open()
        try:
            with pytest.raises(BusError) as err:
                bus.check_servos({i: p.STS3215_MODEL for i in range(1, 6)})
            text = str(err.value)
            assert "servo ID 4 (wrist_flex_joint): no answer" in text
            assert "servo ID 3 (elbow_flex_joint): every reply is garbled: two servos may share ID 3" in text
            assert "servo ID 5 (wrist_roll_joint): model number 1284, expected 777" in text
            assert "servo ID 1" not in text and "servo ID 2" not in text
            assert bus.find_servos() == {1: 777, 2: 777, 5: 1284}  # 3's replies collide
        finally:
            bus.close()


def test_missing_port_is_one_clear_error():
    with pytest.raises(BusError, match="cannot open /dev/does-not-exist.*dialout"):
        FeetechBus("/dev/does-not-exist").open()


def test_timeouts_and_corrupted_replies_are_retried_a_bounded_number_of_times():
    with EmulatorProcess(make_servos([1, 2, 3])) as emu:
        bus = FeetechBus(emu.port, retries=2)
        bus.open()
        try:
            emu.fault(2, drop_replies=2)  # a burst of two timeouts: recovered by the retries
            assert set(bus.sync_read(p.MOTION_BLOCK, [1, 2, 3])) == {1, 2, 3}
            emu.fault(3, corrupt_replies=1)  # one corrupted byte: recovered
            assert bus.read(3, "Present_Position") == 2048
            assert (bus.stats.retries, bus.stats.failures, bus.stats.by_servo[2], bus.stats.by_servo[3]) == (3, 0, 2, 1)
            emu.fault(2, drop_replies=3)  # one more than the retries: an error naming the servo
            with pytest.raises(BusError, match=r"servo ID 2: no status packet \(3 tries\)"):
                bus.sync_read(p.MOTION_BLOCK, [1, 2, 3])
            emu.fault(3, corrupt_replies=3)
            with pytest.raises(BusError, match=r"servo ID 3: corrupted status packet \(3 tries\)"):
                bus.read(3, "Present_Position")
            assert bus.stats.failures == 2
            assert bus.read(2, "Present_Position") == 2048  # and the bus goes on afterwards
        finally:
            bus.close()


# -- calibration -------------------------------------------------------------------------------
def test_calibration_finds_zero_and_direction_and_the_driver_then_matches_the_twin(tmp_path):
    """The walk-through on an arm whose servos are mounted at unknown zeros and directions; then
    the same joint values through the real driver and through the simulated twin give the same
    pose (the twin's MuJoCo model is built from the same URDF joints)."""
    from librobot_drivers.sim.so100_sim import SO100Sim

    with start_arm() as emu:
        arm = FeetechArm(HARDWARE, emu.port, calibration=None)
        arm.connect(torque=False)
        user = ScriptedUser(PhysicalArm(emu), SPEC)
        calibration = calibrate(arm, HARDWARE, user)
        arm.disconnect(torque_off=True)
        assert [c.drive_mode for c in calibration.joints.values()] == [0 if s > 0 else 1 for s in MOUNT_SIGN]
        assert [c.homing_offset for c in calibration.joints.values()] == [int(z) - 2047 for z in MOUNT_ZERO]
        assert all(c.zero == 2047 for c in calibration.joints.values())
        # the swept ranges cover the URDF limits
        low = calibration.to_radians([c.range_min if c.drive_mode == 0 else c.range_max
                                      for c in calibration.joints.values()])
        assert np.allclose(low, SPEC.lower_limits, atol=2 / TICKS_PER_RAD)
        path = tmp_path / "follower.json"
        calibration.save(path, HARDWARE)
        assert load_calibration(path, HARDWARE) == calibration
        # the servos got the ranges as position limits
        assert emu.state(1)["registers"]["Min_Position_Limit"] == calibration.joints["shoulder_pan_joint"].range_min

        q = np.array([0.4, -0.6, 0.9, -0.8, 1.5, 0.9])
        with So100Feetech(SPEC, port=emu.port, calibration=str(path)) as robot:
            robot.send_positions(q)
            time.sleep(0.8)
            measured = robot.read_joints().position
            physical = PhysicalArm(emu).joints()
        assert np.allclose(physical, q, atol=1.5 / TICKS_PER_RAD)  # within a tick and a half
        assert np.allclose(measured, physical, atol=1.5 / TICKS_PER_RAD)

    twin = SO100Sim(SPEC)
    with twin:
        for _ in range(150):
            twin.send_positions(q)
            twin.step(0.02)
        q_twin = twin.read_joints().position
    from librobot_drivers.kinematics import UrdfKinematics
    fk = UrdfKinematics(_urdf())
    tcp_real = fk.link_positions("tcp_link", SPEC.joint_names, physical[None])[0]
    tcp_twin = fk.link_positions("tcp_link", SPEC.joint_names, q_twin[None])[0]
    assert np.linalg.norm(tcp_real - tcp_twin) < 0.005, (tcp_real, tcp_twin)


def _urdf() -> str:
    from librobot_drivers.resources import share_path

    xacro = share_path("description", "urdf", "so100.urdf.xacro")
    return subprocess.run(["xacro", str(xacro)], capture_output=True, text=True, check=True).stdout


def test_a_lerobot_calibration_loads_with_lerobot_zero_conventions(tmp_path):
    lerobot = {
        "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -710, "range_min": 750, "range_max": 3300},
        "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": 12, "range_min": 800, "range_max": 3200},
        "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": 5, "range_min": 900, "range_max": 3100},
        "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": -40, "range_min": 850, "range_max": 3150},
        "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": 300, "range_min": 0, "range_max": 4095},
        "gripper": {"id": 6, "drive_mode": 0, "homing_offset": 1000, "range_min": 2000, "range_max": 3400},
    }
    path = tmp_path / "my_arm.json"
    path.write_text(json.dumps(lerobot, indent=4))
    calibration = load_calibration(path, HARDWARE)
    assert calibration == from_lerobot(lerobot, HARDWARE)
    assert calibration.joints["shoulder_pan_joint"].zero == 2025.0  # the middle: LeRobot's 0 degrees
    assert calibration.joints["gripper_joint"].zero == 2000.0  # range_min: LeRobot's 0 %
    assert np.isclose(calibration.to_radians([2025 + 1024, 2000, 2000, 2000, 2047.5, 2000])[0], np.pi / 2)
    del lerobot["gripper"]
    path.write_text(json.dumps(lerobot))
    with pytest.raises(ValueError, match=r"has no entry for \['gripper_joint'\]"):
        load_calibration(path, HARDWARE)


def test_calibrate_cli_imports_a_lerobot_file_into_the_servos(tmp_path):
    lerobot = {name: {"id": i + 1, "drive_mode": 0, "homing_offset": 10 * i, "range_min": 500 + i,
                      "range_max": 3500 - i} for i, name in enumerate(
                          ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"])}
    source = tmp_path / "lerobot.json"
    source.write_text(json.dumps(lerobot))
    output = tmp_path / "out" / "follower.json"
    with start_arm() as emu:
        run = subprocess.run([sys.executable, "-m", "librobot_drivers.calibrate", "--port", emu.port,
                              "--lerobot", str(source), "--output", str(output)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        registers = emu.state(3)["registers"]
        assert (registers["Homing_Offset"], registers["Min_Position_Limit"], registers["Max_Position_Limit"]) == (20, 502, 3498)
        assert registers["Torque_Enable"] == 0  # calibrating leaves the arm limp
    assert load_calibration(output, HARDWARE) == from_lerobot(lerobot, HARDWARE)
    assert "calibration written to" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "librobot_drivers.calibrate", "--port", "/dev/nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot open /dev/nope" in bad.stderr


class _Plugging(ScriptedUser):
    """New servos all answer at ID 1: the user plugs them in one at a time, as asked."""

    def __init__(self, emu):
        self.emu, self.prompts, self.live, self._moves = emu, [], False, []
        self.plugged = -1

    def say(self, text):
        self.prompts.append(text)
        if text.startswith("Connect only"):
            if self.plugged >= 0:
                self.emu.plug(self.plugged, False)
            self.plugged += 1
            self.emu.plug(self.plugged, True)

    def enter_pressed(self, timeout):
        return True


def test_setup_ids_gives_each_new_servo_its_id_one_at_a_time():
    servos = make_servos([1] * 6)
    for servo in servos:
        servo.faults.silent = True
    with EmulatorProcess(servos) as emu:
        bus_arm = FeetechArm(HARDWARE, emu.port, calibration=None)
        bus_arm.bus.open()
        try:
            setup_ids(bus_arm, HARDWARE, _Plugging(emu))
            for index in range(6):
                emu.plug(index, True)
            assert bus_arm.bus.find_servos() == {i: 777 for i in IDS}
        finally:
            bus_arm.bus.close()


# -- the robot: limits, faults, shutdown -------------------------------------------------------
@pytest.fixture
def follower(tmp_path):
    with start_arm() as emu:
        yield emu, write_calibration(tmp_path / "follower.json", SPEC)


def test_commands_are_clamped_to_limits_and_to_max_relative_target(follower):
    emu, calibration = follower
    arm = PhysicalArm(emu)
    with So100Feetech(SPEC, port=emu.port, calibration=calibration, max_relative_target=0.2) as robot:
        registers = emu.state(6)["registers"]
        assert (registers["Return_Delay_Time"], registers["Max_Torque_Limit"], registers["P_Coefficient"],
                registers["Torque_Enable"], registers["Lock"]) == (0, 500, 16, 1, 1)
        sent = robot.send_positions(np.array([3.0, 0, 0, 0, 0, 0]))
        assert sent[0] == SPEC.upper_limits[0]  # the spec's joint limit
        assert np.isclose(arm.goal_joints()[0], 0.2, atol=1 / TICKS_PER_RAD)  # 0.2 rad from measured
        with pytest.raises(ValueError, match="non-finite"):
            robot.send_positions(np.array([np.nan, 0, 0, 0, 0, 0]))


def test_overload_latches_a_fault_that_refuses_motion_until_cleared(follower):
    emu, calibration = follower
    with So100Feetech(SPEC, port=emu.port, calibration=calibration) as robot:
        emu.fault(3, error=p.OVERLOAD)
        robot.read_joints()
        assert robot.fault == "elbow_flex_joint (ID 3): overload"
        with pytest.raises(RobotFault, match="overload"):
            robot.send_positions(np.zeros(6))
        reports = {r.name: r for r in robot.health()}
        assert reports["so100 servo elbow_flex_joint"].level == 2
        assert reports["so100 servo elbow_flex_joint"].message == "overload"
        assert reports["so100 servo bus"].level == 2
        assert robot.clear_faults() == "elbow_flex_joint (ID 3): overload"  # still overloaded
        emu.fault(3, error=0)
        assert robot.clear_faults() is None
        assert emu.state(3)["registers"]["Torque_Enable"] == 1  # stiff again, where it stands
        robot.send_positions(np.zeros(6))


def test_an_unplugged_servo_is_a_clear_error_and_the_others_hold(follower):
    emu, calibration = follower
    with So100Feetech(SPEC, port=emu.port, calibration=calibration, on_shutdown="hold") as robot:
        robot.send_positions(np.array([0.1, 0, 0, 0, 0, 0]))
        emu.fault(4, silent=True)
        with pytest.raises(RobotIOError, match=r"servo ID 4 \(wrist_flex_joint\): no status packet"):
            robot.read_joints()
        assert emu.state(1)["registers"]["Torque_Enable"] == 1  # the others hold their goal
        emu.fault(4, silent=False)
        robot.read_joints()
    assert emu.state(1)["registers"]["Torque_Enable"] == 1  # on_shutdown="hold"


def test_torque_off_on_shutdown_and_clear_errors_for_bad_options(follower):
    emu, calibration = follower
    with So100Feetech(SPEC, port=emu.port, calibration=calibration):
        pass
    assert emu.state(1)["registers"]["Torque_Enable"] == 0
    with pytest.raises(ValueError, match="on_shutdown = 'drop'"):
        So100Feetech(SPEC, port=emu.port, calibration=calibration, on_shutdown="drop")
    with pytest.raises(ValueError, match="no serial port given"):
        So100Feetech(SPEC, port="", calibration=calibration)
    with pytest.raises(FileNotFoundError, match="calibrate the arm first"):
        So100Feetech(SPEC, port=emu.port, calibration="/nonexistent.json")


def test_outside_commands_are_followed_only_from_one_at_the_measured_pose():
    from librobot_drivers.robot import CommandAnchor

    anchor = CommandAnchor(0.05)
    measured = np.array([0.4, -0.3, 0.5, 0.2, 0.0, 0.3])
    assert anchor.accept(np.zeros(6), measured) == pytest.approx(0.5)  # the interface's initial zeros
    assert anchor.accept(measured + 0.01, measured) is None  # the controller holds the arm: follow
    assert anchor.accept(np.zeros(6), measured) is None  # from then on, commands are the plan
    anchor.reset()
    assert anchor.accept(np.zeros(6), measured) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="radius 0"):
        CommandAnchor(0)
