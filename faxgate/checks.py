"""``faxgate check``: is everything faxgate depends on there and reachable?

The original product's "connection test", for an admin after installing or
changing the configuration: the configuration makes sense, the SMTP server for
receipts answers (with STARTTLS and AUTH as configured), the store opens, the
spool is writable in every state directory, LibreOffice is there, and each
modem answers like a Class 1 fax modem. Each check returns one
:class:`CheckResult` and never raises, so one broken part does not hide the
state of the others.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import smtplib
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faxgate.config import Config
from faxgate.errors import FaxgateError
from faxgate.faxd.mailout import MailTemporaryError, session

SMTP_CHECK_TIMEOUT = 10.0
_DIGITS = re.compile(r"[0-9]*")
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")
_SOCKET = re.compile(r"inet6?:\d{1,5}(@\S+)?|unix:/\S+|local:/\S+")
_WINDOW = re.compile(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d")


@dataclass(frozen=True)
class CheckResult:
    """One line of ``faxgate check``: what was checked, whether it passed, and why (not)."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


class CheckFailed(Exception):
    """Raised inside a check to fail it with this message."""


def check_config(cfg: Config) -> str:
    """What the types in faxgate.config cannot say: values that parse but cannot work."""
    problems = []
    plan = cfg.dialplan
    for key in ("country_code", "area_code", "international_prefix", "national_prefix"):
        if not _DIGITS.fullmatch(getattr(plan, key)):
            problems.append(f"[dialplan] {key} must be digits")
    if not cfg.milter.fax_addresses:
        problems.append("[milter] fax_addresses is empty: no mail would become a fax")
    problems += [
        f"[milter] fax_addresses: {a!r} is not an e-mail address"
        for a in cfg.milter.fax_addresses
        if not _ADDRESS.fullmatch(a)
    ]
    if not _SOCKET.fullmatch(cfg.milter.socket):
        problems.append(f"[milter] socket {cfg.milter.socket!r} is not inet:PORT@HOST or unix:PATH")
    if len(cfg.fax.station_id) > 20:
        problems.append("[fax] station_id is longer than the 20 characters of a TSI")
    if not cfg.fax.modems:
        problems.append("[fax] modems is empty: faxd has nothing to dial with")
    if cfg.faxd.sending_window and not _WINDOW.fullmatch(cfg.faxd.sending_window):
        problems.append(f"[faxd] sending_window {cfg.faxd.sending_window!r} is not HH:MM-HH:MM")
    if not _ADDRESS.fullmatch(cfg.receipts.from_address):
        problems.append(f"[receipts] from_address {cfg.receipts.from_address!r} is no address")
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"{cfg.source or 'built-in defaults'} is valid"


def check_smtp(cfg: Config) -> str:
    """Connect, EHLO, STARTTLS and AUTH as ``[smtp]`` says, then QUIT without sending."""
    smtp = cfg.smtp
    where = f"{smtp.host}:{smtp.port}"
    timeout = min(smtp.timeout_seconds, SMTP_CHECK_TIMEOUT)
    try:
        with session(smtp, timeout) as (_, info):
            if info.ehlo_code != 250:
                raise CheckFailed(f"{where} answered EHLO with {info.ehlo_code}")
    except MailTemporaryError as exc:
        raise CheckFailed(str(exc)) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise CheckFailed(f"{where}: AUTH as {smtp.user} failed: {exc.smtp_code}") from None
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        raise CheckFailed(f"cannot talk to {where}: {exc or type(exc).__name__}") from None
    notes = []
    if smtp.starttls != "off":
        notes.append("STARTTLS ok" if info.encrypted else "no STARTTLS offered")
    if info.authenticated:
        notes.append(f"AUTH as {smtp.user} ok")
    name = info.greeting.splitlines()[0] if info.greeting else ""
    return ", ".join([f"{where} answers ({name})", *notes])


def check_store(cfg: Config) -> str:
    from faxgate.store import Store

    with Store.open(cfg) as store:
        version = store.schema_version()
        senders = store.list_senders()
    enabled = sum(s.may_fax for s in senders)
    return f"{cfg.store.path}: schema v{version}, {enabled} sender(s) allowed to fax"


def _probe_write(directory: Path) -> None:
    """Create, fsync and remove a file: what the milter and faxd do with every job."""
    probe = directory / f".faxgate-check-{uuid.uuid4().hex}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"probe\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            probe.unlink()


def check_spool(cfg: Config) -> str:
    from faxgate.faxd import spool

    try:
        root = spool.ensure_layout(cfg.spool.directory)
    except FaxgateError as exc:
        raise CheckFailed(str(exc)) from None
    directories = [root, *(root / name for name in _spool_dirs() if (root / name).is_dir())]
    for directory in directories:
        try:
            _probe_write(directory)
        except OSError as exc:
            raise CheckFailed(f"cannot write in {directory}: {exc.strerror or exc}") from None
    return f"{root}: {len(directories)} directories writable"


def _spool_dirs() -> list[str]:
    """The spool's state directories (faxd's control directory among them)."""
    from faxgate.faxd import daemon, spool

    return sorted({"tmp", "dedupe", daemon.CONTROL_DIR, *spool.STATES})


def check_render(cfg: Config) -> str:
    soffice = shutil.which(cfg.render.soffice)
    if soffice is None:
        raise CheckFailed(
            f"LibreOffice ({cfg.render.soffice!r}) not found: Office attachments cannot be faxed"
        )
    return f"LibreOffice at {soffice}"


def check_modem(cfg: Config, device: str) -> str:
    """``AT``, then faxd's own probe: ``ATZ``, ``ATE0``, ``AT+FCLASS=?`` lists 1, identity."""
    from faxgate.faxd.modem import PortLocked, SerialSettings, open_modem, reset_and_probe

    settings = SerialSettings(
        baudrate=cfg.fax.baudrate,
        flow_control=cfg.fax.flow_control,
        lock_dir=cfg.fax.lock_dir or None,
    )
    try:
        port, modem = open_modem(device, settings)
    except PortLocked as exc:
        return f"in use, not probed ({exc})"
    except FaxgateError as exc:
        raise CheckFailed(str(exc).removeprefix(f"{device}: ")) from None
    try:
        if modem.command("AT", 3.0) != "OK":
            raise CheckFailed("does not answer AT with OK")
        identity = reset_and_probe(modem)
    except FaxgateError as exc:  # ModemError, ModemNotFax, ModemGone
        raise CheckFailed(str(exc)) from None
    finally:
        port.close()
    who = " / ".join(p for p in (identity.manufacturer, identity.model, identity.info) if p)
    return f"Class 1 fax modem (classes {','.join(identity.classes)}){': ' + who if who else ''}"


def _run_one(name: str, check: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, True, check())
    except CheckFailed as exc:
        return CheckResult(name, False, str(exc))
    except FaxgateError as exc:
        return CheckResult(name, False, str(exc))
    except Exception as exc:  # a check must report, never crash the others
        return CheckResult(name, False, f"unexpected {type(exc).__name__}: {exc}")


def run_checks(cfg: Config) -> list[CheckResult]:
    """Every check, in the order an admin would fix things; never raises."""
    checks: list[tuple[str, Callable[[], str]]] = [
        ("config", lambda: check_config(cfg)),
        ("smtp", lambda: check_smtp(cfg)),
        ("store", lambda: check_store(cfg)),
        ("spool", lambda: check_spool(cfg)),
        ("render", lambda: check_render(cfg)),
    ]
    checks += [(f"modem {d}", functools.partial(check_modem, cfg, d)) for d in cfg.fax.modems]
    return [_run_one(name, check) for name, check in checks]
