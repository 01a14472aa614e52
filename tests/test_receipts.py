"""Receipts and outgoing mail: built in both languages, sent to a real SMTP
server (aiosmtpd on loopback), parsed back; SMTP failures are classified."""

from __future__ import annotations

import email
import email.policy
import io
import socket
from email.header import decode_header, make_header

import pytest
from aiosmtpd.controller import Controller
from PIL import Image, ImageDraw
from pypdf import PdfReader

from faxgate.config import SmtpConfig
from faxgate.faxd import mailout, receipts
from faxgate.faxd import queue as q
from faxgate.faxd.page import FaxPage

T0 = 1_780_000_000.0


class Capture:
    """aiosmtpd handler that keeps every message; can refuse with a code."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.reply = "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
        if not self.reply.startswith("250"):
            return self.reply
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    capture = Capture()
    port = free_port()
    controller = Controller(capture, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield capture, SmtpConfig(host="127.0.0.1", port=port, starttls="opportunistic")
    finally:
        controller.stop()


def page(text: str = "page", resolution: str = "fine") -> FaxPage:
    image = Image.new("1", (1728, 2200 if resolution == "fine" else 1100), 1)
    ImageDraw.Draw(image).rectangle((100, 100, 1600, 400), fill=0)
    return FaxPage(image=image, resolution=resolution)


def job_and_progress() -> tuple[dict, q.JobProgress]:
    job = {
        "id": "20260101T000000000000Z-abcd0001",
        "sender": "alice@example.com",
        "subject": "报价单 quotation",
        "message_id": "<orig-1@example.com>",
        "created": "2026-01-01T00:00:00+00:00",
        "recipients": [
            {
                "country": "86",
                "area": "755",
                "number": "12345678",
                "network": "",
                "name1": "张三",
                "name2": "采购部",
                "dial": "12345678",
                "e164": "8675512345678",
            },
            {
                "country": "86",
                "area": "10",
                "number": "87654321",
                "network": "AF90000098",
                "name1": "Bob",
                "name2": "",
                "dial": "01087654321",
                "e164": "861087654321",
            },
        ],
    }
    progress = q.new_job(job["id"], T0, [q.ROUTE_PHONE, q.ROUTE_PHONE], q.RetryPolicy())
    progress.pages_total = 3
    sent, failed = progress.recipients
    for rec in progress.recipients:
        rec.pages_total = 3
    q.begin_call(sent, T0)
    q.apply_call(
        q.RetryPolicy(),
        progress,
        sent,
        q.CallOutcome(
            ok=True,
            pages_confirmed=3,
            reached_fax_carrier=True,
            remote_ident="+86 755 1",
            bit_rate=14400,
            resolution="fine",
            line_seconds=61.4,
        ),
        T0 + 70,
    )
    for _ in range(2):
        q.begin_call(failed, T0)
        q.apply_call(
            q.RetryPolicy(max_dials=2),
            progress,
            failed,
            q.CallOutcome(ok=False, reason="busy"),
            T0 + 100,
        )
    return job, progress


def test_wants_receipt_never_null_sender_or_mailer_daemon() -> None:
    assert receipts.wants_receipt("alice@example.com")
    assert not receipts.wants_receipt("")
    assert not receipts.wants_receipt("<>")
    assert not receipts.wants_receipt("MAILER-DAEMON@example.com")


@pytest.mark.parametrize("language", ["en", "zh"])
def test_receipt_content_and_headers(language: str) -> None:
    job, progress = job_and_progress()
    assert progress.outcome == "partial"
    msg = receipts.build_receipt(
        job,
        progress,
        language=language,
        from_address="faxgate@example.org",
        message_id="<receipt.x@example.org>",
        first_page=page(),
        pdf=receipts.pages_pdf([page()] * 2),
        now=T0 + 200,
    )
    wire = msg.as_bytes(policy=email.policy.SMTP)
    assert max(wire) < 128, "headers and body must be 7-bit on the wire (RFC 2047 / base64)"
    parsed = email.message_from_bytes(wire, policy=email.policy.default)
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["In-Reply-To"] == "<orig-1@example.com>" == parsed["References"]
    assert parsed["Message-ID"] == "<receipt.x@example.org>"
    assert parsed["To"] == "alice@example.com"
    subject = str(
        make_header(decode_header(wire.split(b"Subject: ")[1].split(b"\r\n")[0].decode()))
    )
    assert "报价单 quotation" in subject
    body = parsed.get_body(("plain",)).get_content()
    t = receipts.texts(language)
    assert "张三 / 采购部" in body and "+8675512345678" in body and "AF90000098" in body
    assert t["status"]["sent"] in body and t["status"]["failed"] in body
    assert "(busy)" in body and "(ok)" in body and "14400 bit/s" in body
    assert "3 / 3" in body if language == "zh" else "3 of 3" in body
    assert job["id"] in body and t["thumbnail_note"].strip() in body
    parts = {p.get_content_type(): p.get_content() for p in parsed.iter_attachments()}
    thumb = Image.open(io.BytesIO(parts["image/png"]))
    thumb.verify()
    assert thumb.size[0] == receipts.THUMBNAIL_WIDTH
    assert len(PdfReader(io.BytesIO(parts["application/pdf"])).pages) == 2


def test_send_receipt_to_real_smtp_server(smtp_server) -> None:
    capture, smtp = smtp_server
    job, progress = job_and_progress()
    msg = receipts.build_receipt(
        job,
        progress,
        language="zh",
        from_address="faxgate@example.org",
        message_id=receipts.receipt_message_id(job["id"], domain="example.org"),
        first_page=page(),
        now=T0,
    )
    mailout.send_mail(smtp, msg, "", ["alice@example.com"])
    ((mail_from, rcpts, content),) = capture.messages
    assert mail_from == "<>" and rcpts == ["alice@example.com"]
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert parsed["Message-ID"] == f"<receipt.{job['id']}@example.org>"
    assert "传真部分发送" in str(parsed["Subject"])


def test_smtp_down_is_temporary_and_5xx_permanent(smtp_server) -> None:
    capture, smtp = smtp_server
    job, progress = job_and_progress()
    msg = receipts.build_acceptance(
        job, progress, language="en", from_address="f@x", message_id="<a@x>", now=T0
    )
    with pytest.raises(mailout.MailTemporaryError):
        mailout.send_mail(
            SmtpConfig(host="127.0.0.1", port=free_port(), timeout_seconds=2),
            msg,
            "",
            ["alice@example.com"],
        )
    capture.reply = "554 5.7.1 no thanks"
    with pytest.raises(mailout.MailPermanentError):
        mailout.send_mail(smtp, msg, "", ["alice@example.com"])
    capture.reply = "451 4.3.0 later"
    with pytest.raises(mailout.MailTemporaryError):
        mailout.send_mail(smtp, msg, "", ["alice@example.com"])
    assert capture.messages == []


def test_standard_resolution_page_keeps_its_proportions() -> None:
    png = receipts.thumbnail_png(page(resolution="standard"))
    width, height = Image.open(io.BytesIO(png)).size
    assert width == receipts.THUMBNAIL_WIDTH
    assert abs(height - round(1100 * 204 / 98 / 4)) <= 1


@pytest.mark.parametrize("language", receipts.LANGUAGES)
def test_every_reason_code_has_a_plain_text(language: str) -> None:
    codes = (
        q.BUSY_REASONS | q.NO_ANSWER_REASONS | q.NO_CARRIER_REASONS | q.PROTOCOL_REASONS
    ) | q.QUEUE_REASONS
    t = receipts.texts(language)
    assert codes <= set(t["reasons"]), codes - set(t["reasons"])
    assert set(t["status"]) == {"sent", "partial", "failed", "cancelled"}
    for outcome in ("done", "partial", "failed", "cancelled", "accepted"):
        assert f"subject_{outcome}" in t


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_auth_and_required_starttls() -> None:
    from aiosmtpd.smtp import AuthResult

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"faxgate" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)

    capture = Capture()
    port = free_port()
    controller = Controller(
        capture,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        job, progress = job_and_progress()
        msg = receipts.build_acceptance(
            job, progress, language="en", from_address="f@x", message_id="<a@x>", now=T0
        )
        good = SmtpConfig(
            host="127.0.0.1", port=port, starttls="off", user="faxgate", password="s3cret"
        )
        mailout.send_mail(good, msg, "", ["alice@example.com"])
        assert len(capture.messages) == 1
        with pytest.raises(mailout.MailTemporaryError, match="authentication"):
            mailout.send_mail(
                SmtpConfig(
                    host="127.0.0.1", port=port, starttls="off", user="faxgate", password="wrong"
                ),
                msg,
                "",
                ["alice@example.com"],
            )
        with pytest.raises(mailout.MailTemporaryError, match="does not offer STARTTLS"):
            mailout.send_mail(
                SmtpConfig(host="127.0.0.1", port=port, starttls="required"),
                msg,
                "",
                ["alice@example.com"],
            )
        assert len(capture.messages) == 1
    finally:
        controller.stop()


def test_hostile_subject_and_names_cannot_break_headers_or_lines() -> None:
    job, progress = job_and_progress()
    job["subject"] = "x\r\nBcc: victim@example.com\x00\u2028y"
    job["recipients"][0]["name1"] = "Eve\nStatus:        sent"
    msg = receipts.build_receipt(
        job,
        progress,
        language="en",
        from_address="f@x",
        message_id="<r@x>",
        first_page=None,
        now=T0,
    )
    wire = msg.as_bytes(policy=email.policy.SMTP)
    parsed = email.message_from_bytes(wire, policy=email.policy.default)
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Fax partly sent: x Bcc: victim@example.com y"
    assert "Recipient 1: Eve Status: sent / 采购部" in parsed.get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    "message_id",
    ["<a@b>\r\nBcc: victim@example.com", "<a@b> <c@d>", "<a\n@b>", "a@b", "<a\x00@b>"],
)
def test_hostile_original_message_id_is_left_out_not_a_receipt_that_never_builds(
    message_id: str,
) -> None:
    job, progress = job_and_progress()
    job["message_id"] = message_id
    msg = receipts.build_receipt(
        job,
        progress,
        language="en",
        from_address="f@x",
        message_id="<r@x>",
        first_page=None,
        now=T0,
    )
    parsed = email.message_from_bytes(msg.as_bytes(policy=email.policy.SMTP))
    assert parsed["Bcc"] is None and parsed["In-Reply-To"] is None and parsed["References"] is None
    job["message_id"] = "<ok.1@example.com>"
    msg = receipts.build_receipt(
        job,
        progress,
        language="en",
        from_address="f@x",
        message_id="<r@x>",
        first_page=None,
        now=T0,
    )
    assert msg["In-Reply-To"] == "<ok.1@example.com>"


@pytest.mark.parametrize("guide", ["user-guide.md", "user-guide.zh.md"])
def test_user_guide_tables_list_exactly_the_reason_codes_receipts_use(guide: str) -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / guide).read_text(encoding="utf-8")
    table = text[text.index("| `busy` |") :].split("\n\n", 1)[0]
    documented = {code for row in table.splitlines() for code in re.findall(r"`([a-z_]+)`", row)}
    codes = (
        q.BUSY_REASONS | q.NO_ANSWER_REASONS | q.NO_CARRIER_REASONS | q.PROTOCOL_REASONS
    ) | q.QUEUE_REASONS
    assert documented == set(codes), (codes - documented, documented - codes)
    assert set(receipts.texts("en")["reasons"]) - {"ok"} == set(codes)


def test_receipt_or_fax_mail_sent_back_to_the_fax_address_is_not_faxed(tmp_path) -> None:
    """The loop guard end to end: what faxd mails, even forwarded by a registered
    sender (not the null sender) to the fax address, never becomes a job."""
    from types import SimpleNamespace

    from faxgate import config as config_mod
    from faxgate.faxd import network
    from faxgate.faxd import spool as spool_mod
    from faxgate.milter.app import FaxMilter, Runtime
    from faxgate.milter.harness import drive
    from faxgate.store import Store

    cfg = config_mod.parse(
        {
            "store": {"path": str(tmp_path / "faxgate.db")},
            "spool": {"directory": str(tmp_path / "spool")},
            "milter": {"fax_addresses": ["fax@gw.example"]},
        }
    )
    store = Store.open(cfg)
    store.add_sender("alice@example.com", "Alice")
    runtime = Runtime.create(cfg, store)
    job, progress = job_and_progress()
    receipt = receipts.build_receipt(
        job,
        progress,
        language="en",
        from_address="faxgate@gw.example",
        message_id="<r@x>",
        first_page=page(),
        now=T0,
    )
    fax_mail = network.build_fax_mail(
        job,
        1,
        job["recipients"][1],
        SimpleNamespace(name="Bob", email="fax@gw.example"),
        tiff=b"II*\0",
        pages=[page()],
        from_address="faxgate@gw.example",
        now=T0,
    )
    for msg in (receipt, fax_mail):
        msg.replace_header("To", "fax@gw.example")
        raw = msg.as_bytes(policy=email.policy.SMTP)
        for envelope_sender in ("", "alice@example.com"):
            out = drive(
                lambda: FaxMilter(runtime),
                raw,
                envelope_sender,
                ("fax@gw.example",),
                {"i": "4LOOP", "{client_addr}": "127.0.0.1"},
                (),
            )
            assert out.result == "discard", (msg["Subject"], envelope_sender, out)
    assert spool_mod.list_jobs(cfg.spool.directory) == []


def test_starttls_with_a_self_signed_certificate(tmp_path) -> None:
    """Like a stock Debian Postfix (snakeoil certificate): opportunistic STARTTLS
    encrypts and delivers; required STARTTLS verifies and refuses the certificate
    unless tls_verify is off; AUTH to a remote host is never sent over it."""
    import ssl
    import subprocess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=snakeoil.invalid", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    class TlsCapture(Capture):
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            self.messages.append((str(session.ssl is not None), [], envelope.content))
            return "250 OK"

    capture = TlsCapture()
    port = free_port()
    controller = Controller(capture, hostname="127.0.0.1", port=port, tls_context=context)
    controller.start()
    try:
        job, progress = job_and_progress()
        msg = receipts.build_acceptance(
            job, progress, language="en", from_address="f@x", message_id="<a@x>", now=T0
        )

        def smtp(**kw) -> SmtpConfig:
            return SmtpConfig(host="127.0.0.1", port=port, timeout_seconds=5, **kw)

        mailout.send_mail(smtp(starttls="opportunistic"), msg, "", ["alice@example.com"])
        assert [m[0] for m in capture.messages] == ["True"], "not sent over TLS"
        with pytest.raises(mailout.MailTemporaryError, match="CERTIFICATE_VERIFY_FAILED"):
            mailout.send_mail(smtp(starttls="required"), msg, "", ["alice@example.com"])
        mailout.send_mail(
            smtp(starttls="required", tls_verify=False), msg, "", ["alice@example.com"]
        )
        assert [m[0] for m in capture.messages] == ["True", "True"]
        remote_auth = SmtpConfig(host="relay.example", user="u", password="p")
        assert mailout.tls_context(remote_auth).verify_mode == ssl.CERT_REQUIRED
        assert mailout.tls_context(smtp(user="u")).verify_mode == ssl.CERT_NONE  # loopback
    finally:
        controller.stop()


def test_receipt_language_config_default_and_per_sender_override(tmp_path) -> None:
    from faxgate import config as config_mod
    from faxgate.faxd.daemon import FaxDaemon
    from faxgate.store import Store

    cfg = config_mod.parse(
        {
            "store": {"path": str(tmp_path / "faxgate.db")},
            "spool": {"directory": str(tmp_path / "spool")},
            "receipts": {"language": "zh"},
        }
    )
    store = Store.open(cfg)
    store.add_sender("en@example.com", "E", language="en")
    store.add_sender("plain@example.com", "P")
    daemon = FaxDaemon(cfg)
    assert daemon._language("en@example.com") == "en"
    assert daemon._language("plain@example.com") == "zh"
    assert daemon._language("stranger@example.com") == "zh"
