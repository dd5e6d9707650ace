"""Calibrate a Feetech arm (follower or leader), import a LeRobot calibration, or give new servos
their IDs.

    python -m librobot_drivers.calibrate --port /dev/ttyACM0                 (the follower)
    ros2 run librobot_drivers calibrate --port /dev/ttyACM1 --arm leader
    ros2 run librobot_drivers calibrate --port /dev/ttyACM0 --lerobot ~/.cache/huggingface/lerobot/calibration/robots/so100_follower/my_arm.json
    ros2 run librobot_drivers calibrate --port /dev/ttyACM0 --setup-ids

Calibration, with the torque off: (1) put the arm in the zero pose (the URDF's zero) and press
Enter: the homing offsets make that pose read mid-turn; (2) for each joint, move it first in the
direction named (the URDF's positive direction: this gives the sign), then through its whole
range, and press Enter. The ranges become the servos' position limits. The file is LibroBot's
(LeRobot's five fields per joint plus `zero`).
"""

from __future__ import annotations

import argparse
import json
import select
import sys
import time
from pathlib import Path

from librobot_drivers.feetech.arm import FeetechArm
from librobot_drivers.feetech.bus import BusError
from librobot_drivers.feetech.calibration import (
    Calibration, JointCalibration, RangeTracker, from_lerobot, load_calibration)
from librobot_drivers.feetech.hardware import FeetechHardware, load_hardware

POLL_S = 0.05
MIN_RANGE = 200  # ticks (about 18 degrees): less means the joint was not moved through its range


class Console:
    """Prompts on stdout; Enter on stdin, polled so the arm can be read while the user moves it."""

    def __init__(self, stdin=sys.stdin, stdout=sys.stdout):
        self.stdin, self.stdout = stdin, stdout
        self.live = stdout.isatty()

    def say(self, text: str) -> None:
        print(text, file=self.stdout, flush=True)

    def enter_pressed(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.stdin], [], [], timeout)
        if not ready:
            return False
        if not self.stdin.readline():
            raise EOFError("input closed before Enter was pressed")
        return True

    def status(self, text: str) -> None:
        if self.live:
            print(f"\r  {text}   ", end="", file=self.stdout, flush=True)

    def wait_for_enter(self) -> None:
        while not self.enter_pressed(1.0):
            pass


def _zero_pose(arm: FeetechArm, hardware: FeetechHardware, console: Console) -> dict[str, tuple[int, int]]:
    """Step 1: homing offsets so the zero pose reads mid-turn. Returns {joint: (offset, zero)}."""
    console.say(f"Step 1/2: put the arm in the zero pose: {hardware.zero_pose}. Press Enter.")
    console.wait_for_enter()
    raw = arm.read_ticks()
    result = {}
    for joint, ticks in zip(hardware.joints, raw):
        offset = int(ticks) - 2047
        if offset > 2047:  # the encoder sits at its very last tick: one tick short is as good
            offset = 2047
        arm.bus.write(joint.id, "Homing_Offset", offset)
        result[joint.name] = offset
    zero = arm.read_ticks()  # what the zero pose reads now
    return {name: (offset, int(z)) for (name, offset), z in zip(result.items(), zero)}


def _ranges(arm: FeetechArm, hardware: FeetechHardware, console: Console,
            zeros: dict[str, tuple[int, int]]) -> dict[str, JointCalibration]:
    """Step 2: each joint's direction and range."""
    joints = {}
    for index, joint in enumerate(hardware.joints):
        while True:
            console.say(f"Step 2/2, joint {index + 1}/{len(hardware.joints)}: {joint.name}: first "
                        f"{joint.positive}, then move it through its whole range. Press Enter.")
            start = int(arm.read_ticks()[index])
            tracker = RangeTracker(start)
            while not console.enter_pressed(POLL_S):
                tracker.update(int(arm.read_ticks()[index]))
                console.status(f"{joint.name}: {tracker.low}..{tracker.high}")
            console.status("")
            if tracker.high - tracker.low < MIN_RANGE or tracker.first_direction == 0:
                console.say(f"  {joint.name} moved only {tracker.low}..{tracker.high} ticks "
                            f"(at least {MIN_RANGE} expected): again, please.")
                continue
            offset, zero = zeros[joint.name]
            joints[joint.name] = JointCalibration(
                id=joint.id, drive_mode=tracker.drive_mode, homing_offset=offset,
                range_min=tracker.low, range_max=tracker.high, zero=float(zero))
            break
    return joints


def calibrate(arm: FeetechArm, hardware: FeetechHardware, console: Console) -> Calibration:
    """The interactive calibration; the arm must be connected with the torque off."""
    arm.reset_calibration()
    zeros = _zero_pose(arm, hardware, console)
    calibration = Calibration(_ranges(arm, hardware, console, zeros))
    arm.write_calibration(calibration)
    return calibration


def setup_ids(arm: FeetechArm, hardware: FeetechHardware, console: Console) -> None:
    """Give each new servo its ID, one servo on the bus at a time (new servos all answer at ID 1)."""
    for joint in reversed(hardware.joints):
        while True:
            console.say(f"Connect only the {joint.name} servo to the bus (it gets ID {joint.id}). Press Enter.")
            console.wait_for_enter()
            found = arm.bus.find_servos()
            if len(found) != 1:
                console.say(f"  found servos {sorted(found) or 'none'}: connect exactly one, please.")
                continue
            (old, model), = found.items()
            if model != hardware.model_number:
                console.say(f"  servo ID {old} is model {model}, expected {hardware.model_number}.")
                continue
            if old != joint.id:
                arm.bus.write(old, "Lock", 0)
                arm.bus.set_id(old, joint.id)
            arm.bus.write(joint.id, "Lock", 1)
            console.say(f"  {joint.name}: ID {joint.id}")
            break


def _table(calibration: Calibration) -> str:
    rows = [f"  {'joint':<22}{'id':>3}{'drive':>6}{'offset':>8}{'min':>6}{'max':>6}{'zero':>8}"]
    for name, c in calibration.joints.items():
        rows.append(f"  {name:<22}{c.id:>3}{c.drive_mode:>6}{c.homing_offset:>8}{c.range_min:>6}"
                    f"{c.range_max:>6}{c.zero:>8.1f}")
    return "\n".join(rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="calibrate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--port", required=True, help="the arm's serial port (ls /dev/serial/by-id/)")
    parser.add_argument("--hardware", default="so100_feetech",
                        help="config/hardware/<name>.yaml or a YAML path (default so100_feetech)")
    parser.add_argument("--arm", choices=["follower", "leader"], default="follower",
                        help="which arm: names the default output file (default follower)")
    parser.add_argument("--output", type=Path, default=None,
                        help="calibration file to write (default ~/.librobot/calibration/"
                             "<embodiment>_<arm>.json, where config/<robot>_hardware.yaml looks)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--lerobot", type=Path, metavar="FILE",
                        help="import a LeRobot calibration JSON (written into the servos and --output)")
    action.add_argument("--setup-ids", action="store_true",
                        help="give new servos their IDs, one servo connected at a time")
    return parser.parse_args(argv)


def main(argv=None, console: Console | None = None) -> int:
    args = parse_args(argv)
    console = console or Console()
    try:
        hardware = load_hardware(args.hardware)
        output = (args.output or Path(f"~/.librobot/calibration/{hardware.spec.name}_{args.arm}.json")).expanduser()
        lerobot = from_lerobot(_read_json(args.lerobot), hardware) if args.lerobot else None
        arm = FeetechArm(hardware, args.port, calibration=None)
        arm.connect(torque=False)
    except (ValueError, KeyError, FileNotFoundError, BusError) as err:
        print(f"calibrate: error: {err}", file=sys.stderr)
        return 2
    try:
        if args.setup_ids:
            setup_ids(arm, hardware, console)
            console.say("every servo has its ID; calibrate next (this command without --setup-ids)")
            return 0
        if lerobot is not None:
            arm.write_calibration(lerobot)
            calibration = lerobot
        else:
            calibration = calibrate(arm, hardware, console)
        calibration.save(output, hardware)
        load_calibration(output, hardware)  # what was written reads back
        console.say(f"calibration written to {output}\n{_table(calibration)}")
        return 0
    except BusError as err:
        print(f"calibrate: error: {err}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print("calibrate: stopped; nothing written", file=sys.stderr)
        return 130
    finally:
        arm.disconnect(torque_off=True)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.expanduser().read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no LeRobot calibration file {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
