"""The milter's decisions through pymilter's TestCtx (faxgate.milter.harness)."""

from __future__ import annotations

import base64
import io
import json
import logging
import sys
import zipfile
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import docs_factory as docs
import Milter
import pypdf
import pytest
from PIL import Image

from faxgate import config as config_mod
from faxgate.faxd import spool
from faxgate.milter.app import FaxMilter, Runtime
from faxgate.milter.harness import Outcome, Session, drive
from faxgate.milter.mimeparts import ascii_safe
from faxgate.store import Store

FAX = "fax@fax.example.com"
ALICE = "alice@example.com"


def make_pdf(pages: int = 1, password: str | None = None) -> bytes:
    writer = pypdf.PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    if password:
        writer.encrypt(user_password=password, owner_password=password)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def make_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (40, 40), 1).save(buf, "PNG")
    return buf.getvalue()


def fax_mail(
    subject: str = "755-83235170/Zhang",
    attachments: list[tuple[str, bytes, str]] | None = None,
    sender: str = ALICE,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Alice <{sender}>"
    msg["To"] = FAX
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash((subject, sender, str(attachments))))}@example.com>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content("Please fax this.\n")
    for filename, data, ctype in (
        [("order.pdf", make_pdf(), "application/pdf")] if attachments is None else attachments
    ):
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


class Gateway:
    """A milter runtime over a real store and spool in a temp directory."""

    def __init__(self, tmp: Path, **sections: dict[str, Any]) -> None:
        data: dict[str, dict[str, Any]] = {
            "store": {"path": str(tmp / "faxgate.db")},
            "spool": {"directory": str(tmp / "spool")},
            "milter": {"fax_addresses": [FAX.upper()]},
        }
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        self.config = config_mod.parse(data)
        self.store = Store.open(self.config)
        self.spool = Path(self.config.spool.directory)
        self.runtime = Runtime.create(self.config, self.store)

    def send(
        self,
        raw: bytes,
        sender: str = ALICE,
        recipients: tuple[str, ...] = (FAX,),
        macros: dict[str, str] | None = None,
        mail_params: tuple[str, ...] = (),
    ) -> Outcome:
        return drive(
            lambda: FaxMilter(self.runtime),
            raw,
            sender,
            recipients,
            {"i": "4ABC123", "{client_addr}": "192.0.2.7", **(macros or {})},
            mail_params,
        )

    def jobs(self) -> list[dict[str, Any]]:
        return [
            json.loads((self.spool / "incoming" / j / "job.json").read_text())
            for j in spool.list_jobs(self.spool)
        ]

    def event_kinds(self) -> list[str]:
        return [e.kind for e in self.store.events(limit=100, sender=None)]


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    g = Gateway(tmp_path)
    g.store.add_sender(ALICE, "Alice", smtp_login="alice")
    return g


def assert_ascii_lines(outcome: Outcome) -> None:
    assert outcome.reply is not None
    for line in outcome.reply:
        assert line.isascii() and len(line) <= 510, line


# ---- routing: what the milter looks at at all ---------------------------------


def test_non_fax_mail_accepted_at_data_without_headers_or_body(gw: Gateway) -> None:
    out = gw.send(fax_mail(), recipients=("bob@example.org", "carol@example.org"))
    assert (out.result, out.stage) == ("accept", "data")
    assert gw.jobs() == []
    assert gw.event_kinds() == []


def test_negotiation_skips_unused_steps_and_needs_no_replies_for_envelope(gw: Gateway) -> None:
    out = gw.send(fax_mail())
    assert {"connect", "hello", "unknown"} <= out.skipped
    assert not {"envfrom", "envrcpt", "data", "header", "eoh", "body"} & out.skipped
    proto = FaxMilter.protocol_mask()
    for nr in (Milter.P_NR_MAIL, Milter.P_NR_RCPT, Milter.P_NR_HDR, Milter.P_NR_BODY):
        assert not proto & nr  # noreply requested
    assert proto & Milter.P_NR_DATA and proto & Milter.P_NR_EOH  # these answer


def test_fax_address_is_case_insensitive_and_job_is_spooled_then_discarded(gw: Gateway) -> None:
    out = gw.send(fax_mail(), recipients=("Fax@FAX.example.com",))
    assert (out.result, out.stage) == ("discard", "eom")
    (job,) = gw.jobs()
    assert job["version"] == spool.FORMAT_VERSION
    assert job["sender"] == ALICE
    assert job["queue_id"] == "4ABC123"
    assert job["id"] == spool.list_jobs(gw.spool)[0] and job["message"] == "message.eml"
    created = datetime.fromisoformat(job["created"])
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60
    assert job["message_id"].endswith("@example.com>")
    assert job["subject"] == "755-83235170/Zhang"
    assert job["recipients"][0]["e164"] == "+8675583235170"
    assert job["recipients"][0]["name1"] == "Zhang"
    assert job["auth"] == {"login": None, "client_addr": "192.0.2.7", "authentication_results": []}
    assert job["documents"] == [
        {
            "filename": "order.pdf",
            "kind": "pdf",
            "format": "pdf",
            "part": 2,
            "size": len(make_pdf()),
        }
    ]
    assert "Please fax this." in job["body_text"]
    assert job["priority"] == "normal"
    raw = (gw.spool / "incoming" / job["id"] / "message.eml").read_bytes()
    assert b"Subject: 755-83235170/Zhang\r\n" in raw
    # The stored message re-parses to the same documents.
    from faxgate.milter.mimeparts import split_message

    assert split_message(raw).attachments[0].part == 2
    stored = gw.store.get_job(job["id"])
    assert stored is not None and stored.queue_id == "4ABC123"
    assert "accepted" in gw.event_kinds()


def test_mixed_recipients_delete_fax_address_and_accept(gw: Gateway) -> None:
    out = gw.send(fax_mail(), recipients=("a@example.org", FAX, "b@example.org"))
    assert (out.result, out.stage) == ("accept", "eom")
    assert out.deleted_recipients == [f"<{FAX}>"]
    assert len(gw.jobs()) == 1


def test_fax_address_second_of_five_recipients(gw: Gateway) -> None:
    others = ["a@example.org", "b@example.org", "c@example.net", "d@example.net"]
    out = gw.send(fax_mail(), recipients=(others[0], FAX, *others[1:]))
    # Not accepted at RCPT (that would accept the message for all five unchecked).
    assert (out.result, out.stage) == ("accept", "eom")
    assert out.deleted_recipients == [f"<{FAX}>"]
    assert len(gw.jobs()) == 1
    # The same message with a bad Subject is refused for all five: nothing half-done.
    bad = gw.send(fax_mail(subject="755-x"), recipients=(others[0], FAX, *others[1:]))
    assert (bad.result, bad.stage, bad.reply[1]) == ("reject", "eoh", "5.6.0")
    assert len(gw.jobs()) == 1


def test_state_resets_at_mail_for_each_message_of_a_session(gw: Gateway) -> None:
    """Several messages on one SMTP connection, each with its own outcome."""
    session = Session(lambda: FaxMilter(gw.runtime), {"i": "Q1", "{auth_authen}": "alice"})
    try:
        first = session.message(fax_mail(subject="755-8323517x"), ALICE, [FAX, "x@example.org"])
        assert (first.result, first.reply[1]) == ("reject", "5.6.0")
        # Ordinary mail next: the fax recipient of the message before is forgotten.
        second = session.message(b"Subject: hi\r\n\r\nhi\r\n", ALICE, ["y@example.org"])
        assert (second.result, second.stage) == ("accept", "data")
        # A fax with the fax address alone: DISCARD, although the first message had
        # another recipient; no SMTP login this time, and a new queue id.
        session.set_macros({"i": "Q3", "{auth_authen}": None})
        third = session.message(fax_mail(), ALICE, [FAX])
        assert (third.result, third.stage, third.deleted_recipients) == ("discard", "eom", [])
        fourth = session.message(
            fax_mail(sender="mallory@example.com"), "mallory@example.com", [FAX]
        )
        assert (fourth.result, fourth.reply[1]) == ("reject", "5.7.1")
    finally:
        session.close()
    (job,) = gw.jobs()
    assert job["subject"] == "755-83235170/Zhang"
    assert (job["queue_id"], job["auth"]["login"]) == ("Q3", None)
    assert [(e.kind, e.queue_id) for e in gw.store.events(limit=10, sender=None)] == [
        ("rejected", "Q1"),
        ("accepted", "Q3"),
        ("rejected", "Q3"),
    ]


def test_decisions_are_logged_with_queue_id(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="faxgate.milter")
    gw.send(fax_mail(subject="755-8323517x"))
    gw.send(fax_mail())
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("4ABC123: rejected:") and "5.6.0" in m for m in messages), messages
    assert any(m.startswith("4ABC123: accepted:") and "job " in m for m in messages), messages


def test_duplicate_message_is_one_job_and_still_discarded(gw: Gateway) -> None:
    raw = fax_mail()
    assert gw.send(raw).result == "discard"
    assert gw.send(raw).result == "discard"
    assert len(gw.jobs()) == 1
    assert "duplicate" in gw.event_kinds()


def test_priority_from_x_priority_and_importance_headers(gw: Gateway) -> None:
    gw.send(fax_mail(headers={"X-Priority": "1 (Highest)"}))
    gw.send(fax_mail(subject="755-83235171", headers={"Importance": "low"}))
    assert [job["priority"] for job in gw.jobs()] == ["high", "low"]


# ---- sender checks -------------------------------------------------------------------


def test_unknown_sender_rejected_before_body(gw: Gateway) -> None:
    out = gw.send(fax_mail(sender="mallory@example.com"), sender="mallory@example.com")
    assert (out.result, out.stage, out.code) == ("reject", "eoh", "550")
    assert out.reply[1] == "5.7.1"
    assert "not registered" in out.text
    assert gw.jobs() == []
    events = gw.store.events(limit=10, sender=None)
    assert events[0].kind == "rejected" and events[0].queue_id == "4ABC123"


def test_from_header_must_match_envelope(gw: Gateway) -> None:
    gw.store.add_sender("bob@example.com", "Bob")
    out = gw.send(fax_mail(sender="bob@example.com"))
    assert (out.result, out.code) == ("reject", "550")
    assert "From:" in out.text


def test_disabled_or_no_permission_sender_rejected(gw: Gateway) -> None:
    gw.store.add_sender("off@example.com", enabled=False)
    gw.store.add_sender("nofax@example.com", can_fax=False)
    for who in ("off@example.com", "nofax@example.com"):
        out = gw.send(fax_mail(sender=who), sender=who)
        assert (out.result, out.reply[1]) == ("reject", "5.7.1")


def test_unauthorized_discard_mode(tmp_path: Path) -> None:
    g = Gateway(tmp_path, milter={"unauthorized": "discard"})
    out = g.send(fax_mail(sender="mallory@example.com"), sender="mallory@example.com")
    assert (out.result, out.stage) == ("discard", "eoh")
    assert g.jobs() == [] and "discarded" in g.event_kinds()
    mixed = g.send(
        fax_mail(sender="mallory@example.com"),
        sender="mallory@example.com",
        recipients=(FAX, "x@example.org"),
    )
    assert (mixed.result, mixed.deleted_recipients) == ("accept", [f"<{FAX}>"])


def test_require_auth_checks_login(tmp_path: Path) -> None:
    g = Gateway(tmp_path, milter={"require_auth": True})
    g.store.add_sender(ALICE, smtp_login="alice")
    assert g.send(fax_mail()).reply[1] == "5.7.1"
    assert g.send(fax_mail(), macros={"{auth_authen}": "eve"}).result == "reject"
    assert g.send(fax_mail(), macros={"{auth_authen}": "alice"}).result == "discard"
    assert g.jobs()[0]["auth"]["login"] == "alice"


def test_require_dkim_trusts_only_configured_authserv_id(tmp_path: Path) -> None:
    g = Gateway(tmp_path, milter={"require_dkim": True, "trusted_authserv_id": "mx.example.com"})
    g.store.add_sender(ALICE)
    forged = "evil.example.net; dkim=pass header.d=example.com"
    out = g.send(fax_mail(headers={"Authentication-Results": forged}))
    assert (out.result, out.reply[1]) == ("reject", "5.7.1")
    unaligned = "mx.example.com; dkim=pass (good) header.d=other.org"
    assert g.send(fax_mail(headers={"Authentication-Results": unaligned})).result == "reject"
    good = "mx.example.com; spf=pass smtp.mailfrom=example.com; dkim=pass header.d=example.com"
    assert g.send(fax_mail(headers={"Authentication-Results": good})).result == "discard"
    assert g.jobs()[0]["auth"]["authentication_results"] == [good]
    dmarc = "mx.example.com 1; dmarc=pass header.from=example.com"
    raw = fax_mail(subject="755-83235171", headers={"Authentication-Results": dmarc})
    assert g.send(raw).result == "discard"


@pytest.mark.parametrize(
    ("sender", "headers"),
    [
        ("", {}),
        ("MAILER-DAEMON@example.com", {}),
        (ALICE, {"Auto-Submitted": "auto-replied"}),
        (ALICE, {"Precedence": "bulk"}),
        (ALICE, {"X-Faxgate-Job": "20260101T000000000000Z-00000000"}),
    ],
)
def test_bounces_and_automatic_mail_are_never_faxed(
    gw: Gateway, sender: str, headers: dict[str, str]
) -> None:
    out = gw.send(fax_mail(headers=headers), sender=sender)
    assert out.result == "discard"
    assert gw.jobs() == []
    assert gw.event_kinds() == ["ignored"]  # the decision is in the event log
    mixed = gw.send(fax_mail(headers=headers), sender=sender, recipients=(FAX, "x@example.org"))
    assert (mixed.result, mixed.deleted_recipients) == ("accept", [f"<{FAX}>"])


def test_auto_submitted_no_is_faxed(gw: Gateway) -> None:
    assert gw.send(fax_mail(headers={"Auto-Submitted": "no"})).result == "discard"
    assert len(gw.jobs()) == 1


# ---- Subject -----------------------------------------------------------------------


def test_bad_subject_550_560_with_column_and_hint(gw: Gateway) -> None:
    out = gw.send(fax_mail(subject="755-8323517x"))
    assert (out.result, out.stage, out.code, out.reply[1]) == ("reject", "eoh", "550", "5.6.0")
    assert "column 12" in out.text
    assert "Hint:" in out.text
    assert_ascii_lines(out)


def test_non_ascii_offending_character_is_described_in_ascii(gw: Gateway) -> None:
    out = gw.send(fax_mail(subject="755-83235170；张"))
    assert out.code == "550" and out.reply[1] == "5.6.0"
    assert "column 14" in out.text
    assert "U+5F20" in out.text  # the character, named in ASCII
    assert_ascii_lines(out)


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("GB2312", "金恒科技"),
        ("GBK", "镕基科技"),  # 镕 is in GBK, not in GB2312
        ("GB18030", "金恒科技𠀀"),  # a four-byte GB18030 character
        ("Big5", "金恆科技"),
        ("UTF-8", "金恒科技"),
    ],
)
def test_rfc2047_encoded_subject(gw: Gateway, charset: str, name: str) -> None:
    codec = {"GB2312": "gb2312", "GBK": "gbk", "GB18030": "gb18030", "Big5": "big5"}
    data = f"86-755-83235170/{name}".encode(codec.get(charset, "utf-8"))
    encoded = f"=?{charset}?B?{base64.b64encode(data).decode()}?="
    raw = fax_mail().replace(b"Subject: 755-83235170/Zhang", b"Subject: " + encoded.encode())
    assert gw.send(raw).result == "discard"
    job = gw.jobs()[0]
    assert job["recipients"][0]["name1"] == name
    assert job["subject"] == f"86-755-83235170/{name}"


@pytest.mark.parametrize("charset", ["gb18030", "big5", "utf-8"])
def test_raw_8bit_subject(gw: Gateway, charset: str) -> None:
    name = "金恒科技" if charset != "big5" else "金恆科技"
    raw = fax_mail().replace(
        b"Subject: 755-83235170/Zhang", b"Subject: 755-83235170/" + name.encode(charset)
    )
    assert gw.send(raw).result == "discard"
    assert gw.jobs()[0]["recipients"][0]["name1"] == name


# ---- attachments ---------------------------------------------------------------------


def test_no_attachment(gw: Gateway) -> None:
    out = gw.send(fax_mail(attachments=[]))
    assert (out.result, out.stage, out.code, out.reply[1]) == ("reject", "eom", "550", "5.6.1")
    assert "No attachment" in out.text


def test_encrypted_pdf_rejected_naming_file(gw: Gateway) -> None:
    raw = fax_mail(attachments=[("secret.pdf", make_pdf(password="pw"), "application/pdf")])
    out = gw.send(raw)
    assert (out.code, out.reply[1]) == ("550", "5.6.1")
    assert "secret.pdf" in out.text and "password" in out.text
    assert gw.jobs() == []


@pytest.mark.parametrize(
    ("filename", "data", "ctype", "words"),
    [
        ("tool.exe", b"MZ\x90\x00" + bytes(200), "application/octet-stream", "tool.exe"),
        ("empty.pdf", b"", "application/pdf", "empty"),
        ("docs.rar", b"Rar!\x1a\x07\x00" + bytes(50), "application/x-rar", "docs.rar"),
    ],
)
def test_unsupported_attachments(
    gw: Gateway, filename: str, data: bytes, ctype: str, words: str
) -> None:
    out = gw.send(
        fax_mail(attachments=[("ok.pdf", make_pdf(), "application/pdf"), (filename, data, ctype)])
    )
    assert (out.code, out.reply[1]) == ("550", "5.6.1")
    assert words in out.text


def _ooxml(part: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(part, "<document/>")
    return buf.getvalue()


def _odf(mimetype: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("mimetype", mimetype)
        archive.writestr("content.xml", "<office:document-content/>")
    return buf.getvalue()


OFFICE_ATTACHMENTS = {
    "doc": docs.ole2({"WordDocument": docs.word_fib(encrypted=False)}),
    "xls": docs.ole2({"Workbook": docs.biff8(encrypted=False)}),
    "ppt": docs.ole2({"PowerPoint Document": b"\x00" * 64}),
    "docx": _ooxml("word/document.xml"),
    "xlsx": _ooxml("xl/workbook.xml"),
    "pptx": _ooxml("ppt/presentation.xml"),
    "odt": _odf("application/vnd.oasis.opendocument.text"),
    "ods": _odf("application/vnd.oasis.opendocument.spreadsheet"),
    "rtf": b"{\\rtf1\\ansi Fax me.}",
    "wri": docs.write_wri("Windows Write letter."),
}


@pytest.mark.parametrize("fmt", sorted(OFFICE_ATTACHMENTS))
def test_office_attachments_sniffed_by_content(gw: Gateway, fmt: str) -> None:
    # Named and typed as something else: the content decides.
    raw = fax_mail(
        subject=f"755-83235170/{fmt}",
        attachments=[(f"file-{fmt}.bin", OFFICE_ATTACHMENTS[fmt], "application/octet-stream")],
    )
    out = gw.send(raw)
    assert out.result == "discard", out
    (document,) = gw.jobs()[0]["documents"]
    assert (document["kind"], document["format"]) == ("office", fmt)


ENCRYPTED_OFFICE = {
    # OOXML with a password: an OLE2 container holding EncryptionInfo + EncryptedPackage.
    "locked.docx": docs.ole2(
        {"EncryptionInfo": b"\x04\x00\x04\x00\x40\x00\x00\x00", "EncryptedPackage": b"\x00"}
    ),
    "locked.xlsx": docs.ole2(
        {"EncryptionInfo": b"\x03\x00\x02\x00\x24\x00\x00\x00", "EncryptedPackage": b"\x00"}
    ),
    "locked.doc": docs.ole2({"WordDocument": docs.word_fib(encrypted=True)}),
    "locked.xls": docs.ole2({"Workbook": docs.biff8(encrypted=True)}),
    "locked.ppt": docs.ole2({"PowerPoint Document": b"\x00", "EncryptedSummary": b"\x00"}),
}


@pytest.mark.parametrize("filename", sorted(ENCRYPTED_OFFICE))
def test_encrypted_office_rejected_naming_file(gw: Gateway, filename: str) -> None:
    raw = fax_mail(
        attachments=[
            ("ok.pdf", make_pdf(), "application/pdf"),
            (filename, ENCRYPTED_OFFICE[filename], "application/octet-stream"),
        ]
    )
    out = gw.send(raw)
    assert (out.result, out.stage, out.code, out.reply[1]) == ("reject", "eom", "550", "5.6.1")
    assert f"Attachment {filename}:" in out.text and "password protected" in out.text
    assert gw.jobs() == []


def _zip_archive(compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        archive.writestr("invoice.pdf", make_pdf())
    return buf.getvalue()


@pytest.mark.parametrize(
    ("filename", "data", "reason"),
    [
        ("报价.wps", docs.ole2({"WpsContent": b"\x00"}), "WPS"),
        ("invoice.zip", _zip_archive(), "archives (ZIP)"),
        # a stored member's %PDF- lies within the first 1024 bytes of the archive
        ("stored.zip", _zip_archive(zipfile.ZIP_STORED), "archives (ZIP)"),
        ("run.elf", b"\x7fELF\x02\x01\x01" + bytes(100), "executable"),
        ("setup.pdf", b"MZ\x90\x00" + bytes(200), "executable"),  # the name does not help
        ("data.7z", b"7z\xbc\xaf\x27\x1c" + bytes(50), "7-Zip"),
    ],
)
def test_unsupported_kinds_named_with_reason(
    gw: Gateway, filename: str, data: bytes, reason: str
) -> None:
    out = gw.send(fax_mail(attachments=[(filename, data, "application/octet-stream")]))
    assert (out.code, out.reply[1]) == ("550", "5.6.1")
    assert ascii_safe(f"Attachment {filename}:") in out.text  # Chinese names as \\uXXXX
    assert reason in out.text
    assert gw.jobs() == []


def test_attachment_over_size_limit(tmp_path: Path) -> None:
    g = Gateway(tmp_path, limits={"max_attachment_bytes": 1000})
    g.store.add_sender(ALICE)
    out = g.send(fax_mail(attachments=[("big.pdf", make_pdf(pages=30), "application/pdf")]))
    assert (out.code, out.reply[1]) == ("550", "5.6.1")
    assert "big.pdf" in out.text and "limit" in out.text


def test_message_over_size_limit_by_esmtp_size_or_body(tmp_path: Path) -> None:
    g = Gateway(tmp_path, limits={"max_message_bytes": 3000})
    g.store.add_sender(ALICE)
    raw = fax_mail(attachments=[("big.pdf", make_pdf(pages=30), "application/pdf")])
    out = g.send(raw)
    assert (out.stage, out.code, out.reply[1]) == ("eom", "552", "5.3.4")
    # An honest client announces the size: rejected before the body is sent.
    early = g.send(raw, mail_params=(f"SIZE={len(raw)}",))
    assert (early.stage, early.code, early.reply[1]) == ("eoh", "552", "5.3.4")
    # Ordinary mail of any size is none of the milter's business.
    assert g.send(raw, recipients=("x@example.org",), mail_params=("SIZE=99999999",)).result == (
        "accept"
    )


def test_rfc2231_chinese_filename_and_hostile_path(gw: Gateway) -> None:
    raw = fax_mail(
        attachments=[
            ("报价单.pdf", make_pdf(), "application/pdf"),
            ("../../etc/passwd\x07.png", make_png(), "image/png"),
        ]
    )
    assert b"filename*=" in raw
    assert gw.send(raw).result == "discard"
    names = [d["filename"] for d in gw.jobs()[0]["documents"]]
    assert names == ["报价单.pdf", "passwd.png"]


def test_rfc2047_filename(gw: Gateway) -> None:
    raw = fax_mail(attachments=[("x.pdf", make_pdf(), "application/pdf")]).replace(
        b'filename="x.pdf"',
        b'filename="=?GBK?B?' + base64.b64encode("报价.pdf".encode("gbk")) + b'?="',
    )
    assert gw.send(raw).result == "discard"
    assert gw.jobs()[0]["documents"][0]["filename"] == "报价.pdf"


def _html_mail(with_pdf: bool) -> bytes:
    msg = EmailMessage()
    msg["From"] = ALICE
    msg["To"] = FAX
    msg["Subject"] = "755-83235170"
    msg.set_content("plain")
    msg.add_alternative('<p>Hello <img src="cid:logo@x"></p>', subtype="html")
    html_part = msg.get_payload()[1]
    html_part.add_related(make_png(), "image", "png", cid="<logo@x>", filename="logo.png")
    if with_pdf:
        msg.add_attachment(make_pdf(), maintype="application", subtype="pdf", filename="a.pdf")
    return msg.as_bytes()


def test_inline_html_images_are_not_attachments(gw: Gateway) -> None:
    assert gw.send(_html_mail(with_pdf=True)).result == "discard"
    assert [d["filename"] for d in gw.jobs()[0]["documents"]] == ["a.pdf"]
    out = gw.send(_html_mail(with_pdf=False))
    assert (out.code, out.reply[1]) == ("550", "5.6.1")


def test_text_and_image_attachments_accepted(gw: Gateway) -> None:
    raw = fax_mail(
        attachments=[
            ("note.txt", "你好\n".encode("gb18030"), "text/plain"),
            ("scan.png", make_png(), "image/png"),
        ]
    )
    assert gw.send(raw).result == "discard"
    assert [d["kind"] for d in gw.jobs()[0]["documents"]] == ["text", "image"]


# ---- job rules -----------------------------------------------------------------------


def test_too_many_recipients_for_sender(gw: Gateway) -> None:
    gw.store.update_sender(ALICE, max_recipients=2)
    out = gw.send(fax_mail(subject="755-83235170; 755-83235171; 755-83235172"))
    assert (out.code, out.reply[1]) == ("550", "5.7.1")
    assert "at most 2" in out.text


def test_daily_quota(gw: Gateway) -> None:
    gw.store.update_sender(ALICE, jobs_per_day=1)
    assert gw.send(fax_mail(subject="755-83235170")).result == "discard"
    out = gw.send(fax_mail(subject="755-83235171"))
    assert (out.code, out.reply[1]) == ("550", "5.7.1")
    assert "quota" in out.text


def test_resend_of_the_last_job_within_quota_is_a_duplicate_not_a_quota_bounce(
    gw: Gateway,
) -> None:
    gw.store.update_sender(ALICE, jobs_per_day=1)
    raw = fax_mail(subject="755-83235170")
    assert gw.send(raw).result == "discard"
    again = gw.send(raw)  # the client timed out after DATA and sends it again
    assert again.result == "discard", again
    assert len(gw.jobs()) == 1 and gw.event_kinds()[-1] == "duplicate"


def test_international_needs_permission(gw: Gateway) -> None:
    out = gw.send(fax_mail(subject="755-83235170; 1-212-5551234/NY"))
    assert (out.code, out.reply[1]) == ("550", "5.7.1")
    assert "Recipient 2" in out.text and "international" in out.text
    gw.store.update_sender(ALICE, destinations="international")
    assert gw.send(fax_mail(subject="755-83235170; 1-212-5551234/NY")).result == "discard"


def test_premium_and_denied_prefixes(tmp_path: Path) -> None:
    g = Gateway(tmp_path, policy={"deny_prefixes": ["8675599"], "allow_prefixes": ["86755998"]})
    g.store.add_sender(ALICE, destinations="international")
    premium = g.send(fax_mail(subject="1-900-5551234"))
    assert premium.reply[1] == "5.7.1" and "premium" in premium.text
    denied = g.send(fax_mail(subject="755-99123456"))
    assert denied.reply[1] == "5.7.1" and "+8675599" in denied.text
    assert g.send(fax_mail(subject="755-99812345")).result == "discard"  # allow list wins
    g.store.update_sender(ALICE, allow_premium=True)
    assert g.send(fax_mail(subject="1-900-5551234")).result == "discard"


def test_long_internal_extension_is_a_public_number_in_disguise(tmp_path: Path) -> None:
    g = Gateway(tmp_path, policy={"max_extension_digits": 4})
    g.store.add_sender(ALICE, destinations="international")
    disguised = g.send(fax_mail(subject="0-0-12345678/Anyone"))
    assert disguised.reply[1] == "5.7.1" and "at most 4 digits" in disguised.text
    assert g.send(fax_mail(subject="0-0-1234/Reception")).result == "discard"


def test_local_only_sender(gw: Gateway) -> None:
    gw.store.update_sender(ALICE, destinations="local")
    assert gw.send(fax_mail(subject="10-12345678")).reply[1] == "5.7.1"
    assert gw.send(fax_mail(subject="755-83235170")).result == "discard"


# ---- failures --------------------------------------------------------------------------


def test_unwritable_spool_tempfails(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file: nothing can be created below it, not even by root")
    g = Gateway(tmp_path, spool={"directory": str(blocker / "spool")})
    g.store.add_sender(ALICE)
    out = g.send(fax_mail())
    assert (out.result, out.code, out.reply[1]) == ("tempfail", "451", "4.3.0")
    assert "tempfail" in g.event_kinds()


def test_internal_error_becomes_451(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(email: str) -> None:
        raise RuntimeError("database exploded")

    monkeypatch.setattr(gw.store, "get_sender", broken)
    out = gw.send(fax_mail())
    assert (out.result, out.code, out.reply[1]) == ("tempfail", "451", "4.3.0")
    # Ordinary mail is not affected by the broken store.
    assert gw.send(fax_mail(), recipients=("x@example.org",)).result == "accept"


def test_envelope_callback_bug_tempfails_rather_than_letting_mail_pass(gw: Gateway) -> None:
    class Exploding(frozenset):
        def __contains__(self, item: object) -> bool:
            raise RuntimeError("bug")

    gw.runtime = Runtime(gw.config, gw.store, Exploding())
    out = gw.send(fax_mail())
    assert (out.stage, out.result, out.code, out.reply[1]) == ("data", "tempfail", "451", "4.3.0")
    assert [(e.kind, e.queue_id) for e in gw.store.events(sender=None)] == [("tempfail", "4ABC123")]


def test_store_failure_after_spooling_is_not_a_reject(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(job: dict) -> bool:
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(gw.store, "record_job", broken)
    assert gw.send(fax_mail()).result == "discard"
    assert len(gw.jobs()) == 1


def test_job_row_and_accepted_event_are_one_store_transaction(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_add_event = gw.store.add_event

    def add_event(kind: str, *args: Any, **kwargs: Any) -> None:
        if kind == "accepted":
            raise RuntimeError("disk I/O error")
        real_add_event(kind, *args, **kwargs)

    monkeypatch.setattr(gw.store, "add_event", add_event)
    assert gw.send(fax_mail()).result == "discard"
    (job,) = gw.jobs()  # spooled: the spool is the truth
    assert gw.store.get_job(job["id"]) is None  # the job row went with its event


def test_encoded_display_name_cannot_smuggle_an_address(gw: Gateway) -> None:
    # Decoded, the name reads "alice@example.com (": parsing addresses after
    # decoding finds only Alice's address; the real address is Mallory's.
    name = "=?utf-8?B?" + base64.b64encode(b"alice@example.com (").decode() + "?="
    raw = fax_mail().replace(
        b"From: Alice <alice@example.com>", f"From: {name} <mallory@evil.example>".encode()
    )
    out = gw.send(raw)
    assert (out.result, out.reply[1]) == ("reject", "5.7.1")
    ok = fax_mail().replace(
        b"From: Alice <alice@example.com>",
        b"From: =?utf-8?B?" + base64.b64encode("张三".encode()) + b"?= <alice@example.com>",
    )
    assert gw.send(ok).result == "discard"
    assert gw.jobs()[0]["from_header"] == "张三 <alice@example.com>"


# ---- the milter's socket ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        ("inet:8899@127.0.0.1", True),
        ("inet:8899", True),
        ("inet6:8899@[::1]", True),
        ("unix:/run/faxgate/milter.sock", True),
        ("local:/var/spool/postfix/faxgate/milter.sock", True),
        ("unix:relative.sock", False),
        ("inet:127.0.0.1:8899", False),  # Postfix's spelling, not libmilter's
        ("bogus:thing", False),
        ("", False),
    ],
)
def test_socket_spec_is_checked_before_listening(spec: str, ok: bool) -> None:
    from faxgate.errors import ConfigError
    from faxgate.milter.app import check_socket_spec

    if ok:
        check_socket_spec(spec)
    else:
        with pytest.raises(ConfigError, match=r"\[milter\] socket"):
            check_socket_spec(spec)


def test_milter_command_reports_a_socket_it_cannot_listen_on(tmp_path: Path) -> None:
    import socket
    import subprocess

    config = tmp_path / "faxgate.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "db"}"\n[spool]\ndirectory = "{tmp_path / "spool"}"\n'
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for spec, code, words in [
            (f"inet:{port}@127.0.0.1", 1, "port in use?"),
            (f"unix:{tmp_path}/missing/milter.sock", 1, "socket directory missing"),
            ("inet:127.0.0.1:8899", 2, "expected 'inet:PORT@HOST'"),
        ]:
            done = subprocess.run(
                [sys.executable, "-m", "faxgate.cli", "--config", str(config), "milter"]
                + ["--socket", spec],
                cwd=tmp_path,  # not the source tree: its milter/ would shadow pymilter's
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == code, done.stderr
            assert words in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_mime_bomb_rejected_with_552_naming_the_limit(gw: Gateway) -> None:
    depth = 10_000
    body = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    ) + b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    head = b"From: alice@example.com\r\nTo: fax@fax.example.com\r\nSubject: 755-83235170\r\n"
    out = gw.send(head + b"MIME-Version: 1.0\r\n" + body)
    assert (out.result, out.code, out.reply[1]) == ("reject", "552", "5.3.4")
    assert "nested more than 20 levels deep (the limit)" in out.text
    assert_ascii_lines(out)
    assert gw.jobs() == []


def test_forged_authentication_results_below_the_trusted_one_does_not_count(
    tmp_path: Path,
) -> None:
    g = Gateway(tmp_path, milter={"require_dkim": True, "trusted_authserv_id": "mx.example.com"})
    g.store.add_sender(ALICE)
    genuine = b"Authentication-Results: mx.example.com; dkim=fail header.d=example.com\r\n"
    forged = b"Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n"
    out = g.send(genuine + forged + fax_mail())
    assert (out.result, out.reply[1]) == ("reject", "5.7.1")
    assert "No trusted DKIM or DMARC pass" in out.text
    # A forged header from another authserv-id above the MTA's own changes nothing either.
    other = b"Authentication-Results: evil.example.net; dkim=pass header.d=example.com\r\n"
    assert g.send(other + genuine + forged + fax_mail()).result == "reject"
    assert g.send(other + forged + genuine + fax_mail()).result == "discard"


def test_line_breaks_in_a_decoded_subject_cannot_fake_reply_or_log_lines(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = b"Subject: =?utf-8?q?755-8323=0D=0A250_2.0.0_Ok=0D=0AFAKE_LOG_LINE?="
    raw = fax_mail(subject="x").replace(b"Subject: x", hostile)
    with caplog.at_level(logging.INFO, logger="faxgate.milter"):
        out = gw.send(raw)
    assert (out.result, out.code) == ("reject", "550")
    assert_ascii_lines(out)
    assert "Subject: 755-8323\\u000d\\u000a250 2.0.0 Ok\\u000d\\u000aFAKE LOG LINE" in out.reply
    assert not any(line.startswith(("250", "FAKE")) for line in out.reply)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "\r" not in logged and "\nFAKE" not in logged and "\n250" not in logged


def test_hostile_attachment_filenames_are_display_text_never_paths(gw: Gateway) -> None:
    pdf = base64.b64encode(make_pdf())
    dispositions = [
        b'filename="/etc/passwd"',
        b"filename*=utf-8''..%2F..%2Fetc%2Fshadow%00.pdf",
        b"filename*=utf-8''a%0D%0ABcc%3A%20x%40evil.example%0D%0A.pdf",
        b'filename*0*=utf-8\'\'..%2F..; filename*1="/root/.ssh"; filename*2="/k.pdf"',
        b'filename="..\\\\..\\\\windows\\\\win.ini"',
        b'filename="' + b"A" * 10_000 + b'.pdf"',
    ]
    parts = b"".join(
        b"--B\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; " + d + b"\r\n\r\n" + pdf + b"\r\n"
        for d in dispositions
    )
    raw = (
        b"From: alice@example.com\r\nTo: fax@fax.example.com\r\nSubject: 755-83235170\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        + parts
        + b"--B--\r\n"
    )
    assert gw.send(raw).result == "discard"
    names = [d["filename"] for d in gw.jobs()[0]["documents"]]
    assert names[:5] == ["passwd", "shadow.pdf", "aBcc: x@evil.example.pdf", "k.pdf", "win.ini"]
    assert len(names[5]) == 120 and names[5].endswith("...")
    for name in names:
        assert "/" not in name and "\\" not in name and name.isprintable()
    spooled = sorted(p.name for p in (gw.spool / "incoming").rglob("*") if p.is_file())
    assert spooled == ["job.json", "message.eml"]


@pytest.mark.parametrize(
    ("from_lines", "reason"),
    [
        (["alice@example.com", "evil@x.example"], "exactly one address"),
        (["alice@example.com, evil@x.example"], "exactly one address"),
        (["team: alice@example.com, evil@x.example;"], "exactly one address"),
        (["<alice@example.com> <evil@x.example>"], "exactly one address"),
        (['"alice@example.com" <evil@x.example>'], "must be the envelope sender"),
        (['"alice@example.com"@x.example'], "must be the envelope sender"),
        (["\u0430lice@example.com"], "must be the envelope sender"),  # Cyrillic a
        (["alice@example.com\u200b"], "must be the envelope sender"),  # zero-width space
        ([], "exactly one address"),
    ],
)
def test_from_header_spoofing_attempts_are_refused(
    gw: Gateway, from_lines: list[str], reason: str
) -> None:
    raw = b"".join(f"From: {line}\r\n".encode() for line in from_lines) + b"\r\n".join(
        line for line in fax_mail().split(b"\n") if not line.startswith(b"From:")
    )
    out = gw.send(raw)
    assert (out.result, out.code, out.reply[1]) == ("reject", "550", "5.7.1")
    assert reason in out.text
    assert gw.jobs() == []


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        # Written the national way, judged by E.164: premium behind the trunk prefix.
        ("0900-123456", "premium-rate number (+86900...)"),
        ("+86-0900-123456", "premium-rate number (+86900...)"),
        ("86-900-123456", "premium-rate number (+86900...)"),
        # International written with "00" or "+": still international.
        ("0044-20-12345678", "international faxes are not allowed"),
        ("+44 20 1234 5678", "international faxes are not allowed"),
        # Dialling prefixes hidden where digits are dialled as written: refused outright.
        ("0-00441234567", "starts with the dialling prefix 00"),
        ("0-0-00441234567", "starts with the dialling prefix 00"),
        ("0044-1234567890", "starts with the dialling prefix 0"),
        ("755-8323;5170;0,0441234", "not understood"),
        ("755-8323W5170", "not understood"),
        ("７５５－８３２３５１７０*#", "not understood"),
    ],
)
def test_toll_fraud_attempts_meet_the_policy(tmp_path: Path, subject: str, expected: str) -> None:
    g = Gateway(tmp_path, policy={"premium_prefixes": ["+86900"]})
    g.store.add_sender(ALICE, destinations="domestic")
    out = g.send(fax_mail(subject=subject))
    assert out.result == "reject" and out.code == "550", out.text
    assert expected in out.text
    assert g.jobs() == []


def test_from_header_with_absurdly_nested_comments_is_a_5xx_not_a_tempfail(gw: Gateway) -> None:
    raw = fax_mail().replace(b"From: Alice", b"From: " + b"(" * 50_000 + b" Alice", 1)
    out = gw.send(raw)
    assert (out.result, out.code, out.reply[1]) == ("reject", "550", "5.7.1")
    assert "From: header cannot be parsed" in out.text


def test_charset_that_decodes_to_lone_surrogates_is_faxed_not_tempfailed(gw: Gateway) -> None:
    word = b"=?unicode_escape?q?=5Cud800?="
    raw = fax_mail(subject="x").replace(b"Subject: x", b"Subject: 755-83235170/" + word)
    raw = raw.replace(b"Message-ID: <", b"Message-ID: " + word + b"<")
    assert gw.send(raw).result == "discard"
    (job,) = gw.jobs()
    assert job["recipients"][0]["name1"] == "\\ud800"
