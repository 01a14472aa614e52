"""The one-command demo: every real part of faxgate, wired together on loopback.

``run_demo(workdir)`` starts a private Postfix (own config and queue, loopback
only, never the system Postfix), the milter (``faxgate milter``), two
simulated phone lines (``faxgate line``), the fax daemon (``faxgate faxd``)
and a small SMTP capture server that stands in for the demo sender's mailbox.
It registers a demo sender in a fresh store, sends one real e-mail through
Postfix to the fax address (a PDF and a GB18030 Chinese text file, two
recipients in the Subject), prints one line per state change while the faxes
go out, and finishes with where the far end's faxes (TIFF + PNG previews) and
the receipt e-mail are, and the job as ``faxgate jobs show`` prints it.

Every process it starts is stopped again on success, error, Ctrl-C or
SIGTERM; processes left behind by a demo that was killed outright are found
through ``pids.json`` in the work directory and stopped at the next start.
State from an earlier run is removed first, so running it twice works.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import IO, Any

from faxgate.errors import TemporaryError
from faxgate.processes import terminate, wait_until

FAX_ADDRESS = "fax@faxgate.test"
DEMO_SENDER = "demo@example.test"
DEMO_SENDER_NAME = "Demo Sender"
RECEIPT_FROM = "faxgate@faxgate.test"
SUBJECT = "86-755-83235170/金恒科技|张三; 10-666666/李四"
PDF_PAGES = 2
#: The demo's mail renders to this many fax pages: the PDF pages plus one page of text.
EXPECTED_PAGES = PDF_PAGES + 1
DEFAULT_PACING = 12.0
DEFAULT_TIMEOUT = 240.0
#: Seconds each process may take to come up (generous: a busy 2-core machine is slow).
START_TIMEOUT = 60.0
DEVICES = ("modem0", "modem1")
RESULT_FILE = "demo-result.json"
PIDS_FILE = "pids.json"
#: A private Postfix outside the work directory (when the postfix user cannot reach it).
TEMP_POSTFIX_PREFIX = "faxgate-demo-postfix-"
#: What a run leaves in the work directory; only these are removed by the next run.
OWNED_ENTRIES = (
    "faxgate.toml",
    "faxgate.db",
    "faxgate.db-wal",
    "faxgate.db-shm",
    "spool",
    "lines",
    "lock",
    "far-end",
    "previews",
    "mailbox",
    "logs",
    "postfix",
    "outgoing.eml",
    RESULT_FILE,
)

CHINESE_TEXT = """金恒科技 张三先生、李四先生：

您好！这是 faxgate 演示传真的第三页，由一个 GB18030 编码的纯文本附件生成。

订单说明
  一、货品：A4 复印纸 20 箱
  二、交货日期：下周三之前
  三、联系人：王五，电话 0755-83235170

如有疑问，请回复邮件。谢谢！
"""


class DemoError(TemporaryError):
    """A step of the demo failed; the message says which and why."""


@dataclass
class ReceivedFaxSummary:
    """One call as the simulated far end recorded it, plus our PNG previews."""

    device: str
    dialled: str
    result: str
    pages: int
    bit_rate: int
    resolution: str
    tiff: str | None
    previews: list[str]


@dataclass
class DemoResult:
    """What the demo produced, also written to ``demo-result.json`` for scripts and tests."""

    workdir: str
    job_id: str
    job_state: str
    pages_expected: int
    faxes: list[ReceivedFaxSummary] = field(default_factory=list)
    receipt_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "workdir": self.workdir,
            "job_id": self.job_id,
            "job_state": self.job_state,
            "pages_expected": self.pages_expected,
            "faxes": [vars(fax) for fax in self.faxes],
            "receipt_path": self.receipt_path,
        }


# ---------------------------------------------------------------- the demo mail


def demo_pdf(pages: int = PDF_PAGES) -> bytes:
    """A small A4 PDF drawn with Pillow: text in Latin and Chinese, lines, a box."""
    from PIL import Image, ImageDraw

    from faxgate.render import fonts

    dpi = 100
    width, height = int(8.27 * dpi), int(11.69 * dpi)
    title, body = fonts.sans(36, bold=True), fonts.sans(20)
    images = []
    for number in range(1, pages + 1):
        page = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(page)
        draw.text((60, 60), f"faxgate demo — page {number} of {pages}", font=title, fill=0)
        draw.text((60, 120), "报价单 / Quotation", font=title, fill=0)
        draw.line((60, 180, width - 60, 180), fill=0, width=3)
        rows = [
            ("A4 复印纸 copy paper", "20 箱", "¥ 3,600"),
            ("墨盒 ink cartridge", "4 个", "¥ 960"),
        ]
        for i, (item, qty, price) in enumerate(rows):
            y = 220 + i * 50
            draw.text((70, y), item, font=body, fill=0)
            draw.text((470, y), qty, font=body, fill=0)
            draw.text((620, y), price, font=body, fill=0)
        draw.rectangle((60, 360, width - 60, 560), outline=0, width=3)
        for i in range(12):
            draw.ellipse((90 + i * 55, 400, 130 + i * 55, 520), outline=0, width=2)
        draw.text((60, height - 100), "深圳市金恒科技有限公司", font=body, fill=0)
        images.append(page)
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=dpi, save_all=True, append_images=images[1:])
    return out.getvalue()


def demo_message(sender: str = DEMO_SENDER, fax_address: str = FAX_ADDRESS) -> EmailMessage:
    """The mail a user would write: Subject names the recipients, attachments are the fax."""
    msg = EmailMessage()
    msg["From"] = f"{DEMO_SENDER_NAME} <{sender}>"
    msg["To"] = fax_address
    msg["Subject"] = SUBJECT
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    msg.set_content("Please fax the attached quotation and order notes.\n请传真附件。\n")
    msg.add_attachment(
        demo_pdf(), maintype="application", subtype="pdf", filename="quotation-报价单.pdf"
    )
    msg.add_attachment(
        CHINESE_TEXT.encode("gb18030"),
        maintype="text",
        subtype="plain",
        filename="订单说明.txt",
        params={"charset": "gb18030"},
    )
    return msg


# ---------------------------------------------------------------- small helpers


def _postfix_can_use(path: Path) -> bool:
    """Whether a Postfix instance can live at ``path``: the postfix user must reach it
    (every ancestor has o+x) and Postfix's shell scripts break on spaces and quotes."""
    plain = re.fullmatch(r"[\w./+-]+", str(path), re.ASCII) is not None
    return plain and all(p.stat().st_mode & 0o001 for p in path.parents if p.exists())


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_until(predicate, timeout, what, DemoError, interval=0.1)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _stop_leftovers(workdir: Path) -> None:
    """Stop processes of an earlier demo here that was killed before it could clean up.

    A PID counts only while its command line still names this work directory,
    so a recycled PID of some unrelated process is never touched."""
    try:
        recorded = json.loads((workdir / PIDS_FILE).read_text())
    except (OSError, ValueError):
        recorded = {}
    for pid in recorded.get("pids", []):
        try:
            cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if str(workdir).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    from faxgate.postfix_instance import PostfixInstance

    for stale in {workdir / "postfix", Path(recorded.get("postfix") or workdir / "postfix")}:
        if (stale / "etc" / "main.cf").exists():
            PostfixInstance(stale, smtp_port=0).stop()
        if stale.name.startswith(TEMP_POSTFIX_PREFIX):
            shutil.rmtree(stale, ignore_errors=True)


def _clean(workdir: Path) -> None:
    for name in OWNED_ENTRIES:
        path = workdir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


class Mailbox:
    """An SMTP server on loopback standing in for the demo sender's mailbox.

    Postfix relays the demo's outgoing mail here (receipts to the demo sender);
    each message is kept as ``NNNN.eml``."""

    def __init__(self, directory: Path) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError:
            raise DemoError(
                "the demo needs aiosmtpd for its mailbox: run `bash scripts/bootstrap.sh` "
                "(or pip install aiosmtpd)"
            ) from None
        from faxgate.postfix_instance import free_port

        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self._lock:
            self._count += 1
            path = self.directory / f"{self._count:04d}.eml"
        path.write_bytes(bytes(envelope.content))
        return "250 OK: stored"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def find(self, header: str, value: str) -> tuple[Path, EmailMessage] | None:
        for path in sorted(self.directory.glob("*.eml")):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if msg.get(header) == value:
                return path, msg  # type: ignore[return-value]
        return None


class Faxd:
    """``faxgate faxd`` as a child process; ready once it prints ``READY faxd``."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "faxgate.cli", "--config", str(self.config_path), "faxd"],
                cwd=self.config_path.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise DemoError(
                    f"faxd exited with {self.process.returncode}:\n{_tail(self.log_path)}"
                )
            return "READY faxd" in self.log_path.read_text(errors="replace")

        _wait_for(ready, timeout, "faxd to start")

    def stop(self, timeout: float = 20.0) -> None:
        terminate(self.process, timeout)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the clean-up in ``finally`` runs."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------- configuration


def write_config(workdir: Path, smtp_port: int, pacing: float) -> Path:
    """The demo's faxgate.toml: the embedded defaults, fast retries, files under workdir."""

    def path(*parts: str) -> str:  # a TOML string (JSON's escapes are valid TOML)
        return json.dumps(str(workdir.joinpath(*parts)))

    modems = ", ".join(path("lines", name) for name in DEVICES)
    retry = max(1.0, 60.0 / pacing)
    text = f"""\
# Written by `faxgate demo`; every key is explained in deploy/faxgate.toml.example.
[dialplan]
country_code = "86"
area_code = "755"
international_prefix = "00"
national_prefix = "0"

[store]
path = {path("faxgate.db")}

[spool]
directory = {path("spool")}

[milter]
fax_addresses = ["{FAX_ADDRESS}"]

[fax]
station_id = "+86 755 00000000"
modems = [{modems}]
lock_dir = {path("lock")}

[faxd]
rescan_seconds = 5
busy_retry_seconds = {retry}
no_answer_retry_seconds = {retry}
no_carrier_retry_seconds = {retry}
protocol_error_retry_seconds = {retry}

[smtp]
host = "127.0.0.1"
port = {smtp_port}
starttls = "off"
timeout_seconds = 10.0

[receipts]
from_address = "{RECEIPT_FROM}"
retry_seconds = 2.0
"""
    path = workdir / "faxgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- progress


def _recipient_label(r: Any) -> str:
    number = "-".join(part for part in (r.country, r.area, r.number) if part)
    names = "|".join(name for name in (r.name1, r.name2) if name)
    return f"{number}/{names}" if names else number


def _recipient_status(r: Any) -> str:
    pages = f"{r.pages_confirmed}/{r.pages_total if r.pages_total is not None else '?'}"
    text = f"{r.state}, pages {pages}, dials {r.dials}"
    if r.last_reason:
        text += f", last: {r.last_reason}"
    if r.remote_ident:
        text += f", far end {r.remote_ident.strip()}"
    return text


def _watch_job(store: Any, job_id: str, out: IO[str], started: float, timeout: float) -> Any:
    """Print one line per change of the job or a recipient until the receipt is out."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        job = store.get_job(job_id)
        if job is not None:
            lines = {"job": f"job {job.id}: {job.state}, receipt {job.receipt_state}"}
            for r in job.recipients:
                lines[f"r{r.idx}"] = f"  #{r.idx} {_recipient_label(r)}: {_recipient_status(r)}"
            for key, text in lines.items():
                if seen.get(key) != text:
                    seen[key] = text
                    print(f"[{time.monotonic() - started:6.1f}s] {text}", file=out, flush=True)
            if job.final and job.receipt_state != "pending":
                return job
        if time.monotonic() >= deadline:
            raise DemoError(f"job {job_id} not finished after {timeout:.0f} s (see faxd.log)")
        time.sleep(0.2)


# ---------------------------------------------------------------- far end


def _previews(fax: Any, directory: Path) -> list[str]:
    """PNG previews of every received page, stretched to square pixels."""
    from PIL import Image

    stretch = {"standard": 2.0, "fine": 1.0, "superfine": 0.5}.get(fax.resolution, 1.0)
    paths = []
    for number, page in enumerate(fax.images(), start=1):
        height = max(1, round(page.height * stretch))
        image = page.convert("L").resize((page.width, height), Image.Resampling.BOX)
        path = directory / f"{fax.tiff.stem}-page{number}.png"
        image.save(path, optimize=True)
        paths.append(str(path))
    return paths


def _collect_faxes(far_dir: Path, previews_dir: Path) -> list[ReceivedFaxSummary]:
    from faxgate.simline import read_sidecars

    previews_dir.mkdir(parents=True, exist_ok=True)
    return [
        ReceivedFaxSummary(
            device=fax.device,
            dialled=str(fax.json.get("dialled", "")),
            result=fax.result,
            pages=fax.pages,
            bit_rate=fax.bit_rate,
            resolution=fax.resolution,
            tiff=str(fax.tiff) if fax.tiff else None,
            previews=_previews(fax, previews_dir) if fax.tiff else [],
        )
        for fax in read_sidecars(far_dir)
    ]


# ---------------------------------------------------------------- report


def _print_report(
    result: DemoResult, receipt: EmailMessage, config_path: Path, out: IO[str]
) -> None:
    def heading(text: str) -> None:
        print(f"\n=== {text} ===", file=out)

    heading(f"Faxes received by the far end ({len(result.faxes)} calls)")
    for fax in result.faxes:
        print(
            f"{fax.device} dialled {fax.dialled}: {fax.result}, {fax.pages} page(s), "
            f"{fax.bit_rate} bit/s, {fax.resolution}",
            file=out,
        )
        print(f"  TIFF: {fax.tiff}", file=out)
        for preview in fax.previews:
            print(f"  PNG:  {preview}", file=out)
    heading(f"Receipt e-mail (stored as {result.receipt_path})")
    for name in ("From", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "Auto-Submitted"):
        if receipt[name] is not None:
            print(f"{name}: {receipt[name]}", file=out)
    print(f"X-Faxgate-Job: {receipt['X-Faxgate-Job']}", file=out)
    attachments = [
        f"{part.get_filename() or '(unnamed)'} ({part.get_content_type()})"
        for part in receipt.iter_attachments()
    ]
    print(f"Attachments: {', '.join(attachments) or 'none'}", file=out)
    body = receipt.get_body(("plain",))
    print("", file=out)
    print(body.get_content().rstrip() if body is not None else "(no text part)", file=out)
    heading(f"faxgate jobs show {result.job_id}")
    out.flush()
    from faxgate import cli

    with contextlib.redirect_stdout(out):
        cli.main(["--config", str(config_path), "jobs", "show", result.job_id])
    print(
        f"\nEverything is under {result.workdir}; the processes are stopped. Look around with\n"
        f"  faxgate --config {config_path} jobs list\n"
        f"  faxgate --config {config_path} senders list",
        file=out,
    )


# ---------------------------------------------------------------- the run


def _send(port: int, msg: EmailMessage) -> str:
    """Submit the demo mail over SMTP; returns Postfix's reply to DATA."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo("client.example.test")
            client.mail(DEMO_SENDER)
            code, reply = client.rcpt(FAX_ADDRESS)
            if code not in (250, 251):
                raise DemoError(f"Postfix refused RCPT TO {FAX_ADDRESS}: {code} {reply!r}")
            code, reply = client.data(msg.as_bytes(policy=email.policy.SMTP))
    except smtplib.SMTPResponseException as exc:
        raise DemoError(
            f"the fax mail was refused: {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DemoError(f"cannot send the fax mail to Postfix on port {port}: {exc}") from None
    return f"{code} {reply.decode(errors='replace')}"


def run_demo(
    workdir: str | os.PathLike[str],
    *,
    pacing: float = DEFAULT_PACING,
    timeout: float = DEFAULT_TIMEOUT,
    out: IO[str] | None = None,
) -> DemoResult:
    """Run the whole demo in ``workdir``; DemoError (with the reason) if a step fails."""
    out = out or sys.stdout
    if os.geteuid() != 0:
        raise DemoError(
            "the demo starts a private Postfix, which must be started as root: "
            "run `sudo bash scripts/demo.sh` (the system Postfix is not touched)"
        )
    if not Path("/usr/sbin/postfix").exists():
        raise DemoError("Postfix is not installed: run `bash scripts/bootstrap.sh`")
    root = Path(workdir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    _stop_leftovers(root)
    _clean(root)
    with _terminate_as_interrupt():
        return _run(root, pacing, timeout, out)


def _run(root: Path, pacing: float, timeout: float, out: IO[str]) -> DemoResult:
    from faxgate import config
    from faxgate.postfix_instance import MilterProcess, PostfixError, PostfixInstance, free_port
    from faxgate.simline import LineError, LineOptions
    from faxgate.simline.process import LineProcess
    from faxgate.store import Store

    started = time.monotonic()

    def step(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", file=out, flush=True)

    logs = root / "logs"
    for name in ("logs", "lines", "lock", "far-end"):
        (root / name).mkdir(parents=True, exist_ok=True)
    private_postfix = None
    if _postfix_can_use(root / "postfix"):
        postfix_dir = root / "postfix"
    else:  # use a temporary directory Postfix can work with
        postfix_dir = private_postfix = Path(tempfile.mkdtemp(prefix=TEMP_POSTFIX_PREFIX))
    smtp_port = free_port()
    config_path = write_config(root, smtp_port, pacing)
    cfg = config.load(config_path)
    mailbox = Mailbox(root / "mailbox")
    lines = LineProcess(
        [root / "lines" / name for name in DEVICES],
        root / "far-end",
        LineOptions(pacing=pacing),
        timeout=START_TIMEOUT,
    )
    milter = MilterProcess(config_path, free_port(), logs / "milter.log")
    mta = PostfixInstance(
        postfix_dir,
        smtp_port=smtp_port,
        relay=("127.0.0.1", mailbox.port),
        milter=milter.postfix_address,
        settings={"myhostname": "faxgate.test"},
    )
    faxd = Faxd(config_path, logs / "faxd.log")
    stoppers: list[Callable[[], Any]] = []

    def record_pids() -> None:
        processes = (lines.process, milter.process, faxd.process)
        pids = [p.pid for p in processes if p is not None]
        (root / PIDS_FILE).write_text(json.dumps({"pids": pids, "postfix": str(postfix_dir)}))

    record_pids()
    try:
        step(f"work directory {root}")
        store = Store.open(cfg)
        store.add_sender(DEMO_SENDER, DEMO_SENDER_NAME)
        step(f"registered sender {DEMO_SENDER} in a fresh store ({cfg.store.path})")
        mailbox.start()
        stoppers.append(mailbox.stop)
        step(f"mailbox for {DEMO_SENDER}'s receipts: SMTP capture on 127.0.0.1:{mailbox.port}")
        stoppers.append(lines.stop)
        try:
            lines.start()
        except LineError as exc:
            raise DemoError(f"simulated lines did not start: {exc}\n{lines.stderr()}") from None
        record_pids()
        step(f"simulated lines {', '.join(lines.devices)} at {pacing:g}x real time")
        stoppers.append(milter.stop)
        try:
            milter.start(START_TIMEOUT)
        except PostfixError as exc:
            raise DemoError(str(exc)) from None
        record_pids()
        step(f"milter on {milter.postfix_address} (log {milter.log_path})")
        stoppers.append(mta.stop)
        try:
            mta.start(START_TIMEOUT)
        except PostfixError as exc:
            raise DemoError(f"private Postfix did not start: {exc}") from None
        step(f"private Postfix on 127.0.0.1:{smtp_port} (config {mta.config_dir})")
        stoppers.append(faxd.stop)
        faxd.start(START_TIMEOUT)
        record_pids()
        step(f"faxd with {len(DEVICES)} modems (log {faxd.log_path})")

        msg = demo_message()
        (root / "outgoing.eml").write_bytes(msg.as_bytes(policy=email.policy.SMTP))
        step(f"sending mail to {FAX_ADDRESS}: Subject {SUBJECT}")
        reply = _send(smtp_port, msg)
        step(f"Postfix accepted it: {reply}")
        message_id = msg["Message-ID"]
        job = _wait_for(
            lambda: store.find_job(DEMO_SENDER, message_id), 30, "the milter to record the job"
        )
        job = _watch_job(store, job.id, out, started, timeout)
        found = _wait_for(
            lambda: mailbox.find("X-Faxgate-Job", job.id), 60, "the receipt in the mailbox"
        )
        receipt_path, receipt = found
        step("done; stopping the demo's processes")
        result = DemoResult(
            workdir=str(root),
            job_id=job.id,
            job_state=job.state,
            pages_expected=EXPECTED_PAGES,
            faxes=_collect_faxes(root / "far-end", root / "previews"),
            receipt_path=str(receipt_path),
        )
        (root / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        _print_report(result, receipt, config_path, out)
        if job.state != "done":
            raise DemoError(f"job {job.id} ended {job.state}, not done (see {logs / 'faxd.log'})")
        return result
    except DemoError:
        for log in (logs / "faxd.log", logs / "milter.log", mta.log_file):
            if log.exists():
                print(f"--- last lines of {log}:\n{_tail(log)}", file=out, flush=True)
        raise
    finally:
        for stop in reversed(stoppers):
            with contextlib.suppress(Exception):
                stop()
        if private_postfix is not None:
            shutil.rmtree(private_postfix, ignore_errors=True)
        with contextlib.suppress(OSError):
            (root / PIDS_FILE).unlink()
