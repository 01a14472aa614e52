"""The serial transport under the Class 1 layer: a real tty through pyserial.

It owns the things that make a modem shareable and safe to lose: a UUCP lock
file (so mgetty or another faxgate leaves the port alone), the choice of flow
control, and turning a vanished device (USB unplug, simulated line stopped)
into one clean ``ModemGone`` error instead of a traceback from deep in termios.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
from dataclasses import dataclass, field
from pathlib import Path

import serial

from faxgate.errors import TemporaryError
from faxgate.faxd.class1 import Class1Modem, LogFunc, ModemError

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = "/var/lock"


class ModemGone(TemporaryError):
    """The device disappeared or stopped working under us."""


class PortLocked(TemporaryError):
    """Another live process holds the UUCP lock of this port."""


class ModemNotFax(ModemError):
    """The device answers AT commands but has no Class 1 (+FCLASS=1) mode."""


def lock_path(device: str | os.PathLike[str], lock_dir: str | os.PathLike[str]) -> Path:
    """``LCK..<name>``, named after the device's last path component (UUCP style)."""
    return Path(lock_dir) / f"LCK..{Path(device).name}"


def lock_paths(device: str | os.PathLike[str], lock_dir: str | os.PathLike[str]) -> list[Path]:
    """The lock files guarding ``device``: its own name's, and, when it is a symlink
    (``/dev/serial/by-id/usb-...``), the real device's too, which is the one mgetty
    or a getty on ``/dev/ttyACM0`` takes (``/dev/pts/3`` → ``LCK..pts_3``)."""
    own = lock_path(device, lock_dir)
    real = Path(os.path.realpath(device))
    try:
        name = str(real.relative_to("/dev")).replace("/", "_")
    except ValueError:
        name = real.name
    target = Path(lock_dir) / f"LCK..{name}"
    return [own] if target == own else [own, target]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_lock_pid(path: Path) -> int | None:
    try:
        text = path.read_bytes()[:64]
    except FileNotFoundError:
        return None
    try:
        return int(text.decode("ascii", "replace").strip())
    except ValueError:
        if len(text) >= 4:  # old binary-format locks: a native int
            return int.from_bytes(text[:4], "little")
        return None


class UucpLock:
    """A UUCP lock file: the owner's PID as 10 ASCII characters and a newline.

    Created atomically (write a temporary file, then ``link``); a lock whose
    PID is dead is stale and taken over."""

    def __init__(self, path: Path) -> None:
        self.path = path  # see lock_path() / lock_paths()
        self.held = False

    def acquire(self) -> None:
        content = f"{os.getpid():10d}\n".encode("ascii")
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            temp.write_bytes(content)
        except OSError as exc:
            raise ModemError(f"cannot write a lock file in {self.path.parent}: {exc}") from None
        try:
            for _ in range(3):
                try:
                    os.link(temp, self.path)
                    self.held = True
                    return
                except FileExistsError:
                    owner = _read_lock_pid(self.path)
                    if owner == os.getpid():
                        raise PortLocked(
                            f"{self.path.name}: this process already has the port open"
                        ) from None
                    if owner is not None and _pid_alive(owner):
                        raise PortLocked(
                            f"port is in use by process {owner} (lock {self.path})"
                        ) from None
                    log.warning("removing stale lock %s (pid %s is gone)", self.path, owner)
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
            raise PortLocked(f"could not take the lock {self.path}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def release(self) -> None:
        if self.held and _read_lock_pid(self.path) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.held = False


@dataclass
class SerialSettings:
    """How to open the port."""

    baudrate: int = 115200
    flow_control: str = "xonxoff"  # "xonxoff" | "rtscts"
    lock_dir: str | None = DEFAULT_LOCK_DIR  # None: no lock file
    #: A modem that holds flow control (XOFF, CTS low) this long is stuck; without
    #: a limit the write would block the call forever.
    write_timeout: float = 30.0


class SerialPort:
    """A pyserial port with deadline reads; any OS-level failure becomes ModemGone."""

    def __init__(self, device: str, settings: SerialSettings | None = None) -> None:
        self.device = device
        self.settings = settings or SerialSettings()
        self._locks: list[UucpLock] = []
        self._serial: serial.Serial | None = None

    def _acquire_locks(self) -> None:
        lock_dir = self.settings.lock_dir
        if not lock_dir:
            return
        for path in lock_paths(self.device, lock_dir):
            lock = UucpLock(path)
            try:
                lock.acquire()
            except BaseException:
                self._release_locks()
                raise
            self._locks.append(lock)

    def _release_locks(self) -> None:
        while self._locks:
            self._locks.pop().release()

    def open(self) -> SerialPort:
        if not os.path.exists(self.device):
            raise ModemGone(f"{self.device}: no such device")
        self._acquire_locks()
        try:
            self._serial = serial.Serial(
                self.device,
                baudrate=self.settings.baudrate,
                timeout=0,
                rtscts=self.settings.flow_control == "rtscts",
                xonxoff=False,
                exclusive=True,
                write_timeout=self.settings.write_timeout,
            )
        except (serial.SerialException, OSError) as exc:
            self._release_locks()
            raise ModemGone(f"{self.device}: cannot open: {exc}") from None
        return self

    def close(self) -> None:
        try:
            if self._serial is not None:
                with contextlib.suppress(serial.SerialException, OSError):
                    self._serial.close()
        finally:
            self._serial = None
            self._release_locks()

    def __enter__(self) -> SerialPort:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _port(self) -> serial.Serial:
        if self._serial is None:
            raise ModemGone(f"{self.device}: port is not open")
        return self._serial

    def read(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` bytes as soon as any arrive, or b"" after ``timeout``.
        Waits in select(): no sleeping, and no termios change per read."""
        fd = self._port.fileno()
        try:
            ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
            if not ready:
                return b""
            data = os.read(fd, size)
        except OSError as exc:
            raise ModemGone(f"{self.device}: device vanished ({exc})") from None
        if not data:
            raise ModemGone(f"{self.device}: device vanished (end of file)")
        return data

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except serial.SerialTimeoutException:
            raise ModemError(
                f"{self.device}: the modem took no data for {self.settings.write_timeout:g} s "
                "(flow control held)"
            ) from None
        except (serial.SerialException, OSError) as exc:
            raise ModemGone(f"{self.device}: device vanished ({exc})") from None

    def set_send_flow_control(self, enabled: bool) -> None:
        """XON/XOFF only while we send page data: in HDLC receive the modem's data
        holds 0x11/0x13 bytes that the tty would otherwise swallow."""
        if self.settings.flow_control != "xonxoff":
            return
        try:
            self._port.xonxoff = enabled
        except (serial.SerialException, OSError) as exc:
            raise ModemGone(f"{self.device}: device vanished ({exc})") from None


@dataclass
class ModemIdentity:
    """What the modem says about itself during the probe."""

    classes: list[str] = field(default_factory=list)
    manufacturer: str = ""
    model: str = ""
    info: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "classes": self.classes,
            "manufacturer": self.manufacturer,
            "model": self.model,
            "info": self.info,
        }


def reset_and_probe(modem: Class1Modem) -> ModemIdentity:
    """``ATZ``, ``ATE0``, check ``+FCLASS=?`` offers class 1, read the identity,
    and leave the modem in ``+FCLASS=1``. Raises ModemNotFax/ModemError."""
    for attempt in range(3):
        try:
            if modem.command("ATZ", 3.0) == "OK":
                break
        except ModemError:
            if attempt == 2:
                raise
    else:
        raise ModemError("modem does not answer ATZ with OK")
    if modem.command("ATE0", 2.0) != "OK":
        raise ModemError("modem refused ATE0")
    result, lines = modem.query("AT+FCLASS=?")
    classes = [c.strip() for c in ",".join(lines).replace("(", "").replace(")", "").split(",")]
    classes = [c for c in classes if c]
    if result != "OK" or "1" not in classes:
        raise ModemNotFax(f"modem has no fax class 1 (AT+FCLASS=? said {lines or result})")
    identity = ModemIdentity(classes=classes)
    for command, attr in (("ATI", "info"), ("AT+FMI?", "manufacturer"), ("AT+FMM?", "model")):
        try:
            result, lines = modem.query(command, 2.0)
        except ModemError:
            continue
        if result == "OK" and lines:
            setattr(identity, attr, " ".join(lines).strip().strip('"'))
    if modem.command("AT+FCLASS=1", 2.0) != "OK":
        raise ModemNotFax("modem refused AT+FCLASS=1")
    return identity


def open_modem(
    device: str, settings: SerialSettings | None = None, log_func: LogFunc | None = None
) -> tuple[SerialPort, Class1Modem]:
    """Open and lock ``device``; return the port and a Class 1 layer over it."""
    port = SerialPort(device, settings).open()
    return port, Class1Modem(port, log_func)
