"""One control cycle of the real SO-100 driver against the emulated bus: sync read of position,
velocity and load from six STS3215 servos plus sync write of their goals, through
feetech-servo-sdk on a pseudo-terminal. Printed next to the bus's physical floor at 1 Mbaud (the
cycle's bytes on the wire x 10 bits, no servo or adapter latency) and next to the SDK's own
GroupSyncRead/GroupSyncWrite for the same cycle on the SDK's own port handler (which spins on
the port while it waits: its CPU time per cycle is printed too).

    python benchmarks/bench_feetech.py [--cycles 2000]

The emulator answers with no return delay but is itself Python on the same two cores: the
figure bounds what the driver costs, not what a USB adapter adds (about 1 ms per transaction on
FTDI/CH340 adapters at their lowest latency setting).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scservo_sdk as scs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "librobot_drivers" / "test"))

from feetech_arm import start_arm, write_calibration  # noqa: E402

from librobot_drivers.embodiment import load_embodiment  # noqa: E402
from librobot_drivers.feetech import protocol as p  # noqa: E402
from librobot_drivers.feetech.robot import So100Feetech  # noqa: E402


def percentiles(samples: list[float]) -> str:
    ms = np.array(samples) * 1e3
    return f"mean {ms.mean():.2f} ms, p50 {np.percentile(ms, 50):.2f}, p99 {np.percentile(ms, 99):.2f}"


def sdk_cycle(port_handler, packets, ids, start, length, goals) -> None:
    """The same cycle written with the SDK's group helpers (the baseline)."""
    read = scs.GroupSyncRead(port_handler, packets, start, length)
    for i in ids:
        read.addParam(i)
    if read.txRxPacket() != scs.COMM_SUCCESS:
        raise RuntimeError("baseline sync read failed")
    write = scs.GroupSyncWrite(port_handler, packets, p.STS3215["Goal_Position"].address, 2)
    for i, goal in zip(ids, goals):
        write.addParam(i, list(p.STS3215["Goal_Position"].encode(goal)))
    write.txPacket()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=2000)
    args = parser.parse_args(argv)
    spec = load_embodiment("so100")
    start, length = p.block_span(p.MOTION_BLOCK)
    floor_bytes = p.wire_bytes_per_cycle(6, length, 2)
    floor_s = floor_bytes * 10 / p.DEFAULT_BAUDRATE
    with tempfile.TemporaryDirectory() as tmp, start_arm() as emu:
        calibration = write_calibration(Path(tmp) / "follower.json", spec)
        with So100Feetech(spec, port=emu.port, calibration=calibration) as robot:
            q = robot.read_joints().position
            ours = []
            cpu0 = time.process_time()
            for k in range(args.cycles):
                t0 = time.perf_counter()
                robot.send_positions(q + 0.05 * np.sin(k / 50.0))
                robot.read_joints()
                ours.append(time.perf_counter() - t0)
            cpu_ours = (time.process_time() - cpu0) / args.cycles
            bus = robot.arm.bus
            goals = robot.arm.calibration.to_ticks(q)
            sdk_port = scs.PortHandler(bus.port_name)  # the SDK's own, spinning while it waits
            sdk_port.openPort()
            baseline = []
            cpu0 = time.process_time()
            for _ in range(args.cycles):
                t0 = time.perf_counter()
                sdk_cycle(sdk_port, bus._packets, robot.arm.ids, start, length, goals)
                baseline.append(time.perf_counter() - t0)
            cpu_sdk = (time.process_time() - cpu0) / args.cycles
            sdk_port.closePort()
            retries = bus.stats.retries
    print(f"control cycle, 6 servos, {args.cycles} cycles ({floor_bytes} bytes on the wire)")
    print(f"  So100Feetech send_positions + read_joints: {percentiles(ours)}")
    print(f"  SDK GroupSyncRead + GroupSyncWrite:        {percentiles(baseline)}")
    print(f"  physical floor at 1 Mbaud:                 {floor_s * 1e3:.2f} ms")
    print(f"ratios: ours / SDK {np.median(ours) / np.median(baseline):.2f}, "
          f"ours / floor {np.median(ours) / floor_s:.1f}, retries {retries}")
    print(f"  cycles per second (median): ours {1 / np.median(ours):.0f}, floor {1 / floor_s:.0f}")
    print(f"  CPU per cycle: ours {cpu_ours * 1e3:.2f} ms, SDK port handler {cpu_sdk * 1e3:.2f} ms "
          f"(it spins while waiting for replies); ratio {cpu_ours / cpu_sdk:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
