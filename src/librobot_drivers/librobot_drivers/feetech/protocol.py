"""The Feetech STS protocol as far as LibroBot uses it: the STS3215 control table, value
encodings and packet framing. ROS-free and SDK-free: the emulator speaks it byte by byte, the bus
(bus.py) goes through feetech-servo-sdk and only takes register addresses and encodings from here.

Packets (half duplex, little-endian words, 8N1):
    instruction  FF FF id length instruction params... checksum    length = len(params) + 2
    status       FF FF id length error params... checksum          length = len(params) + 2
    checksum     ~(id + length + instruction/error + sum(params)) & 0xFF
"""

from __future__ import annotations

from dataclasses import dataclass

BROADCAST_ID = 0xFE
STS3215_MODEL = 777
TICKS_PER_TURN = 4096  # 12-bit magnetic encoder: 4096 ticks per 360 degrees
DEFAULT_BAUDRATE = 1_000_000
HEADER = b"\xff\xff"

# instructions
PING, READ, WRITE, REG_WRITE, ACTION = 0x01, 0x02, 0x03, 0x04, 0x05
SYNC_READ, SYNC_WRITE = 0x82, 0x83

# status packet error bits
ERROR_BITS = {
    0x01: "input voltage out of range",
    0x02: "angle sensor error",
    0x04: "overheat",
    0x08: "overcurrent",
    0x20: "overload",
}
OVERLOAD = 0x20


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    size: int  # bytes
    sign_bit: int | None = None  # sign-magnitude encoding with this sign bit (None: unsigned)
    eeprom: bool = False  # persists; writable only while Lock is 0

    def encode(self, value: int) -> bytes:
        value = int(value)
        if self.sign_bit is not None:
            magnitude = abs(value)
            if magnitude >= 1 << self.sign_bit:
                raise ValueError(f"{self.name}: {value} does not fit {self.sign_bit} magnitude bits")
            value = magnitude | (1 << self.sign_bit) if value < 0 else magnitude
        elif not 0 <= value < 1 << (8 * self.size):
            raise ValueError(f"{self.name}: {value} is outside 0..{(1 << 8 * self.size) - 1}")
        return value.to_bytes(self.size, "little")

    def decode(self, data: bytes | list[int]) -> int:
        value = int.from_bytes(bytes(data[: self.size]), "little")
        if self.sign_bit is not None and value & (1 << self.sign_bit):
            return -(value & ~(1 << self.sign_bit))
        return value


def _table(*rows: tuple) -> dict[str, Register]:
    return {row[0]: Register(*row) for row in rows}


# The STS3215 control table (the registers LibroBot reads or writes; addresses from Feetech's
# STS/SMS memory map). Units: positions in ticks (4096 per turn), velocity ticks/s, load 0.1 % of
# the maximum torque, voltage 0.1 V, temperature degrees C, return delay 2 us.
STS3215 = _table(
    ("Model_Number", 3, 2, None, True),
    ("ID", 5, 1, None, True),
    ("Baud_Rate", 6, 1, None, True),
    ("Return_Delay_Time", 7, 1, None, True),
    ("Response_Status_Level", 8, 1, None, True),
    ("Min_Position_Limit", 9, 2, None, True),
    ("Max_Position_Limit", 11, 2, None, True),
    ("Max_Temperature_Limit", 13, 1, None, True),
    ("Max_Voltage_Limit", 14, 1, None, True),
    ("Min_Voltage_Limit", 15, 1, None, True),
    ("Max_Torque_Limit", 16, 2, None, True),
    ("Phase", 18, 1, None, True),
    ("P_Coefficient", 21, 1, None, True),
    ("D_Coefficient", 22, 1, None, True),
    ("I_Coefficient", 23, 1, None, True),
    ("Protection_Current", 28, 2, None, True),
    ("Homing_Offset", 31, 2, 11, True),
    ("Operating_Mode", 33, 1, None, True),
    ("Protective_Torque", 34, 1, None, True),
    ("Protection_Time", 35, 1, None, True),
    ("Overload_Torque", 36, 1, None, True),
    ("Torque_Enable", 40, 1),
    ("Acceleration", 41, 1),
    ("Goal_Position", 42, 2, 15),
    ("Goal_Time", 44, 2),
    ("Goal_Velocity", 46, 2, 15),
    ("Torque_Limit", 48, 2),
    ("Lock", 55, 1),
    ("Present_Position", 56, 2, 15),
    ("Present_Velocity", 58, 2, 15),
    ("Present_Load", 60, 2, 10),
    ("Present_Voltage", 62, 1),
    ("Present_Temperature", 63, 1),
    ("Status", 65, 1),
    ("Moving", 66, 1),
    ("Present_Current", 69, 2, 15),
    ("Maximum_Acceleration", 85, 1),
)
PHASE_ANGLE_FEEDBACK = 0x10  # Phase bit 4: multi-turn angle feedback (cleared: positions stay in 0..4095)
EEPROM_END = 40  # addresses below are EEPROM

# Blocks read in one sync read: what a control cycle needs, and the slower health block.
MOTION_BLOCK = ("Present_Position", "Present_Velocity", "Present_Load")  # addresses 56..61
HEALTH_BLOCK = ("Present_Voltage", "Present_Temperature", "Status")  # addresses 62..65


def block_span(names: tuple[str, ...]) -> tuple[int, int]:
    """(start address, length) of the contiguous registers covering `names`."""
    regs = [STS3215[n] for n in names]
    start = min(r.address for r in regs)
    return start, max(r.address + r.size for r in regs) - start


def decode_block(names: tuple[str, ...], data: bytes | list[int]) -> dict[str, int]:
    start, _ = block_span(names)
    return {n: STS3215[n].decode(data[STS3215[n].address - start:]) for n in names}


def checksum(body: bytes) -> int:
    """The checksum over id, length, instruction/error and parameters."""
    return ~sum(body) & 0xFF


def packet(servo_id: int, code: int, params: bytes = b"") -> bytes:
    """An instruction packet (code: an instruction) or a status packet (code: the error byte)."""
    body = bytes([servo_id, len(params) + 2, code]) + bytes(params)
    return HEADER + body + bytes([checksum(body)])


def describe_errors(error: int) -> list[str]:
    """The status packet's error bits in words."""
    return [text for bit, text in ERROR_BITS.items() if error & bit]


def wire_bytes_per_cycle(servos: int, read_bytes: int, write_bytes: int) -> int:
    """Bytes on the wire for one sync read of `read_bytes` per servo and one sync write of
    `write_bytes` per servo (instruction packets and every status packet, headers included)."""
    sync_read = 8 + servos  # FF FF FE len 82 addr size ids... chk
    replies = servos * (6 + read_bytes)  # FF FF id len err data... chk
    sync_write = 8 + servos * (1 + write_bytes)  # FF FF FE len 83 addr size (id data...)... chk
    return sync_read + replies + sync_write
