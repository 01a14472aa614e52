"""The SQLite store: senders, fax jobs, their recipients, an event log, AF directory.

Many writers share one file at once (a milter thread per SMTP connection, faxd,
admin CLI processes), so:

- the journal is WAL (readers never block the writer, the writer never blocks
  readers);
- every write runs in ``BEGIN IMMEDIATE``: the write lock is taken up front, so
  a transaction can never fail half-way with SQLITE_BUSY on a lock upgrade;
  taking that lock waits with SQLite's busy timeout and is retried with backoff
  until a deadline (SQLITE_BUSY_RECOVERY and friends skip the busy handler);
- a thread checks a connection out of a small pool for each operation or
  transaction (``sqlite3`` connections must never be used by two threads at
  once), and a forked child never touches its parent's connections.

The schema is versioned: ``MIGRATIONS`` is applied in order, one transaction
per migration, recorded in ``schema_migrations``. Times are UNIX seconds
(float). E-mail addresses are stored lower-cased, so lookups are
case-insensitive. The file stays plain SQLite, readable with the stock
``sqlite-utils`` CLI.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import random
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from faxgate.errors import InputError, NotFoundError, PermanentError, TemporaryError

if TYPE_CHECKING:
    from sqlite_utils import Database

    from faxgate.config import Config, LimitsConfig
JOB_STATES = ("queued", "active", "held", "done", "failed", "partial", "cancelled")
FINAL_JOB_STATES = ("done", "failed", "partial", "cancelled")
RECIPIENT_STATES = ("pending", "dialing", "sent", "failed", "partial", "cancelled", "held")
FINAL_RECIPIENT_STATES = ("sent", "failed", "partial", "cancelled")
RECEIPT_STATES = ("pending", "sent", "not_needed")
ROUTES = ("phone", "network")
LANGUAGES = ("en", "zh")
# Ordered from narrowest to widest: a sender allowed "domestic" may also call
# "local" and "internal" numbers, but not "international" ones.
DESTINATION_SCOPES = ("internal", "local", "domestic", "international")
DEFAULT_DESTINATIONS = "domestic"

DEFAULT_TIMEOUT = 10.0
_MAX_IDLE_CONNECTIONS = 8
_MAX_DETAIL = 4000
QUOTA_WINDOW_SECONDS = 24 * 3600

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
# Conditions an operator can fix while the mail client retries (4xx, not 5xx).
_SQLITE_UNAVAILABLE: dict[int | None, str] = {
    10: "I/O error",
    13: "disk full",
    14: "cannot open the database file",
    8: "database is read-only",
}
# Corrupt or not a database at all: no retry helps.
_SQLITE_UNUSABLE = {11, 26}


class StoreUnavailableError(TemporaryError):
    """The database cannot be written right now (disk full, I/O error, permissions)."""


class StoreBusyError(StoreUnavailableError):
    """The write lock was not obtained before the deadline."""


class SchemaError(PermanentError):
    """The database file cannot be used by this version of faxgate."""


class SenderExistsError(InputError):
    """``add_sender`` for an address that is already registered."""


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SenderLimits:
    """A sender's effective limits after applying configured defaults (0 = unlimited quota)."""

    max_recipients: int
    max_pages: int
    jobs_per_day: int


@dataclass(frozen=True)
class Sender:
    """Someone allowed (or once allowed) to send faxes by e-mail."""

    email: str
    name: str
    enabled: bool
    can_fax: bool
    smtp_login: str | None
    max_recipients: int | None
    max_pages: int | None
    jobs_per_day: int | None
    destinations: str
    allow_premium: bool
    language: str | None
    created: float
    updated: float

    @property
    def may_fax(self) -> bool:
        """Enabled and holding the fax permission."""
        return self.enabled and self.can_fax

    def allows_destination(self, scope: str) -> bool:
        """Whether a call of ``scope`` (one of DESTINATION_SCOPES) is within this sender's limit."""
        return DESTINATION_SCOPES.index(scope) <= DESTINATION_SCOPES.index(self.destinations)

    def effective_limits(self, defaults: LimitsConfig) -> SenderLimits:
        """Per-sender limits where set, the configured defaults otherwise."""
        return SenderLimits(
            max_recipients=_first_set(self.max_recipients, defaults.max_recipients),
            max_pages=_first_set(self.max_pages, defaults.max_pages),
            jobs_per_day=_first_set(self.jobs_per_day, defaults.jobs_per_day),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _clip(text: str, limit: int) -> str:
    """Bound text from hostile mail before it lands in the log."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_set(value: int | None, default: int) -> int:
    return default if value is None else value


@dataclass(frozen=True)
class JobRecipient:
    """One recipient of a job: the parsed Subject fields plus delivery progress."""

    job_id: str
    idx: int
    country: str | None = None
    area: str | None = None
    number: str | None = None
    network: str | None = None
    name1: str | None = None
    name2: str | None = None
    dial: str | None = None
    e164: str | None = None
    state: str = "pending"
    pages_confirmed: int = 0
    pages_total: int | None = None
    dials: int = 0
    tries: int = 0
    next_try: float | None = None
    last_reason: str | None = None
    last_error: str | None = None
    remote_ident: str | None = None
    bitrate: int | None = None
    resolution: str | None = None
    line_seconds: float | None = None
    route: str | None = None
    updated: float = 0.0

    @property
    def final(self) -> bool:
        return self.state in FINAL_RECIPIENT_STATES

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Job:
    """A fax job as recorded by the milter and advanced by faxd."""

    id: str
    sender: str
    subject: str
    message_id: str | None
    queue_id: str | None
    state: str
    priority: int
    created: float
    updated: float
    pages_total: int | None
    documents: tuple[str, ...]
    receipt_state: str
    receipt_sent_at: float | None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    recipients: tuple[JobRecipient, ...] = ()

    @property
    def final(self) -> bool:
        return self.state in FINAL_JOB_STATES

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["documents"] = list(self.documents)
        data["extra"] = dict(self.extra)
        data["recipients"] = [r.to_dict() for r in self.recipients]
        return data


@dataclass(frozen=True)
class Event:
    """One line of the event log; rejections have no job_id."""

    id: int
    time: float
    kind: str
    detail: str
    job_id: str | None
    recipient_idx: int | None
    queue_id: str | None
    sender: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DirectoryEntry:
    """A network (AF) number delivered by e-mail instead of a phone call."""

    network: str
    name: str
    email: str
    added: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------
# Validation: one place, shared by the API, the CLI and CSV import
# --------------------------------------------------------------------------

_EMAIL_LOCAL = re.compile(r'[^\s@<>()\[\],;:"\\]{1,64}')
_DOMAIN_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?")
_NETWORK_NUMBER = re.compile(r"[A-Z]{1,4}[0-9]{1,20}")
_EVENT_KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_LIMIT = 1_000_000


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def normalize_email(address: str) -> str:
    """Lower-case and check an e-mail address; InputError says what is wrong."""
    if not isinstance(address, str):
        raise InputError(f"e-mail address must be text, not {type(address).__name__}")
    text = address.strip().lower()
    if text.count("@") != 1:
        raise InputError(f"not a valid e-mail address (needs exactly one '@'): {address!r}")
    local, domain = text.split("@")
    if _has_control(text) or not _EMAIL_LOCAL.fullmatch(local):
        raise InputError(f"not a valid e-mail address (bad part before '@'): {address!r}")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InputError(f"not a valid e-mail address (misplaced '.'): {address!r}")
    labels = domain.split(".")
    if len(domain) > 253 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise InputError(f"not a valid e-mail address (bad domain): {address!r}")
    return text


def normalize_network(network: str) -> str:
    """Upper-case and check a network number such as ``AF90000098``."""
    text = str(network).strip().upper()
    if not _NETWORK_NUMBER.fullmatch(text):
        raise InputError(
            f"not a valid network number (letters then digits, e.g. AF90000098): {network!r}"
        )
    return text


def _text(value: Any, what: str, max_len: int = 200) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{what} must be text, not {type(value).__name__}")
    text = value.strip()
    if _has_control(text):
        raise InputError(f"{what} must not contain control characters or line breaks")
    if len(text) > max_len:
        raise InputError(f"{what} is longer than {max_len} characters")
    return text


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{what} must be true or false, not {value!r}")
    return value


def _limit(value: Any, what: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{what} must be a whole number, not {value!r}")
    if not minimum <= value <= _MAX_LIMIT:
        raise InputError(f"{what} must be between {minimum} and {_MAX_LIMIT}, not {value}")
    return value


def _choice(value: Any, what: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _login(value: Any) -> str | None:
    if value is None:
        return None
    text = _text(value, "SMTP login", 255)
    if any(ch.isspace() for ch in text):
        raise InputError(f"SMTP login must not contain spaces: {value!r}")
    return text or None


def _language(value: Any) -> str | None:
    return None if value is None else _choice(value, "language", LANGUAGES)


# Every writable sender field and its checker; the single source for add, update and import.
_SENDER_FIELDS: dict[str, Callable[[Any], Any]] = {
    "name": lambda v: _text(v, "name"),
    "enabled": lambda v: _flag(v, "enabled"),
    "can_fax": lambda v: _flag(v, "can_fax"),
    "smtp_login": _login,
    "max_recipients": lambda v: _limit(v, "max_recipients", 1),
    "max_pages": lambda v: _limit(v, "max_pages", 1),
    "jobs_per_day": lambda v: _limit(v, "jobs_per_day", 0),
    "destinations": lambda v: _choice(v, "destinations", DESTINATION_SCOPES),
    "allow_premium": lambda v: _flag(v, "allow_premium"),
    "language": _language,
}

_SENDER_DEFAULTS: dict[str, Any] = {
    "name": "",
    "enabled": True,
    "can_fax": True,
    "smtp_login": None,
    "max_recipients": None,
    "max_pages": None,
    "jobs_per_day": None,
    "destinations": DEFAULT_DESTINATIONS,
    "allow_premium": False,
    "language": None,
}


def _check_sender_fields(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - set(_SENDER_FIELDS))
    if unknown:
        raise InputError(f"unknown sender field(s): {', '.join(unknown)}")
    return {key: _SENDER_FIELDS[key](value) for key, value in fields.items()}


# Recipient fields taken from the Subject parser (Recipient.to_dict()) and the route.
_RECIPIENT_DESCRIPTION = (
    "country",
    "area",
    "number",
    "network",
    "name1",
    "name2",
    "dial",
    "e164",
    "route",
)
_RECIPIENT_PROGRESS = (
    "state",
    "pages_confirmed",
    "pages_total",
    "dials",
    "tries",
    "next_try",
    "last_reason",
    "last_error",
    "remote_ident",
    "bitrate",
    "resolution",
    "line_seconds",
)
_JOB_DESCRIPTION = ("sender", "subject", "message_id", "queue_id", "priority", "documents")
_JOB_PROGRESS = ("state", "pages_total", "receipt_state", "receipt_sent_at", "extra")


def _optional_text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{what} must be text, not {type(value).__name__}")
    return value


def _optional_number(value: Any, what: str, kind: type = int) -> Any:
    if value is None:
        return None
    allowed = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise InputError(f"{what} must be a number, not {value!r}")
    return value


def _count(value: Any, what: str) -> int:
    number = _optional_number(value, what)
    if number is None or number < 0:
        raise InputError(f"{what} must be a whole number >= 0, not {value!r}")
    return number


def _documents(value: Any) -> str:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InputError(f"documents must be a list of file names, not {value!r}")
    return json.dumps(list(value), ensure_ascii=False)


def _extra(value: Any) -> str:
    if not isinstance(value, dict):
        raise InputError(f"extra must be a JSON object, not {value!r}")
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"extra is not JSON-serialisable: {exc}") from None


_RECIPIENT_CHECKS: dict[str, Callable[[Any], Any]] = {
    **{name: (lambda v, n=name: _optional_text(v, n)) for name in _RECIPIENT_DESCRIPTION},
    "route": lambda v: None if v is None else _choice(v, "route", ROUTES),
    "state": lambda v: _choice(v, "recipient state", RECIPIENT_STATES),
    "pages_confirmed": lambda v: _count(v, "pages_confirmed"),
    "pages_total": lambda v: _optional_number(v, "pages_total"),
    "dials": lambda v: _count(v, "dials"),
    "tries": lambda v: _count(v, "tries"),
    "next_try": lambda v: _optional_number(v, "next_try", float),
    "last_reason": lambda v: _optional_text(v, "last_reason"),
    "last_error": lambda v: _optional_text(v, "last_error"),
    "remote_ident": lambda v: _optional_text(v, "remote_ident"),
    "bitrate": lambda v: _optional_number(v, "bitrate"),
    "resolution": lambda v: _optional_text(v, "resolution"),
    "line_seconds": lambda v: _optional_number(v, "line_seconds", float),
}


def _job_sender(address: Any) -> str:
    """A job's envelope sender: an address, or "" for the null sender (<>), whose
    jobs are recorded too (never mailed a receipt)."""
    if isinstance(address, str) and not address.strip():
        return ""
    return normalize_email(address)


_JOB_CHECKS: dict[str, Callable[[Any], Any]] = {
    "sender": _job_sender,
    "subject": lambda v: _optional_text(v, "subject") or "",
    "message_id": lambda v: _optional_text(v, "message_id"),
    "queue_id": lambda v: _optional_text(v, "queue_id"),
    "priority": lambda v: _count(v, "priority"),
    "documents": _documents,
    "state": lambda v: _choice(v, "job state", JOB_STATES),
    "pages_total": lambda v: _optional_number(v, "pages_total"),
    "receipt_state": lambda v: _choice(v, "receipt_state", RECEIPT_STATES),
    "receipt_sent_at": lambda v: _optional_number(v, "receipt_sent_at", float),
    "extra": _extra,
}


def _checked(fields: dict[str, Any], checks: dict[str, Callable[[Any], Any]], what: str) -> dict:
    unknown = sorted(set(fields) - set(checks))
    if unknown:
        raise InputError(f"unknown {what} field(s): {', '.join(unknown)}")
    return {key: checks[key](value) for key, value in fields.items()}


# --------------------------------------------------------------------------
# Schema migrations: append only, never edit a released one
# --------------------------------------------------------------------------


def _migration_initial(db: Database) -> None:
    """Senders, jobs, recipients, events and the network-number directory."""
    statements = [
        """CREATE TABLE senders (
            email TEXT PRIMARY KEY COLLATE NOCASE,
            name TEXT NOT NULL DEFAULT '',
            enabled INTEGER NOT NULL DEFAULT 1,
            can_fax INTEGER NOT NULL DEFAULT 1,
            smtp_login TEXT UNIQUE COLLATE NOCASE,
            max_recipients INTEGER,
            max_pages INTEGER,
            jobs_per_day INTEGER,
            destinations TEXT NOT NULL DEFAULT 'domestic',
            allow_premium INTEGER NOT NULL DEFAULT 0,
            language TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL
        )""",
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            sender TEXT NOT NULL COLLATE NOCASE,
            subject TEXT NOT NULL DEFAULT '',
            message_id TEXT,
            queue_id TEXT,
            state TEXT NOT NULL DEFAULT 'queued',
            priority INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            pages_total INTEGER,
            documents TEXT NOT NULL DEFAULT '[]',
            receipt_state TEXT NOT NULL DEFAULT 'pending',
            receipt_sent_at REAL,
            extra TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX jobs_sender_created ON jobs (sender, created)",
        "CREATE INDEX jobs_state ON jobs (state)",
        "CREATE INDEX jobs_sender_message_id ON jobs (sender, message_id)",
        """CREATE TABLE recipients (
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            country TEXT,
            area TEXT,
            number TEXT,
            network TEXT,
            name1 TEXT,
            name2 TEXT,
            dial TEXT,
            e164 TEXT,
            state TEXT NOT NULL DEFAULT 'pending',
            pages_confirmed INTEGER NOT NULL DEFAULT 0,
            pages_total INTEGER,
            dials INTEGER NOT NULL DEFAULT 0,
            tries INTEGER NOT NULL DEFAULT 0,
            next_try REAL,
            last_reason TEXT,
            last_error TEXT,
            remote_ident TEXT,
            bitrate INTEGER,
            resolution TEXT,
            line_seconds REAL,
            route TEXT,
            updated REAL NOT NULL,
            PRIMARY KEY (job_id, idx)
        )""",
        "CREATE INDEX recipients_state ON recipients (state)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            job_id TEXT,
            recipient_idx INTEGER,
            queue_id TEXT,
            sender TEXT COLLATE NOCASE
        )""",
        "CREATE INDEX events_job_id ON events (job_id, id)",
        "CREATE INDEX events_time ON events (time)",
        "CREATE INDEX events_sender_time ON events (sender, time)",
        """CREATE TABLE directory (
            network TEXT PRIMARY KEY,
            name TEXT NOT NULL DEFAULT '',
            email TEXT NOT NULL,
            added REAL NOT NULL
        )""",
    ]
    for statement in statements:
        db.execute(statement)


# Version N is MIGRATIONS[N - 1]. Add new migrations at the end.
MIGRATIONS: tuple[Callable[[Database], None], ...] = (_migration_initial,)
SCHEMA_VERSION = len(MIGRATIONS)


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc)
    return "locked" in text or "busy" in text


def _insert(db: Database, table: str, row: dict[str, Any], *, replace: bool = False) -> None:
    """A plain INSERT: unlike ``Table.insert`` it never creates a missing table."""
    columns = ", ".join(f'"{name}"' for name in row)
    marks = ", ".join("?" * len(row))
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    db.execute(f'{verb} INTO "{table}" ({columns}) VALUES ({marks})', list(row.values()))


def _raise_translated(exc: sqlite3.Error, path: Path) -> NoReturn:
    """Re-raise any sqlite3 error as a FaxgateError, so callers catch one family.

    Lock, disk and unknown trouble is temporary (the milter answers 4xx and
    nothing is lost); a file that is not a database is permanent.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    if _is_busy(exc):
        raise StoreBusyError(f"{path}: database stayed locked by other writers ({exc})") from exc
    if primary in _SQLITE_UNUSABLE:
        raise SchemaError(f"{path}: not a usable SQLite database ({exc})") from exc
    reason = _SQLITE_UNAVAILABLE.get(primary, "database error")
    raise StoreUnavailableError(f"{path}: {reason} ({exc})") from exc


class Store:
    """The faxgate database; share one instance between threads freely.

    Connections live in a small pool: an operation (or a whole ``transaction()``)
    checks one out for the calling thread and returns it afterwards, so the
    milter's thread-per-SMTP-connection churn reuses a few connections and no
    connection is ever used by two threads at once.
    """

    def __init__(self, path: str | Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._generation = 0
        self._idle: list[Database] = []
        # Connections inherited through fork(): a child must neither use nor close
        # them (closing could checkpoint or unlock on the parent's behalf).
        self._inherited: list[Database] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(
                f"{self.path}: cannot create its directory: {exc}"
            ) from None
        self._migrate()

    @classmethod
    def open(cls, cfg: Config) -> Store:
        """The store named by ``[store] path`` of the configuration."""
        return cls(cfg.store.path, timeout=cfg.store.busy_timeout)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close idle connections; ones in use close when their operation ends.

        The store stays usable: it reconnects when used again.
        """
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

    # ---- connections and transactions ------------------------------------

    def _connect(self) -> Database:
        from sqlite_utils import Database  # the CLI imports this module just for its constants

        try:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA foreign_keys = ON")
            # WAL + NORMAL is durable against process crashes; the spool, not the
            # store, is what must survive a power cut.
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            _raise_translated(exc, self.path)
        return Database(conn, recursive_triggers=False, execute_plugins=False)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Database]:
        """This thread's connection for the duration of one operation (nested: the same one)."""
        if self._pid != os.getpid():
            # A forked child is single-threaded here; the parent's lock may be stuck held.
            self._inherited.extend(self._idle)
            self._idle = []
            self._lock = threading.Lock()
            self._pid = os.getpid()
            self._generation += 1
            self._local = threading.local()
        local = self._local
        current = getattr(local, "db", None)
        if current is not None:
            yield current
            return
        with self._lock:
            db = self._idle.pop() if self._idle else None
            generation = self._generation
        if db is None:
            db = self._connect()
        local.db = db
        try:
            yield db
        finally:
            local.db = None
            with self._lock:
                reusable = (
                    generation == self._generation
                    and not db.conn.in_transaction
                    and len(self._idle) < _MAX_IDLE_CONNECTIONS
                )
                if reusable:
                    self._idle.append(db)
            if not reusable:
                db.close()

    def _begin_immediate(self, db: Database) -> None:
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            try:
                db.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.Error as exc:
                remaining = deadline - time.monotonic()
                if not _is_busy(exc) or remaining <= 0:
                    _raise_translated(exc, self.path)
                time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
                delay = min(delay * 2, 0.1)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction (``BEGIN IMMEDIATE``); nested uses join the outer one.

        Use it to make several store calls atomic, e.g. record a job and its
        "accepted" event together.
        """
        with self._connection() as db:
            if db.conn.in_transaction:
                yield db
                return
            self._begin_immediate(db)
            try:
                yield db
                db.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                db.rollback()
                _raise_translated(exc, self.path)
            except BaseException:
                db.rollback()
                raise

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Database]:
        """A read transaction, so multi-query reads see one consistent state."""
        with self._connection() as db:
            if db.conn.in_transaction:
                yield db
                return
            try:
                db.conn.execute("BEGIN")
                try:
                    yield db
                finally:
                    db.rollback()
            except sqlite3.Error as exc:
                _raise_translated(exc, self.path)

    def _migrate(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with self._connection() as db:
                    mode = db.execute("PRAGMA journal_mode = wal").fetchone()[0]
                break
            except sqlite3.Error as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    _raise_translated(exc, self.path)
                time.sleep(0.01)
        if mode.lower() != "wal":
            raise SchemaError(
                f"{self.path}: cannot use WAL journaling (got {mode!r}); "
                "put the store on a local file system"
            )
        if self.schema_version() == SCHEMA_VERSION:
            return
        while True:
            with self.transaction() as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)"
                )
                current = self._version(db)
                if current >= SCHEMA_VERSION:
                    return
                migration = MIGRATIONS[current]
                migration(db)
                _insert(
                    db,
                    "schema_migrations",
                    {"version": current + 1, "name": migration.__name__, "applied": time.time()},
                )

    @staticmethod
    def _version(db: Database) -> int:
        if not db["schema_migrations"].exists():
            return 0
        return db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]

    def schema_version(self) -> int:
        """The newest migration applied to the file; SchemaError if newer than this code."""
        with self._snapshot() as db:
            version = self._version(db)
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.path}: schema version {version} is newer than this faxgate "
                f"understands ({SCHEMA_VERSION}); upgrade faxgate"
            )
        return version

    def _rows(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        with self._snapshot() as db:
            return list(db.query(sql, params))

    # ---- senders -----------------------------------------------------------

    def add_sender(
        self,
        email: str,
        name: str = "",
        *,
        enabled: bool = True,
        can_fax: bool = True,
        smtp_login: str | None = None,
        max_recipients: int | None = None,
        max_pages: int | None = None,
        jobs_per_day: int | None = None,
        destinations: str = DEFAULT_DESTINATIONS,
        allow_premium: bool = False,
        language: str | None = None,
    ) -> Sender:
        """Register a sender; SenderExistsError if the address is taken. None limit = config."""
        address = normalize_email(email)
        fields = _check_sender_fields(
            {
                "name": name,
                "enabled": enabled,
                "can_fax": can_fax,
                "smtp_login": smtp_login,
                "max_recipients": max_recipients,
                "max_pages": max_pages,
                "jobs_per_day": jobs_per_day,
                "destinations": destinations,
                "allow_premium": allow_premium,
                "language": language,
            }
        )
        with self.transaction() as db:
            if self._sender_row(db, address) is not None:
                raise SenderExistsError(f"sender {address} already exists")
            self._insert_sender(db, address, fields)
            return _sender(self._sender_row(db, address))

    def _insert_sender(self, db: Database, address: str, fields: dict[str, Any]) -> None:
        self._check_login_free(db, fields.get("smtp_login"), address)
        now = time.time()
        row = {**_SENDER_DEFAULTS, **fields, "email": address, "created": now, "updated": now}
        _insert(db, "senders", row)

    def _check_login_free(self, db: Database, login: str | None, address: str) -> None:
        if login is None:
            return
        owner = db.execute(
            "SELECT email FROM senders WHERE smtp_login = ? AND email != ?", (login, address)
        ).fetchone()
        if owner:
            raise InputError(f"SMTP login {login!r} already belongs to {owner[0]}")

    @staticmethod
    def _sender_row(db: Database, address: str) -> dict[str, Any] | None:
        return next(db.query("SELECT * FROM senders WHERE email = ?", (address,)), None)

    def get_sender(self, email: str) -> Sender | None:
        """The sender with this address (any case), or None; also None for an invalid address."""
        try:
            address = normalize_email(email)
        except InputError:
            return None
        rows = self._rows("SELECT * FROM senders WHERE email = ?", (address,))
        return _sender(rows[0]) if rows else None

    def find_sender_by_login(self, login: str) -> Sender | None:
        """The sender whose SMTP AUTH login this is (case-insensitive), or None."""
        rows = self._rows("SELECT * FROM senders WHERE smtp_login = ?", (login,))
        return _sender(rows[0]) if rows else None

    def list_senders(self) -> list[Sender]:
        return [_sender(row) for row in self._rows("SELECT * FROM senders ORDER BY email")]

    def update_sender(self, email: str, **fields: Any) -> Sender:
        """Change some fields of a sender (None limit = back to the config default)."""
        address = normalize_email(email)
        changes = _check_sender_fields(fields)
        with self.transaction() as db:
            if self._sender_row(db, address) is None:
                raise NotFoundError(f"no sender {address}")
            self._check_login_free(db, changes.get("smtp_login"), address)
            if changes:
                db["senders"].update(address, {**changes, "updated": time.time()})
            return _sender(self._sender_row(db, address))

    def remove_sender(self, email: str) -> None:
        """Forget a sender; their jobs and events stay as history."""
        address = normalize_email(email)
        with self.transaction() as db:
            if db.execute("DELETE FROM senders WHERE email = ?", (address,)).rowcount == 0:
                raise NotFoundError(f"no sender {address}")

    def import_senders_csv(self, fileobj: IO[str], source: str = "CSV") -> int:
        """Create or update senders from CSV with a header row; all rows or none.

        Columns: ``CSV_COLUMNS`` (only ``email`` required). An empty cell leaves
        the field alone (a new sender gets the default); ``default`` in a limit
        or language cell resets it to the configured default. Returns the
        number of rows imported; InputError names the line and column.
        """
        rows = _parse_senders_csv(fileobj, source)
        with self.transaction() as db:
            for line, address, fields in rows:
                try:
                    if self._sender_row(db, address) is None:
                        self._insert_sender(db, address, fields)
                    else:
                        self._check_login_free(db, fields.get("smtp_login"), address)
                        if fields:
                            db["senders"].update(address, {**fields, "updated": time.time()})
                except InputError as exc:
                    raise InputError(f"{source} line {line}: {exc}") from None
        return len(rows)

    # ---- jobs ----------------------------------------------------------------

    def record_job(self, job: dict[str, Any]) -> bool:
        """Insert or refresh a job and its recipients; True if the job was new.

        Idempotent: recording the same job again (milter retry, faxd taking
        over a spooled job) refreshes the descriptive fields it carries but
        never moves progress backwards; state, pages confirmed and the like
        are taken from ``job`` only when the job or recipient is new.
        Recipient dicts use ``Recipient.to_dict()`` keys (unknown keys are
        ignored); ``idx`` defaults to the position in the list.
        """
        if not isinstance(job, dict):
            raise InputError("a job must be a dict")
        job_id = job.get("id")
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise InputError(f"job id must be letters, digits, '.', '_' or '-': {job_id!r}")
        if "sender" not in job:
            raise InputError(f"job {job_id} has no sender")
        known = set(_JOB_DESCRIPTION) | set(_JOB_PROGRESS)
        fields = _checked({k: v for k, v in job.items() if k in known}, _JOB_CHECKS, "job")
        recipients = job.get("recipients", [])
        if not isinstance(recipients, list | tuple):
            raise InputError("recipients must be a list")
        recipient_rows = [_recipient_fields(r, i) for i, r in enumerate(recipients)]
        if len({idx for idx, _ in recipient_rows}) != len(recipient_rows):
            raise InputError(f"job {job_id}: two recipients with the same idx")
        now = time.time()
        created = _optional_number(job.get("created"), "created", float) or now
        with self.transaction() as db:
            exists = db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if exists:
                refresh = {k: v for k, v in fields.items() if k in _JOB_DESCRIPTION}
                db["jobs"].update(job_id, {**refresh, "updated": now})
            else:
                _insert(db, "jobs", {**fields, "id": job_id, "created": created, "updated": now})
            for idx, row in recipient_rows:
                present = db.execute(
                    "SELECT 1 FROM recipients WHERE job_id = ? AND idx = ?", (job_id, idx)
                ).fetchone()
                if present:
                    refresh = {k: v for k, v in row.items() if k in _RECIPIENT_DESCRIPTION}
                    db["recipients"].update((job_id, idx), {**refresh, "updated": now})
                else:
                    _insert(db, "recipients", {**row, "job_id": job_id, "idx": idx, "updated": now})
        return not exists

    def get_job(self, job_id: str) -> Job | None:
        with self._snapshot() as db:
            row = next(db.query("SELECT * FROM jobs WHERE id = ?", (job_id,)), None)
            if row is None:
                return None
            return self._jobs_with_recipients(db, [row])[0]

    def find_job(self, sender: str, message_id: str) -> Job | None:
        """The newest job of ``sender`` for this Message-ID (duplicate submissions)."""
        address = normalize_email(sender)
        with self._snapshot() as db:
            row = next(
                db.query(
                    "SELECT * FROM jobs WHERE sender = ? AND message_id = ? "
                    "ORDER BY created DESC LIMIT 1",
                    (address, message_id),
                ),
                None,
            )
            return None if row is None else self._jobs_with_recipients(db, [row])[0]

    def list_jobs(
        self, sender: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[Job]:
        """Newest first; ``sender`` gives that sender's outbox."""
        where, params = [], []
        if sender is not None:
            where.append("sender = ?")
            params.append(normalize_email(sender))
        if state is not None:
            where.append("state = ?")
            params.append(_choice(state, "job state", JOB_STATES))
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, id DESC LIMIT ?"
        params.append(_limit(limit, "limit", 1))
        with self._snapshot() as db:
            return self._jobs_with_recipients(db, list(db.query(sql, params)))

    @staticmethod
    def _jobs_with_recipients(db: Database, rows: list[dict[str, Any]]) -> list[Job]:
        by_job: dict[str, list[JobRecipient]] = {row["id"]: [] for row in rows}
        if by_job:
            marks = ",".join("?" * len(by_job))
            for r in db.query(
                f"SELECT * FROM recipients WHERE job_id IN ({marks}) ORDER BY job_id, idx",
                list(by_job),
            ):
                by_job[r["job_id"]].append(JobRecipient(**r))
        return [_job(row, by_job[row["id"]]) for row in rows]

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Change job fields; ``extra`` is merged key by key (JSON merge patch)."""
        changes = _checked(fields, _JOB_CHECKS, "job")
        conversions = {"extra": "json_patch(extra, ?)"} if "extra" in changes else {}
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise NotFoundError(f"no job {job_id}")
            db["jobs"].update(job_id, {**changes, "updated": time.time()}, conversions=conversions)

    def update_recipient(self, job_id: str, idx: int, **fields: Any) -> None:
        """Record delivery progress of one recipient."""
        changes = _checked(fields, _RECIPIENT_CHECKS, "recipient")
        with self.transaction() as db:
            found = db.execute(
                "SELECT 1 FROM recipients WHERE job_id = ? AND idx = ?", (job_id, idx)
            ).fetchone()
            if found is None:
                raise NotFoundError(f"no recipient {idx} in job {job_id}")
            db["recipients"].update((job_id, idx), {**changes, "updated": time.time()})

    def jobs_today(self, sender: str, now: float | None = None) -> int:
        """Jobs of ``sender`` accepted in the last 24 hours (a rolling window, not since midnight)."""
        since = (time.time() if now is None else now) - QUOTA_WINDOW_SECONDS
        rows = self._rows(
            "SELECT count(*) AS n FROM jobs WHERE sender = ? AND created > ?",
            (normalize_email(sender), since),
        )
        return rows[0]["n"]

    # ---- events --------------------------------------------------------------

    def add_event(
        self,
        kind: str,
        detail: str = "",
        *,
        job_id: str | None = None,
        recipient_idx: int | None = None,
        queue_id: str | None = None,
        sender: str | None = None,
    ) -> None:
        """Append to the event log (kind: accepted, rejected, dialing, sent, failed, ...)."""
        if not isinstance(kind, str) or not _EVENT_KIND.fullmatch(kind):
            raise InputError(f"event kind must be lower-case letters, digits, '_': {kind!r}")
        row = {
            "time": time.time(),
            "kind": kind,
            "detail": _clip(str(detail), _MAX_DETAIL),
            "job_id": job_id,
            "recipient_idx": recipient_idx,
            "queue_id": queue_id,
            # Rejected mail may carry any envelope sender: keep it as given, lower-cased.
            "sender": _clip(sender.strip().lower(), 320) if sender else None,
        }
        with self.transaction() as db:
            _insert(db, "events", row)

    def events(
        self,
        job_id: str | None = None,
        limit: int = 100,
        *,
        sender: str | None = None,
        kind: str | None = None,
        since: float | None = None,
    ) -> list[Event]:
        """The newest ``limit`` matching events, oldest first."""
        where, params = [], []
        for column, value in (("job_id", job_id), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if sender is not None:
            where.append("sender = ?")
            params.append(sender.strip().lower())
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(_limit(limit, "limit", 1))
        return [Event(**row) for row in reversed(self._rows(sql, params))]

    # ---- network-number directory ---------------------------------------------

    def directory_add(
        self, network: str, name: str, email: str, *, replace: bool = False
    ) -> DirectoryEntry:
        """Map a network number to a destination address; InputError if known and not replace."""
        number = normalize_network(network)
        row = {
            "network": number,
            "name": _text(name, "name"),
            "email": normalize_email(email),
            "added": time.time(),
        }
        with self.transaction() as db:
            known = db.execute("SELECT 1 FROM directory WHERE network = ?", (number,)).fetchone()
            if known and not replace:
                raise InputError(f"network number {number} is already in the directory")
            _insert(db, "directory", row, replace=True)
        return DirectoryEntry(**row)

    def directory_get(self, network: str) -> DirectoryEntry | None:
        try:
            number = normalize_network(network)
        except InputError:
            return None
        rows = self._rows("SELECT * FROM directory WHERE network = ?", (number,))
        return DirectoryEntry(**rows[0]) if rows else None

    def directory_list(self) -> list[DirectoryEntry]:
        return [DirectoryEntry(**r) for r in self._rows("SELECT * FROM directory ORDER BY network")]

    def directory_remove(self, network: str) -> None:
        number = normalize_network(network)
        with self.transaction() as db:
            if db.execute("DELETE FROM directory WHERE network = ?", (number,)).rowcount == 0:
                raise NotFoundError(f"network number {number} is not in the directory")


# --------------------------------------------------------------------------
# Row conversion and CSV parsing
# --------------------------------------------------------------------------


def _sender(row: dict[str, Any] | None) -> Sender:
    assert row is not None
    data = dict(row)
    for key in ("enabled", "can_fax", "allow_premium"):
        data[key] = bool(data[key])
    return Sender(**data)


def _job(row: dict[str, Any], recipients: list[JobRecipient]) -> Job:
    data = dict(row)
    data["documents"] = tuple(json.loads(data["documents"]))
    data["extra"] = json.loads(data["extra"])
    return Job(**data, recipients=tuple(recipients))


def _recipient_fields(recipient: Any, position: int) -> tuple[int, dict[str, Any]]:
    if not isinstance(recipient, dict):
        raise InputError(f"recipient {position} must be a dict")
    idx = recipient.get("idx", position)
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise InputError(f"recipient idx must be a whole number >= 0, not {idx!r}")
    known = {k: v for k, v in recipient.items() if k in _RECIPIENT_CHECKS}
    return idx, _checked(known, _RECIPIENT_CHECKS, "recipient")


CSV_COLUMNS = ("email", *_SENDER_FIELDS)
_TRUE_WORDS = {"1", "true", "yes", "y", "on"}
_FALSE_WORDS = {"0", "false", "no", "n", "off"}
_RESETTABLE = {"max_recipients", "max_pages", "jobs_per_day", "language"}
_CSV_MAX_ROWS = 100_000


def _csv_value(column: str, cell: str) -> Any:
    """Convert one non-empty CSV cell to the Python value the field checker expects."""
    word = cell.strip().lower()
    if column in _RESETTABLE and word == "default":
        return None
    if column in ("enabled", "can_fax", "allow_premium"):
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise InputError(f"expected yes or no, got {cell!r}")
    if column in ("max_recipients", "max_pages", "jobs_per_day"):
        if not word.isdigit():
            raise InputError(f"expected a whole number or 'default', got {cell!r}")
        return int(word)
    if column in ("destinations", "language"):
        return word
    return cell


def _parse_senders_csv(fileobj: IO[str], source: str) -> list[tuple[int, str, dict[str, Any]]]:
    reader = csv.reader(fileobj)
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(f"{source}: empty file, expected a header row")
        columns = [h.strip().lower().lstrip("\ufeff") for h in header]
        for number, column in enumerate(columns, 1):
            if column not in CSV_COLUMNS:
                raise InputError(
                    f"{source} line 1, column {number}: unknown column {column!r} "
                    f"(known: {', '.join(CSV_COLUMNS)})"
                )
            if columns.index(column) != number - 1:
                raise InputError(f"{source} line 1, column {number}: {column!r} appears twice")
        if "email" not in columns:
            raise InputError(f"{source} line 1: the header has no 'email' column")
        rows: list[tuple[int, str, dict[str, Any]]] = []
        first_line: dict[str, int] = {}
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(rows) >= _CSV_MAX_ROWS:
                raise InputError(f"{source} line {line}: more than {_CSV_MAX_ROWS} rows")
            if len(cells) != len(columns):
                raise InputError(
                    f"{source} line {line}: {len(cells)} fields, the header has {len(columns)}"
                )
            address = ""
            fields: dict[str, Any] = {}
            for number, (column, cell) in enumerate(zip(columns, cells, strict=True), 1):
                try:
                    if column == "email":
                        address = normalize_email(cell)
                    elif cell.strip():
                        fields.update(_check_sender_fields({column: _csv_value(column, cell)}))
                except InputError as exc:
                    raise InputError(
                        f"{source} line {line}, column {number} ({column}): {exc}"
                    ) from None
            if address in first_line:
                raise InputError(
                    f"{source} line {line}: {address} is already on line {first_line[address]}"
                )
            first_line[address] = line
            rows.append((line, address, fields))
    except csv.Error as exc:
        raise InputError(f"{source} line {reader.line_num}: malformed CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{source}: not UTF-8 text ({exc.reason}); save the CSV as UTF-8"
        ) from None
    return rows
