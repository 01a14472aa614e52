"""Class 1 AT layer and serial transport: DLE framing, result codes, the real
spandsp T.31 modem on a pty, UUCP lock files and a device that vanishes."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from faxgate.faxd.class1 import (
    Class1Modem,
    Unstuffer,
    normalise_result,
    stuff,
    stuffed_block,
)
from faxgate.faxd.modem import (
    ModemGone,
    PortLocked,
    SerialPort,
    SerialSettings,
    UucpLock,
    lock_path,
    lock_paths,
    reset_and_probe,
)
from faxgate.faxd.page import FaxPage
from faxgate.faxd.sender import ImagePages, SendOptions, send_fax
from faxgate.simline import LineOptions, SimulatedLine

PACING = 40.0


def test_stuffing_doubles_dle_and_ends_with_dle_etx():
    assert stuff(b"\x01\x10\x02\x10\x10") == b"\x01\x10\x10\x02\x10\x10\x10\x10"
    assert stuffed_block(b"\x10") == b"\x10\x10\x10\x03"


def test_unstuffer_across_chunk_boundaries():
    wire = b"\xff\x10\x10\x13\x10\x1a\x80\x10\x03OK"
    for split in range(len(wire) + 1):
        unstuffer = Unstuffer()
        rest = unstuffer.feed(wire[:split])
        rest = unstuffer.feed(wire[split:]) if not unstuffer.done else rest + wire[split:]
        assert unstuffer.done
        assert bytes(unstuffer.data) == b"\xff\x10\x13\x10\x10\x80"
        assert rest == b"OK"


def test_result_codes_numeric_and_verbose():
    assert normalise_result("0") == "OK"
    assert normalise_result("7") == "BUSY"
    assert normalise_result(" NO DIAL TONE ") == "NO DIALTONE"
    assert normalise_result("+FCERROR") == "+FCERROR"


@pytest.fixture
def sim(tmp_path):
    line = SimulatedLine(tmp_path / "ttyFAX0", tmp_path / "out", LineOptions(pacing=PACING))
    line.start()
    yield line
    line.stop()


def settings(tmp_path) -> SerialSettings:
    return SerialSettings(lock_dir=str(tmp_path / "lock"))


def test_probe_the_spandsp_modem(sim, tmp_path):
    (tmp_path / "lock").mkdir()
    lines: list[tuple[str, str]] = []
    with SerialPort(str(sim.device), settings(tmp_path)) as port:
        modem = Class1Modem(port, lambda d, t: lines.append((d, t)))
        identity = reset_and_probe(modem)
        assert "1" in identity.classes
        assert identity.manufacturer and identity.model
        # the modem is left in class 1 with echo off: a query answers without echo
        assert modem.query("AT+FCLASS?") == ("OK", ["1"])
    assert (">", "ATE0") in lines


def test_lock_file_created_refused_and_removed(sim, tmp_path):
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir()
    path = lock_path(sim.device, lock_dir)
    assert path.name == "LCK..ttyFAX0"
    port = SerialPort(str(sim.device), settings(tmp_path)).open()
    try:
        content = path.read_bytes()
        assert content == f"{os.getpid():10d}\n".encode()
        assert len(content) == 11
        with pytest.raises(PortLocked):
            SerialPort(str(sim.device), settings(tmp_path)).open()
        # a call on a locked port is a clean modem_error result, not an exception
        pages = ImagePages([FaxPage(_blank(), "standard")])
        result = send_fax(str(sim.device), "1", pages, SendOptions(lock_dir=str(lock_dir)))
        assert result.reason == "modem_error" and "already has the port open" in result.message
    finally:
        port.close()
    assert not path.exists()


def test_second_open_from_another_process_fails_cleanly(sim, tmp_path):
    import sys

    (tmp_path / "lock").mkdir()
    holder_code = (
        "import sys\n"
        "from faxgate.faxd.modem import SerialPort, SerialSettings\n"
        f"port = SerialPort({str(sim.device)!r}, SerialSettings(lock_dir={str(tmp_path / 'lock')!r}))\n"
        "port.open()\n"
        "print('open', flush=True)\n"
        "sys.stdin.read()\n"
        "port.close()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(PortLocked, match=f"process {holder.pid}"):
            SerialPort(str(sim.device), settings(tmp_path)).open()
    finally:
        holder.stdin.close()
        holder.wait(10)
    # once the holder closed the port, it is ours
    with SerialPort(str(sim.device), settings(tmp_path)):
        pass


def test_lock_held_by_another_live_process(tmp_path):
    holder = subprocess.Popen(["sleep", "30"])
    try:
        lock_path("/dev/ttyS9", tmp_path).write_text(f"{holder.pid:10d}\n")
        with pytest.raises(PortLocked, match=str(holder.pid)):
            UucpLock(lock_path("/dev/ttyS9", tmp_path)).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(sim, tmp_path):
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = lock_path(sim.device, lock_dir)
    path.write_text(f"{dead.pid:10d}\n")
    with SerialPort(str(sim.device), settings(tmp_path)):
        assert path.read_text() == f"{os.getpid():10d}\n"
    assert not path.exists()


def test_unwritable_lock_dir_is_a_clean_error(sim, tmp_path):
    with pytest.raises(Exception) as info:
        SerialPort(str(sim.device), SerialSettings(lock_dir=str(tmp_path / "missing"))).open()
    assert "lock" in str(info.value)


def test_missing_device_is_modem_gone(tmp_path):
    with pytest.raises(ModemGone):
        SerialPort(str(tmp_path / "ttyNONE"), settings(tmp_path)).open()
    pages = ImagePages([FaxPage(_blank(), "standard")])
    result = send_fax(str(tmp_path / "ttyNONE"), "1", pages, SendOptions(lock_dir=None))
    assert result.reason == "modem_error" and not result.ok


def test_device_vanishing_under_an_open_port(sim, tmp_path):
    (tmp_path / "lock").mkdir()
    port = SerialPort(str(sim.device), settings(tmp_path)).open()
    try:
        modem = Class1Modem(port)
        reset_and_probe(modem)
        sim.stop()  # closes the pty master: like a USB modem unplugged
        with pytest.raises(ModemGone):
            for _ in range(3):
                modem.command("AT", 1.0)
    finally:
        port.close()
    assert not lock_path(sim.device, tmp_path / "lock").exists()


def test_device_vanishing_mid_call_ends_the_call_cleanly(tmp_path):
    sim = SimulatedLine(tmp_path / "ttyFAX1", tmp_path / "out", LineOptions(pacing=10.0))
    sim.start()
    pages = ImagePages([FaxPage(_blank(2000), "fine") for _ in range(3)])
    results = []
    caller = threading.Thread(
        target=lambda: results.append(
            send_fax(str(sim.device), "1", pages, SendOptions(lock_dir=None, time_scale=2.5))
        )
    )
    caller.start()
    deadline = time.monotonic() + 20
    while sim.line_seconds < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    sim.stop()
    caller.join(30)
    assert not caller.is_alive()
    (result,) = results
    assert not result.ok and result.reason == "modem_error"
    assert "vanished" in result.message or "gone" in result.message or "device" in result.message
    assert result.reached_fax_carrier


def _blank(rows: int = 50):
    from PIL import Image, ImageDraw

    image = Image.new("1", (1728, rows), 1)
    ImageDraw.Draw(image).text((10, 10), "x", fill=0)
    return image


class ScriptedPort:
    """A byte port that answers AT commands from a script and records flow control."""

    def __init__(self, answers: dict[bytes, bytes]) -> None:
        self.answers = answers
        self.pending = b""
        self.flow: list[bool] = []
        self.data_written_with_flow: list[bool] = []

    def read(self, size: int, timeout: float) -> bytes:
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    def write(self, data: bytes) -> None:
        for command, reply in self.answers.items():
            if data.startswith(command):
                self.pending += reply
                return
        self.data_written_with_flow.append(bool(self.flow and self.flow[-1]))
        if data.endswith(b"\x10\x03"):
            self.pending += b"\r\nOK\r\n"

    def set_send_flow_control(self, enabled: bool) -> None:
        self.flow.append(enabled)


def test_xonxoff_only_while_sending_page_data():
    port = ScriptedPort({b"AT+FTM=145": b"\r\nCONNECT\r\n"})
    modem = Class1Modem(port)
    assert modem.send_data(145, b"\x11\x13" * 5000, 5.0) == "OK"
    assert port.flow == [True, False]  # on for the data, off again for HDLC receive
    assert port.data_written_with_flow and all(port.data_written_with_flow)


@pytest.mark.parametrize(("flow_control", "rtscts", "ixon"), [("xonxoff", 0, 1), ("rtscts", 1, 0)])
def test_flow_control_reaches_the_tty(sim, tmp_path, flow_control, rtscts, ixon):
    import termios

    settings = SerialSettings(flow_control=flow_control, lock_dir=None)
    with SerialPort(str(sim.device), settings) as port:
        fd = port._port.fileno()
        assert bool(termios.tcgetattr(fd)[2] & termios.CRTSCTS) == bool(rtscts)
        assert not termios.tcgetattr(fd)[0] & termios.IXON  # HDLC bytes 0x11/0x13 pass
        port.set_send_flow_control(True)
        assert bool(termios.tcgetattr(fd)[0] & termios.IXON) == bool(ixon)
        port.set_send_flow_control(False)
        assert not termios.tcgetattr(fd)[0] & termios.IXON


def test_a_symlinked_device_also_locks_the_real_device(sim, tmp_path):
    """/dev/serial/by-id/... style: mgetty locks the real name, so we must too."""
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir()
    by_id = tmp_path / "usb-Modem_1234-if00"
    by_id.symlink_to(sim.device)
    real = os.path.realpath(sim.device)  # /dev/pts/N
    own, target = lock_paths(by_id, lock_dir)
    assert own.name == "LCK..usb-Modem_1234-if00"
    assert target.name == "LCK.." + real.removeprefix("/dev/").replace("/", "_")
    with SerialPort(str(by_id), SerialSettings(lock_dir=str(lock_dir))):
        assert own.exists() and target.exists()
        # the same modem under its other name is locked out
        with pytest.raises(PortLocked):
            SerialPort(str(sim.device), SerialSettings(lock_dir=str(lock_dir))).open()
        assert not (lock_dir / "LCK..ttyFAX0").exists()  # given back after the refusal
    assert not own.exists() and not target.exists()
    # a getty holding the real device's lock keeps us off the symlink too
    holder = subprocess.Popen(["sleep", "30"])
    try:
        target.write_text(f"{holder.pid:10d}\n")
        with pytest.raises(PortLocked, match=str(holder.pid)):
            SerialPort(str(by_id), SerialSettings(lock_dir=str(lock_dir))).open()
        assert not own.exists()  # the first lock was given back
    finally:
        holder.kill()
        holder.wait()


def test_a_modem_that_never_takes_data_is_a_modem_error_not_a_hang(tmp_path):
    """Nobody reads the other side of this pty: like a modem stuck in XOFF."""
    from faxgate.faxd.class1 import ModemError
    from faxgate.simline.ptyport import PtyPort

    pty = PtyPort(tmp_path / "ttySTUCK")
    try:
        settings = SerialSettings(lock_dir=None, write_timeout=0.5)
        with SerialPort(str(tmp_path / "ttySTUCK"), settings) as port:
            started = time.monotonic()
            with pytest.raises(ModemError, match="took no data"):
                for _ in range(200):  # far more than any pty buffer holds
                    port.write(bytes(4096))
            assert time.monotonic() - started < 10
    finally:
        pty.close()


def test_probe_refuses_a_modem_without_class_1():
    from faxgate.faxd.modem import ModemNotFax

    port = ScriptedPort(
        {
            b"ATZ": b"\r\nOK\r\n",
            b"ATE0": b"ATE0\r\r\nOK\r\n",
            b"AT+FCLASS=?": b"\r\n0,2,2.0\r\n\r\nOK\r\n",  # a Class 2-only modem
        }
    )
    with pytest.raises(ModemNotFax, match="no fax class 1"):
        reset_and_probe(Class1Modem(port))
