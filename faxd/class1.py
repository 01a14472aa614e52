"""Class 1 (ITU-T T.31) AT command layer: commands, result codes, DLE framing.

The host runs T.30 itself; the modem only modulates. This module speaks the
modem's side of that bargain over any byte port that can ``read`` with a
timeout and ``write``: ``+FTH``/``+FRH`` for V.21 HDLC frames, ``+FTM``/``+FRM``
for high-speed data, ``+FTS``/``+FRS`` for silence, ``<DLE>`` transparency.
It never sleeps: every wait is a read with a deadline, because Class 1 leaves
the host only tens of milliseconds between a received frame and the next command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from faxgate.errors import TemporaryError

DLE = 0x10
ETX = 0x03
SUB = 0x1A  # <DLE><SUB> from the modem stands for two DLE bytes

#: Final result codes a Class 1 modem ends a command with.
FINAL_RESULTS = (
    "OK",
    "CONNECT",
    "ERROR",
    "NO CARRIER",
    "BUSY",
    "NO DIALTONE",
    "NO DIAL TONE",
    "NO ANSWER",
    "+FCERROR",
)
_NUMERIC_RESULTS = {
    "0": "OK",
    "1": "CONNECT",
    "3": "NO CARRIER",
    "4": "ERROR",
    "6": "NO DIALTONE",
    "7": "BUSY",
    "8": "NO ANSWER",
}


class ModemError(TemporaryError):
    """The modem answered something a Class 1 modem should not have."""


class ModemTimeout(ModemError):
    """The modem said nothing within the allowed time."""


class Port(Protocol):
    """The byte transport underneath (a serial port or a test double)."""

    def read(self, size: int, timeout: float) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def set_send_flow_control(self, enabled: bool) -> None: ...


def stuff(data: bytes) -> bytes:
    """DTE→DCE transparency: every DLE in the data is sent twice."""
    return data.replace(b"\x10", b"\x10\x10")


def stuffed_block(data: bytes) -> bytes:
    """A whole data block as written to the modem: stuffed, ended by <DLE><ETX>."""
    return stuff(data) + bytes((DLE, ETX))


class Unstuffer:
    """DCE→DTE transparency, incrementally: feed bytes until <DLE><ETX> ends the block."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done = False
        self._pending_dle = False

    def feed(self, chunk: bytes) -> bytes:
        """Consume ``chunk``; return whatever follows the end of the block (unused)."""
        for i, byte in enumerate(chunk):
            if self._pending_dle:
                self._pending_dle = False
                if byte == ETX:
                    self.done = True
                    return chunk[i + 1 :]
                if byte == DLE:
                    self.data.append(DLE)
                elif byte == SUB:
                    self.data += b"\x10\x10"
                # other <DLE>x pairs are modem status shielding; ignored
                continue
            if byte == DLE:
                self._pending_dle = True
            else:
                self.data.append(byte)
        return b""


def normalise_result(line: str) -> str:
    """Map a result line (verbose or numeric) to its verbose form."""
    line = line.strip()
    if line == "NO DIAL TONE":
        return "NO DIALTONE"
    return _NUMERIC_RESULTS.get(line, line)


@dataclass
class ReceivedFrame:
    """A frame delivered after ``+FRH``: its bytes and whether the modem's FCS check passed."""

    data: bytes
    fcs_ok: bool


LogFunc = Callable[[str, str], None]


class Class1Modem:
    """One Class 1 modem on ``port``. ``log(direction, text)`` sees every line."""

    def __init__(self, port: Port, log: LogFunc | None = None) -> None:
        self.port = port
        self._buffer = bytearray()
        self._log = log or (lambda direction, text: None)

    # --- low level ----------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        chunk = self.port.read(4096, min(remaining, 0.5))
        if chunk:
            self._buffer += chunk
        return True

    def read_line(self, deadline: float) -> str | None:
        """Next non-empty line from the modem, or None at the deadline."""
        while True:
            while self._buffer[:1] in (b"\r", b"\n"):
                del self._buffer[0]
            end = self._line_end()
            if end is not None:
                line = bytes(self._buffer[:end]).decode("ascii", "replace").strip()
                del self._buffer[: end + 1]
                if line:
                    self._log("<", line)
                    return line
                continue
            if not self._fill(deadline):
                return None

    def _line_end(self) -> int | None:
        for i, byte in enumerate(self._buffer):
            if byte in (0x0D, 0x0A):
                return i
        return None

    def read_result(self, timeout: float, *, accept: tuple[str, ...] = FINAL_RESULTS) -> str:
        """Wait for a final result code; intermediate lines (echo, info) are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(deadline)
            if line is None:
                raise ModemTimeout(f"no answer from the modem within {timeout:g} s")
            result = normalise_result(line)
            if result in accept:
                return result

    def write_command(self, command: str) -> None:
        self._log(">", command)
        self._buffer.clear()
        self.port.write(command.encode("ascii") + b"\r")

    def command(self, command: str, timeout: float = 3.0) -> str:
        """Send ``command`` and return its final result code."""
        self.write_command(command)
        return self.read_result(timeout)

    def query(self, command: str, timeout: float = 3.0) -> tuple[str, list[str]]:
        """Send ``command``; return its result code and the information lines before it."""
        self.write_command(command)
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            line = self.read_line(deadline)
            if line is None:
                raise ModemTimeout(f"no answer to {command} within {timeout:g} s")
            result = normalise_result(line)
            if result in ("OK", "ERROR"):
                return result, lines
            if line != command:
                lines.append(line)

    def abort(self, timeout: float = 1.0) -> None:
        """Cancel a pending receive command: any character does, the modem says OK."""
        self.port.write(b"\x18")
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(deadline)
            if line is None or normalise_result(line) in ("OK", "ERROR", "NO CARRIER"):
                return

    # --- HDLC (V.21 channel 2) -------------------------------------------------

    def read_frame_after_connect(self, deadline: float) -> ReceivedFrame | None:
        """After CONNECT: collect one DLE-framed frame, then the OK/ERROR verdict.
        None if the frame did not end by ``deadline`` (the caller aborts)."""
        unstuffer = Unstuffer()
        started = False
        pending = bytes(self._buffer)
        self._buffer.clear()
        leftover = b""
        while not unstuffer.done:
            if not started:
                # the CONNECT line's CR/LF may trail it; a frame starts with 0xFF
                pending = pending.lstrip(b"\r\n")
                started = bool(pending)
            if pending:
                leftover = unstuffer.feed(pending)
                pending = b""
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            pending = self.port.read(4096, min(remaining, 0.5))
        self._buffer += leftover
        data = bytes(unstuffer.data)
        self._log("<", f"[frame {data.hex()}]")
        verdict = self.read_result(max(1.0, deadline - time.monotonic()))
        return ReceivedFrame(data=data, fcs_ok=verdict == "OK")

    def receive_frame(self, timeout: float) -> ReceivedFrame | str:
        """``AT+FRH=3``: a frame, or the result code (NO CARRIER, ERROR, +FCERROR),
        or ``"TIMEOUT"`` when nothing arrived within ``timeout`` (T2/T4)."""
        self.write_command("AT+FRH=3")
        return self._await_frame(timeout)

    def dial(self, dial_command: str, timeout: float) -> ReceivedFrame | str:
        """``ATD...``: in Class 1 a fax answer CONNECTs straight into HDLC receive."""
        self.write_command(dial_command)
        return self._await_frame(timeout)

    def _await_frame(self, timeout: float) -> ReceivedFrame | str:
        deadline = time.monotonic() + timeout
        try:
            result = self.read_result(timeout)
        except ModemTimeout:
            self.abort()
            return "TIMEOUT"
        if result != "CONNECT":
            return result
        frame = self.read_frame_after_connect(max(deadline, time.monotonic() + 3.0))
        if frame is None:
            self.abort()
            return "TIMEOUT"
        return frame

    def send_frames(self, frames: list[bytes], timeout: float = 10.0) -> str:
        """``AT+FTH=3`` then each frame (address, control, FCF, FIF; the modem adds
        the FCS). The modem says CONNECT before each frame and OK after the final one."""
        result = self.command("AT+FTH=3", timeout)
        if result != "CONNECT":
            return result
        for index, frame in enumerate(frames):
            self._log(">", f"[frame {frame.hex()}]")
            self.port.write(stuffed_block(frame))
            result = self.read_result(timeout)
            last = index == len(frames) - 1
            if result != ("OK" if last else "CONNECT"):
                return result
        return "OK"

    # --- high-speed data and silence ---------------------------------------------

    def send_data(self, modulation: int, data: bytes, timeout: float) -> str:
        """``AT+FTM=<mod>`` then ``data`` (TCF zeros or T.4 page data) and <DLE><ETX>;
        returns OK once the modem has put the last bit on the line."""
        result = self.command(f"AT+FTM={modulation}", 10.0)
        if result != "CONNECT":
            return result
        self._log(">", f"[{len(data)} data bytes]")
        self.port.set_send_flow_control(True)
        try:
            block = stuffed_block(data)
            step = 4096
            for start in range(0, len(block), step):
                self.port.write(block[start : start + step])
        finally:
            self.port.set_send_flow_control(False)
        try:
            return self.read_result(timeout)
        except ModemTimeout:
            # A modem whose line dropped mid-transmission may go back to command
            # mode without a word; if it still answers AT, the call is gone.
            if self.command("AT", 2.0) == "OK":
                self._log("<", "(transmission never ended: line dropped)")
                return "NO CARRIER"
            raise

    def silence(self, tens_of_ms: int) -> str:
        """``AT+FTS=n``: stay silent n×10 ms (the pause T.30 wants before a response)."""
        return self.command(f"AT+FTS={tens_of_ms}", 5.0)

    def await_silence(self, tens_of_ms: int, timeout: float = 5.0) -> str:
        """``AT+FRS=n``: return once the line has been quiet n×10 ms, so what we
        send next does not step on the far end's carrier. TIMEOUT if it never is."""
        self.write_command(f"AT+FRS={tens_of_ms}")
        try:
            return self.read_result(timeout)
        except ModemTimeout:
            self.abort()
            return "TIMEOUT"

    def hang_up(self) -> str:
        return self.command("ATH0", 5.0)
