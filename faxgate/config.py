"""The configuration: one TOML file, every key typed, documented and defaulted.

Lookup order: ``--config PATH``, else ``$FAXGATE_CONFIG``, else
``/etc/faxgate/faxgate.toml``. A missing default file means "all defaults"; a
file named explicitly must exist. Unknown sections or keys and wrong types are
errors that name the key and the file, because a typo silently ignored is a
fax sent to the wrong place.

Each section is a frozen dataclass; a field's ``metadata["doc"]`` is its
documentation (printed by ``faxgate config check --doc`` and mirrored in
``deploy/faxgate.toml.example``); ``metadata["choices"]`` restricts values and
``metadata["pattern"]`` (regex, plain-language description) restricts strings.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faxgate.errors import ConfigError

DEFAULT_PATH = Path("/etc/faxgate/faxgate.toml")
ENV_VAR = "FAXGATE_CONFIG"


def _opt(
    default: Any,
    doc: str,
    choices: tuple[Any, ...] | None = None,
    pattern: tuple[str, str] | None = None,
) -> Any:
    meta: dict[str, Any] = {"doc": doc}
    if choices is not None:
        meta["choices"] = choices
    if pattern is not None:
        meta["pattern"] = pattern
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DialplanConfig:
    country_code: str = _opt(
        "86",
        "Country calling code of this fax server (no prefix).",
        pattern=(r"[1-9][0-9]{0,2}", '1 to 3 digits without a prefix, e.g. "86"'),
    )
    area_code: str = _opt(
        "755",
        "Local area (trunk) code, without the national prefix.",
        pattern=(r"[0-9]{1,8}", 'digits, e.g. "755", or "0" where there are no area codes'),
    )
    international_prefix: str = _opt(
        "00",
        "Digits dialled before a foreign country code.",
        pattern=(r"[0-9]{1,4}", '1 to 4 digits, e.g. "00"'),
    )
    national_prefix: str = _opt(
        "0",
        "Digits dialled before another area code at home.",
        pattern=(r"[0-9]{0,3}", 'up to 3 digits, e.g. "0", or empty'),
    )
    outside_line_prefix: str = _opt(
        "",
        "Digits that get an outside line from a PBX (e.g. '9'), empty for none.",
        pattern=(r"[0-9*#,Ww]{0,10}", "digits, * or #, ',' (pause) or W (wait for dial tone)"),
    )


@dataclass(frozen=True)
class StoreConfig:
    path: str = _opt("/var/lib/faxgate/faxgate.db", "SQLite database: senders, jobs, events.")
    busy_timeout: float = _opt(
        10.0, "Seconds a writer waits for the database lock before giving up (then 4xx/retry)."
    )


@dataclass(frozen=True)
class SpoolConfig:
    directory: str = _opt("/var/spool/faxgate", "Spool directory shared by milter and faxd.")


@dataclass(frozen=True)
class LimitsConfig:
    max_recipients: int = _opt(50, "Most recipients one Subject may name.")
    max_pages: int = _opt(100, "Most pages one job may have (after rendering).")
    jobs_per_day: int = _opt(200, "Default daily job quota per sender (0 = unlimited).")
    max_message_bytes: int = _opt(25_000_000, "Largest fax mail accepted, in bytes.")
    max_attachment_bytes: int = _opt(20_000_000, "Largest single attachment, in bytes.")


@dataclass(frozen=True)
class MilterConfig:
    socket: str = _opt("inet:8899@127.0.0.1", "Milter socket: 'inet:PORT@HOST' or 'unix:PATH'.")
    fax_addresses: list[str] = _opt(
        ["fax@localhost"], "Addresses that turn a mail into a fax job (case-insensitive)."
    )
    unauthorized: str = _opt(
        "reject",
        "What to do with mail from senders not allowed to fax: reject (550) or discard.",
        ("reject", "discard"),
    )
    require_auth: bool = _opt(False, "Require the SMTP AUTH login to be the sender's login.")
    trusted_authserv_id: str = _opt(
        "",
        "authserv-id whose Authentication-Results headers are trusted (empty: ignore them all).",
    )
    require_dkim: bool = _opt(
        False,
        "Require a trusted Authentication-Results dkim=pass or dmarc=pass aligned with From.",
    )


@dataclass(frozen=True)
class PolicyConfig:
    """Toll-fraud rules applied to every recipient before a job is accepted."""

    deny_prefixes: list[str] = _opt(
        [], "E.164 prefixes (digits, no '+') never dialled, e.g. premium-rate ranges."
    )
    allow_prefixes: list[str] = _opt(
        [], "E.164 prefixes always allowed, even where deny_prefixes or premium match."
    )
    premium_prefixes: list[str] = _opt(
        ["86168", "86169", "1900", "1976", "44871", "44872", "44873", "4490"],
        "E.164 prefixes of premium-rate numbers; blocked unless the sender may call them.",
    )
    max_extension_digits: int = _opt(
        5,
        "Longest internal extension (0-0-N) accepted. The modem dials N as written, so a"
        " longer N could reach the public network unchecked; 0 refuses extensions.",
    )


@dataclass(frozen=True)
class RenderConfig:
    """How documents become fax pages (owned by faxgate.render)."""

    resolution: str = _opt(
        "fine", "Vertical resolution of pages.", ("standard", "fine", "superfine")
    )
    paper: str = _opt("a4", "Paper size pages are laid out on.", ("a4", "letter"))
    coding: str = _opt("mr", "Compression in the spooled TIFF.", ("mh", "mr", "mmr"))
    drop_blank_pages: bool = _opt(True, "Drop blank pages at the end of each document.")
    header: bool = _opt(True, "Stamp a header line at the top of every page.")
    header_template: str = _opt(
        "{station_id}  {sender}  {date} {time}  Page {page}/{pages}",
        "Header line; fields: station_id, sender, date, time, page, pages.",
    )
    cover_page: bool = _opt(False, "Put a cover page (recipient, sender, mail body) first.")
    libreoffice_timeout: int = _opt(
        120, "Seconds one LibreOffice conversion may take before it is killed."
    )
    max_pixels: int = _opt(
        80_000_000, "Largest image (width x height) decoded; bigger is a decompression bomb."
    )
    soffice: str = _opt("soffice", "LibreOffice program (name on PATH or absolute path).")


@dataclass(frozen=True)
class FaxConfig:
    """The modems and how calls are placed (owned by faxgate.faxd)."""

    station_id: str = _opt("+86 755 0000000", "Our fax number as sent in TSI (20 chars max).")
    modems: list[str] = _opt([], "Serial devices of Class 1 fax modems (or simulated lines).")
    dial_prefix: str = _opt("ATDT", "Dial command (ATDT tone, ATDP pulse); the number follows.")
    max_rate: int = _opt(
        14400, "Fastest data rate offered in DCS (bit/s).", (14400, 12000, 9600, 7200, 4800, 2400)
    )
    coding: str = _opt("mr", "Preferred page coding; MH when the far end lacks MR.", ("mr", "mh"))
    flow_control: str = _opt(
        "xonxoff", "Serial flow control while sending page data.", ("xonxoff", "rtscts")
    )
    baudrate: int = _opt(115200, "DTE speed of the serial port.")
    lock_dir: str = _opt("/var/lock", "Directory of UUCP lock files (LCK..ttyS0); empty: no lock.")
    dial_timeout_seconds: float = _opt(
        90.0, "Wait for a fax answer after dialling (voice answer → not_a_fax)."
    )
    t1_seconds: float = _opt(35.0, "T.30 T1: wait for a valid DIS once the fax carrier is heard.")
    t4_seconds: float = _opt(3.0, "T.30 T4: wait for a response before repeating a command.")


@dataclass(frozen=True)
class FaxdConfig:
    """Queue and retry policy of the fax daemon."""

    rescan_seconds: int = _opt(30, "Periodic spool rescan in addition to inotify.")
    busy_retry_seconds: float = _opt(180.0, "Wait before redialling a busy number.")
    no_answer_retry_seconds: float = _opt(300.0, "Wait after no answer before redialling.")
    no_carrier_retry_seconds: float = _opt(
        300.0, "Wait after no carrier, no dial tone or a voice answer before redialling."
    )
    protocol_error_retry_seconds: float = _opt(
        60.0, "Wait after a call that failed in the fax protocol (training, page, hang-up)."
    )
    max_dials: int = _opt(12, "Most calls placed to one recipient before it fails.")
    max_tries: int = _opt(3, "Most calls that reached fax carrier before the recipient fails.")
    kill_time_seconds: float = _opt(10800.0, "Give up on a job this long after it was queued.")
    sending_window: str = _opt(
        "", "Local time of day calls may be placed, e.g. '08:00-20:00' (empty: any time)."
    )
    default_priority: int = _opt(
        127, "Priority of jobs that name none, 0-255; lower numbers are sent first."
    )
    stop_grace_seconds: float = _opt(
        60.0,
        "On SIGTERM a call finishes if its remaining pages fit in this time; otherwise it"
        " ends cleanly after the page being sent and resumes there at the next start.",
    )


@dataclass(frozen=True)
class SmtpConfig:
    """Where receipts and network-number (T.37-style) deliveries are sent."""

    host: str = _opt("127.0.0.1", "SMTP server for outgoing mail.")
    port: int = _opt(25, "Its port.")
    starttls: str = _opt(
        "opportunistic",
        "STARTTLS: off, opportunistic (when offered) or required.",
        ("off", "opportunistic", "required"),
    )
    tls_verify: bool = _opt(
        True,
        "Verify the server's certificate and name when STARTTLS is required or carries AUTH"
        " to a remote server; opportunistic STARTTLS alone never verifies (like Postfix's"
        " 'may'), so a self-signed certificate on the local Postfix does not stop mail.",
    )
    user: str = _opt("", "SMTP AUTH login (empty: no AUTH).")
    password: str = _opt("", "SMTP AUTH password.")
    timeout_seconds: float = _opt(30.0, "Timeout of one SMTP conversation step.")


@dataclass(frozen=True)
class ReceiptsConfig:
    """Receipt e-mails to senders."""

    language: str = _opt("en", "Default receipt language; senders may override.", ("en", "zh"))
    from_address: str = _opt("faxgate@localhost", "From: address of receipts and fax mails.")
    acceptance_notice: bool = _opt(False, "Also mail the sender when a job is queued.")
    attach_pdf: bool = _opt(False, "Attach a PDF of the pages sent to each receipt.")
    retry_seconds: float = _opt(60.0, "Wait before retrying mail when the SMTP server fails.")


@dataclass(frozen=True)
class Config:
    """The effective configuration and the file it came from (None = defaults)."""

    source: Path | None = None
    dialplan: DialplanConfig = field(default_factory=DialplanConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    milter: MilterConfig = field(default_factory=MilterConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    fax: FaxConfig = field(default_factory=FaxConfig)
    faxd: FaxdConfig = field(default_factory=FaxdConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    receipts: ReceiptsConfig = field(default_factory=ReceiptsConfig)


SECTIONS: dict[str, type] = {
    name: hint for name, hint in typing.get_type_hints(Config).items() if name != "source"
}


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is list:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _build_section(name: str, cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key '{name}.{key}' (known: {', '.join(sorted(known))})"
            )
    values = {}
    for key, value in raw.items():
        hint = hints[key]
        if not _type_ok(value, hint):
            raise ConfigError(
                f"{where}: key '{name}.{key}' must be a {_type_name(hint)}, "
                f"not {type(value).__name__} {value!r}"
            )
        choices = known[key].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(
                f"{where}: key '{name}.{key}' must be one of {', '.join(map(str, choices))}, "
                f"not {value!r}"
            )
        pattern = known[key].metadata.get("pattern")
        if pattern and not re.fullmatch(pattern[0], value):
            raise ConfigError(f"{where}: key '{name}.{key}' must be {pattern[1]}, not {value!r}")
        values[key] = value
    return cls(**values)


def parse(data: dict[str, Any], source: Path | None = None) -> Config:
    """Validate already-parsed TOML data into a Config."""
    where = str(source) if source else "<defaults>"
    for name in data:
        if name not in SECTIONS:
            raise ConfigError(
                f"{where}: unknown section [{name}] (known: {', '.join(sorted(SECTIONS))})"
            )
    sections = {
        name: _build_section(name, cls, data.get(name, {}), where) for name, cls in SECTIONS.items()
    }
    return Config(source=source, **sections)


def resolve_path(explicit: str | os.PathLike[str] | None = None) -> tuple[Path, bool]:
    """Return the config path to use and whether it was asked for explicitly."""
    if explicit:
        return Path(explicit), True
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env), True
    return DEFAULT_PATH, False


def load(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Load the configuration following the documented lookup order."""
    path, required = resolve_path(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: configuration file not found") from None
        return parse({}, None)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse(data, path)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump(config: Config, with_docs: bool = False) -> str:
    """The effective configuration as TOML (optionally with each key's doc)."""
    lines: list[str] = []
    for name in SECTIONS:
        section = getattr(config, name)
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        for f in dataclasses.fields(section):
            if with_docs:
                lines.append(f"# {f.metadata['doc']}")
            lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
    return "\n".join(lines) + "\n"
