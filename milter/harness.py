"""Drive the milter with raw message bytes the way Postfix does, without Postfix.

pymilter's ``TestCtx`` replaces libmilter's context; its own ``_feedFile``
re-serialises the message through the email package, which hides exactly the
malformed and 8-bit input the milter must survive. :func:`drive` instead cuts
the raw bytes into header fields and body chunks itself and honours the
negotiated protocol (skipped callbacks, ``NOREPLY``), so tests and the fuzzer
see what a real MTA would send. :class:`Session` sends several messages over
one milter connection, as an SMTP session with several transactions does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import Milter
from Milter.testctx import TestCtx

RESULT_NAMES = {
    Milter.CONTINUE: "continue",
    Milter.ACCEPT: "accept",
    Milter.REJECT: "reject",
    Milter.DISCARD: "discard",
    Milter.TEMPFAIL: "tempfail",
}
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
BODY_CHUNK = 65535  # what Postfix sends per SMFIC_BODY


class _Ctx(TestCtx):
    def _negotiate(self) -> int:
        # TestCtx negotiates on its shared class-level option list; use a copy.
        self._body = None
        self._bodyreplaced = False
        self._priv = None
        self._opts = list(TestCtx.default_opts)
        self._stage = -1
        rc = Milter.negotiate_callback(self, self._opts)
        self._protocol = self._opts[1]
        return rc


@dataclass
class Outcome:
    """How the milter ended a message, as Postfix would see it."""

    result: str  # accept, reject, discard, tempfail (or continue if it never decided)
    stage: str  # the callback that decided
    reply: tuple[str, ...] | None = None  # (code, dsn, line, ...) if the milter set one
    deleted_recipients: list[str] = field(default_factory=list)
    skipped: set[str] = field(default_factory=set)  # callbacks negotiated away

    @property
    def code(self) -> str | None:
        return self.reply[0] if self.reply else None

    @property
    def text(self) -> str:
        return "\n".join(str(line) for line in self.reply[2:]) if self.reply else ""


def split_headers(raw: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """Header fields (name, value with folding kept) and the body, like Postfix's cleanup."""
    headers: list[tuple[str, bytes]] = []
    lines = raw.split(b"\n")
    index = 0
    while index < len(lines):
        line = lines[index].rstrip(b"\r")
        if line == b"":
            index += 1
            break
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + b"\n" + line)
        else:
            match = _HEADER_NAME.match(line)
            if not match:
                break  # not a header: the body starts here
            value = line[match.end() :].lstrip(b" \t")
            headers.append((match[1].decode("ascii"), value))
        index += 1
    return headers, b"\n".join(lines[index:])


class Session:
    """One milter connection: several messages in a row, as one SMTP session sends them.

    Nothing is reset between messages except what Postfix resets (the reply and
    the deleted recipients): the milter itself must reset its state at MAIL.
    """

    def __init__(
        self, factory: Callable[[], Milter.Base], macros: Mapping[str, str] | None = None
    ) -> None:
        Milter.factory = factory
        self.ctx = _Ctx()
        self.set_macros(macros or {})
        self.ctx._connect()
        protocol = self.ctx._protocol
        self.protocol = protocol
        self.skipped = {
            name for name, (_nr, no) in Milter.OPTIONAL_CALLBACKS.items() if protocol & no
        }

    def set_macros(self, macros: Mapping[str, str | None]) -> None:
        """Set (or, with None, remove) macros for the following messages."""
        for name, value in macros.items():
            if value is None:
                self.ctx._macros.pop(name, None)
            else:
                self.ctx._setsymval(name, value)

    def message(
        self,
        raw: bytes,
        sender: str,
        recipients: Iterable[str],
        mail_params: Iterable[str] = (),
    ) -> Outcome:
        """Run one message (MAIL, RCPT..., DATA, headers, body, end) and return the outcome."""
        ctx = self.ctx
        ctx._reply = None
        ctx._delrcpt = []
        ctx._body = None
        protocol = self.protocol

        def outcome(rc: int, stage: str) -> Outcome:
            result = "continue" if rc == Milter.NOREPLY else RESULT_NAMES.get(rc, str(rc))
            reply = tuple(str(p) for p in ctx._reply) if ctx._reply else None
            return Outcome(result, stage, reply, list(ctx._delrcpt), self.skipped)

        def decided(rc: int) -> bool:
            return rc not in (Milter.CONTINUE, Milter.NOREPLY)

        rc = ctx._envfrom(f"<{sender}>", *mail_params)
        if decided(rc):
            return outcome(rc, "envfrom")
        for rcpt in recipients:
            rc = ctx._envrcpt(f"<{rcpt}>")
            if decided(rc):
                return outcome(rc, "envrcpt")
        rc = ctx._data()
        if decided(rc):
            return outcome(rc, "data")
        headers, body = split_headers(raw)
        body = re.sub(rb"\r?\n", b"\r\n", body)  # Postfix sends the body with CRLF
        if not protocol & Milter.P_NOHDRS:
            for name, value in headers:
                ctx._stage = None
                rc = ctx._priv.header_bytes(name, value)
                if decided(rc):
                    return outcome(rc, "header")
        rc = ctx._eoh()
        if decided(rc):
            return outcome(rc, "eoh")
        if not protocol & Milter.P_NOBODY:
            for start in range(0, len(body), BODY_CHUNK):
                rc = ctx._priv.body(body[start : start + BODY_CHUNK])
                if decided(rc):
                    return outcome(rc, "body")
        return outcome(ctx._eom(), "eom")

    def close(self) -> None:
        self.ctx._close()


def drive(
    factory: Callable[[], Milter.Base],
    raw: bytes,
    sender: str,
    recipients: Iterable[str],
    macros: Mapping[str, str] | None = None,
    mail_params: Iterable[str] = (),
) -> Outcome:
    """Run one message through a fresh milter connection and return the outcome.

    ``mail_params`` are ESMTP MAIL FROM parameters such as ``SIZE=1234``.
    """
    session = Session(factory, macros)
    try:
        return session.message(raw, sender, recipients, mail_params)
    finally:
        session.close()
