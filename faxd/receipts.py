"""Receipt e-mails: what happened to each recipient of a fax job, told once.

Texts come from ``templates/<language>.toml`` (English and Chinese). Messages
are built with the ``email`` package's SMTP policy, so non-ASCII header text
(a Chinese Subject or name) is RFC 2047 encoded and the body is UTF-8.

Loop safety (RFC 3834): every mail built here carries ``Auto-Submitted:
auto-replied`` and is sent with the null reverse-path; the milter never faxes
auto-submitted mail, and :func:`wants_receipt` refuses the null sender and
MAILER-DAEMON, so a receipt that bounces or is sent back to the fax address
ends there.
"""

from __future__ import annotations

import io
import re
import socket
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from functools import cache
from importlib import resources
from typing import Any

from PIL import Image

from faxgate.faxd.page import DOTS_PER_INCH_ACROSS, FaxPage
from faxgate.faxd.queue import JobProgress, RecipientProgress

LANGUAGES = ("en", "zh")
THUMBNAIL_WIDTH = 432


@cache
def texts(language: str) -> dict[str, Any]:
    """The template texts of ``language`` (falls back to English)."""
    name = language if language in LANGUAGES else "en"
    data = resources.files("faxgate.faxd").joinpath("templates", f"{name}.toml").read_bytes()
    return tomllib.loads(data.decode("utf-8"))


#: A Message-ID fit to quote in In-Reply-To. The sender writes it: one with line
#: breaks (an encoded word can hold CR LF) made every attempt to build the receipt
#: raise, and one with spaces or several ids is no reference worth keeping.
_MSG_ID = re.compile(r"<[!-;=?-~]+>")


def one_line(value: object) -> str:
    """Text from the sender's mail made safe for a header or a receipt line: no
    line breaks or other control characters (a hostile Subject cannot add
    headers or fake lines)."""
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in str(value or ""))
    return " ".join(text.split())


def wants_receipt(sender: str) -> bool:
    """False for the null sender and MAILER-DAEMON: they must never get mail."""
    address = sender.strip().strip("<>")
    local = address.rsplit("@", 1)[0].lower() if address else ""
    return bool(address) and local not in ("mailer-daemon", "postmaster-daemon")


def receipt_message_id(job_id: str, kind: str = "receipt", domain: str | None = None) -> str:
    """A stable Message-ID for a job's receipt: the same after a restart, so a
    resend after a crash is recognisably the same message."""
    host = domain or socket.getfqdn() or "localhost"
    return f"<{kind}.{job_id}@{host}>"


def _display_height(page: FaxPage) -> float:
    """Height in pixels of square pixels at the horizontal resolution."""
    return page.image.height * DOTS_PER_INCH_ACROSS / page.lines_per_inch


def thumbnail_png(page: FaxPage, width: int = THUMBNAIL_WIDTH) -> bytes:
    """A grey-scale PNG of a page at true proportions, small enough for mail."""
    height = max(1, round(_display_height(page) * width / page.image.width))
    image = page.image.convert("L").resize((width, height), Image.Resampling.BOX)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def pages_pdf(pages: Sequence[FaxPage]) -> bytes:
    """The pages as a PDF (one image per page at its real size)."""
    if not pages:
        raise ValueError("no pages to put in a PDF")
    images = [
        page.image.resize((page.image.width, max(1, round(_display_height(page)))))
        for page in pages
    ]
    out = io.BytesIO()
    images[0].save(
        out,
        format="PDF",
        save_all=True,
        append_images=images[1:],
        resolution=DOTS_PER_INCH_ACROSS,
    )
    return out.getvalue()


def _when(ts: float | None, none: str) -> str:
    if ts is None:
        return none
    return datetime.fromtimestamp(ts, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _number(recipient: Mapping[str, Any], rec: RecipientProgress, t: Mapping[str, Any]) -> str:
    parts = []
    if recipient.get("e164"):
        parts.append("+" + str(recipient["e164"]).lstrip("+"))
    elif recipient.get("dial"):
        parts.append(str(recipient["dial"]))
    if recipient.get("network"):
        parts.append(t["network_number"].format(network=recipient["network"]))
    return ", ".join(parts) or t["none"]


def _reason(rec: RecipientProgress, t: Mapping[str, Any]) -> str:
    reasons = t["reasons"]
    if rec.state == "sent":
        return f"{reasons['ok']} (ok)"
    code = rec.last_reason or "modem_error"
    text = f"{reasons.get(code, code)} ({code})"
    call = rec.last_call_reason
    if call and call != code:
        text += f"; {reasons.get(call, call)} ({call})"
    if code == "render_failed" and rec.last_error:
        text += f": {rec.last_error}"  # names the file and what is wrong with it
    return text


def _recipient_block(
    n: int, recipient: Mapping[str, Any], rec: RecipientProgress, t: Mapping[str, Any]
) -> str:
    none = t["none"]
    names = " / ".join(one_line(x) for x in (recipient.get("name1"), recipient.get("name2")) if x)
    names = names or none
    resolution = (
        t["resolution_names"].get(rec.resolution, rec.resolution) if rec.resolution else none
    )
    return t["recipient"].format(
        n=n,
        names=names,
        number=_number(recipient, rec, t),
        status=t["status"].get(rec.state, rec.state),
        pages_confirmed=rec.pages_confirmed,
        pages_total=rec.pages_total,
        remote_ident=rec.remote_ident or none,
        bitrate=t["bps"].format(bitrate=rec.bitrate) if rec.bitrate else none,
        resolution=resolution,
        line_time=t["seconds"].format(seconds=round(rec.line_seconds)) if rec.dials else none,
        attempts=rec.dials,
        time=_when(rec.finished_at, none),
        reason=_reason(rec, t),
    )


def _headers(
    msg: EmailMessage,
    *,
    job: Mapping[str, Any],
    from_address: str,
    message_id: str,
    subject: str,
    now: float,
) -> None:
    msg["From"] = from_address
    msg["To"] = job["sender"]
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Faxgate-Job"] = job["id"]
    original = str(job.get("message_id") or "").strip()
    if _MSG_ID.fullmatch(original):
        msg["In-Reply-To"] = original
        msg["References"] = original


def build_receipt(
    job: Mapping[str, Any],
    progress: JobProgress,
    *,
    language: str,
    from_address: str,
    message_id: str,
    first_page: FaxPage | None,
    pdf: bytes | None = None,
    now: float,
) -> EmailMessage:
    """The receipt for a finished job (``job`` is the spool's job.json)."""
    t = texts(language)
    outcome = progress.outcome
    subject_text = one_line(job.get("subject"))
    blocks = [
        _recipient_block(i + 1, recipient, rec, t)
        for i, (recipient, rec) in enumerate(
            zip(job["recipients"], progress.recipients, strict=True)
        )
    ]
    created = job.get("created")
    queued = (
        _when(datetime.fromisoformat(created).timestamp(), t["none"])
        if isinstance(created, str) and created
        else _when(progress.created, t["none"])
    )
    body = t["body"].format(
        summary=t[f"summary_{outcome}"],
        subject=subject_text or t["none"],
        job_id=job["id"],
        queued=queued,
        pages_total=progress.pages_total,
        recipients="\n".join(blocks),
        thumbnail_note=t["thumbnail_note"] if first_page is not None else "",
    )
    msg = EmailMessage()
    _headers(
        msg,
        job=job,
        from_address=from_address,
        message_id=message_id,
        subject=t[f"subject_{outcome}"].format(subject=subject_text).strip(),
        now=now,
    )
    msg.set_content(body, charset="utf-8")
    if first_page is not None:
        msg.add_attachment(
            thumbnail_png(first_page), maintype="image", subtype="png", filename="page1.png"
        )
    if pdf is not None:
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"{job['id']}.pdf")
    return msg


def build_acceptance(
    job: Mapping[str, Any],
    progress: JobProgress,
    *,
    language: str,
    from_address: str,
    message_id: str,
    now: float,
) -> EmailMessage:
    """The optional "your fax is queued" notice."""
    t = texts(language)
    subject_text = one_line(job.get("subject"))
    msg = EmailMessage()
    _headers(
        msg,
        job=job,
        from_address=from_address,
        message_id=message_id,
        subject=t["subject_accepted"].format(subject=subject_text).strip(),
        now=now,
    )
    msg.set_content(
        t["body_accepted"].format(
            job_id=job["id"],
            count=len(progress.recipients),
            pages_total=progress.pages_total,
            subject=subject_text or t["none"],
        ),
        charset="utf-8",
    )
    return msg
