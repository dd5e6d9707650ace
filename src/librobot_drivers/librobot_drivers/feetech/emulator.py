"""An emulated Feetech STS bus: a pseudo-terminal that answers the real protocol, so the real
driver, through feetech-servo-sdk's own port handler, can be tested without an arm.

Each emulated servo has the STS3215 register table, a position loop (with torque on, the encoder
moves towards the goal at `speed` ticks/s; with torque off, it stays where a hand puts it:
`set_encoder`), the homing offset (Present_Position = encoder - Homing_Offset), the position
limits, the EEPROM lock and the return delay. Two servos with one ID answer at once and their
replies collide on the wire (a bit apart, 0 wins), as on a real half-duplex bus.

Faults to inject, per servo (`fault`): `silent` (unplugged: neither answers nor acts),
`drop_replies=N` (the next N replies are lost: a burst of timeouts), `corrupt_replies=N` (one byte
of each of the next N replies is flipped), `error=bits` (every reply carries these status error
bits, e.g. protocol.OVERLOAD; the servo drops its torque, as the real one's protection does).

    python -m librobot_drivers.feetech.emulator            # 6 servos, IDs 1-6; prints the port
    ros2 run librobot_drivers feetech_emulator --ids 1 2 3

In tests, `EmulatorProcess` runs a bus in a child process (the SDK busy-waits on the port, so a
thread in the same interpreter would be starved of the GIL) and forwards method calls to it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import select
import signal
import sys
import time
import tty
from dataclasses import dataclass, field

from librobot_drivers.feetech import protocol as p
from librobot_drivers.feetech.protocol import STS3215

DEFAULT_SPEED = 3000.0  # ticks/s: the STS3215's no-load speed at 7.4 V (about 4.6 rad/s)


@dataclass
class Faults:
    silent: bool = False
    drop_replies: int = 0
    corrupt_replies: int = 0
    error: int = 0


@dataclass
class EmulatedServo:
    id: int
    encoder: float = 2048.0  # the magnet's angle in ticks, as the shaft really is
    model: int = p.STS3215_MODEL
    speed: float = DEFAULT_SPEED
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        self.memory = bytearray(256)
        defaults = {
            "Model_Number": self.model, "ID": self.id, "Return_Delay_Time": 250,
            "Response_Status_Level": 1, "Min_Position_Limit": 0, "Max_Position_Limit": 4095,
            "Max_Temperature_Limit": 70, "Max_Voltage_Limit": 140, "Min_Voltage_Limit": 40,
            "Max_Torque_Limit": 1000, "P_Coefficient": 32, "D_Coefficient": 32,
            "Protection_Current": 500, "Overload_Torque": 80, "Torque_Limit": 1000, "Lock": 1,
            "Present_Voltage": 74, "Present_Temperature": 28,
        }
        for name, value in defaults.items():
            self._poke(name, value)
        self._velocity = 0.0
        self._time = time.monotonic()
        self._sync_present()
        self._poke("Goal_Position", self.get("Present_Position"))  # at power-on goal = present

    # -- registers -------------------------------------------------------------------------------
    def _poke(self, name: str, value: int) -> None:
        reg = STS3215[name]
        self.memory[reg.address:reg.address + reg.size] = reg.encode(value)

    def get(self, name: str) -> int:
        reg = STS3215[name]
        return reg.decode(self.memory[reg.address:reg.address + reg.size])

    def read(self, address: int, length: int) -> bytes:
        self.update()
        return bytes(self.memory[address:address + length])

    def write(self, address: int, data: bytes) -> None:
        self.update()
        if address < p.EEPROM_END and self.get("Lock"):
            return  # the EEPROM is locked: the write has no effect
        self.memory[address:address + len(data)] = data
        self.id = self.get("ID")
        if self.get("Torque_Enable") == 0:
            self._velocity = 0.0
        self._sync_present()  # a new homing offset changes what the position reads

    # -- the shaft -------------------------------------------------------------------------------
    @property
    def goal_encoder(self) -> float:
        goal = min(max(self.get("Goal_Position"), self.get("Min_Position_Limit")),
                   self.get("Max_Position_Limit"))
        return float(goal + self.get("Homing_Offset"))

    def update(self, now: float | None = None) -> None:
        """Advance the position loop to `now`."""
        now = time.monotonic() if now is None else now
        dt, self._time = max(now - self._time, 0.0), now
        if self.faults.error:
            self._poke("Torque_Enable", 0)  # the protection has switched the torque off
        if self.get("Torque_Enable"):
            error = self.goal_encoder - self.encoder
            step = max(-self.speed * dt, min(self.speed * dt, error))
            self.encoder += step
            self._velocity = step / dt if dt > 0 else 0.0
        self._sync_present()

    def set_encoder(self, ticks: float) -> None:
        """Move the shaft by hand (it only stays there with the torque off)."""
        self.update()
        self.encoder = float(ticks)
        self._sync_present()

    def _sync_present(self) -> None:
        present = int(round(self.encoder - self.get("Homing_Offset"))) % p.TICKS_PER_TURN
        self._poke("Present_Position", present)
        self._poke("Present_Velocity", int(round(self._velocity)))
        self._poke("Moving", int(abs(self._velocity) > 1))
        self._poke("Status", self.faults.error)


class EmulatedBus:
    """The servos on one bus and the protocol between them and a master."""

    def __init__(self, servos: list[EmulatedServo]):
        self.servos = servos
        self._buffer = bytearray()
        self._pending: dict[int, tuple[int, bytes]] = {}  # REG_WRITE, applied on ACTION
        self.instructions = 0  # instruction packets received with a valid checksum

    def servo(self, servo_id: int) -> EmulatedServo:
        for servo in self.servos:
            if servo.id == servo_id:
                return servo
        raise KeyError(f"no emulated servo with ID {servo_id}")

    # -- what a test or a user does --------------------------------------------------------------
    def set_encoder(self, servo_id: int, ticks: float) -> None:
        self.servo(servo_id).set_encoder(ticks)

    def fault(self, servo_id: int, **faults) -> None:
        for name, value in faults.items():
            setattr(self.servo(servo_id).faults, name, value)

    def plug(self, index: int, plugged: bool = True) -> None:
        """Connect or disconnect the servo at `index` in the bus's list (new servos share ID 1,
        so they are told apart by position)."""
        self.servos[index].faults.silent = not plugged

    def state(self, servo_id: int) -> dict:
        servo = self.servo(servo_id)
        servo.update()
        return {"encoder": servo.encoder, "goal_encoder": servo.goal_encoder,
                "registers": {name: servo.get(name) for name in STS3215}}

    # -- the wire --------------------------------------------------------------------------------
    def receive(self, data: bytes) -> bytes:
        """Take bytes from the master; return the bytes the servos put on the wire in reply."""
        self._buffer += data
        out = bytearray()
        while True:
            start = self._buffer.find(p.HEADER)
            if start < 0:
                del self._buffer[:-1]
                return bytes(out)
            del self._buffer[:start]
            if len(self._buffer) < 4 or len(self._buffer) < self._buffer[3] + 4:
                return bytes(out)
            length = self._buffer[3]
            frame = bytes(self._buffer[:length + 4])
            del self._buffer[:length + 4]
            if length < 2 or p.checksum(frame[2:-1]) != frame[-1]:
                continue  # servos ignore a corrupted instruction
            self.instructions += 1
            out += self._execute(frame[2], frame[4], frame[5:-1])

    def _execute(self, target: int, instruction: int, params: bytes) -> bytes:
        addressed = [s for s in self.servos if target in (s.id, p.BROADCAST_ID) and not s.faults.silent]
        if instruction == p.PING:
            return self._replies(sorted(addressed, key=lambda s: s.id), lambda s: b"")
        if instruction == p.READ:
            address, length = params[0], params[1]
            return self._replies(addressed, lambda s: s.read(address, length), target)
        if instruction in (p.WRITE, p.REG_WRITE):
            for servo in addressed:
                if instruction == p.WRITE:
                    servo.write(params[0], params[1:])
                else:
                    self._pending[servo.id] = (params[0], params[1:])
            if target == p.BROADCAST_ID:
                return b""
            return self._replies([s for s in addressed if s.get("Response_Status_Level")], lambda s: b"")
        if instruction == p.ACTION:
            for servo in addressed:
                if servo.id in self._pending:
                    servo.write(*self._pending.pop(servo.id))
            return b""
        if instruction == p.SYNC_WRITE:
            address, length = params[0], params[1]
            for i in range(2, len(params) - length, length + 1):
                for servo in (s for s in self.servos if s.id == params[i] and not s.faults.silent):
                    servo.write(address, params[i + 1:i + 1 + length])
            return b""
        if instruction == p.SYNC_READ:
            address, length = params[0], params[1]
            out = bytearray()
            for servo_id in params[2:]:
                out += self._replies([s for s in addressed if s.id == servo_id],
                                     lambda s: s.read(address, length), servo_id)
            return bytes(out)
        return b""  # an instruction the STS3215 does not know: no reply

    def _replies(self, servos: list[EmulatedServo], data, target: int | None = None) -> bytes:
        """Each servo's status packet; servos sharing an ID collide."""
        if target == p.BROADCAST_ID:
            return b""  # a broadcast read gets no reply
        by_id: dict[int, list[bytes]] = {}
        for servo in servos:
            reply = self._reply(servo, data(servo))
            if reply:
                by_id.setdefault(servo.id, []).append(reply)
        out = bytearray()
        for replies in by_id.values():
            wire = bytearray(replies[0])
            for reply in replies[1:]:  # they answer together, a fraction of a bit apart: garbage
                late = _one_bit_late(reply)
                wire = bytearray(a & b for a, b in zip(wire + b"\xff" * (len(late) - len(wire)),
                                                      late + b"\xff" * (len(wire) - len(late))))
            out += wire
        delay = max((s.get("Return_Delay_Time") for s in servos), default=0) * 2e-6
        if out and delay:
            time.sleep(delay)
        return bytes(out)

    @staticmethod
    def _reply(servo: EmulatedServo, data: bytes) -> bytes:
        faults = servo.faults
        if faults.drop_replies > 0:
            faults.drop_replies -= 1
            return b""
        reply = bytearray(p.packet(servo.id, faults.error, data))
        if faults.corrupt_replies > 0:
            faults.corrupt_replies -= 1
            reply[-2] ^= 0x5A  # a flipped byte: the checksum no longer matches
        return bytes(reply)


def _one_bit_late(data: bytes) -> bytes:
    """`data` delayed by one bit on an idle-high line (an open-drain bus: a 0 from either wins)."""
    out, carry = bytearray(), 1
    for byte in data:
        out.append((byte >> 1) | (carry << 7))
        carry = byte & 1
    return bytes(out)


class PtyBus:
    """An EmulatedBus on a pseudo-terminal: `port` is the device path a driver opens."""

    def __init__(self, bus: EmulatedBus):
        self.bus = bus
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo or line editing (pyserial sets this too when it opens)
        self.port = os.ttyname(self._slave)

    def fileno(self) -> int:
        return self._master

    def pump(self) -> None:
        """Read what the master sent and write the servos' replies."""
        try:
            data = os.read(self._master, 4096)
        except OSError:  # the driver closed the port: nothing to read until it opens it again
            time.sleep(0.01)
            return
        reply = self.bus.receive(data)
        if reply:
            os.write(self._master, reply)

    def serve_forever(self, control=None) -> None:
        """Serve the port; with a multiprocessing connection `control`, run the method calls that
        arrive on it ((name, args, kwargs) -> result or exception) between packets."""
        sources = [self] + ([control] if control is not None else [])
        while True:
            ready, _, _ = select.select(sources, [], [], 0.05)
            if self in ready:
                self.pump()
            if control is not None and control in ready:
                try:
                    name, args, kwargs = control.recv()
                except EOFError:
                    return
                if name == "stop":
                    return
                try:
                    control.send(("ok", getattr(self.bus, name)(*args, **kwargs)))
                except Exception as err:  # returned to the caller, raised there
                    control.send(("error", err))


def make_servos(ids, encoders=None, models=None) -> list[EmulatedServo]:
    encoders = encoders or {}
    models = models or {}
    return [EmulatedServo(i, encoder=float(encoders.get(i, 2048)), model=models.get(i, p.STS3215_MODEL))
            for i in ids]


def _serve_child(servos, control) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    pty_bus = PtyBus(EmulatedBus(servos))
    control.send(pty_bus.port)
    pty_bus.serve_forever(control)


class EmulatorProcess:
    """An emulated bus in a child process; calls EmulatedBus methods in it by name.

        with EmulatorProcess(make_servos([1, 2, 3])) as emu:
            robot = So100Feetech(spec, port=emu.port, ...)
            emu.fault(3, silent=True)
    """

    def __init__(self, servos: list[EmulatedServo]):
        context = multiprocessing.get_context("spawn")  # no fork of a process with ROS threads
        self._control, child = context.Pipe()
        self._process = context.Process(target=_serve_child, args=(servos, child), daemon=True)
        self._process.start()
        while not self._control.poll(0.1):
            if not self._process.is_alive():
                raise RuntimeError(f"the Feetech bus emulator exited at start (code {self._process.exitcode})")
        self.port: str = self._control.recv()

    def call(self, name: str, *args, **kwargs):
        self._control.send((name, args, kwargs))
        status, value = self._control.recv()
        if status == "error":
            raise value
        return value

    def set_encoder(self, servo_id: int, ticks: float) -> None:
        self.call("set_encoder", servo_id, ticks)

    def fault(self, servo_id: int, **faults) -> None:
        self.call("fault", servo_id, **faults)

    def plug(self, index: int, plugged: bool = True) -> None:
        self.call("plug", index, plugged)

    def state(self, servo_id: int) -> dict:
        return self.call("state", servo_id)

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._control.send(("stop", (), {}))
            except OSError:
                pass
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="feetech_emulator",
        description="Emulate a bus of Feetech STS3215 servos on a pseudo-terminal and print its path.")
    parser.add_argument("--ids", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6],
                        help="servo IDs on the bus (default 1-6, the SO-100)")
    parser.add_argument("--port-file", help="also write the port's path to this file")
    args = parser.parse_args(argv)
    bad = [i for i in args.ids if not 0 <= i < p.BROADCAST_ID]
    if bad:
        parser.error(f"servo IDs {bad} are outside 0..{p.BROADCAST_ID - 1}")
    pty_bus = PtyBus(EmulatedBus(make_servos(args.ids)))
    print(pty_bus.port, flush=True)
    if args.port_file:
        with open(args.port_file, "w") as f:
            f.write(pty_bus.port + "\n")
    try:
        pty_bus.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
