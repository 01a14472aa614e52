"""The pymilter milter: decide while the SMTP client is still connected.

One :class:`FaxMilter` per SMTP connection (libmilter runs each in its own
thread); per-message state is reset at MAIL FROM. The protocol steps are
negotiated down to what the decision needs:

- MAIL and RCPT are ``noreply``: they only record facts, so ordinary mail costs
  one round trip (DATA) and never waits for us at the envelope.
- DATA answers ACCEPT when no recipient is a fax address, so Postfix sends no
  headers or body of ordinary mail to us. (ACCEPT at RCPT would accept the
  whole message, and a fax address may be the 2nd of 5 recipients.)
- Headers are ``noreply``; at end of headers the sender rules, the Subject and
  the job rules run, so a rejection costs the client no body upload.
- End of message: attachments are sniffed, the job is spooled durably, and
  only then does Postfix get DISCARD (fax address was the only recipient) or
  ACCEPT after ``delrcpt`` of the fax addresses.

Every callback is wrapped: an exception is logged and becomes ``451 4.3.0``
(the client retries, nothing is lost) instead of reaching pymilter.
"""

from __future__ import annotations

import functools
import gc
import logging
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import Any

import Milter

from faxgate.config import Config
from faxgate.errors import ConfigError, TemporaryError
from faxgate.faxd import spool
from faxgate.grammar.subject import SubjectError, parse_subject
from faxgate.milter import rules
from faxgate.milter.mimeparts import (
    MalformedMessage,
    MimeLimitExceeded,
    ascii_safe,
    decode_header,
    describe_char,
    split_message,
    unfold,
)
from faxgate.milter.rules import Facts, Rejection
from faxgate.render.sniff import UnsupportedDocument, sniff
from faxgate.store import Store

log = logging.getLogger("faxgate.milter")

#: Header set by faxd on receipts; a receipt sent to a fax address must not loop.
RECEIPT_HEADER = "x-faxgate-job"
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
_MAX_REPLY_LINES = 8
_REPLY_LINE_LIMIT = 400
#: Job priority as the spool format names it (faxd turns it into a number around
#: ``[faxd] default_priority``), from X-Priority / Importance.
PRIORITY_HIGH, PRIORITY_NORMAL, PRIORITY_LOW = "high", "normal", "low"


@dataclass(frozen=True)
class Runtime:
    """What every connection shares: configuration, store, fax addresses."""

    config: Config
    store: Store
    fax_addresses: frozenset[str]

    @classmethod
    def create(cls, config: Config, store: Store | None = None) -> Runtime:
        addresses = frozenset(_envelope_address(a).lower() for a in config.milter.fax_addresses)
        return cls(config, store or Store.open(config), addresses)


#: What libmilter accepts as ``[milter] socket`` (``local:`` is an alias of ``unix:``).
_SOCKET_SPEC = re.compile(r"(?:inet6?:\d{1,5}(?:@[^\s@]+)?|(?:unix|local):/\S+)")


class MilterSocketError(TemporaryError):
    """The milter cannot listen on its socket (port in use, directory missing...)."""


def check_socket_spec(spec: str) -> None:
    """ConfigError unless ``spec`` is ``inet:PORT@HOST``, ``inet6:...`` or ``unix:/PATH``."""
    if not _SOCKET_SPEC.fullmatch(spec.strip()):
        raise ConfigError(
            f"[milter] socket = {spec!r}: expected 'inet:PORT@HOST' (e.g. inet:8899@127.0.0.1)"
            " or 'unix:/ABSOLUTE/PATH'"
        )


def _envelope_address(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value.strip()


def _one_line(text: str) -> str:
    """Sender text for one line of a reply or log: control characters (an encoded
    word can hold CR LF) shown as ``\\uXXXX`` instead of starting fake lines."""
    return "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char)[0] == "C" else char for char in text
    )


def _guarded(noreply: bool = False) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Trap every exception of a callback: log it and answer 451 4.3.0.

    A ``noreply`` callback cannot answer; the failure is remembered and the
    next callback that can answer tempfails the message.
    """

    def decorate(func: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(func)
        def wrapper(self: FaxMilter, *args: Any) -> int:
            try:
                return func(self, *args)
            except Exception:
                log.exception("%s: internal error in %s", self.queue_id, func.__name__)
                self.failure = f"internal error in {func.__name__}"
                if noreply:
                    return Milter.CONTINUE
                return self._tempfail(self.failure)

        return wrapper

    return decorate


class FaxMilter(Milter.Base):
    """One SMTP connection as the milter sees it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.queue_id = "NOQUEUE"
        self._reset("")

    def _reset(self, mail_from: str) -> None:
        self.mail_from = mail_from
        self.esmtp_size = 0
        self.auth_login: str | None = None
        self.client_addr: str | None = None
        self.fax_rcpts: list[str] = []
        self.other_rcpts = 0
        self.headers: list[tuple[str, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.collecting = False  # buffering the body of a fax job
        self.drop_fax = False  # fax part silently dropped; other recipients still served
        self.failure: str | None = None
        self.facts: Facts | None = None
        self.subject = ""

    # ---- SMTP stages ---------------------------------------------------------

    @Milter.decode("replace")
    @Milter.noreply
    @_guarded(noreply=True)
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._reset(_envelope_address(mailfrom))
        self.queue_id = self.getsymval("i") or "NOQUEUE"
        self.auth_login = self.getsymval("{auth_authen}") or None
        self.client_addr = self.getsymval("{client_addr}") or None
        for param in params:
            key, _, value = param.partition("=")
            if key.upper() == "SIZE" and value.isdigit():
                self.esmtp_size = int(value)
        return Milter.CONTINUE

    @Milter.noreply
    @_guarded(noreply=True)
    def envrcpt(self, to: str, *params: str) -> int:
        if _envelope_address(to).lower() in self.runtime.fax_addresses:
            self.fax_rcpts.append(to)
        else:
            self.other_rcpts += 1
        return Milter.CONTINUE

    @_guarded()
    def data(self) -> int:
        if self.failure:
            # MAIL or RCPT failed: we cannot tell whether a fax address was among them.
            self.queue_id = self.getsymval("i") or self.queue_id
            return self._tempfail(self.failure)
        # No fax address: not our business, and Postfix need not send us anything more.
        return Milter.CONTINUE if self.fax_rcpts else Milter.ACCEPT

    @Milter.decode("bytes")
    @Milter.noreply
    @_guarded(noreply=True)
    def header(self, name: str, value: bytes) -> int:
        if self.fax_rcpts:
            self.headers.append((name, value))
            self.size += len(name) + len(value) + 4
        return Milter.CONTINUE

    @_guarded()
    def eoh(self) -> int:
        if not self.fax_rcpts:
            return Milter.ACCEPT
        self.queue_id = self.getsymval("i") or self.queue_id
        if self.failure:
            return self._tempfail(self.failure)
        return self._check_headers()

    @Milter.noreply
    @_guarded(noreply=True)
    def body(self, chunk: bytes) -> int:
        if self.collecting:
            self.size += len(chunk)
            if self.size <= self.config.limits.max_message_bytes:
                self.chunks.append(chunk)
        return Milter.CONTINUE

    @_guarded()
    def eom(self) -> int:
        if not self.fax_rcpts:
            return Milter.ACCEPT
        self.queue_id = self.getsymval("i") or self.queue_id
        if self.failure:
            return self._tempfail(self.failure)
        if self.drop_fax:
            return self._without_fax()
        if not self.collecting or self.facts is None:
            return self._tempfail("end of message without checked headers")
        if self.size > self.config.limits.max_message_bytes:
            return self._too_big(self.size)
        return self._spool_job()

    @_guarded()
    def abort(self) -> int:
        self._reset("")
        return Milter.CONTINUE

    @_guarded()
    def close(self) -> int:
        return Milter.CONTINUE

    # ---- decisions -----------------------------------------------------------

    def _header_values(self, name: str) -> list[str]:
        return [decode_header(v) for n, v in self.headers if n.lower() == name]

    def _loop_reason(self) -> str | None:
        """Why this mail must never become a fax (bounces, auto-replies, lists)."""
        if not self.mail_from:
            return "null sender (a bounce)"
        if self.mail_from.partition("@")[0].lower() == "mailer-daemon":
            return "sender is MAILER-DAEMON"
        for value in self._header_values("auto-submitted"):
            keyword = value.split(";", 1)[0].split("(", 1)[0].strip().lower()
            if keyword != "no":
                return f"Auto-Submitted: {keyword or '(empty)'}"
        for value in self._header_values("precedence"):
            if value.strip().lower() in _BULK_PRECEDENCE:
                return f"Precedence: {value.strip().lower()}"
        if self._header_values(RECEIPT_HEADER):
            return "a faxgate receipt"
        return None

    def _check_headers(self) -> int:
        limits = self.config.limits
        loop = self._loop_reason()
        if loop:
            return self._drop("ignored", f"not faxed: {loop}")
        if self.esmtp_size > limits.max_message_bytes:
            return self._too_big(self.esmtp_size)
        store = self.runtime.store
        raw_from = [unfold(v) for n, v in self.headers if n.lower() == "from"]
        try:
            from_addresses = [addr for _name, addr in getaddresses(raw_from) if "@" in addr]
        except RecursionError:  # the email package parses nested comments recursively
            return self._reject(
                Rejection(
                    550,
                    "5.7.1",
                    "The From: header cannot be parsed (comments nested too deep)",
                    "bad_from",
                )
            )
        facts = Facts(
            config=self.config,
            store=store,
            envelope_sender=self.mail_from,
            from_addresses=from_addresses,
            auth_login=self.auth_login,
            authentication_results=self._header_values("authentication-results"),
            sender=store.get_sender(self.mail_from),
            message_id=(self._header_values("message-id") or [""])[0],
        )
        rejection = rules.first_rejection(rules.SENDER_RULES, facts)
        if rejection is not None:
            if self.config.milter.unauthorized == "discard":
                return self._drop("discarded", f"unauthorised, discarded: {rejection.text}")
            return self._reject(rejection)
        raw_subjects = [v for n, v in self.headers if n.lower() == "subject"]
        self.subject = decode_header(raw_subjects[0]) if raw_subjects else ""
        if facts.sender is None:
            raise RuntimeError("sender rules passed without a registered sender")
        limit = facts.sender.effective_limits(limits).max_recipients
        try:
            facts.recipients = parse_subject(
                self.subject, self.config.dialplan, max(limit, limits.max_recipients)
            )
        except SubjectError as exc:
            return self._reject(self._subject_rejection(exc))
        rejection = rules.first_rejection(rules.JOB_RULES, facts)
        if rejection is not None:
            return self._reject(rejection)
        self.facts = facts
        self.collecting = True
        return Milter.CONTINUE

    def _subject_rejection(self, exc: SubjectError) -> Rejection:
        lines = [f"Fax Subject not understood at column {exc.column}: {exc.problem}"]
        position = exc.column - 1
        if 0 <= position < len(self.subject) and not (" " <= self.subject[position] <= "~"):
            lines.append(f"At column {exc.column} is {describe_char(self.subject[position])}")
        if exc.text:
            lines.append(f"Near: {_one_line(exc.text)}")
        lines.append(f"Subject: {_one_line(self.subject)}")
        lines.append(f"Hint: {exc.hint}")
        return Rejection(550, "5.6.0", "\n".join(lines), "bad_subject")

    def _spool_job(self) -> int:
        started = time.monotonic()
        facts = self.facts
        if facts is None or facts.sender is None:
            raise RuntimeError("end of message without checked headers")
        limits = self.config.limits
        raw = self._raw_message()
        try:
            parts = split_message(raw)
        except MimeLimitExceeded as exc:
            return self._reject(
                Rejection(552, "5.3.4", f"Message too complex to fax: {exc}", "mime_limit")
            )
        except MalformedMessage as exc:
            return self._reject(Rejection(550, "5.6.1", f"Message unreadable: {exc}", "bad_mime"))
        if not parts.attachments:
            return self._reject(
                Rejection(
                    550,
                    "5.6.1",
                    "No attachment to fax: attach a PDF, image, text or Office document",
                    "no_attachment",
                )
            )
        documents = []
        for attachment in parts.attachments:
            name = attachment.filename
            problem = attachment.unsupported
            if problem is None and not attachment.data:
                problem = "the file is empty"
            if problem is None and len(attachment.data) > limits.max_attachment_bytes:
                problem = (
                    f"{len(attachment.data)} bytes is over the limit of "
                    f"{limits.max_attachment_bytes} bytes per attachment"
                )
            if problem is None:
                try:
                    sniffed = sniff(attachment.data, name, attachment.content_type)
                except UnsupportedDocument as exc:
                    problem = exc.reason
            if problem is not None:
                return self._reject(
                    Rejection(550, "5.6.1", f"Attachment {name}: {problem}", "bad_attachment")
                )
            documents.append(
                {
                    "filename": name,
                    "kind": sniffed.kind,
                    "format": sniffed.format,
                    "part": attachment.part,
                    "size": len(attachment.data),
                }
            )
        now = datetime.now(UTC)
        message_id = facts.message_id
        job = {
            "id": spool.new_job_id(now),
            "sender": facts.sender.email,
            "from_header": (self._header_values("from") or [""])[0],
            "auth": {
                "login": self.auth_login,
                "client_addr": self.client_addr,
                "authentication_results": rules.auth_results.trusted_headers(facts),
            },
            "recipients": [r.to_dict() for r in facts.recipients],
            "subject": self.subject,
            "message_id": message_id,
            "queue_id": self.queue_id,
            "created": now.isoformat(),
            "priority": self._priority(),
            "documents": documents,
            "body_text": parts.body_text,
        }
        try:
            job_id = spool.submit(self.config.spool.directory, job, raw)
        except spool.SpoolError as exc:
            log.error("%s: cannot spool fax job: %s", self.queue_id, exc)
            return self._tempfail(f"spool unavailable: {exc}")
        if job_id != job["id"]:
            self._event("duplicate", f"same Message-ID {message_id} as job {job_id}", job_id)
            return self._without_fax()
        summary = ", ".join(f"{d['filename']} ({d['format']})" for d in documents)
        elapsed_ms = (time.monotonic() - started) * 1e3
        record = {
            **{k: job[k] for k in ("id", "sender", "subject", "message_id", "queue_id")},
            "created": now.timestamp(),
            "documents": [d["filename"] for d in job["documents"]],
            "recipients": job["recipients"],
        }
        self._event(
            "accepted",
            f"job {job_id}: {len(facts.recipients)} recipient(s), {summary}"
            f" ({len(raw)} bytes checked and spooled in {elapsed_ms:.0f} ms)",
            job_id,
            record=record,
        )
        return self._without_fax()

    def _priority(self) -> str:
        for value in self._header_values("x-priority"):
            digits = re.match(r"\s*(\d)", value)
            if digits:
                level = int(digits[1])
                return (
                    PRIORITY_HIGH if level <= 2 else PRIORITY_LOW if level >= 4 else PRIORITY_NORMAL
                )
        for value in self._header_values("importance") + self._header_values("priority"):
            word = value.strip().lower()
            if word in ("high", "urgent"):
                return PRIORITY_HIGH
            if word in ("low", "non-urgent"):
                return PRIORITY_LOW
        return PRIORITY_NORMAL

    def _raw_message(self) -> bytes:
        lines = []
        for name, value in self.headers:
            value = re.sub(rb"\r?\n", b"\r\n", value)
            lines.append(name.encode("ascii", "replace") + b": " + value + b"\r\n")
        return b"".join(lines) + b"\r\n" + b"".join(self.chunks)

    # ---- replies ---------------------------------------------------------------

    def _without_fax(self) -> int:
        """The fax part is done (spooled or dropped): the rest goes on as usual."""
        if self.other_rcpts == 0:
            return Milter.DISCARD
        for rcpt in self.fax_rcpts:
            self.delrcpt(rcpt)
        return Milter.ACCEPT

    def _drop(self, kind: str, detail: str) -> int:
        """Never fax this mail, without telling the sender (loops, ``unauthorized = discard``)."""
        self._event(kind, detail)
        if self.other_rcpts == 0:
            return Milter.DISCARD
        self.drop_fax = True  # delrcpt is only allowed at end of message
        return Milter.CONTINUE

    def _too_big(self, size: int) -> int:
        limit = self.config.limits.max_message_bytes
        return self._reject(
            Rejection(
                552,
                "5.3.4",
                f"Message of {size} bytes is too big for a fax job (limit {limit} bytes)",
                "too_big",
            )
        )

    def _reject(self, rejection: Rejection) -> int:
        self._event(
            "rejected", f"{rejection.code} {rejection.dsn} {rejection.reason}: {rejection.text}"
        )
        self._setreply(rejection.code, rejection.dsn, rejection.text)
        return Milter.REJECT

    def _tempfail(self, why: str) -> int:
        self._event("tempfail", why)
        self._setreply(451, "4.3.0", "Fax service temporarily unavailable, please try again later")
        return Milter.TEMPFAIL

    def _setreply(self, code: int, dsn: str, text: str) -> None:
        """Postfix replies must be ASCII, lines short, and '%' doubled for libmilter."""
        lines = [
            ascii_safe(line, _REPLY_LINE_LIMIT).replace("%", "%%") for line in text.split("\n")
        ]
        try:
            self.setreply(str(code), dsn, *lines[:_MAX_REPLY_LINES])
        except Exception:
            log.exception("%s: cannot set SMTP reply %s %s", self.queue_id, code, dsn)

    def _event(
        self,
        kind: str,
        detail: str,
        job_id: str | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        """Log a decision with the queue id, and add it to the store's event log.

        ``record`` is a spooled job's row, written in the same transaction as its
        event. The store is best effort here: the spool is the truth, and faxd
        records the job again when it takes it.
        """
        log.info("%s: %s: from=<%s> %s", self.queue_id, kind, self.mail_from, detail)
        store = self.runtime.store
        try:
            with store.transaction():
                if record is not None:
                    store.record_job(record)
                store.add_event(
                    kind,
                    detail,
                    job_id=job_id,
                    queue_id=self.queue_id,
                    sender=self.mail_from or None,
                )
        except Exception:
            log.exception(
                "%s: cannot write %s%s to the store",
                self.queue_id,
                f"job {job_id} and its " if record is not None else "",
                f"event {kind}",
            )


def run(config: Config, store: Store | None = None) -> None:
    """Serve ``[milter] socket`` until SIGTERM/SIGINT (blocks; one thread per connection).

    Raises ConfigError for a malformed socket and MilterSocketError when
    libmilter cannot listen there or stops serving.
    """
    check_socket_spec(config.milter.socket)
    runtime = Runtime.create(config, store)
    # sniff() imports the PDF libraries on first use; do it now, not in the first fax's reply.
    import pypdf  # noqa: F401
    import pypdfium2  # noqa: F401

    # Everything loaded so far lives as long as the process: keep it out of the
    # garbage collector's scans, which otherwise run on every few connections.
    gc.collect()
    gc.freeze()
    Milter.factory = lambda: FaxMilter(runtime)
    # The only action we use: delrcpt for mixed recipients. Macros come from main.cf
    # (milter_*_macros): asking for them per connection with setsymlist costs more
    # CPU than the whole rest of an ordinary mail's milter work.
    Milter.set_flags(Milter.DELRCPT)
    log.info(
        "faxgate milter on %s for %s",
        config.milter.socket,
        ", ".join(sorted(runtime.fax_addresses)),
    )
    started = time.monotonic()
    try:
        Milter.runmilter("faxgate", config.milter.socket.strip(), timeout=240)
    except Milter.milter.error as exc:
        raise MilterSocketError(
            f"milter on {config.milter.socket}: {exc} (port in use? socket directory missing"
            " or not writable?)"
        ) from None
    log.info("faxgate milter stopped after %.0f s", time.monotonic() - started)
