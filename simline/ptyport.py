"""A raw pseudo-terminal published at a stable path (a symlink to the slave side).

Class 1 data is binary: 0x11/0x13 (XON/XOFF) and 0x13 (the control byte of
final HDLC frames) must pass untouched, so the slave is put in raw mode with
software flow control off.

We do not keep a slave descriptor open: a real modem hangs up when its DTE
closes the port (DTR drops), and the only reliable way to see that close on a
Linux pty is the master side reporting POLLHUP (and read() failing with EIO)
once no descriptor of the slave is open anywhere. Packet mode (TIOCPKT) does
not report closes, and counting openers through /proc/*/fd is costly and racy.
The pty itself lives as long as the master is open, and so do its termios
settings across slave close/reopen (checked on Linux: raw mode set before the
first open, and any change a DTE makes, are what the next opener finds), so
the raw mode is applied once, through a slave descriptor closed right away.
The price: before the first open and between DTE sessions the master polls as
readable (POLLHUP) all the time, so the line must not wait on it for input
while ``dte_attached()`` is false.
"""

from __future__ import annotations

import contextlib
import os
import select
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
        self.master, slave = os.openpty()
        try:
            self.slave_name = os.ttyname(slave)
            make_raw(slave)
        finally:
            os.close(slave)
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
        except OSError:  # EIO: no DTE has the slave open and all it wrote has been read
            return b""

    def dte_attached(self) -> bool:
        """Whether some process (the DTE) has the slave open right now."""
        ready = select.poll()
        ready.register(self.master, select.POLLIN)
        return not any(events & select.POLLHUP for _, events in ready.poll(0))

    def discard_unread(self) -> None:
        """Drop what we wrote that no DTE read, so the next opener starts clean."""
        slave = os.open(self.slave_name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            termios.tcflush(slave, termios.TCIFLUSH)
        finally:
            os.close(slave)

    def write(self, data: bytes | bytearray) -> int:
        """Write what fits without blocking; returns the number of bytes taken."""
        try:
            return os.write(self.master, data)
        except (BlockingIOError, InterruptedError):
            return 0

    def close(self) -> None:
        """Remove the symlink (only if it still points at our pty) and close the master."""
        with contextlib.suppress(OSError):
            if os.readlink(self.device) == self.slave_name:
                self.device.unlink()
        with contextlib.suppress(OSError):
            os.close(self.master)


def make_raw(fd: int) -> None:
    """Raw 8-bit mode, no echo, no XON/XOFF, no CR/LF mapping."""
    tty.setraw(fd, termios.TCSANOW)
    attrs = termios.tcgetattr(fd)
    attrs[0] &= ~(termios.IXON | termios.IXOFF | termios.IXANY | termios.ICRNL | termios.INLCR)
    attrs[1] &= ~termios.OPOST
    attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
