"""faxd end to end: real spool, real renderer, real Class 1 sender over simulated
lines (spandsp, in a separate ``faxgate line`` process), real SMTP (aiosmtpd).

Retry delays are configured short and the lines run fast, so each scenario
takes seconds of wall time.
"""

from __future__ import annotations

import email
import email.policy
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from PIL import Image, ImageChops

from faxgate import config, processes
from faxgate.cli import main
from faxgate.faxd import daemon as faxd
from faxgate.faxd import spool
from faxgate.faxd.tifff import read_tiff_f
from faxgate.grammar.subject import parse_subject
from faxgate.render.sniff import sniff
from faxgate.simline import LineOptions, read_sidecars
from faxgate.simline.process import LineProcess
from faxgate.store import Store

PACING = 25.0
TEXT = "Quarterly figures\nline two\n\fPage two of the fax\n\fPage three, the last one\n"


class Capture:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse: set[str] = set()  # recipients refused with a 5xx

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def parsed(self, to: str | None = None) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(content, policy=email.policy.default)
            for _, rcpts, content in self.messages
            if to is None or to in rcpts
        ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_smtp(port: int) -> tuple[Controller, Capture]:
    capture = Capture()
    controller = Controller(capture, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, capture


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    return processes.wait_until(predicate, timeout, what, AssertionError)


def write_config(
    tmp: Path,
    modems: list[Path],
    smtp_port: int,
    receipts: str = "",
    sections: str = "",
    **faxd_keys: Any,
) -> Path:
    """A config for the test; ``sections`` is TOML text appended (more sections)."""
    faxd_section = {
        "rescan_seconds": 5,
        "busy_retry_seconds": 1.0,
        "no_answer_retry_seconds": 1.0,
        "no_carrier_retry_seconds": 1.0,
        "protocol_error_retry_seconds": 0.5,
        **faxd_keys,
    }

    def value(v: Any) -> str:
        if isinstance(v, str):
            return f'"{v}"'
        return str(v).lower() if isinstance(v, bool) else repr(v)

    lines = [
        "[store]",
        f'path = "{tmp}/faxgate.db"',
        "[spool]",
        f'directory = "{tmp}/spool"',
        "[fax]",
        "modems = [" + ", ".join(f'"{m}"' for m in modems) + "]",
        'lock_dir = ""',
        "[smtp]",
        'host = "127.0.0.1"',
        f"port = {smtp_port}",
        'starttls = "off"',
        "timeout_seconds = 5.0",
        "[receipts]",
        'from_address = "faxgate@gw.example"',
        "retry_seconds = 0.5",
        receipts,
        "[faxd]",
        *(f"{k} = {value(v)}" for k, v in faxd_section.items()),
        sections,
    ]
    path = tmp / "faxgate.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def submit(
    cfg: config.Config,
    subject: str,
    text: str = TEXT,
    sender: str = "alice@example.com",
    pdf: bytes | None = None,
    attachment: tuple[str, bytes] | None = None,
    priority: str = "normal",
) -> str:
    """Spool a job the way the milter does: a real MIME mail with a text (or PDF,
    or any named ``attachment``, sniffed as the milter does) attachment."""
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = "fax@gw.example"
    msg["Subject"] = subject
    message_id = f"<{time.time_ns()}@example.com>"
    msg["Message-ID"] = message_id
    msg.set_content("please fax")
    if attachment is not None:
        filename, data = attachment
        sniffed = sniff(data, filename)
        kind, fmt = sniffed.kind, sniffed.format
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=filename)
    elif pdf is not None:  # not sniffed: damaged PDFs test faxd's own checks
        filename, data, kind, fmt = "doc.pdf", pdf, "pdf", "pdf"
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=filename)
    else:
        filename, data, kind, fmt = "doc.txt", text.encode(), "text", "txt"
        msg.add_attachment(data, maintype="text", subtype="plain", filename=filename)
    parts = list(msg.walk())
    part = next(i for i, p in enumerate(parts) if p.get_filename() == filename)
    recipients = [r.to_dict() for r in parse_subject(subject, cfg.dialplan)]
    job = {
        "sender": sender,
        "from_header": sender,
        "auth": {"login": None, "client_addr": "127.0.0.1", "authentication_results": []},
        "recipients": recipients,
        "subject": subject,
        "message_id": message_id,
        "queue_id": "4ABCDEF",
        "created": datetime.now(UTC).isoformat(),
        "priority": priority,
        "documents": [
            {
                "filename": filename,
                "kind": kind,
                "format": fmt,
                "part": part,
                "size": len(data),
            }
        ],
        "body_text": "please fax",
    }
    return spool.submit(cfg.spool.directory, job, msg.as_bytes(policy=email.policy.SMTP))


class Running:
    """An in-process faxd on its own thread."""

    def __init__(self, cfg: config.Config, watch: bool = True) -> None:
        self.daemon = faxd.FaxDaemon(cfg, watch=watch)
        ready = threading.Event()
        self.thread = threading.Thread(target=self.daemon.run, args=(ready.set,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "faxd did not start"

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


class Lines:
    """Simulated lines, each a ``faxgate line`` process."""

    def __init__(self) -> None:
        self.processes: list[LineProcess] = []

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()
        self.processes = []


@pytest.fixture
def env(tmp_path: Path):
    """Config factory plus clean-up of everything started."""
    started: list[Any] = []

    class Env:
        tmp = tmp_path
        smtp_port = free_port()

        def line(self, names: list[str], options: LineOptions) -> tuple[list[Path], Lines]:
            devices = [tmp_path / name for name in names]
            lines = Lines()
            started.append(lines)
            for device in devices:
                # One process per line: a line process reports READY per device on
                # one pipe, and two READY lines arriving together can be missed.
                proc = LineProcess([device], tmp_path / "far", options)
                proc.start()
                lines.processes.append(proc)
            return devices, lines

        def smtp(self) -> Capture:
            controller, capture = start_smtp(self.smtp_port)
            started.append(controller)
            return capture

        def config(
            self, modems: list[Path], receipts: str = "", sections: str = "", **faxd: Any
        ) -> config.Config:
            return config.load(
                write_config(tmp_path, modems, self.smtp_port, receipts, sections, **faxd)
            )

        def faxd(self, cfg: config.Config, watch: bool = True) -> Running:
            running = Running(cfg, watch)
            started.append(running)
            return running

    yield Env()
    for thing in reversed(started):
        thing.stop()


def receipt_for(capture: Capture, job_id: str) -> email.message.EmailMessage:
    found = [
        m
        for m in capture.parsed("alice@example.com")
        if m["Message-ID"].startswith(f"<receipt.{job_id}@")
    ]
    assert len(found) == 1, f"{len(found)} receipts for {job_id}"
    return found[0]


def check_receipt_basics(receipt: email.message.EmailMessage, job_id: str) -> str:
    assert receipt["Auto-Submitted"] == "auto-replied"
    assert receipt["In-Reply-To"] and receipt["References"] == receipt["In-Reply-To"]
    assert receipt["Message-ID"].startswith(f"<receipt.{job_id}@")
    body = receipt.get_body(("plain",)).get_content()
    assert job_id in body
    pngs = [p for p in receipt.iter_attachments() if p.get_content_type() == "image/png"]
    assert len(pngs) == 1
    Image.open(io.BytesIO(pngs[0].get_content())).verify()
    return body


def job_state(cfg: config.Config, job_id: str) -> str | None:
    job = Store.open(cfg).get_job(job_id)
    return job.state if job else None


def test_three_recipients_over_two_lines_at_once(env) -> None:
    devices, _ = env.line(["modemA", "modemB"], LineOptions(pacing=PACING))
    capture = env.smtp()
    cfg = env.config(devices)
    env.faxd(cfg)
    job_id = submit(cfg, "12345678/One;87654321/Two;55555555/Three")
    wait_until(lambda: capture.parsed("alice@example.com"), 90, "the receipt")
    calls = read_sidecars(env.tmp / "far")
    assert sorted(c.json["dialled"][-8:] for c in calls) == ["12345678", "55555555", "87654321"]
    assert all(c.ok and c.pages == 3 for c in calls)
    assert {c.device for c in calls} == {"modemA", "modemB"}
    first, second = sorted(calls, key=lambda c: c.json["started_at"])[:2]
    assert first.device != second.device
    assert second.json["started_at"] < first.json["ended_at"], "the two lines never overlapped"
    body = check_receipt_basics(receipt_for(capture, job_id), job_id)
    assert body.count("3 of 3") == 3 and body.count("(ok)") == 3
    for name in ("One", "Two", "Three"):
        assert f": {name}" in body
    assert receipt_for(capture, job_id)["Subject"].startswith("Fax sent")
    assert job_state(cfg, job_id) == "done"
    assert len(capture.parsed("alice@example.com")) == 1  # no acceptance notice by default
    done = Path(cfg.spool.directory) / "done" / job_id / "state.json"
    wait_until(done.exists, 10, "the job moved to done/")


def test_busy_then_success(env, caplog) -> None:
    caplog.set_level(logging.INFO, logger="faxgate.faxd")
    devices, busy_line = env.line(["modem0"], LineOptions(pacing=PACING, behaviour="busy"))
    capture = env.smtp()
    cfg = env.config(devices, busy_retry_seconds=3.0)
    env.faxd(cfg)
    job_id = submit(cfg, "12345678/Busy Bee")
    wait_until(lambda: read_sidecars(env.tmp / "far"), 30, "the busy call")
    busy_line.stop()
    # The queue state and the next try are on disk (state.json) and in the store.
    job_dir = Path(cfg.spool.directory) / "active" / job_id
    on_disk = wait_until(
        lambda: (s := faxd.read_state(job_dir)) and s.recipients[0].state == "pending" and s,
        10,
        "the recipient pending after the busy call",
    ).recipients[0]
    assert on_disk.last_call_reason == "busy" and on_disk.dials == 1 and on_disk.tries == 0
    assert time.time() < on_disk.next_try <= time.time() + 3.0
    stored = wait_until(
        lambda: (r := Store.open(cfg).get_job(job_id).recipients[0]).next_try and r, 5, "store"
    )
    assert stored.state == "pending" and stored.next_try == on_disk.next_try
    env.line(["modem0"], LineOptions(pacing=PACING))
    wait_until(lambda: capture.parsed("alice@example.com"), 60, "the receipt")
    results = [c.result for c in read_sidecars(env.tmp / "far")]
    assert results[0] == "busy" and results[-1] == "ok"
    body = check_receipt_basics(receipt_for(capture, job_id), job_id)
    assert "3 of 3" in body and f"Attempts:      {len(results)}" in body
    events = [e.kind for e in Store.open(cfg).events(job_id)]
    assert "dialing" in events and "pending" in events and "sent" in events
    # One log line per state change, naming job, recipient and Postfix queue id.
    changes = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"job {job_id} rcpt 0 queue-id 4ABCDEF: ")
    ]
    kinds = [line.split(": ", 1)[1].split(" ")[0] for line in changes]
    assert kinds.count("dialing") == len(results) and kinds.count("pending") == len(results) - 1
    assert kinds[-1] == "sent", changes


def test_no_answer_until_expiry_gives_failure_receipt(env) -> None:
    devices, _ = env.line(
        ["modem0"], LineOptions(pacing=PACING, behaviour="no-answer", ring_seconds=10)
    )
    capture = env.smtp()
    cfg = env.config(devices, kill_time_seconds=4.0)
    env.faxd(cfg)
    job_id = submit(cfg, "12345678/Nobody Home", sender="alice@example.com")
    receipt = wait_until(lambda: capture.parsed("alice@example.com"), 60, "the receipt")[0]
    assert receipt["Subject"].startswith("Fax NOT sent")
    body = check_receipt_basics(receipt, job_id)
    assert "(expired)" in body and "(no_answer)" in body and "0 of 3" in body
    assert all(c.result == "no_answer" for c in read_sidecars(env.tmp / "far"))
    assert job_state(cfg, job_id) == "failed"
    from faxgate.commands.status import collect

    errors = collect(cfg)["recent_errors"]
    assert any(e["kind"] == "failed" and e["job_id"] == job_id for e in errors), errors
    wait_until((Path(cfg.spool.directory) / "failed" / job_id).is_dir, 10, "job in failed/")


def test_network_number_by_mail_and_phone_fallback(env) -> None:
    devices, _ = env.line(["modem0"], LineOptions(pacing=PACING))
    capture = env.smtp()
    cfg = env.config(
        devices,
        receipts="acceptance_notice = true\nattach_pdf = true",
        sections="[render]\ncover_page = true",
    )
    store = Store.open(cfg)
    store.directory_add("AF90000098", "Bob", "bob@branch.example")
    store.add_sender("alice@example.com", "Alice", language="zh")
    running = env.faxd(cfg)
    job_id = submit(cfg, "12345678|AF12345/Carol;AF90000098/Bob")
    wait_until(lambda: len(capture.parsed("alice@example.com")) == 2, 60, "notice and receipt")
    receipt = receipt_for(capture, job_id)
    (notice,) = [
        m
        for m in capture.parsed("alice@example.com")
        if m["Message-ID"].startswith(f"<acceptance.{job_id}@")
    ]
    assert notice["Subject"].startswith("传真已排队") and notice["Auto-Submitted"] == "auto-replied"
    assert receipt["Subject"].startswith("传真已发送")
    pdf = [p for p in receipt.iter_attachments() if p.get_content_type() == "application/pdf"]
    assert len(pdf) == 1 and pdf[0].get_content().startswith(b"%PDF")
    (fax_mail,) = capture.parsed("bob@branch.example")
    assert fax_mail["Auto-Submitted"] == "auto-generated"
    attachments = {p.get_content_type(): p for p in fax_mail.iter_attachments()}
    assert attachments["image/tiff"].get_param("application") == "faxbw"
    (env.tmp / "bob.tif").write_bytes(attachments["image/tiff"].get_content())
    pages = read_tiff_f(env.tmp / "bob.tif")
    assert len(pages) == 4  # Bob's own cover page, then the 3 document pages
    job = spool.read_job(spool.find_job(cfg.spool.directory, job_id))
    cover = running.daemon.cover_page(job, 1, 4).image
    assert ImageChops.difference(pages[0].image.convert("L"), cover.convert("L")).getbbox() is None
    assert attachments["application/pdf"].get_content().startswith(b"%PDF")
    (call,) = read_sidecars(env.tmp / "far")
    assert call.ok and call.json["dialled"].endswith("12345678")
    body = check_receipt_basics(receipt_for(capture, job_id), job_id)
    assert body.count("(ok)") == 2 and "AF90000098" in body and "已发送" in body


def test_smtp_down_then_up_sends_exactly_one_receipt(env) -> None:
    devices, _ = env.line(["modem0"], LineOptions(pacing=PACING))
    cfg = env.config(devices)
    env.faxd(cfg)
    job_id = submit(cfg, "12345678/Later")
    store = Store.open(cfg)
    wait_until(
        lambda: any(e.kind == "receipt_deferred" for e in store.events(job_id)), 60, "a deferral"
    )
    capture = env.smtp()
    wait_until(lambda: capture.parsed("alice@example.com"), 20, "the receipt")
    # Once the job has left active/, nothing can send another receipt.
    wait_until((Path(cfg.spool.directory) / "done" / job_id).is_dir, 10, "job in done/")
    receipt_for(capture, job_id)
    assert store.get_job(job_id).receipt_state == "sent"


def test_admin_commands_hold_release_cancel_and_status(env, capsys) -> None:
    capture = env.smtp()
    closed = datetime.now() + timedelta(hours=2)  # a window that is not open now
    window = f"{closed:%H:%M}-{closed + timedelta(minutes=1):%H:%M}"
    cfg = env.config([Path("/nonexistent/ttyFAX9")], sending_window=window)
    cfg_path = str(cfg.source)
    env.faxd(cfg)
    job_id = submit(cfg, "12345678/Waiting")
    job_dir = Path(cfg.spool.directory) / "active" / job_id
    wait_until(lambda: (s := faxd.read_state(job_dir)) and s.rendered, 30, "the job rendered")

    def cli(*argv: str) -> str:
        capsys.readouterr()
        assert main(["--config", cfg_path, *argv]) == 0
        return capsys.readouterr().out

    assert "job held" in cli("jobs", "hold", job_id)
    assert faxd.read_state(job_dir).recipients[0].state == "held"
    assert Store.open(cfg).get_job(job_id).state == "held"
    assert "job queued" in cli("jobs", "release", job_id)
    assert "job queued" in cli("jobs", "retry", job_id)
    status = json.loads(cli("status", "--json"))
    assert status["faxd"]["running"] and status["spool"]["active"] == 1
    assert status["modems"][0]["device"] == "/nonexistent/ttyFAX9"
    assert status["recipients"] == {"pending": 1}  # outside the sending window: no call
    assert "job cancelled" in cli("jobs", "cancel", job_id)
    receipt = wait_until(lambda: capture.parsed("alice@example.com"), 20, "the receipt")[0]
    assert receipt["Subject"].startswith("Fax cancelled")
    assert "(cancelled)" in receipt.get_body(("plain",)).get_content()
    wait_until(lambda: job_state(cfg, job_id) == "cancelled", 10, "cancelled in store")
    assert main(["--config", cfg_path, "jobs", "cancel", job_id]) == 2  # finished: nothing to do


def test_unreadable_job_is_set_aside_not_lost(env) -> None:
    cfg = env.config([])
    env.faxd(cfg)
    root = Path(cfg.spool.directory)
    bogus = root / "tmp" / "20260101T000000000000Z-deadbeef"
    bogus.mkdir(parents=True)
    (bogus / "job.json").write_text('{"version": 1, "id": "x", "recipients": 5}')
    (bogus / "message.eml").write_bytes(b"Subject: x\r\n\r\nbody")
    bogus.rename(root / "incoming" / bogus.name)
    kept = root / "failed" / bogus.name / "message.eml"
    wait_until(kept.exists, 10, "the bad job moved to failed/")
    job_id = submit(cfg, "12345678/After")  # the daemon goes on working
    wait_until(lambda: (root / "active" / job_id / "state.json").exists(), 10, "next job claimed")


def test_document_that_cannot_be_rendered_fails_with_a_receipt(env) -> None:
    capture = env.smtp()
    cfg = env.config([])
    env.faxd(cfg)
    job_id = submit(cfg, "12345678/Broken", pdf=b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage")
    receipt = wait_until(lambda: capture.parsed("alice@example.com"), 30, "the receipt")[0]
    assert receipt["Subject"].startswith("Fax NOT sent")
    body = receipt.get_body(("plain",)).get_content()
    assert "(render_failed)" in body and "doc.pdf: the PDF is damaged" in body
    assert "page 1" not in body and not list(receipt.iter_attachments())  # nothing was sent
    assert job_state(cfg, job_id) == "failed"


def test_a_senders_own_page_limit_fails_a_longer_job_with_a_receipt(env) -> None:
    capture = env.smtp()
    cfg = env.config([])
    with Store.open(cfg) as store:
        store.add_sender("alice@example.com", "Alice", max_pages=2)
    env.faxd(cfg)
    job_id = submit(cfg, "12345678/Long", text="\f".join(f"Page {n}\n" for n in range(1, 4)))
    receipt = wait_until(lambda: capture.parsed("alice@example.com"), 30, "the receipt")[0]
    body = receipt.get_body(("plain",)).get_content()
    assert "(render_failed)" in body and "more than 2 pages" in body
    assert job_state(cfg, job_id) == "failed"


def test_far_end_hangs_up_mid_fax_and_retries_resume(env) -> None:
    devices, _ = env.line(["modem0"], LineOptions(pacing=PACING, hangup_after_page=2))
    capture = env.smtp()
    cfg = env.config(devices)
    env.faxd(cfg)
    text = "\f".join(f"Page {n}\n" for n in range(1, 6))
    job_id = submit(cfg, "12345678/Flaky", text=text)
    wait_until(lambda: capture.parsed("alice@example.com"), 60, "the receipt")
    calls = sorted(read_sidecars(env.tmp / "far"), key=lambda c: c.call)
    assert [c.pages for c in calls] == [2, 2, 1]
    body = check_receipt_basics(receipt_for(capture, job_id), job_id)
    assert "5 of 5" in body and "Attempts:      3" in body and "(ok)" in body


def test_cover_page_per_recipient_documents_rendered_once(env) -> None:
    devices, _ = env.line(["modemA", "modemB"], LineOptions(pacing=PACING))
    capture = env.smtp()
    cfg = env.config(devices, sections="[render]\ncover_page = true")
    running = env.faxd(cfg)
    job_id = submit(cfg, "12345678/Alpha Ltd|Mr Wang;87654321/Beta Co")
    wait_until(lambda: capture.parsed("alice@example.com"), 90, "the receipt")
    job = spool.read_job(spool.find_job(cfg.spool.directory, job_id))
    calls = {c.json["dialled"][-8:]: c.images() for c in read_sidecars(env.tmp / "far")}
    alpha, beta = calls["12345678"], calls["87654321"]
    assert len(alpha) == len(beta) == 4  # cover + 3 document pages
    for idx, got in ((0, alpha), (1, beta)):
        cover = running.daemon.cover_page(job, idx, 4).image
        assert got[0].size == cover.size
        assert ImageChops.difference(got[0].convert("L"), cover.convert("L")).getbbox() is None
    assert ImageChops.difference(alpha[0].convert("L"), beta[0].convert("L")).getbbox()
    for a, b in zip(alpha[1:], beta[1:], strict=True):
        assert ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None
    assert [e.kind for e in Store.open(cfg).events(job_id)].count("rendered") == 1
    assert check_receipt_basics(receipt_for(capture, job_id), job_id).count("4 of 4") == 2


def test_wakes_within_a_second_and_the_rescan_finds_jobs_without_inotify(env) -> None:
    cfg = env.config([], rescan_seconds=300)  # only inotify can be this fast
    env.faxd(cfg)
    root = Path(cfg.spool.directory)
    for n in range(3):
        job_id = submit(cfg, f"1234567{n}/Quick")
        wait_until((root / "active" / job_id / "state.json").exists, 1.0, "claimed within 1 s")
    with pytest.raises(faxd.FaxdRunningError):
        faxd.FaxDaemon(cfg).run()  # one faxd per spool: claims are never shared
    polling_tmp = env.tmp / "polling"
    polling_tmp.mkdir()
    polling = config.load(write_config(polling_tmp, [], env.smtp_port, rescan_seconds=1))
    env.faxd(polling, watch=False)
    job_id = submit(polling, "12345678/Found by rescan")
    found = Path(polling.spool.directory) / "active" / job_id / "state.json"
    wait_until(found.exists, 3.0, "the job found by the periodic rescan")


def test_network_delivery_refused_for_good_falls_back_to_the_phone_number(env) -> None:
    devices, _ = env.line(["modem0"], LineOptions(pacing=PACING))
    capture = env.smtp()
    capture.refuse = {"bob@branch.example", "dan@branch.example"}
    cfg = env.config(devices)
    store = Store.open(cfg)
    store.directory_add("AF90000098", "Bob", "bob@branch.example")
    store.directory_add("AF90000097", "Dan", "dan@branch.example")
    env.faxd(cfg)
    job_id = submit(cfg, "12345678|AF90000098/Bob;AF90000097/Dan")
    receipt = wait_until(lambda: capture.parsed("alice@example.com"), 60, "the receipt")[0]
    (call,) = read_sidecars(env.tmp / "far")
    assert call.ok and call.json["dialled"].endswith("12345678")
    bob, dan = Store.open(cfg).get_job(job_id).recipients
    assert (bob.state, bob.route) == ("sent", "phone")
    assert (dan.state, dan.last_reason) == ("failed", "network_failed")
    assert receipt["Subject"].startswith("Fax partly sent")
    body = check_receipt_basics(receipt, job_id)
    assert "(ok)" in body and "(network_failed)" in body
    events = [(e.kind, e.recipient_idx) for e in Store.open(cfg).events(job_id)]
    assert ("network_failed", 0) in events and ("network_failed", 1) in events


def test_cancel_during_a_call_ends_it_after_the_page_being_sent(env, capsys) -> None:
    devices, _ = env.line(["modem0"], LineOptions(pacing=12))
    capture = env.smtp()
    cfg = env.config(devices)
    env.faxd(cfg)
    text = "\f".join(f"Page {n}\n" + "text line\n" * 30 for n in range(1, 7))
    job_id = submit(cfg, "12345678/Changed Mind", text=text)
    job_dir = Path(cfg.spool.directory) / "active" / job_id
    wait_until(
        lambda: (s := faxd.read_state(job_dir)) and s.recipients[0].pages_confirmed >= 1,
        60,
        "the first page confirmed",
    )
    assert main(["--config", str(cfg.source), "jobs", "cancel", job_id]) == 0
    receipt = wait_until(lambda: capture.parsed("alice@example.com"), 60, "the receipt")[0]
    (call,) = read_sidecars(env.tmp / "far")
    assert call.result == "ok" and 1 <= call.pages < 6, "not ended cleanly at a page boundary"
    assert receipt["Subject"].startswith("Fax cancelled")
    body = receipt.get_body(("plain",)).get_content()
    assert "(cancelled)" in body and f"{call.pages} of 6" in body


def test_a_render_cut_by_the_stop_is_redone_at_the_next_start(env) -> None:
    """``systemctl stop`` signals LibreOffice too: a conversion that dies while faxd
    stops must not fail the job as unreadable."""
    from faxgate.errors import PermanentError

    capture = env.smtp()
    cfg = env.config([])
    converting = threading.Event()

    def killed_converter(job_dir: Path, job: dict[str, Any]) -> list:
        converting.set()
        stopping.wait(10)
        raise PermanentError("doc.odt: LibreOffice could not read the document (signal 15)")

    daemon = faxd.FaxDaemon(cfg, renderer=killed_converter)
    stopping = daemon.stopping
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    job_id = submit(cfg, "12345678/Next Time")
    assert converting.wait(10), "rendering never started"
    daemon.stop()
    thread.join(30)
    assert not thread.is_alive(), "the first faxd did not stop"
    root = Path(cfg.spool.directory)
    wait_until(lambda: faxd.faxd_pid(root) is None, 10, "the first faxd's lock released")
    job_dir = root / "active" / job_id
    state = faxd.read_state(job_dir)
    assert not state.rendered and state.recipients[0].state == "pending"
    env.faxd(cfg)  # the real renderer
    wait_until(
        lambda: (s := faxd.read_state(job_dir)) and s.rendered and s.pages_total == 3,
        30,
        "rendered at the next start",
    )
    assert faxd.read_state(job_dir).recipients[0].state == "pending"
    assert capture.messages == []  # no failure receipt


def test_a_starting_faxd_waits_for_a_predecessor_letting_go_of_the_lock(env) -> None:
    """A dying faxd (or a ``faxgate status`` probe, or a child forked a moment
    ago) can hold ``faxd.lock`` for an instant after the next faxd starts."""
    import fcntl
    import os

    cfg = env.config([])
    root = Path(cfg.spool.directory)
    spool.ensure_layout(root)
    holder = os.open(root / faxd.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.flock(holder, fcntl.LOCK_SH)  # what faxd_pid() takes while it probes
    daemon = faxd.FaxDaemon(cfg)
    ready = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run(ready.set)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert not ready.wait(0.3), "faxd started while the lock was held"
        os.close(holder)
        assert ready.wait(faxd.LOCK_WAIT_SECONDS + 5), f"faxd did not start: {failed}"
        assert faxd.faxd_pid(root) == os.getpid()
    finally:
        daemon.stop()
        thread.join(30)
    assert not thread.is_alive() and not failed


def test_a_high_priority_job_is_dialled_before_an_older_low_priority_one(env) -> None:
    devices, _ = env.line(["modem0"], LineOptions(pacing=PACING))
    capture = env.smtp()
    # A faxd without modems renders both jobs and dials nothing; the faxd started
    # next adopts both before its modem picks the first call, so the order is
    # decided by the queue alone (first in, first out would dial the low one).
    holding = env.config([])
    root = Path(holding.spool.directory)
    first = Running(holding)
    try:
        low = submit(holding, "11111111/Low", text="low priority\n", priority="low")
        high = submit(holding, "22222222/High", text="high priority\n", priority="high")
        for job_dir in (root / "active" / low, root / "active" / high):
            wait_until(
                lambda job_dir=job_dir: (s := faxd.read_state(job_dir)) and s.rendered,
                30,
                f"{job_dir.name} rendered",
            )
    finally:
        first.stop()
    wait_until(lambda: faxd.faxd_pid(root) is None, 10, "the first faxd's lock released")
    assert read_sidecars(env.tmp / "far") == []
    assert spool.list_jobs(root, "active") == sorted([low, high]) == [low, high]
    low_state = faxd.read_state(root / "active" / low)
    assert faxd.read_state(root / "active" / high).priority < low_state.priority
    assert faxd.read_state(root / "active" / high).created >= low_state.created
    env.faxd(env.config(devices))
    wait_until(lambda: len(capture.parsed("alice@example.com")) == 2, 60, "both receipts")
    calls = sorted(read_sidecars(env.tmp / "far"), key=lambda c: c.json["started_at"])
    assert [c.json["dialled"][-8:] for c in calls] == ["22222222", "11111111"]
    assert all(c.ok for c in calls)
    assert calls[0].json["ended_at"] <= calls[1].json["started_at"]  # one modem: one call


def test_no_receipt_to_the_null_sender_or_mailer_daemon(env) -> None:
    """A spool written by hand or an older version may hold such senders: the fax
    still goes out, and no mail is ever sent to them (a receipt could loop)."""
    devices, _ = env.line(["modem0"], LineOptions(pacing=PACING))
    capture = env.smtp()
    cfg = env.config(devices)
    env.faxd(cfg)
    root = Path(cfg.spool.directory)
    null = submit(cfg, "11111111/Null", text="one page\n", sender="")
    daemon = submit(cfg, "22222222/Daemon", text="one page\n", sender="MAILER-DAEMON@mx.example")
    # A control job: receipts do reach the capture server in this very setup.
    control = submit(cfg, "33333333/Control", text="one page\n")
    for job_id in (null, daemon, control):
        wait_until((root / "done" / job_id).is_dir, 90, f"{job_id} in done/")
    for job_id in (null, daemon):
        on_disk = faxd.read_state(root / "done" / job_id)
        assert on_disk.outcome == "done" and on_disk.receipt.state == "not_needed"
    store = Store.open(cfg)
    for job_id in (null, daemon):
        job = store.get_job(job_id)
        assert job.state == "done" and job.receipt_state == "not_needed"
        assert "receipt_not_needed" in [e.kind for e in store.events(job_id)]
    assert store.get_job(null).sender == ""
    assert store.get_job(control).receipt_state == "sent"
    calls = read_sidecars(env.tmp / "far")
    assert sorted(c.json["dialled"][-8:] for c in calls) == ["11111111", "22222222", "33333333"]
    assert all(c.ok for c in calls)
    # Jobs in done/ are out of faxd's hands: whatever was mailed has been mailed.
    assert [rcpts for _, rcpts, _ in capture.messages] == [["alice@example.com"]]
    receipt_for(capture, control)
