"""T.30 HDLC frames as a Class 1 modem passes them: FCF codes, DIS/DCS fields, idents.

Bytes are in the order the modem hands them over (LSB of each byte first on the
line), so T.30 Table 2 bit *n* is bit ``(n-1) % 8`` of FIF byte ``(n-1) // 8``.
The X bit (0x01 of the FCF) marks frames from the station that received DIS;
comparisons mask it off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ADDRESS = 0xFF
CONTROL_NOT_FINAL = 0x03
CONTROL_FINAL = 0x13
X_BIT = 0x01

DIS = 0x80
CSI = 0x40
NSF = 0x20
DTC = 0x81
DCS = 0x82
TSI = 0x42
CFR = 0x84
FTT = 0x44
EOM = 0x8E
MPS = 0x4E
EOP = 0x2E
MCF = 0x8C
RTP = 0xCC
RTN = 0x4C
PIP = 0xAC
PIN = 0x2C
DCN = 0xFA
CRP = 0x1A

FCF_NAMES: dict[int, str] = {
    DIS: "DIS",
    CSI: "CSI",
    NSF: "NSF",
    DCS: "DCS",
    TSI: "TSI",
    CFR: "CFR",
    FTT: "FTT",
    EOM: "EOM",
    MPS: "MPS",
    EOP: "EOP",
    MCF: "MCF",
    RTP: "RTP",
    RTN: "RTN",
    PIP: "PIP",
    PIN: "PIN",
    DCN: "DCN",
    CRP: "CRP",
}

IDENT_LENGTH = 20


class FrameError(ValueError):
    """A frame too short or malformed to interpret."""


def crc16_itu(data: bytes) -> int:
    """The HDLC frame check sequence (CRC-16/X.25) of ``data``, before complementing."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def strip_fcs(data: bytes) -> bytes:
    """Drop a trailing FCS if the modem passed one (T.31 modems differ on this)."""
    if len(data) >= 5 and crc16_itu(data) == 0xF0B8:
        return data[:-2]
    return data


@dataclass(frozen=True)
class Frame:
    """One HDLC frame: FCF (X bit included), FIF, and whether it is the final one."""

    fcf: int
    fif: bytes = b""
    final: bool = True

    @property
    def kind(self) -> int:
        """The FCF without the X bit, to compare against the constants above."""
        return self.fcf & ~X_BIT & 0xFF

    @property
    def name(self) -> str:
        return FCF_NAMES.get(self.kind, f"FCF-{self.fcf:02X}")

    def to_bytes(self) -> bytes:
        control = CONTROL_FINAL if self.final else CONTROL_NOT_FINAL
        return bytes((ADDRESS, control, self.fcf)) + self.fif

    @classmethod
    def parse(cls, data: bytes) -> Frame:
        """Parse a frame as received (address, control, FCF, FIF, optional FCS)."""
        data = strip_fcs(data)
        if len(data) < 3:
            raise FrameError(f"frame of {len(data)} bytes is too short")
        if data[0] != ADDRESS or data[1] & 0xEF != CONTROL_NOT_FINAL:
            raise FrameError(f"bad HDLC address/control {data[:2].hex()}")
        return cls(fcf=data[2], fif=bytes(data[3:]), final=bool(data[1] & 0x10))


def encode_ident(ident: str) -> bytes:
    """TSI/CSI FIF: 20 characters, space padded, sent last character first."""
    text = ident.encode("ascii", "replace")[:IDENT_LENGTH].ljust(IDENT_LENGTH, b" ")
    return text[::-1]


def decode_ident(fif: bytes) -> str:
    """The station identity from a CSI/TSI FIF (reversed, space padded)."""
    text = fif[::-1].decode("ascii", "replace")
    return "".join(ch if ch.isprintable() else "?" for ch in text).strip()


# --- DIS / DCS (T.30 Table 2) -------------------------------------------------


@dataclass(frozen=True)
class Modulation:
    """One data signalling rate and its Class 1 ``+FTM`` codes."""

    family: str  # "V.17", "V.29", "V.27ter"
    bit_rate: int
    ftm_long: int  # long training (TCF, first page)
    ftm_short: int  # short training, V.17 only (page data after a good TCF)
    dcs_bits: int  # bits 11-14 as a nibble, bit 11 = 1

    @property
    def name(self) -> str:
        return f"{self.family} {self.bit_rate}"


#: Fastest first: the order rates are tried in and fall back through.
MODULATIONS: tuple[Modulation, ...] = (
    Modulation("V.17", 14400, 145, 146, 0b1000),
    Modulation("V.17", 12000, 121, 122, 0b1010),
    Modulation("V.17", 9600, 97, 98, 0b1001),
    Modulation("V.29", 9600, 96, 96, 0b0001),
    Modulation("V.17", 7200, 73, 74, 0b1011),
    Modulation("V.29", 7200, 72, 72, 0b0011),
    Modulation("V.27ter", 4800, 48, 48, 0b0010),
    Modulation("V.27ter", 2400, 24, 24, 0b0000),
)

# DIS bits 11-14 (nibble, bit 11 = 1) → the modem families the receiver has.
_DIS_RATE_FAMILIES: dict[int, frozenset[str]] = {
    0b0000: frozenset({"V.27ter-fallback"}),
    0b0010: frozenset({"V.27ter"}),
    0b0001: frozenset({"V.29"}),
    0b0011: frozenset({"V.27ter", "V.29"}),
    0b1011: frozenset({"V.27ter", "V.29", "V.17"}),
    0b0111: frozenset({"V.27ter", "V.29"}),  # V.33 too; we have no V.33
    # Reserved in T.30, but sent by machines with every modem (V.33 and V.17 both
    # set): their V.17 is real, so use it rather than drop to 4800.
    0b1111: frozenset({"V.27ter", "V.29", "V.17"}),
}

# Minimum scan line time: DIS code (bits 21-23, bit 21 = 1) → ms per resolution.
_DIS_SCAN_MS: dict[str, tuple[int, ...]] = {
    "standard": (20, 5, 10, 20, 40, 40, 10, 0),
    "fine": (20, 5, 10, 10, 40, 20, 5, 0),
    "superfine_half": (10, 5, 5, 5, 20, 10, 5, 0),
}
_DCS_SCAN_CODE: dict[int, int] = {20: 0, 5: 1, 10: 2, 40: 4, 0: 7}
_DCS_SCAN_MS: dict[int, int] = {v: k for k, v in _DCS_SCAN_CODE.items()}


def _bit(fif: bytes, n: int) -> bool:
    index = (n - 1) // 8
    return index < len(fif) and bool(fif[index] & (1 << ((n - 1) % 8)))


def _set(buf: bytearray, n: int) -> None:
    index = (n - 1) // 8
    while len(buf) <= index:
        buf.append(0)
    buf[index] |= 1 << ((n - 1) % 8)


def _field(fif: bytes, first: int, count: int) -> int:
    return sum(1 << i for i in range(count) if _bit(fif, first + i))


@dataclass(frozen=True)
class Capabilities:
    """What the far end said it can do in its DIS."""

    modulations: tuple[Modulation, ...]
    fine: bool
    superfine: bool
    mr: bool
    t6: bool
    ecm: bool
    width_code: int
    unlimited_length: bool
    scan_code: int
    half_scan_superfine: bool
    receiver: bool
    raw: bytes = field(default=b"", repr=False)

    def scan_ms(self, resolution: str) -> int:
        """Minimum scan line time the receiver needs at ``resolution``."""
        if resolution == "superfine" and self.half_scan_superfine:
            return _DIS_SCAN_MS["superfine_half"][self.scan_code]
        table = "standard" if resolution == "standard" else "fine"
        return _DIS_SCAN_MS[table][self.scan_code]

    def best_resolution(self, wanted: str) -> str:
        """The finest resolution not above ``wanted`` that the receiver accepts."""
        if wanted == "superfine" and self.superfine:
            return "superfine"
        if wanted in ("superfine", "fine") and self.fine:
            return "fine"
        return "standard"


def parse_dis(fif: bytes) -> Capabilities:
    """Decode a DIS FIF (T.30 Table 2). Raises FrameError if it is too short."""
    if len(fif) < 3:
        raise FrameError(f"DIS with {len(fif)} FIF bytes (need at least 3)")
    families = _DIS_RATE_FAMILIES.get(_field(fif, 11, 4))
    if families is None:
        families = frozenset({"V.27ter"})  # reserved codes: fall back to the minimum
    if "V.27ter-fallback" in families:
        modulations = tuple(m for m in MODULATIONS if m.bit_rate == 2400)
    else:
        modulations = tuple(m for m in MODULATIONS if m.family in families)
    return Capabilities(
        modulations=modulations,
        fine=_bit(fif, 15),
        superfine=_bit(fif, 41),
        mr=_bit(fif, 16),
        t6=_bit(fif, 31),
        ecm=_bit(fif, 27),
        width_code=_field(fif, 17, 2),
        unlimited_length=_bit(fif, 19),
        scan_code=_field(fif, 21, 3),
        half_scan_superfine=_bit(fif, 46),
        receiver=_bit(fif, 10),
        raw=bytes(fif),
    )


def build_dis(
    modulations: str = "V.17",
    *,
    fine: bool = True,
    mr: bool = True,
    scan_code: int = 7,
    ecm: bool = False,
    receiver: bool = True,
) -> bytes:
    """A DIS FIF, for hand-made transcripts (``modulations``: top family)."""
    nibble = {"V.17": 0b1011, "V.29": 0b0011, "V.27ter": 0b0010, "V.29only": 0b0001}
    fif = bytearray(3)
    if receiver:
        _set(fif, 10)
    for i in range(4):
        if nibble[modulations] & (1 << i):
            _set(fif, 11 + i)
    if fine:
        _set(fif, 15)
    if mr:
        _set(fif, 16)
    for i in range(3):
        if scan_code & (1 << i):
            _set(fif, 21 + i)
    if ecm:
        _set(fif, 24)
        _set(fif, 27)
    return bytes(fif)


@dataclass(frozen=True)
class Session:
    """The parameters we command in DCS: what phase C will use."""

    modulation: Modulation
    resolution: str  # "standard" | "fine" | "superfine"
    coding: str  # "mh" | "mr"
    scan_ms: int
    unlimited_length: bool = False

    @property
    def min_bits_per_line(self) -> int:
        """Fill so each coded line lasts at least the minimum scan time."""
        return math.ceil(self.modulation.bit_rate * self.scan_ms / 1000)


def build_dcs(session: Session) -> bytes:
    """The DCS FIF commanding ``session`` (no ECM, 1728 pels, A4 or unlimited)."""
    fif = bytearray(3)
    _set(fif, 10)  # receiver: receive the fax document
    for i in range(4):
        if session.modulation.dcs_bits & (1 << i):
            _set(fif, 11 + i)
    if session.resolution == "fine":
        _set(fif, 15)
    if session.coding == "mr":
        _set(fif, 16)
    if session.unlimited_length:
        _set(fif, 19)
    code = _DCS_SCAN_CODE[session.scan_ms]
    for i in range(3):
        if code & (1 << i):
            _set(fif, 21 + i)
    if session.resolution == "superfine":
        for extend in (24, 32, 40):
            _set(fif, extend)
        _set(fif, 41)
    return bytes(fif)


def parse_dcs(fif: bytes) -> Session:
    """Decode a DCS FIF back into a Session (used by tests and transcripts)."""
    if len(fif) < 3:
        raise FrameError(f"DCS with {len(fif)} FIF bytes (need at least 3)")
    nibble = _field(fif, 11, 4)
    matches = [m for m in MODULATIONS if m.dcs_bits == nibble]
    if not matches:
        raise FrameError(f"DCS rate code {nibble:04b} unknown")
    resolution = "superfine" if _bit(fif, 41) else "fine" if _bit(fif, 15) else "standard"
    scan = _DCS_SCAN_MS.get(_field(fif, 21, 3))
    if scan is None:
        raise FrameError("DCS minimum scan time code reserved")
    return Session(
        modulation=matches[0],
        resolution=resolution,
        coding="mr" if _bit(fif, 16) else "mh",
        scan_ms=scan,
        unlimited_length=_bit(fif, 19),
    )


def dcs_scan_ms(needed_ms: int) -> int:
    """The smallest DCS scan-time value that is at least ``needed_ms``."""
    for ms in sorted(_DCS_SCAN_CODE):
        if ms >= needed_ms:
            return ms
    return 40
