"""Network-number delivery: a fax to another user of the gateway, by e-mail.

A recipient whose AF network number is in the directory gets the pages at once
as an ITU-T T.37 "simple mode" Internet fax: a mail with the pages as one
TIFF-F file (``image/tiff; application=faxbw``, RFC 3949/3302) plus a PDF for
readers without a TIFF viewer. No phone call is placed.

The mail is marked ``Auto-Submitted: auto-generated`` so that, should the
destination forward it back to the fax address, the milter drops it instead
of faxing it again. Its Message-ID is stable per job and recipient: if faxd
dies after the server accepted the mail but before recording it, the resend
after the restart carries the same Message-ID.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any

from faxgate.faxd.page import FaxPage
from faxgate.faxd.receipts import one_line, pages_pdf, receipt_message_id


def fax_message_id(job_id: str, idx: int, domain: str | None = None) -> str:
    """Stable per recipient, so a resend after a crash is the same message."""
    return receipt_message_id(job_id, kind=f"fax{idx}", domain=domain)


def build_fax_mail(
    job: Mapping[str, Any],
    idx: int,
    recipient: Mapping[str, Any],
    destination: Any,
    *,
    tiff: bytes,
    pages: Sequence[FaxPage],
    from_address: str,
    now: float,
    domain: str | None = None,
) -> EmailMessage:
    """The mail delivering ``job`` to recipient ``idx``, whose network number is the
    directory entry ``destination`` (``.name``, ``.email``)."""
    msg = EmailMessage()
    msg["From"] = from_address
    msg["To"] = formataddr((destination.name, destination.email))
    msg["Reply-To"] = job["sender"]
    subject = one_line(job.get("subject"))
    msg["Subject"] = f"Fax from {job['sender']}" + (f": {subject}" if subject else "")
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = fax_message_id(job["id"], idx, domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Faxgate-Job"] = job["id"]
    msg["X-Faxgate-Network-Number"] = str(recipient.get("network") or "")
    names = " / ".join(one_line(x) for x in (recipient.get("name1"), recipient.get("name2")) if x)
    msg.set_content(
        f"Fax job {job['id']} from {job['sender']} to {names or destination.name} "
        f"({recipient.get('network')}), {len(pages)} page(s).\n"
        f"Subject: {subject}\n\n"
        "The pages are attached as TIFF-F (fax.tif) and PDF (fax.pdf).\n",
        charset="utf-8",
    )
    msg.add_attachment(
        tiff,
        maintype="image",
        subtype="tiff",
        filename="fax.tif",
        params={"application": "faxbw"},
    )
    msg.add_attachment(pages_pdf(pages), maintype="application", subtype="pdf", filename="fax.pdf")
    return msg
