"""The simulated phone line, exercised by an independent sender (Debian's efax) and raw AT.

efax runs its timers in wall time, so its lines use realtime_turns. It dies when
a page's data lasts under one wall second (see
faxgate.simline.efax), so efax tests run at EFAX_PACING with pages of about
15 line seconds at 14400 bit/s; efax stops timing when its last byte enters the
pty and T.31 buffers (~8 KB early), which leaves about 2 wall seconds per page.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import serial
from PIL import Image

from faxgate.errors import InputError
from faxgate.simline import (
    LineOptions,
    ReceivedFax,
    SimulatedLine,
    efax,
    read_sidecars,
    wait_for_fax,
)
from faxgate.simline.line import DteTurn, white_noise
from faxgate.simline.process import LineProcess, options_to_args

EFAX_PACING = 6.0


def text_page(seed: int, rows: int = 1100) -> Image.Image:
    """A deterministic page of text-like strokes (about 28 KB of MH data)."""
    rng = np.random.default_rng(seed)
    black = np.zeros((rows, 1728), dtype=bool)
    for top in range(40, rows - 60, 26):
        for x in np.sort(rng.choice(np.arange(80, 1640, 10), size=40, replace=False)):
            height = int(rng.integers(6, 17))
            black[top + 16 - height : top + 16, x : x + int(rng.integers(2, 8))] = True
    return Image.fromarray(~black).convert("1")


def efax_files(tmp_path: Path, count: int, resolution: str) -> tuple[list[Image.Image], list[Path]]:
    pages = [text_page(seed) for seed in range(1, count + 1)]
    files = [
        efax.write_tiff_f(page, tmp_path / f"page{index}.tif", resolution)
        for index, page in enumerate(pages, 1)
    ]
    return pages, files


def at(port: serial.Serial, command: bytes, until: bytes = b"OK\r\n", timeout: float = 5) -> bytes:
    """Send one AT command and read until ``until`` (or a final error) with a deadline."""
    port.write(command + b"\r")
    deadline = time.monotonic() + timeout
    reply = b""
    while time.monotonic() < deadline:
        reply += port.read(port.in_waiting or 1)
        if reply.endswith(until) or reply.endswith(b"ERROR\r\n"):
            return reply
    raise AssertionError(f"{command!r}: no {until!r} within {timeout} s, got {reply!r}")


def dis_of(fax: ReceivedFax) -> bytes:
    """The DIS frame the far end sent (address, control, FCF, then the FIF)."""
    return next(bytes.fromhex(f["hex"]) for f in fax.json["frames"] if f["frame"] == "DIS")


V17_V29_V27 = 0x2C  # DIS bits 11, 12, 14 as spandsp stores them in octet 4
ECM_BIT = 0x04  # DIS bit 27, octet 6


def wait_line_time(line: SimulatedLine, seconds: float, timeout: float = 10) -> None:
    """Wait until the line's sample clock has reached ``seconds`` of call time."""
    deadline = time.monotonic() + timeout
    while line.line_seconds < seconds:
        assert time.monotonic() < deadline, f"line time stuck at {line.line_seconds}"
        time.sleep(0.01)


def test_options_are_validated() -> None:
    with pytest.raises(InputError):
        LineOptions(behaviour="explode")
    with pytest.raises(InputError):
        LineOptions(max_rate=7200)
    with pytest.raises(InputError):
        LineOptions(behaviour="hangup-after")
    with pytest.raises(InputError):
        LineOptions(resolutions=("standard", "photo"))
    with pytest.raises(InputError):
        LineOptions(behaviour="busy", hangup_after_page=1)
    assert LineOptions(hangup_after_page=2).behaviour == "hangup-after"
    assert LineOptions(behaviour="no_answer").behaviour == "no-answer"
    args = options_to_args(
        LineOptions(pacing=30, max_rate=9600, resolutions=("fine",), realtime_turns=True)
    )
    assert args == [
        *("--pacing", "30", "--max-rate", "9600", "--resolution", "fine"),
        "--realtime-turns",
    ]


def test_dte_turn_follows_the_class1_dialogue() -> None:
    turn = DteTurn()
    turn.dte_sent(b"AT+FRH=3\r")
    turn.modem_sent(b"\r\nCONNECT\r\n")
    assert not turn.waiting  # a frame is coming from the line
    turn.modem_sent(b"\xff\x13\x80\x00\x10\x03")
    turn.modem_sent(b"\r\n")
    turn.modem_sent(b"OK")
    assert not turn.waiting
    turn.modem_sent(b"\r\n")
    assert turn.waiting  # the DTE must answer now
    turn.dte_sent(b"AT+FTH=3\r")
    assert not turn.waiting
    turn.modem_sent(b"\r\nCONNECT\r\n")
    assert turn.waiting  # the modem sends flags until the DTE's frame comes
    turn.dte_sent(b"\xff\x03\x10\x03")
    assert not turn.waiting
    turn.modem_sent(b"\r\nNO CARRIER\r\n")
    assert turn.waiting


def test_noise_level_is_calibrated_in_dbm0() -> None:
    rng = np.random.default_rng(7)
    for level in (-55.0, -30.0):
        samples = white_noise(level, 80_000, rng)
        rms = float(np.sqrt(np.mean(samples**2)))
        # spandsp's scale: a 0 dBm0 signal has an rms of 32768 * 10 ** (-6.16 / 20).
        assert 20 * np.log10(rms / (32768 * 10 ** (-6.16 / 20))) == pytest.approx(level, abs=0.1)


def test_noise_level_matches_spandsps_own_awgn() -> None:
    """spandsp's awgn_init_dbm0 is the reference for "dBm0" (DBM0_MAX_POWER = 6.16 dB)."""
    import ctypes

    lib = ctypes.CDLL("libspandsp.so.2")  # our own handle: prototypes stay local
    lib.awgn_init_dbm0.restype = ctypes.c_void_p
    lib.awgn_init_dbm0.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_float]
    lib.awgn.restype = ctypes.c_int16
    lib.awgn.argtypes = [ctypes.c_void_p]
    lib.awgn_free.argtypes = [ctypes.c_void_p]
    rng = np.random.default_rng(11)
    for level in (-60.0, -44.0):
        state = lib.awgn_init_dbm0(None, 1234, level)
        try:
            theirs = np.array([lib.awgn(state) for _ in range(40_000)], dtype=float)
        finally:
            lib.awgn_free(state)
        ours = white_noise(level, 40_000, rng)
        ratio_db = 20 * np.log10(np.sqrt(np.mean(ours**2)) / np.sqrt(np.mean(theirs**2)))
        assert abs(ratio_db) < 0.15, (level, ratio_db)


def test_raw_at_dialog(tmp_path: Path) -> None:
    device = tmp_path / "modem0"
    with SimulatedLine(device, tmp_path / "out", LineOptions(pacing=20)) as line:
        assert os.readlink(device).startswith("/dev/pts/")
        with serial.Serial(str(device), timeout=0.2) as port:
            assert at(port, b"ATE0").endswith(b"OK\r\n")
            fclass = at(port, b"AT+FCLASS=?")
            assert b"1" in fclass.split(b"\r\n")[1].split(b",")
            assert at(port, b"AT+FCLASS=1").endswith(b"OK\r\n")
            rates = at(port, b"AT+FTM=?").split(b"\r\n")[1].split(b",")
            assert {b"24", b"48", b"72", b"96", b"145", b"146"} <= set(rates)
            # Class 1 commands need an off-hook modem.
            assert at(port, b"AT+FRH=3").endswith(b"ERROR\r\n")
        assert line.received() == []
    assert not device.is_symlink()


def test_no_answer_and_voice_calls_are_recorded(tmp_path: Path) -> None:
    out = tmp_path / "out"
    options = LineOptions(pacing=40, behaviour="no-answer", ring_seconds=10)
    with (
        SimulatedLine(tmp_path / "modem0", out, options) as line,
        serial.Serial(str(tmp_path / "modem0"), timeout=0.2) as port,
    ):
        at(port, b"ATE0")
        at(port, b"AT+FCLASS=1")
        assert at(port, b"ATD5551234", until=b"NO ANSWER\r\n").endswith(b"NO ANSWER\r\n")
        (call,) = line.wait_for_fax(1, timeout=5)
    assert (call.result, call.pages, call.tiff) == ("no_answer", 0, None)
    assert 10 <= call.line_seconds < 11

    # A voice far end answers but never sends V.21 flags: the modem's S7 timer ends
    # the call with NO CARRIER.
    options = LineOptions(pacing=40, behaviour="voice")
    with (
        SimulatedLine(tmp_path / "modem1", out, options) as line,
        serial.Serial(str(tmp_path / "modem1"), timeout=0.2) as port,
    ):
        at(port, b"ATE0S7=10")
        at(port, b"AT+FCLASS=1")
        reply = at(port, b"ATD5551234", until=b"NO CARRIER\r\n")
        assert reply.endswith(b"NO CARRIER\r\n") and b"CONNECT" not in reply
        (call,) = line.wait_for_fax(1, timeout=5)
    assert 10 <= call.line_seconds < 11
    assert (call.result, call.pages) == ("not_a_fax", 0)


DIAL_AND_HOLD = """
import sys, time, serial
port = serial.Serial(sys.argv[1], timeout=0.2)
deadline = time.monotonic() + 20
for command, answer in ((b"ATE0", b"OK"), (b"AT+FCLASS=1", b"OK"), (b"ATD5551234", b"CONNECT")):
    port.write(command + b"\\r")
    reply = b""
    while answer + b"\\r\\n" not in reply and time.monotonic() < deadline:
        reply += port.read(64)
print(answer.decode() if answer in reply else repr(reply), flush=True)
port.read(1 << 20)  # hold the port (and the call) until killed
"""


def test_closing_the_port_drops_the_call_and_resets_the_modem(tmp_path: Path) -> None:
    """A DTE killed mid-call (its port closed by the kernel) is a DTR drop: on hook, ATZ."""
    device = tmp_path / "modem0"
    with SimulatedLine(device, tmp_path / "out", LineOptions(pacing=20)) as line:
        dte = subprocess.Popen(
            [sys.executable, "-c", DIAL_AND_HOLD, str(device)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert dte.stdout is not None and dte.stdout.readline().strip() == "CONNECT"
            assert line.received() == []  # the call is up, the far end is waiting for DCS
            dte.kill()
        finally:
            dte.kill()
            dte.wait()
        (dropped,) = line.wait_for_fax(1, timeout=5)
        # Dropped by the modem within line seconds of CONNECT, not by the far end's T1 (35 s).
        assert (dropped.result, dropped.pages) == ("calldropped", 0)
        assert dropped.line_seconds < 10 and "DCS" not in str(dropped.json["frames"])

        # The next opener finds a fresh modem (echo on again: the killed DTE had sent
        # ATE0, no stale output) and can call again; closing in-process drops that call too.
        with serial.Serial(str(device), timeout=0.2) as port:
            assert at(port, b"AT") == b"AT\r\r\nOK\r\n"
            at(port, b"ATE0")
            at(port, b"AT+FCLASS=1")
            assert b"CONNECT" in at(port, b"ATD5551234", until=b"CONNECT\r\n", timeout=10)
        first, second = line.wait_for_fax(2, timeout=5)
        assert (first.call, second.call, second.result) == (1, 2, "calldropped")
        with serial.Serial(str(device), timeout=0.2) as port:
            assert at(port, b"AT") == b"AT\r\r\nOK\r\n"


def test_efax_sends_one_page(tmp_path: Path) -> None:
    pages, files = efax_files(tmp_path, 1, "standard")
    device = tmp_path / "modem0"
    with SimulatedLine(
        device, tmp_path / "out", LineOptions(pacing=EFAX_PACING, realtime_turns=True)
    ) as line:
        sent = efax.send(device, files)
        assert sent.returncode == 0, sent.log
        (fax,) = line.wait_for_fax(1, timeout=10)
        seconds = line.line_seconds
    assert fax.ok and fax.result == "ok"
    assert (fax.pages, fax.bit_rate, fax.resolution) == (1, 14400, "standard")
    assert fax.remote_ident == "+1 555 0100"
    assert fax.json["encoding"] == "MH" and fax.json["ecm"] is False
    assert fax.json["dialled"] == "5551234"
    frames = [frame["frame"] for frame in fax.json["frames"]]
    assert frames[:2] == ["CSI", "DIS"] and "DCS" in frames and frames[-1] == "DCN"
    dis = dis_of(fax)
    assert dis[4] & V17_V29_V27 == V17_V29_V27 and not dis[6] & ECM_BIT
    # 15 s of page data at 14400 plus phase B/D: a real call, measured in line time.
    assert 15 < fax.line_seconds <= seconds < 60
    assert fax.tiff is not None and fax.tiff.name == "modem0-0001.tif"
    (image,) = fax.images()
    assert efax.page_matches(image, pages[0])
    assert not list((tmp_path / "out").glob(".*")), "temporary files left behind"


def test_efax_two_fine_pages(tmp_path: Path) -> None:
    pages, files = efax_files(tmp_path, 2, "fine")
    device = tmp_path / "modem0"
    options = LineOptions(
        pacing=EFAX_PACING,
        realtime_turns=True,
        resolutions=("standard", "fine"),
        compressions=("mh",),
    )
    with SimulatedLine(device, tmp_path / "out", options) as line:
        sent = efax.send(device, files)
        assert sent.returncode == 0, sent.log
        (fax,) = line.wait_for_fax(1, timeout=10)
    summary = (fax.result, fax.pages, fax.bit_rate, fax.resolution)
    assert summary == ("ok", 2, 14400, "fine"), (fax.json, sent.log)
    dis = dis_of(fax)
    assert dis[4] & 0x40 and not dis[4] & 0x80  # fine (bit 15) yes, 2-D coding (bit 16) no
    assert not dis[8] & 0x01  # no superfine (bit 41)
    images = fax.images()
    assert len(images) == 2
    assert efax.page_matches(images[0], pages[0]) and efax.page_matches(images[1], pages[1])
    assert not efax.page_matches(images[0], pages[1])  # the comparison can fail


def test_busy_line(tmp_path: Path) -> None:
    _, files = efax_files(tmp_path, 1, "standard")
    device = tmp_path / "modem0"
    with SimulatedLine(device, tmp_path / "out", LineOptions(pacing=20, behaviour="busy")) as line:
        sent = efax.send(device, files)
        (call,) = line.wait_for_fax(1, timeout=5)
    assert sent.outcome == "busy", sent.log
    assert (call.result, call.pages, call.tiff) == ("busy", 0, None)


def test_far_end_hangs_up_after_first_page(tmp_path: Path) -> None:
    _, files = efax_files(tmp_path, 2, "standard")
    device = tmp_path / "modem0"
    options = LineOptions(pacing=EFAX_PACING, realtime_turns=True, hangup_after_page=1)
    with SimulatedLine(device, tmp_path / "out", options) as line:
        sent = efax.send(device, files)
        (fax,) = line.wait_for_fax(1, timeout=10)
    assert sent.returncode != 0, sent.log
    assert (fax.result, fax.pages) == ("far_end_hangup", 1)
    assert fax.tiff is not None and len(fax.images()) == 1


def test_two_lines_at_once(tmp_path: Path) -> None:
    pages, files = efax_files(tmp_path, 1, "standard")
    out = tmp_path / "out"
    devices = [tmp_path / "modem0", tmp_path / "modem1"]
    results: dict[str, efax.EfaxResult] = {}

    def send(device: Path) -> None:
        results[device.name] = efax.send(device, files, number=device.name[-1])

    options = LineOptions(pacing=EFAX_PACING, realtime_turns=True)
    with_ecm = LineOptions(pacing=EFAX_PACING, realtime_turns=True, ecm=True)
    with SimulatedLine(devices[0], out, options), SimulatedLine(devices[1], out, with_ecm):
        senders = [threading.Thread(target=send, args=(device,)) for device in devices]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(60)
        faxes = wait_for_fax(out, count=2, timeout=10)
    assert all(result.returncode == 0 for result in results.values()), results
    assert sorted((fax.device, fax.json["dialled"]) for fax in faxes) == [
        ("modem0", "0"),
        ("modem1", "1"),
    ]
    for fax in faxes:
        assert fax.ok and efax.page_matches(fax.images()[0], pages[0])
        assert fax.json["ecm"] is False  # efax cannot use the ECM modem1 offers
    by_device = sorted(faxes, key=lambda fax: fax.device)
    assert [bool(dis_of(fax)[6] & ECM_BIT) for fax in by_device] == [False, True]


def test_line_as_a_process(tmp_path: Path) -> None:
    _, files = efax_files(tmp_path, 1, "standard")
    device = tmp_path / "modem0"
    out = tmp_path / "out"
    spare = tmp_path / "modem1"
    options = LineOptions(
        pacing=EFAX_PACING, realtime_turns=True, max_rate=9600, noise_dbm0=-55, csi="555 0142"
    )
    process = LineProcess([device, spare], out, options)
    with process:
        assert device.is_symlink() and spare.is_symlink()
        assert os.readlink(device) != os.readlink(spare)
        sent = efax.send(device, files)
        assert sent.returncode == 0, sent.log
        (fax,) = wait_for_fax(out, timeout=10)
    assert process.process is not None and process.process.returncode == 0, process.stderr()
    assert not device.is_symlink() and not spare.is_symlink()
    assert (fax.result, fax.bit_rate) == ("ok", 9600)
    assert dis_of(fax)[4] & V17_V29_V27 == 0x0C  # V.29 and V.27 ter, no V.17
    assert "555 0142" in sent.log
    sidecar = json.loads((out / "modem0-0001.json").read_text())
    assert sidecar["tiff"] == "modem0-0001.tif" and sidecar["call"] == 1


def test_call_numbers_continue_across_restarts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for _ in range(2):
        with (
            SimulatedLine(tmp_path / "modem0", out, LineOptions(behaviour="busy")),
            serial.Serial(str(tmp_path / "modem0"), timeout=0.2) as port,
        ):
            at(port, b"ATE0")
            before = len(read_sidecars(out))
            at(port, b"ATD1", until=b"BUSY\r\n")
            wait_for_fax(out, count=before + 1, timeout=5)
    assert [call.call for call in read_sidecars(out, "modem0")] == [1, 2]


def test_cli_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from faxgate.cli import main

    missing_dir = tmp_path / "nowhere" / "modem0"
    assert main(["line", "--device", str(missing_dir), "--outdir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    same_name = [str(tmp_path / "a" / "modem0"), str(tmp_path / "b" / "modem0")]
    argv = ["line", "--outdir", str(tmp_path), "--device", same_name[0], "--device", same_name[1]]
    assert main(argv) == 2
    assert "distinct" in capsys.readouterr().err
    assert main(["line", "--device", "x", "--outdir", str(tmp_path), "--pacing", "0"]) == 2
