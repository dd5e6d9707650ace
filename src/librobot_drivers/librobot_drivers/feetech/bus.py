"""A Feetech STS bus through feetech-servo-sdk, with bounded retries and errors that name the servo.

The SDK does the framing and the serial port; this module adds what a robot needs on top: an ID
scan that tells a missing, duplicate or wrong-model servo apart, reads and writes retried a
bounded number of times on "no status packet" and corrupted replies (then a `BusError` naming the
servo and the failure, never a silent default), sync read and sync write of register blocks, the
status error bits of every reply, and counters for diagnostics.
"""

from __future__ import annotations

import select
import time
from collections import Counter
from dataclasses import dataclass, field

import scservo_sdk as scs

from librobot_drivers.feetech import protocol as p
from librobot_drivers.feetech.protocol import STS3215
from librobot_drivers.robot import RobotIOError

DEFAULT_RETRIES = 3  # after the first try: 4 transactions at most
READ_WAIT_S = 0.002  # longest sleep between two looks at the reply timeout
REPLY_MARGIN_MS = 50.0  # USB-serial adapters buffer replies for up to ~16 ms; keep a margin
COMM_TEXT = {
    scs.COMM_RX_TIMEOUT: "no status packet",
    scs.COMM_RX_CORRUPT: "corrupted status packet",
    scs.COMM_TX_FAIL: "could not send the instruction packet",
    scs.COMM_PORT_BUSY: "port busy",
}


class BusError(RobotIOError):
    """A servo did not answer correctly within the retries, or the bus is not usable."""


class _Port(scs.PortHandler):
    """The SDK's port handler with three fixes. Stale input is dropped before each instruction:
    the SDK's clearPort only flushes output, so after a corrupted or late reply the leftover bytes
    would be read as the next reply. The reply timeout gets a margin for the USB adapter's latency
    (the SDK allows 34 ms in all, which long sync reads through some adapters exceed). And waiting
    for a reply sleeps in select() until bytes arrive instead of spinning on a non-blocking read:
    the SDK's loop keeps a core at 100 % for every transaction, which starves everything else on
    a small computer (and the other arm's process during teleoperation)."""

    def clearPort(self):
        self.ser.reset_input_buffer()

    def readPort(self, length):
        data = self.ser.read(length)
        if not data:
            select.select([self.ser.fileno()], [], [], READ_WAIT_S)
        return data

    def setPacketTimeout(self, packet_length):
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * (packet_length + 3) + REPLY_MARGIN_MS


@dataclass
class BusStats:
    transactions: int = 0
    retries: int = 0
    failures: int = 0  # transactions that failed after every retry
    by_servo: Counter = field(default_factory=Counter)  # servo ID -> retries and failures

    def as_dict(self) -> dict[str, int]:
        return {"transactions": self.transactions, "retries": self.retries, "failures": self.failures}


class FeetechBus:
    """One serial bus of STS servos. Servo IDs are given per call; `names` ({id: name}) only makes
    the errors readable."""

    def __init__(self, port: str, baudrate: int = p.DEFAULT_BAUDRATE, retries: int = DEFAULT_RETRIES,
                 names: dict[int, str] | None = None):
        if retries < 0:
            raise ValueError(f"retries = {retries}: expected 0 or more")
        self.port_name, self.baudrate, self.retries = port, baudrate, retries
        self.names = dict(names or {})
        self.stats = BusStats()
        self.errors: dict[int, int] = {}  # servo ID -> error bits of its latest reply
        self._port: _Port | None = None
        self._packets = scs.PacketHandler(0)  # protocol "end" 0: STS/SMS, little-endian words

    # -- port ------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        port = _Port(self.port_name)
        try:
            port.openPort()
            if not port.setBaudRate(self.baudrate):
                raise BusError(f"baud rate {self.baudrate} is not one the STS servos support")
        except OSError as err:  # serial.SerialException is an OSError
            raise BusError(
                f"cannot open {self.port_name}: {err}. Is the arm's USB adapter plugged in (ls "
                f"/dev/serial/by-id/), and may you open it (sudo usermod -aG dialout $USER)?") from None
        self._port = port

    def close(self) -> None:
        if self._port is not None:
            self._port.closePort()
            self._port = None

    def _servo(self, servo_id: int) -> str:
        name = self.names.get(servo_id)
        return f"servo ID {servo_id}" + (f" ({name})" if name else "")

    # -- transactions ------------------------------------------------------------------------------
    def _retry(self, what: str, attempt):
        """Run `attempt()` -> (result code, value, failed servo ID) up to 1 + retries times."""
        if self._port is None:
            raise BusError(f"{self.port_name}: {what} on a closed bus")
        self.stats.transactions += 1
        for tries in range(self.retries + 1):
            result, value, failed = attempt()
            if result == scs.COMM_SUCCESS:
                return value
            self.stats.by_servo[failed] += 1
            if tries < self.retries:
                self.stats.retries += 1
        self.stats.failures += 1
        text = COMM_TEXT.get(result) or self._packets.getTxRxResult(result)
        raise BusError(f"{self.port_name}: {what}: {self._servo(failed)}: {text} "
                       f"({self.retries + 1} tries)")

    def _note_error(self, servo_id: int, error: int) -> None:
        self.errors[servo_id] = error

    def ping(self, servo_id: int) -> int:
        """The servo's model number; BusError if it does not answer within the retries."""
        def attempt():
            model, result, error = self._packets.ping(self._port, servo_id)
            if result == scs.COMM_SUCCESS:
                self._note_error(servo_id, error)
            return result, model, servo_id
        return self._retry("ping", attempt)

    def probe(self, servo_id: int) -> tuple[str, int]:
        """What answers at `servo_id`: ("ok", model), ("missing", 0) or ("garbled", 0) when every
        reply was corrupted (two servos with one ID answer at once and collide)."""
        results = []
        for _ in range(self.retries + 1):
            model, result, _ = self._packets.ping(self._port, servo_id)
            if result == scs.COMM_SUCCESS:
                return "ok", model
            results.append(result)
        return ("garbled" if scs.COMM_RX_CORRUPT in results else "missing"), 0

    def read(self, servo_id: int, register: str) -> int:
        reg = STS3215[register]

        def attempt():
            data, result, error = self._packets.readTxRx(self._port, servo_id, reg.address, reg.size)
            if result == scs.COMM_SUCCESS:
                self._note_error(servo_id, error)
                return result, reg.decode(data), servo_id
            return result, None, servo_id
        return self._retry(f"read {register}", attempt)

    def write(self, servo_id: int, register: str, value: int) -> None:
        reg = STS3215[register]
        data = list(reg.encode(value))

        def attempt():
            result, error = self._packets.writeTxRx(self._port, servo_id, reg.address, reg.size, data)
            if result == scs.COMM_SUCCESS:
                self._note_error(servo_id, error)
            return result, None, servo_id
        self._retry(f"write {register} = {value}", attempt)

    def set_id(self, servo_id: int, new_id: int) -> None:
        """Give a servo a new ID (EEPROM: unlock it first). Sent without waiting for the status
        packet, whose ID is the old or the new one depending on the firmware; then the new ID
        must answer a ping."""
        reg = STS3215["ID"]
        self._packets.writeTxOnly(self._port, servo_id, reg.address, reg.size, list(reg.encode(new_id)))
        time.sleep(0.05)
        self._port.clearPort()
        self.ping(new_id)

    def sync_read(self, registers: tuple[str, ...], servo_ids: list[int]) -> dict[int, dict[str, int]]:
        """One sync read of the contiguous block covering `registers` from every servo."""
        start, length = p.block_span(registers)

        def attempt():
            result = self._packets.syncReadTx(self._port, start, length, list(servo_ids), len(servo_ids))
            if result != scs.COMM_SUCCESS:
                return result, None, servo_ids[0]
            values = {}
            for servo_id in servo_ids:
                data, result, error = self._packets.readRx(self._port, servo_id, length)
                if result != scs.COMM_SUCCESS:
                    return result, None, servo_id
                self._note_error(servo_id, error)
                values[servo_id] = p.decode_block(registers, data)
            return result, values, None
        return self._retry(f"sync read {'/'.join(registers)}", attempt)

    def sync_write(self, register: str, values: dict[int, int]) -> None:
        """Write one register of several servos in one packet (no replies)."""
        reg = STS3215[register]
        params = []
        for servo_id, value in values.items():
            params += [servo_id, *reg.encode(value)]

        def attempt():
            result = self._packets.syncWriteTxOnly(self._port, reg.address, reg.size, params, len(params))
            return result, None, next(iter(values))
        self._retry(f"sync write {register}", attempt)

    def find_servos(self) -> dict[int, int]:
        """Every servo on the bus ({id: model number}), from one broadcast ping (each servo
        answers in turn) and a model read per answer."""
        if self._port is None:
            raise BusError(f"{self.port_name}: find servos on a closed bus")
        packet = [0xFF, 0xFF, p.BROADCAST_ID, 2, p.PING, 0]
        result = self._packets.txPacket(self._port, packet)
        if result != scs.COMM_SUCCESS:
            raise BusError(f"{self.port_name}: broadcast ping: {self._packets.getTxRxResult(result)}")
        # every possible ID's reply (6 bytes) fits in this window
        self._port.setPacketTimeout(6 * (p.BROADCAST_ID + 1))
        found = []
        while True:
            reply, result = self._packets.rxPacket(self._port)
            self._port.is_using = True
            if result == scs.COMM_SUCCESS:
                found.append(reply[2])
            elif result != scs.COMM_RX_CORRUPT:  # a garbled reply (a collision): read on
                break
        self._port.is_using = False
        return {servo_id: self.read(servo_id, "Model_Number") for servo_id in sorted(set(found))}

    # -- the ID scan -------------------------------------------------------------------------------
    def check_servos(self, expected: dict[int, int]) -> None:
        """Ping every expected servo ({id: model number}); one BusError listing every problem."""
        problems = []
        for servo_id, model in expected.items():
            status, found = self.probe(servo_id)
            if status == "missing":
                problems.append(f"{self._servo(servo_id)}: no answer (unplugged, another ID, or "
                                f"another baud rate than {self.baudrate})")
            elif status == "garbled":
                problems.append(f"{self._servo(servo_id)}: every reply is garbled: two servos may "
                                f"share ID {servo_id} (connect them one at a time to set their IDs)")
            elif found != model:
                problems.append(f"{self._servo(servo_id)}: model number {found}, expected {model} "
                                f"(STS3215)" if model == p.STS3215_MODEL else
                                f"{self._servo(servo_id)}: model number {found}, expected {model}")
        if problems:
            raise BusError(f"{self.port_name}: servo check failed:\n  " + "\n  ".join(problems))
