"""T.30 frames: FCF names, DIS/DCS fields (T.30 Table 2), idents, FCS handling."""

from __future__ import annotations

import pytest

from faxgate.faxd import frames as fr
from faxgate.faxd.frames import MODULATIONS, Frame, FrameError, Session

# Frames exactly as the spandsp T.31 modem delivered them (FCS included).
SPANDSP_CSI = bytes.fromhex("ff03403037313533323338203535372036382b20202020b158")
SPANDSP_DIS = bytes.fromhex("ff138000eef8808091808080187857")


def test_parse_real_csi_and_dis():
    csi = Frame.parse(SPANDSP_CSI)
    assert (csi.name, csi.final) == ("CSI", False)
    assert fr.decode_ident(csi.fif) == "+86 755 83235170"
    dis = Frame.parse(SPANDSP_DIS)
    assert dis.name == "DIS" and dis.final and len(dis.fif) == 10  # FCS stripped
    caps = fr.parse_dis(dis.fif)
    assert [m.bit_rate for m in caps.modulations] == [
        14400,
        12000,
        9600,
        9600,
        7200,
        7200,
        4800,
        2400,
    ]
    assert caps.fine and caps.superfine and caps.mr and caps.receiver
    assert not caps.ecm
    assert caps.scan_ms("fine") == 0


def test_x_bit_is_masked_for_comparison():
    frame = Frame(fr.DCS | fr.X_BIT, b"\x00\x00\x00")
    assert frame.kind == fr.DCS and frame.name == "DCS"
    assert Frame(0x77).name == "FCF-77"


@pytest.mark.parametrize("data", [b"", b"\xff", b"\xff\x13", b"\x00\x13\x80", b"\xff\x07\x80"])
def test_malformed_frames(data):
    with pytest.raises(FrameError):
        Frame.parse(data)


def test_fcs_is_stripped_only_when_it_checks():
    body = Frame(fr.MCF).to_bytes()
    fcs = (fr.crc16_itu(body) ^ 0xFFFF).to_bytes(2, "little")
    assert fr.strip_fcs(body + fcs) == body
    assert fr.strip_fcs(body + b"\x00\x00") == body + b"\x00\x00"


def test_ident_round_trip_and_limits():
    fif = fr.encode_ident("+1 555 0100")
    assert len(fif) == 20 and fif.endswith(b"1+") and fif.startswith(b" ")
    assert fr.decode_ident(fif) == "+1 555 0100"
    assert fr.decode_ident(fr.encode_ident("x" * 30)) == "x" * 20
    assert fr.decode_ident(b"\x01BA") == "AB?"  # control bytes from the line are masked


@pytest.mark.parametrize("modulation", MODULATIONS)
@pytest.mark.parametrize("resolution", ["standard", "fine", "superfine"])
def test_dcs_round_trip(modulation, resolution):
    session = Session(modulation, resolution, "mr", 10, unlimited_length=True)
    assert fr.parse_dcs(fr.build_dcs(session)) == session


def test_dcs_bits_match_table_2():
    v17 = next(m for m in MODULATIONS if m.bit_rate == 14400)
    fif = fr.build_dcs(Session(v17, "fine", "mr", 0))
    # bit 10 receive, bit 14 (V.17 14400), bit 15 fine, bit 16 2D; bits 21-23 = 0 ms
    assert fif == bytes([0x00, 0x02 | 0x20 | 0x40 | 0x80, 0x70])
    v27 = next(m for m in MODULATIONS if m.bit_rate == 2400)
    assert fr.build_dcs(Session(v27, "standard", "mh", 20)) == bytes([0x00, 0x02, 0x00])


def test_min_bits_per_line():
    v29 = next(m for m in MODULATIONS if m.family == "V.29" and m.bit_rate == 9600)
    assert Session(v29, "fine", "mh", 10).min_bits_per_line == 96
    assert Session(v29, "fine", "mh", 0).min_bits_per_line == 0


@pytest.mark.parametrize(
    ("code", "standard", "fine"),
    [
        (0, 20, 20),
        (1, 5, 5),
        (2, 10, 10),
        (3, 20, 10),
        (4, 40, 40),
        (5, 40, 20),
        (6, 10, 5),
        (7, 0, 0),
    ],
)
def test_dis_scan_times(code, standard, fine):
    caps = fr.parse_dis(fr.build_dis("V.17", scan_code=code))
    assert (caps.scan_ms("standard"), caps.scan_ms("fine")) == (standard, fine)


def test_best_resolution_and_short_dis():
    caps = fr.parse_dis(fr.build_dis("V.29", fine=False))
    assert caps.best_resolution("superfine") == "standard"
    caps = fr.parse_dis(fr.build_dis("V.29"))
    assert caps.best_resolution("superfine") == "fine"
    assert caps.best_resolution("standard") == "standard"
    assert [m.bit_rate for m in caps.modulations] == [9600, 7200, 4800, 2400]
    with pytest.raises(FrameError):
        fr.parse_dis(b"\x00\x02")


def test_dcs_scan_value_rounds_up():
    assert [fr.dcs_scan_ms(ms) for ms in (0, 5, 7, 10, 20, 40)] == [0, 5, 10, 10, 20, 40]


def test_dis_rate_codes_of_table_2():
    def rates(nibble: int) -> list[int]:
        fif = bytearray(3)
        fif[1] = nibble << 2  # bits 11-14 are bits 2-5 of the second octet
        return [m.bit_rate for m in fr.parse_dis(bytes(fif)).modulations]

    assert rates(0b0000) == [2400]  # V.27 ter fall-back mode
    assert rates(0b0010) == [4800, 2400]
    assert rates(0b0001) == [9600, 7200]
    assert rates(0b0011) == [9600, 7200, 4800, 2400]
    assert rates(0b1011) == [14400, 12000, 9600, 9600, 7200, 7200, 4800, 2400]
    assert rates(0b1111)[0] == 14400  # reserved, but every modem bit set
    assert rates(0b0101) == [4800, 2400]  # other reserved codes: the V.27 ter minimum
