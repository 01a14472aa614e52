"""A raw pseudo-terminal published at a stable path (a symlink to the slave side).

Class 1 data is binary: 0x11/0x13 (XON/XOFF) and 0x13 (the control byte of
final HDLC frames) must pass untouched, so the slave is put in raw mode with
software flow control off. We keep our own slave descriptor open for the life
of the port: otherwise the master reads EIO whenever no DTE has it open and the
terminal settings are lost between DTE sessions.
"""

from __future__ import annotations

import contextlib
import os
import termios
import tty
from pathlib import Path

from faxgate.errors import InputError


class DevicePathError(InputError):
    """The requested device path cannot be used for a simulated modem."""


class PtyPort:
    """Master side of a raw pty whose slave is reachable at ``device`` (a symlink)."""

    def __init__(self, device: str | Path) -> None:
        self.device = Path(device).absolute()
        if self.device.exists() and not self.device.is_symlink():
            raise DevicePathError(f"{self.device} exists and is not a symlink; refusing to replace")
        if not self.device.parent.is_dir():
            raise DevicePathError(f"directory {self.device.parent} does not exist")
        self.master, self._slave = os.openpty()
        self.slave_name = os.ttyname(self._slave)
        make_raw(self._slave)
        os.set_blocking(self.master, False)
        temporary = self.device.with_name(f".{self.device.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        os.symlink(self.slave_name, temporary)
        os.replace(temporary, self.device)

    def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes the DTE wrote, b"" when none are waiting."""
        try:
            return os.read(self.master, limit)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:  # EIO: no slave open; cannot happen while we hold ours
            return b""

    def write(self, data: bytes | bytearray) -> int:
        """Write what fits without blocking; returns the number of bytes taken."""
        try:
            return os.write(self.master, data)
        except (BlockingIOError, InterruptedError):
            return 0

    def close(self) -> None:
        """Remove the symlink (only if it still points at our pty) and close both sides."""
        with contextlib.suppress(OSError):
            if os.readlink(self.device) == self.slave_name:
                self.device.unlink()
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def make_raw(fd: int) -> None:
    """Raw 8-bit mode, no echo, no XON/XOFF, no CR/LF mapping."""
    tty.setraw(fd, termios.TCSANOW)
    attrs = termios.tcgetattr(fd)
    attrs[0] &= ~(termios.IXON | termios.IXOFF | termios.IXANY | termios.ICRNL | termios.INLCR)
    attrs[1] &= ~termios.OPOST
    attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
