"""The milter behind a real Postfix on loopback, driven by smtplib.

One private Postfix per module (faxgate.postfix_instance) with five smtpd
listeners: the main one with the milter on an inet socket, one with the same
milter configuration served on a Unix socket, one whose milter has an
unwritable spool, one whose milter is down, and one without a milter. Everything Postfix
relays goes to an aiosmtpd capture server in this process.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import smtplib
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pypdf
import pytest
from aiosmtpd.controller import Controller

from faxgate.faxd import spool
from faxgate.postfix_instance import MilterProcess, PostfixInstance, free_port
from faxgate.store import Store

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/sbin/postfix").exists(),
    reason="needs root and Postfix to run a private instance",
)

FAX = "fax@fax.example.com"
ALICE = "alice@example.com"


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


class Capture:
    """aiosmtpd handler that keeps every message Postfix relays."""

    def __init__(self) -> None:
        self.messages: list[Captured] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(
                Captured(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 OK"

    def find(self, marker: bytes, timeout: float = 15.0) -> Captured:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for message in self.messages:
                    if marker in message.content:
                        return message
            time.sleep(0.05)
        raise AssertionError(f"capture server never received {marker!r}")

    def contains(self, marker: bytes) -> bool:
        with self.lock:
            return any(marker in m.content for m in self.messages)


@dataclass
class Site:
    mta: PostfixInstance
    capture: Capture
    store: Store
    spool_dir: Path
    broken_spool_port: int
    milter_down_port: int
    plain_port: int
    unix_port: int
    unix_milter_log: Path


def _write_config(path: Path, base: Path, spool_dir: Path) -> None:
    path.write_text(
        f"""
[store]
path = "{base / "faxgate.db"}"

[spool]
directory = "{spool_dir}"

[milter]
fax_addresses = ["{FAX}"]
require_auth = true
"""
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("postfix-site")
    capture = Capture()
    controller = Controller(capture, hostname="127.0.0.1", port=free_port())
    controller.start()
    good_cfg, broken_cfg = base / "good.toml", base / "broken.toml"
    spool_dir = base / "spool"
    _write_config(good_cfg, base, spool_dir)
    (base / "not-a-directory").write_text("a regular file: even root cannot mkdir below it")
    _write_config(broken_cfg, base, base / "not-a-directory" / "spool")
    store = Store(base / "faxgate.db")
    store.add_sender(ALICE, "Alice", smtp_login="alice")
    good = MilterProcess(good_cfg, free_port(), base / "milter-good.log")
    broken = MilterProcess(broken_cfg, free_port(), base / "milter-broken.log")
    socket_dir = Path(tempfile.mkdtemp(prefix="faxgate-milter-sock-"))
    socket_dir.chmod(0o755)  # the postfix user must reach the socket inside
    on_unix = MilterProcess(
        good_cfg, None, base / "milter-unix.log", unix_socket=socket_dir / "milter.sock"
    )
    dead_port = free_port()  # nothing listens here: the milter is "down"
    broken_spool_port, milter_down_port, plain_port = free_port(), free_port(), free_port()
    unix_port = free_port()
    mta = PostfixInstance(
        tempfile.mkdtemp(prefix="faxgate-postfix-"),  # pytest's tmp dirs are private (0700)
        smtp_port=free_port(),
        relay=("127.0.0.1", controller.port),
        milter=good.postfix_address,
        extra_listeners={
            broken_spool_port: {"smtpd_milters": broken.postfix_address},
            milter_down_port: {"smtpd_milters": f"inet:127.0.0.1:{dead_port}"},
            plain_port: {"smtpd_milters": ""},
            unix_port: {"smtpd_milters": on_unix.postfix_address},
        },
    )
    try:
        good.start()
        broken.start()
        on_unix.start()
        mta.start()
        yield Site(
            mta,
            capture,
            store,
            spool_dir,
            broken_spool_port,
            milter_down_port,
            plain_port,
            unix_port,
            on_unix.log_path,
        )
    finally:
        mta.stop()
        shutil.rmtree(mta.base_dir, ignore_errors=True)
        good.stop()
        broken.stop()
        on_unix.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)
        controller.stop()
        store.close()


def make_pdf(password: str | None = None) -> bytes:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=595, height=842)
    if password:
        writer.encrypt(user_password=password, owner_password=password)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def fax_mail(
    subject: str = "755-83235170/Zhang",
    pdf: bytes | None = None,
    to: str = FAX,
    sender: str = ALICE,
) -> tuple[bytes, str]:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    message_id = make_msgid(domain="example.com")
    msg["Message-ID"] = message_id
    msg.set_content(f"Cover note {message_id}\n")
    msg.add_attachment(
        make_pdf() if pdf is None else pdf,
        maintype="application",
        subtype="pdf",
        filename="order.pdf",
    )
    return msg.as_bytes(), message_id


def send(
    port: int,
    raw: bytes,
    recipients: list[str],
    sender: str = ALICE,
    login: str | None = "alice",
) -> tuple[int, bytes]:
    """Send one message; return the reply to the end of DATA (or the failing command)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        if login:
            code, reply = client.docmd("XCLIENT", f"LOGIN={login}")
            assert code == 220, reply
        client.ehlo("client.example.com")
        code, reply = client.mail(sender)
        if code != 250:
            return code, reply
        for rcpt in recipients:
            code, reply = client.rcpt(rcpt)
            if code not in (250, 251):
                return code, reply
        try:
            code, reply = client.data(raw)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error
        return code, reply


def jobs_with(spool_dir: Path, message_id: str) -> list[dict]:
    found = []
    for state in spool.STATES:
        for job_id in spool.list_jobs(spool_dir, state):
            job = spool.read_job(spool_dir / state / job_id)
            if job["message_id"] == message_id:
                found.append(job)
    return found


def test_authorised_fax_is_spooled_and_discarded(site: Site) -> None:
    raw, message_id = fax_mail()
    code, reply = send(site.mta.smtp_port, raw, [FAX])
    assert code == 250, reply
    (job,) = jobs_with(site.spool_dir, message_id)
    assert job["auth"]["login"] == "alice"  # {auth_authen} from XCLIENT LOGIN
    assert job["auth"]["client_addr"] == "127.0.0.1"
    assert job["queue_id"] and job["queue_id"] in site.mta.log_text()
    assert job["recipients"][0]["e164"] == "+8675583235170"
    assert job["documents"][0]["format"] == "pdf"
    stored = site.store.get_job(job["id"])
    assert stored is not None
    site.mta.wait_queue_empty()
    assert not site.capture.contains(message_id.encode())  # discarded, not relayed
    assert "milter-discard" in site.mta.log_text()


def test_unknown_sender_gets_550_571(site: Site) -> None:
    raw, message_id = fax_mail(sender="mallory@example.com")
    code, reply = send(site.mta.smtp_port, raw, [FAX], sender="mallory@example.com")
    assert code == 550 and reply.startswith(b"5.7.1"), reply
    assert b"not registered" in reply
    assert jobs_with(site.spool_dir, message_id) == []


def test_without_smtp_login_gets_550_571(site: Site) -> None:
    raw, _ = fax_mail()
    code, reply = send(site.mta.smtp_port, raw, [FAX], login=None)
    assert code == 550 and reply.startswith(b"5.7.1"), reply
    assert b"SMTP AUTH" in reply


def test_bad_subject_gets_550_560_with_hint(site: Site) -> None:
    raw, _ = fax_mail(subject="755-8323517x")
    code, reply = send(site.mta.smtp_port, raw, [FAX])
    assert code == 550 and reply.startswith(b"5.6.0"), reply
    assert b"column 12" in reply and b"Hint:" in reply
    assert b"\n" in reply  # a multi-line reply survived Postfix


def test_gbk_encoded_subject(site: Site) -> None:
    name = "金恒科技"
    words = base64.b64encode(f"86-755-83235170/{name}".encode("gbk")).decode()
    raw, message_id = fax_mail()
    raw = raw.replace(b"Subject: 755-83235170/Zhang", f"Subject: =?GBK?B?{words}?=".encode())
    code, reply = send(site.mta.smtp_port, raw, [FAX])
    assert code == 250, reply
    (job,) = jobs_with(site.spool_dir, message_id)
    assert job["recipients"][0]["name1"] == name


def test_mixed_recipients_fax_second_of_five_others_still_get_the_mail(site: Site) -> None:
    others = ["bob@example.org", "carol@example.net", "dave@example.org", "erin@example.net"]
    raw, message_id = fax_mail(to=f"bob@example.org, {FAX}, carol@example.net")
    code, reply = send(site.mta.smtp_port, raw, [others[0], FAX, *others[1:]])
    assert code == 250, reply
    relayed = site.capture.find(message_id.encode())
    assert sorted(relayed.rcpt_tos) == sorted(others)
    assert len(jobs_with(site.spool_dir, message_id)) == 1


def test_two_messages_in_one_smtp_session_have_their_own_outcomes(site: Site) -> None:
    bad, bad_id = fax_mail(subject="755-8323517x")
    good, good_id = fax_mail()
    ordinary_id = make_msgid(domain="example.com")
    ordinary = f"From: {ALICE}\r\nMessage-ID: {ordinary_id}\r\nSubject: hi\r\n\r\nhi\r\n"
    with smtplib.SMTP("127.0.0.1", site.mta.smtp_port, timeout=30) as client:
        assert client.docmd("XCLIENT", "LOGIN=alice")[0] == 220
        client.ehlo("client.example.com")
        results = []
        for raw, rcpts in (
            (bad, [FAX, "bob@example.org"]),
            (ordinary.encode(), ["bob@example.org"]),
            (good, [FAX]),
        ):
            client.mail(ALICE)
            for rcpt in rcpts:
                assert client.rcpt(rcpt)[0] == 250
            try:
                results.append(client.data(raw))
            except smtplib.SMTPDataError as exc:
                results.append((exc.smtp_code, exc.smtp_error))
                client.rset()
    assert results[0][0] == 550 and results[0][1].startswith(b"5.6.0"), results
    assert results[1][0] == 250 and results[2][0] == 250, results
    assert site.capture.find(ordinary_id.encode()).rcpt_tos == ["bob@example.org"]
    assert jobs_with(site.spool_dir, bad_id) == []
    (job,) = jobs_with(site.spool_dir, good_id)
    assert job["auth"]["login"] == "alice"
    site.mta.wait_queue_empty()
    assert not site.capture.contains(bad_id.encode())
    assert not site.capture.contains(good_id.encode())  # discarded: the fax address alone


def test_concurrent_smtp_sessions_each_get_their_own_job(site: Site) -> None:
    """libmilter serves each connection in its own thread; state never crosses over."""
    mails = [fax_mail(subject=f"755-8323{5200 + n}/Client{n}") for n in range(6)]
    with ThreadPoolExecutor(len(mails)) as pool:
        codes = list(pool.map(lambda mail: send(site.mta.smtp_port, mail[0], [FAX])[0], mails))
    assert codes == [250] * len(mails)
    for n, (_raw, message_id) in enumerate(mails):
        (job,) = jobs_with(site.spool_dir, message_id)
        assert job["recipients"][0]["name1"] == f"Client{n}"
        assert job["subject"] == f"755-8323{5200 + n}/Client{n}"


def test_milter_on_unix_socket(site: Site) -> None:
    raw, message_id = fax_mail(subject="755-83235179/Unix")
    code, reply = send(site.unix_port, raw, [FAX])
    assert code == 250, reply
    (job,) = jobs_with(site.spool_dir, message_id)
    assert job["recipients"][0]["name1"] == "Unix"
    assert f"accepted: from=<{ALICE}> job {job['id']}" in site.unix_milter_log.read_text()
    bad, _ = fax_mail(subject="755-8323517x")
    code, reply = send(site.unix_port, bad, [FAX])
    assert code == 550 and reply.startswith(b"5.6.0"), reply
    ordinary_id = make_msgid(domain="example.com")
    ordinary = f"Message-ID: {ordinary_id}\r\nSubject: hi\r\n\r\nhi\r\n".encode()
    assert send(site.unix_port, ordinary, ["bob@example.org"])[0] == 250
    assert site.capture.find(ordinary_id.encode()).rcpt_tos == ["bob@example.org"]


def test_non_fax_mail_passes_untouched(site: Site) -> None:
    body = "Line one\r\nLine two with trailing space \r\n\r\n.dot line\r\n"
    message_id = make_msgid(domain="example.com")
    raw = (
        f"From: {ALICE}\r\nTo: bob@example.org\r\nSubject: hello\r\n"
        f"Message-ID: {message_id}\r\n\r\n{body}"
    ).encode()
    code, reply = send(site.mta.smtp_port, raw, ["bob@example.org"])
    assert code == 250, reply
    relayed = site.capture.find(message_id.encode())
    assert relayed.rcpt_tos == ["bob@example.org"]
    assert relayed.content.split(b"\r\n\r\n", 1)[1] == body.encode()
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        assert line in relayed.content  # every header as sent


def test_duplicate_resubmission_is_one_job(site: Site) -> None:
    raw, message_id = fax_mail(subject="755-83235171")
    assert send(site.mta.smtp_port, raw, [FAX])[0] == 250
    assert send(site.mta.smtp_port, raw, [FAX])[0] == 250
    assert len(jobs_with(site.spool_dir, message_id)) == 1


def test_encrypted_pdf_gets_550_561(site: Site) -> None:
    raw, message_id = fax_mail(pdf=make_pdf(password="secret"))
    code, reply = send(site.mta.smtp_port, raw, [FAX])
    assert code == 550 and reply.startswith(b"5.6.1"), reply
    assert b"order.pdf" in reply and b"password" in reply
    assert jobs_with(site.spool_dir, message_id) == []


def test_unwritable_spool_gets_451_and_nothing_is_lost(site: Site) -> None:
    raw, _ = fax_mail()
    code, reply = send(site.broken_spool_port, raw, [FAX])
    assert code == 451 and reply.startswith(b"4.3.0"), reply


def test_milter_down_tempfails_per_default_action(site: Site) -> None:
    """milter_default_action = tempfail (deploy/postfix/main.cf.snippet): 451 for all mail."""
    raw, _ = fax_mail()
    code, reply = send(site.milter_down_port, raw, [FAX])
    assert code == 451 and reply.startswith(b"4.7.1"), reply
    code, reply = send(site.milter_down_port, b"Subject: hi\r\n\r\nhi\r\n", ["bob@example.org"])
    assert code == 451, reply


def test_listener_without_milter_relays_fax_address_unchecked(site: Site) -> None:
    """Control: the capture server sees what is not filtered (so 'discarded' above is real)."""
    raw, message_id = fax_mail()
    assert send(site.plain_port, raw, [FAX])[0] == 250
    assert site.capture.find(message_id.encode()).rcpt_tos == [FAX]
    assert jobs_with(site.spool_dir, message_id) == []


def test_events_name_queue_ids(site: Site) -> None:
    events = site.store.events(limit=200)
    kinds = {e.kind for e in events}
    assert {"accepted", "rejected", "duplicate"} <= kinds
    assert all(e.queue_id for e in events if e.kind in ("accepted", "rejected"))
    json.dumps([e.to_dict() for e in events])
