"""The fax daemon: takes spooled jobs, dials them out, retries, sends receipts.

Threads, all sharing one lock (``FaxDaemon.cond``) around the queue state:

- the main thread waits on inotify (``incoming/`` and ``control/``) with a
  periodic rescan, claims new jobs (rename ``incoming/<id>`` → ``active/<id>``),
  applies admin requests and expires old jobs;
- a render thread turns each job's documents into pages once, in a child
  process (a decoder crash fails the job, not faxd), and keeps them as
  ``pages.tif`` (TIFF-F) in the job directory;
- one thread per modem takes the most urgent due recipient and places the call;
- a mail thread delivers network-number recipients and sends receipts.

Disk is the truth. Each active job directory holds ``state.json`` (a
:class:`~faxgate.faxd.queue.JobProgress`), rewritten atomically (temp file,
fsync, rename, fsync of the directory) after every change: before a dial
(so the dial counts even if faxd dies), after every page the far end confirms,
after each call and mail. The store is a mirror for admins and history. After
a crash a restart finds every job in ``active/``; recipients left ``dialing``
are due again and resume at their first unconfirmed page. The one page that
can reach the far end twice is one it accepted while faxd died before reading
its confirmation (MCF); confirmed pages are never sent again.

Admin requests (``faxgate jobs cancel|retry|hold|release``) are files in
``control/`` that the main thread applies and removes, so faxd stays the only
writer of ``state.json``. Only one faxd runs per spool (``faxd.lock``, flock).

SIGTERM (``systemctl stop``): no new call or mail starts; a call in progress
finishes if its remaining pages fit in ``[faxd] stop_grace_seconds`` at its
pace so far, otherwise it ends cleanly after the page being sent (EOP, the far
end's MCF, DCN) and the next start resumes at the following page. Once the
grace time is over every call still running ends that way.

Cover pages: documents are rendered once per job; ``pages.tif`` starts with
the first recipient's cover page, and every other recipient's call (or network
mail) replaces that one page with a cover page naming it.

Receipts are sent at most once per job except for one window: faxd records
"sending" with a stable Message-ID before the SMTP conversation, so if it dies
after the server accepted the receipt but before ``sent`` is written, the
receipt is sent again after the restart, with the same Message-ID (mail
systems and clients that de-duplicate by Message-ID show it once).
"""

from __future__ import annotations

import contextlib
import ctypes
import email
import email.policy
import fcntl
import json
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faxgate.durable import fsync_dir, replace_atomically
from faxgate.errors import (
    FaxgateError,
    InputError,
    NotFoundError,
    PermanentError,
    TemporaryError,
)
from faxgate.faxd import queue as q
from faxgate.faxd import spool
from faxgate.faxd.mailout import MailPermanentError, MailTemporaryError, send_mail
from faxgate.faxd.page import FaxPage
from faxgate.faxd.sender import ImagePages

if TYPE_CHECKING:
    from faxgate.store import Sender, SenderLimits

log = logging.getLogger("faxgate.faxd")

STATE_FILE = "state.json"
PAGES_FILE = "pages.tif"
CONTROL_DIR = "control"
STATUS_FILE = "faxd-status.json"
LOCK_FILE = "faxd.lock"
#: How long a starting faxd waits for ``faxd.lock`` before it concludes that
#: another faxd serves the spool.
LOCK_WAIT_SECONDS = 3.0
ACTIONS = ("cancel", "retry", "hold", "release")
PRIORITY_OFFSETS = {"high": -64, "normal": 0, "low": 64}

#: Time for rasterising one document on top of its LibreOffice conversion; a
#: render that outlasts all of them is taken for a hang on a hostile file.
RENDER_SECONDS_PER_DOCUMENT = 120.0

#: Without a measured page time, what one page is assumed to take (fine, 9600 bit/s).
ESTIMATED_PAGE_SECONDS = 30.0


class StoppablePages(ImagePages):
    """A call's pages whose count can shrink while the call runs: the T.30 sender
    reads ``count`` when it chooses MPS or EOP after each page and before the
    next one, so :meth:`end_after` makes the call end cleanly at a page boundary
    (EOP or MCF, then DCN) instead of being cut mid-page."""

    def __init__(self, pages: list[FaxPage]) -> None:
        super().__init__(pages)
        self.limit: int | None = None

    @property
    def count(self) -> int:
        total = super().count
        return total if self.limit is None else min(total, self.limit)

    def end_after(self, pages: int) -> None:
        """Send no page with index ``pages`` or beyond (at least one page is sent)."""
        self.limit = max(1, pages)


@dataclass
class CallInProgress:
    """What faxd knows of a running call, to decide how to stop it."""

    job_id: str
    idx: int
    pages: StoppablePages
    total: int
    first_page: int
    confirmed: int  # absolute count of pages confirmed so far
    started: float = field(default_factory=time.monotonic)

    def remaining_seconds(self, now: float) -> float:
        """Estimated time to send the rest: pages left times the time per page so
        far in this call (setup included, so rather too long than too short)."""
        done = self.confirmed - self.first_page
        per_page = (now - self.started) / done if done > 0 else ESTIMATED_PAGE_SECONDS
        return (self.total - self.confirmed) * per_page

    def end_after_current_page(self) -> None:
        self.pages.end_after(self.confirmed + 1)

    @property
    def ended_early(self) -> bool:
        return self.pages.limit is not None and self.pages.limit < self.total


#: Places a call: ``(device, dial, pages, first_page, on_page_confirmed) -> CallResult``;
#: ``on_page_confirmed(next_page)`` gets the absolute count of pages confirmed.
Dialer = Callable[[str, str, StoppablePages, int, Callable[[int], None]], Any]


class FaxdRunningError(TemporaryError):
    """Another faxd already serves this spool."""


def read_state(job_dir: Path) -> q.JobProgress | None:
    try:
        data = json.loads((job_dir / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return q.JobProgress.from_dict(data)


def request_action(spool_dir: str | os.PathLike[str], job_id: str, action: str) -> Path:
    """Ask the running (or next) faxd to apply ``action`` to a job; the request
    file is removed once applied."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    control = Path(spool_dir) / CONTROL_DIR
    control.mkdir(parents=True, exist_ok=True)
    path = control / f"{job_id}.{action}.{time.time_ns()}"
    replace_atomically(path, b"")
    return path


def faxd_pid(spool_dir: str | os.PathLike[str]) -> int | None:
    """The pid of the faxd serving this spool, or None if none is running (the
    lock file is held with flock for the daemon's lifetime)."""
    path = Path(spool_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None


def control_job(cfg: Any, job_id: str, action: str, wait: float = 10.0) -> str:
    """``faxgate jobs cancel|retry|hold|release``: hand the request to faxd, wait up
    to ``wait`` seconds for it to be applied, and say what happened."""
    root = Path(cfg.spool.directory)
    job_dir = spool.find_job(root, job_id)
    if job_dir is None:
        raise NotFoundError(f"no job {job_id} in spool {root}")
    state_dir = job_dir.parent.name
    if state_dir in ("done", "failed"):
        raise InputError(f"job {job_id} is finished ({state_dir}); nothing to {action}")
    request = request_action(root, job_id, action)
    if faxd_pid(root) is None:
        return f"{action} requested for job {job_id}; faxd is not running and applies it at start"
    deadline = time.monotonic() + wait
    while request.exists():
        if time.monotonic() >= deadline:
            return f"{action} requested for job {job_id}; faxd has not applied it yet"
        time.sleep(0.05)
    found = spool.find_job(root, job_id)
    progress = read_state(found) if found is not None else None
    if progress is None:
        return f"{action} applied to job {job_id}"
    states = ", ".join(f"{r.idx}:{r.state}" for r in progress.recipients)
    return f"{action} applied to job {job_id}: job {progress.outcome}; recipients {states}"


def _timestamp(created: Any, fallback: float) -> float:
    if isinstance(created, int | float):
        return float(created)
    if isinstance(created, str) and created:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    return fallback


# ---------------------------------------------------------------- inotify


class Inotify:
    """Linux inotify through ctypes: a file descriptor that becomes readable when
    a watched directory gains an entry. Events are drained, not parsed: any
    event means "rescan"."""

    IN_CREATE = 0x100
    IN_MOVED_TO = 0x80
    IN_CLOSE_WRITE = 0x8

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")

    def watch(self, path: Path) -> None:
        mask = self.IN_CREATE | self.IN_MOVED_TO | self.IN_CLOSE_WRITE
        if self._add_watch(self.fd, os.fsencode(path), mask) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                pass

    def close(self) -> None:
        os.close(self.fd)


# ---------------------------------------------------------------- runtime


@dataclass
class ActiveJob:
    """A claimed job in memory: its spool data, queue state and pages."""

    job_dir: Path
    job: dict[str, Any]
    progress: q.JobProgress
    pages: list[FaxPage] | None = None
    busy: set[int] = field(default_factory=set)  # recipients in a call or mail now
    mail_busy: bool = False
    mail_retry_at: float = 0.0  # after an unexpected failure of its receipt or move
    render_retry_at: float = 0.0

    @property
    def job_id(self) -> str:
        return self.progress.job_id


@dataclass
class ModemStatus:
    device: str
    state: str = "idle"  # idle | calling | error | stopped
    job_id: str | None = None
    recipient: int | None = None
    since: float = 0.0
    calls: int = 0
    last_error: str = ""


class FaxDaemon:
    """One faxd serving one spool. ``dialer`` and ``renderer`` default to the
    real Class 1 sender and the renderer."""

    def __init__(
        self,
        cfg: Any,
        *,
        dialer: Dialer | None = None,
        renderer: Callable[[Path, dict[str, Any]], list[FaxPage]] | None = None,
        watch: bool = True,
    ) -> None:
        self.cfg = cfg
        self.watch = watch  # False: find new jobs by the periodic rescan only (a baseline)
        self.root = Path(cfg.spool.directory)
        self.policy = q.RetryPolicy.from_config(cfg.faxd)
        self.dialer = dialer or self._default_dialer
        self.renderer = renderer or self._default_renderer
        self.own_renderer = renderer is None  # it puts a cover page first if configured
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.jobs: dict[str, ActiveJob] = {}
        self.modems = [ModemStatus(device) for device in cfg.fax.modems]
        self.calls: dict[str, CallInProgress] = {}  # by device
        self.render_queue: list[str] = []
        self._store: Any = None
        self._wake_r, self._wake_w = os.pipe()
        self._lock_fd: int | None = None
        self.started = time.time()

    # ------------------------------------------------------------ store mirror

    @property
    def store(self) -> Any:
        if self._store is None:
            from faxgate.store import Store

            self._store = Store.open(self.cfg)
        return self._store

    def _mirror(self, call: str, *args: Any, **kwargs: Any) -> None:
        """Write to the store; its failure must never stop faxes (disk is truth)."""
        try:
            getattr(self.store, call)(*args, **kwargs)
        except (FaxgateError, OSError) as exc:
            log.warning("store %s failed: %s", call, exc)

    def _event(self, aj: ActiveJob, kind: str, detail: str, idx: int | None = None) -> None:
        p = aj.progress
        where = f"job {p.job_id}" + (f" rcpt {idx}" if idx is not None else "")
        log.info("%s queue-id %s: %s %s", where, p.queue_id or "-", kind, detail)
        self._mirror(
            "add_event",
            kind,
            detail,
            job_id=p.job_id,
            recipient_idx=idx,
            queue_id=p.queue_id or None,
            sender=p.sender or None,
        )

    def _save(self, aj: ActiveJob, *recipients: q.RecipientProgress) -> None:
        """Persist the job state, then mirror the job and ``recipients``."""
        p = aj.progress
        data = json.dumps(p.to_dict(), ensure_ascii=False, indent=1).encode("utf-8")
        replace_atomically(aj.job_dir / STATE_FILE, data)
        receipt_state = {"sent": "sent", "not_needed": "not_needed", "refused": "not_needed"}
        self._mirror(
            "update_job",
            p.job_id,
            state=p.outcome,
            pages_total=p.pages_total or None,
            receipt_state=receipt_state.get(p.receipt.state, "pending"),
            receipt_sent_at=p.receipt.sent_at,
        )
        for rec in recipients:
            self._mirror(
                "update_recipient",
                p.job_id,
                rec.idx,
                state=rec.state,
                route=rec.route,
                pages_confirmed=rec.pages_confirmed,
                pages_total=rec.pages_total or None,
                dials=rec.dials,
                tries=rec.tries,
                next_try=rec.next_try if rec.state == q.PENDING else None,
                last_reason=rec.last_reason,
                last_error=rec.last_error[:200] or None,
                remote_ident=rec.remote_ident or None,
                bitrate=rec.bitrate,
                resolution=rec.resolution,
                line_seconds=rec.line_seconds,
            )

    # ------------------------------------------------------------ claiming

    def _lock_spool(self) -> None:
        """Take ``faxd.lock``, waiting up to :data:`LOCK_WAIT_SECONDS` for a holder
        that is letting go: a predecessor still winding down, a ``faxgate status``
        probe (shared lock), a child forked that has not yet exec'd."""
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise FaxdRunningError(
                        f"another faxd is running on spool {self.root}"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _priority(self, job: dict[str, Any]) -> int:
        base = self.cfg.faxd.default_priority
        value = job.get("priority", "normal")
        if isinstance(value, int) and not isinstance(value, bool):
            return max(0, min(255, value))
        return max(0, min(255, base + PRIORITY_OFFSETS.get(str(value), 0)))

    def _route(self, recipient: dict[str, Any]) -> str | None:
        network = recipient.get("network")
        if network:
            entry = None
            try:
                entry = self.store.directory_get(network)
            except (FaxgateError, OSError) as exc:
                log.warning("directory lookup of %s failed: %s", network, exc)
            if entry is not None:
                return q.ROUTE_NETWORK
        if recipient.get("dial") or recipient.get("number"):
            return q.ROUTE_PHONE
        return None

    def _adopt(self, job_dir: Path) -> None:
        """Load (or start) the queue state of a job in ``active/``."""
        job = spool.read_job(job_dir)
        progress = read_state(job_dir)
        now = time.time()
        created = _timestamp(job.get("created"), now)
        aj: ActiveJob
        if progress is None:
            routes = [self._route(r) for r in job["recipients"]]
            progress = q.new_job(
                job["id"],
                created,
                [r or q.ROUTE_PHONE for r in routes],
                self.policy,
                priority=self._priority(job),
                queue_id=str(job.get("queue_id") or ""),
                sender=str(job.get("sender") or ""),
            )
            if self.cfg.receipts.acceptance_notice:
                progress.acceptance = q.MailProgress(state="pending", next_try=now)
            aj = ActiveJob(job_dir, job, progress)
            self._mirror("record_job", self._store_record(job, progress))
            for rec, route in zip(progress.recipients, routes, strict=True):
                if route is None:
                    rec.last_error = "no phone number and an unknown network number"
                    rec.state, rec.last_reason, rec.finished_at = q.FAILED, "no_route", now
            self._save(aj, *progress.recipients)
            self._event(aj, "claimed", f"{len(progress.recipients)} recipient(s)")
        else:
            aj = ActiveJob(job_dir, job, progress)
            resumed = q.recover_after_crash(progress, now)
            self._mirror("record_job", self._store_record(job, progress))
            self._save(aj, *progress.recipients)
            for rec in resumed:
                if rec.state == q.SENT:
                    self._event(aj, "sent", "every page was confirmed before the restart", rec.idx)
                else:
                    self._event(aj, "resumed", f"from page {rec.pages_confirmed + 1}", rec.idx)
        with self.cond:
            self.jobs[aj.job_id] = aj
            if not progress.rendered:
                self.render_queue.append(aj.job_id)
            self.cond.notify_all()

    @staticmethod
    def _store_record(job: dict[str, Any], progress: q.JobProgress) -> dict[str, Any]:
        return {
            "id": job["id"],
            "sender": job.get("sender") or "",
            "subject": job.get("subject") or "",
            "message_id": job.get("message_id") or None,
            "queue_id": job.get("queue_id") or None,
            "priority": progress.priority,
            "created": progress.created,
            "documents": [str(d.get("filename") or "") for d in job.get("documents", [])],
            "recipients": [
                {**r, "route": rec.route}
                for r, rec in zip(job["recipients"], progress.recipients, strict=True)
            ],
        }

    def _claim_incoming(self) -> None:
        for job_id in spool.list_jobs(self.root, "incoming"):
            job_dir = spool.claim(self.root, job_id)
            if job_dir is None:
                continue
            try:
                self._adopt(job_dir)
            except (FaxgateError, OSError, KeyError, TypeError, ValueError) as exc:
                log.error("job %s: unusable spool entry, moved to failed/: %s", job_id, exc)
                spool.move(self.root, job_id, "active", "failed")

    def _recover_active(self) -> None:
        """Adopt jobs in ``active/`` that are not in memory (after a restart).
        Holds the lock so a job being finished cannot be seen half-moved."""
        with self.cond:
            for job_id in spool.list_jobs(self.root, "active"):
                if job_id in self.jobs:
                    continue
                try:
                    self._adopt(self.root / "active" / job_id)
                except (FaxgateError, OSError, KeyError, TypeError, ValueError) as exc:
                    log.error("job %s: cannot resume, moved to failed/: %s", job_id, exc)
                    spool.move(self.root, job_id, "active", "failed")

    # ------------------------------------------------------------ admin requests

    def _apply_controls(self) -> None:
        control = self.root / CONTROL_DIR
        for name in sorted(os.listdir(control)):
            if name.startswith("."):
                continue
            path = control / name
            job_id, _, rest = name.partition(".")
            action = rest.partition(".")[0]
            self._apply_control(job_id, action)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _apply_control(self, job_id: str, action: str) -> None:
        if job_id not in self.jobs and spool.claim(self.root, job_id) is not None:
            self._adopt(self.root / "active" / job_id)
        now = time.time()
        with self.cond:
            aj = self.jobs.get(job_id)
            if aj is None or action not in ACTIONS:
                log.warning("ignoring request %s for job %s: no such active job", action, job_id)
                return
            p = aj.progress
            changed = {
                "cancel": lambda: q.cancel(p, now),
                "retry": lambda: q.retry_now(p, now),
                "hold": lambda: q.hold(p),
                "release": lambda: q.release(p, now),
            }[action]()
            self._save(aj, *changed)
            for rec in changed:
                self._event(aj, action, f"now {rec.state}", rec.idx)
            if action == "cancel":
                for call in self.calls.values():
                    if call.job_id == job_id and p.recipients[call.idx].cancel_requested:
                        call.end_after_current_page()
                        self._event(
                            aj, "cancel", f"call ends after page {call.confirmed + 1}", call.idx
                        )
            self.cond.notify_all()

    # ------------------------------------------------------------ housekeeping

    def _expire(self) -> None:
        now = time.time()
        with self.cond:
            for aj in list(self.jobs.values()):
                ended = q.expire(aj.progress, now, aj.busy)
                if ended:
                    self._save(aj, *ended)
                    for rec in ended:
                        self._event(aj, rec.state, "expired", rec.idx)
                    self.cond.notify_all()

    def _next_wakeup(self, now: float) -> float:
        with self.cond:
            when = q.next_wakeup([aj.progress for aj in self.jobs.values()], self.policy, now)
        cap = now + self.cfg.faxd.rescan_seconds
        return cap if when is None else min(when, cap)

    def write_status(self) -> None:
        """``faxd-status.json`` in the spool: what the modems are doing, for
        ``faxgate status`` (which reads the queue from the job states itself)."""
        with self.cond:
            status = {
                "pid": os.getpid(),
                "started": self.started,
                "updated": time.time(),
                "modems": [dict(vars(m)) for m in self.modems],
            }
        with contextlib.suppress(OSError):
            replace_atomically(self.root / STATUS_FILE, json.dumps(status, indent=1).encode())

    # ------------------------------------------------------------ rendering

    def _default_renderer(self, job_dir: Path, job: dict[str, Any]) -> list[FaxPage]:
        """Render in a child process: PDFium, the image codecs and LibreOffice are
        C/C++ fed by strangers, and a crash there must fail this job with a
        receipt, not kill faxd (which would re-claim and re-render the job at every
        restart). A crash or hang comes back as a permanent RenderError."""
        from faxgate.render import Document
        from faxgate.render.isolated import render_isolated

        message = email.message_from_bytes(spool.read_message(job_dir), policy=email.policy.default)
        parts = list(message.walk())
        documents = []
        for doc in job.get("documents", []):
            part = parts[int(doc["part"])]
            data = part.get_payload(decode=True) or b""
            documents.append(
                Document(
                    data=data,
                    filename=str(doc.get("filename") or ""),
                    charset=part.get_content_charset(),
                )
            )
        # Each document may need one LibreOffice conversion of up to its timeout.
        timeout = max(1, len(documents)) * (
            self.cfg.render.libreoffice_timeout + RENDER_SECONDS_PER_DOCUMENT
        )
        labelled = render_isolated(documents, self._render_options(job, 0), timeout=timeout)
        return [page for _, page in labelled]

    def _render_options(self, job: dict[str, Any], idx: int) -> Any:
        """Render options of ``job`` with the cover page of recipient ``idx``."""
        from faxgate.render import CoverInfo, RenderOptions

        created = datetime.fromtimestamp(_timestamp(job.get("created"), time.time())).astimezone()
        sender = str(job.get("from_header") or job.get("sender") or "")
        recipient = job["recipients"][idx]
        cover = CoverInfo(
            name1=str(recipient.get("name1") or ""),
            name2=str(recipient.get("name2") or ""),
            sender=sender,
            station_id=self.cfg.fax.station_id,
            when=created,
            comment=str(job.get("body_text") or ""),
        )
        limits = self._sender_limits(str(job.get("sender") or ""))
        return RenderOptions.from_config(
            self.cfg, sender=sender, when=created, cover=cover, max_pages=limits.max_pages
        )

    def cover_page(self, job: dict[str, Any], idx: int, pages: int) -> FaxPage:
        """Recipient ``idx``'s cover page of a job of ``pages`` pages. Documents are
        rendered once per job (``pages.tif`` has the first recipient's cover); every
        other recipient gets its own cover, one cheap page, when its call starts."""
        from faxgate.render import render_cover_page
        from faxgate.render.header import stamp

        options = self._render_options(job, idx)
        page = render_cover_page(options.cover, options, pages)
        if options.header is not None:
            stamp(page, options.header.text(1, pages))
        return page

    def _pages_for(self, aj: ActiveJob, idx: int, first_page: int = 0) -> list[FaxPage]:
        """The pages as recipient ``idx`` gets them: its own cover page first."""
        pages = self._load_pages(aj)
        if aj.progress.cover_page and idx != 0 and first_page == 0:
            return [self.cover_page(aj.job, idx, len(pages)), *pages[1:]]
        return pages

    def _load_pages(self, aj: ActiveJob) -> list[FaxPage]:
        """The job's pages, read from ``pages.tif`` when not in memory. They stay
        in memory only while a call or mail of the job uses them (a queue of many
        waiting jobs would otherwise hold every page image)."""
        from faxgate.faxd.tifff import read_tiff_f

        with self.cond:
            if aj.pages is not None:
                return aj.pages
        pages = read_tiff_f(aj.job_dir / PAGES_FILE)
        with self.cond:
            if aj.pages is None:
                aj.pages = pages
            return aj.pages

    def _release_pages(self, aj: ActiveJob) -> None:
        """Forget the page images once nothing of the job is in progress (lock held)."""
        if not aj.busy:
            aj.pages = None

    def _render(self, aj: ActiveJob) -> None:
        """Render once: pages go to ``pages.tif`` before the job counts as rendered."""
        from faxgate.faxd.tifff import write_tiff_f

        target = aj.job_dir / PAGES_FILE
        pages: list[FaxPage] = []
        error = ""
        loaded = target.exists()
        try:
            if loaded:
                pages = self._load_pages(aj)
            else:
                pages = self.renderer(aj.job_dir, aj.job)
                if not pages:
                    raise PermanentError("the documents have no pages")
                tmp = aj.job_dir / f".{PAGES_FILE}.tmp"
                write_tiff_f(tmp, pages, self.cfg.render.coding)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, target)
                fsync_dir(aj.job_dir)
        except (TemporaryError, OSError) as exc:  # e.g. LibreOffice missing, disk full
            log.warning("job %s: rendering failed, will retry: %s", aj.job_id, exc)
            with self.cond:
                aj.render_retry_at = time.time() + self.policy.protocol_error_delay
                self.cond.notify_all()
            return
        except FaxgateError as exc:
            error = str(exc)
        except Exception as exc:  # malformed input can break a converter in any way
            log.exception("job %s: rendering failed", aj.job_id)
            error = f"{type(exc).__name__}: {exc}"
        if error and self.stopping.is_set():
            # systemd's stop signals the whole unit, LibreOffice too: a converter
            # killed under us says nothing about the document. Render it again.
            log.warning(
                "job %s: rendering failed while faxd stops (%s); redone at the next start",
                aj.job_id,
                error,
            )
            return
        now = time.time()
        with self.cond:
            p = aj.progress
            p.rendered = True
            if error:
                p.render_error = error
                q.fail_all(p, "render_failed", error, now)
                self._save(aj, *p.recipients)
                self._event(aj, "failed", f"render failed: {error}")
            else:
                aj.pages = pages
                p.pages_total = len(pages)
                p.cover_page = self.own_renderer and self.cfg.render.cover_page
                for rec in p.recipients:
                    rec.pages_total = len(pages)
                self._save(aj, *p.recipients)
                if loaded:
                    log.info("job %s: %d page(s) loaded from %s", aj.job_id, len(pages), target)
                else:
                    self._event(aj, "rendered", f"{len(pages)} page(s)")
            self.cond.notify_all()

    def _render_loop(self) -> None:
        while not self.stopping.is_set():
            with self.cond:
                now = time.time()
                ready = [
                    jid
                    for jid in self.render_queue
                    if jid in self.jobs and self.jobs[jid].render_retry_at <= now
                ]
                if not ready:
                    self.cond.wait(1.0)
                    continue
                job_id = ready[0]
                self.render_queue.remove(job_id)
                aj = self.jobs[job_id]
            self._render(aj)
            if not aj.progress.rendered:
                with self.cond:
                    self.render_queue.append(job_id)

    # ------------------------------------------------------------ calls

    def _default_dialer(
        self,
        device: str,
        dial: str,
        pages: list[FaxPage],
        first_page: int,
        on_page_confirmed: Callable[[int], None],
    ) -> Any:
        from faxgate.faxd.sender import SendOptions, send_fax

        options = SendOptions.from_config(self.cfg.fax)
        return send_fax(
            device, dial, pages, options, first_page=first_page, on_page_confirmed=on_page_confirmed
        )

    def _pick_call(self, now: float) -> tuple[ActiveJob, q.RecipientProgress] | None:
        candidates = q.due_calls(
            [aj.progress for aj in self.jobs.values()],
            self.policy,
            now,
        )
        for progress, rec in candidates:
            aj = self.jobs[progress.job_id]
            if rec.idx not in aj.busy:
                return aj, rec
        return None

    def _wait(self, now: float) -> None:
        """Wait (lock held) until notified or the next due time."""
        when = q.next_wakeup([aj.progress for aj in self.jobs.values()], self.policy, now)
        timeout = 1.0 if when is None else max(0.0, min(when - now, 1.0))
        self.cond.wait(timeout)

    def _modem_loop(self, modem: ModemStatus) -> None:
        while not self.stopping.is_set():
            with self.cond:
                if self.stopping.is_set():  # checked under the lock: no call starts after stop
                    return
                now = time.time()
                picked = self._pick_call(now)
                if picked is None:
                    self._wait(now)
                    continue
                aj, rec = picked
                aj.busy.add(rec.idx)
                first_page = q.begin_call(rec, now)
                self._save(aj, rec)
                modem.state, modem.job_id, modem.recipient, modem.since = (
                    "calling",
                    aj.job_id,
                    rec.idx,
                    now,
                )
            dial = str(aj.job["recipients"][rec.idx].get("dial") or "")
            self._event(
                aj, "dialing", f"{dial} via {modem.device}, from page {first_page + 1}", rec.idx
            )
            self.write_status()
            outcome = self._call(modem, aj, rec, dial, first_page)
            with self.cond:
                q.apply_call(self.policy, aj.progress, rec, outcome, time.time())
                aj.busy.discard(rec.idx)
                self._release_pages(aj)
                self._save(aj, rec)
                modem.state = "error" if outcome.reason == "modem_error" else "idle"
                modem.job_id, modem.recipient = None, None
                modem.calls += 1
                self.cond.notify_all()
            detail = f"{rec.pages_confirmed}/{rec.pages_total} pages, {outcome.reason or 'ok'}"
            if rec.state == q.PENDING:
                detail += f", retry at {datetime.fromtimestamp(rec.next_try):%H:%M:%S}"
            self._event(aj, rec.state, detail, rec.idx)
            self.write_status()
            if outcome.reason == "modem_error":
                self.stopping.wait(min(5.0, self.policy.protocol_error_delay))

    def _call(
        self,
        modem: ModemStatus,
        aj: ActiveJob,
        rec: q.RecipientProgress,
        dial: str,
        first_page: int,
    ) -> q.CallOutcome:
        call: CallInProgress | None = None

        def confirmed(next_page: int) -> None:
            """Persist after every MCF: a cut call resumes after this page."""
            with self.cond:
                q.page_confirmed(rec, next_page)
                if call is not None:
                    call.confirmed = rec.pages_confirmed
                self._save(aj, rec)
            log.info(
                "job %s rcpt %d queue-id %s: page %d confirmed",
                aj.job_id,
                rec.idx,
                aj.progress.queue_id or "-",
                rec.pages_confirmed,
            )

        try:
            full = self._pages_for(aj, rec.idx, first_page)
            pages = StoppablePages(full)
            call = CallInProgress(aj.job_id, rec.idx, pages, len(full), first_page, first_page)
            with self.cond:
                self.calls[modem.device] = call
                if self.stopping.is_set():  # SIGTERM came while this call was picked
                    call.end_after_current_page()
            result = self.dialer(modem.device, dial, pages, first_page, confirmed)
        except Exception as exc:  # a bug in one call must not take the modem down
            modem.last_error = str(exc)
            log.exception("modem %s: call failed: %s", modem.device, exc)
            return q.CallOutcome(ok=False, reason="modem_error", message=str(exc))
        finally:
            with self.cond:
                self.calls.pop(modem.device, None)
        if result.reason == "modem_error":
            modem.last_error = result.message or "modem error"
        return q.CallOutcome.from_result(
            result, first_page, pages_total=call.total, interrupted=call.ended_early
        )

    # ------------------------------------------------------------ mail

    def _pick_mail(self, now: float) -> tuple[str, ActiveJob, q.RecipientProgress | None] | None:
        jobs = list(self.jobs.values())
        for progress, rec in q.due_network([aj.progress for aj in jobs], now):
            aj = self.jobs[progress.job_id]
            if rec.idx not in aj.busy:
                return "network", aj, rec
        for aj in jobs:
            p = aj.progress
            if aj.mail_busy or aj.mail_retry_at > now:
                continue
            if (
                p.rendered
                and p.acceptance.state in ("pending", "sending")
                and p.acceptance.next_try <= now
            ):
                return "acceptance", aj, None
            if p.final and p.receipt.state in ("pending", "sending") and p.receipt.next_try <= now:
                return "receipt", aj, None
            if p.final and p.receipt.state in ("sent", "not_needed", "refused"):
                return "finish", aj, None
        return None

    def _mail_loop(self) -> None:
        while not self.stopping.is_set():
            with self.cond:
                if self.stopping.is_set():
                    return
                now = time.time()
                picked = self._pick_mail(now)
                if picked is None:
                    self._wait(now)
                    continue
                kind, aj, rec = picked
                if rec is not None:
                    aj.busy.add(rec.idx)
                else:
                    aj.mail_busy = True
            try:
                if kind == "network" and rec is not None:
                    self._deliver_network(aj, rec)
                elif kind == "finish":
                    self._finish(aj)
                else:
                    self._send_notice(aj, kind)
            except Exception:  # a bug or a disk error: try this job's mail again later
                log.exception("job %s: %s failed", aj.job_id, kind)
                with self.cond:
                    later = time.time() + self.cfg.receipts.retry_seconds
                    if rec is not None:
                        rec.next_try = later
                    else:
                        aj.mail_retry_at = later
            finally:
                with self.cond:
                    if rec is not None:
                        aj.busy.discard(rec.idx)
                        self._release_pages(aj)
                    aj.mail_busy = False
                    self.cond.notify_all()

    def _deliver_network(self, aj: ActiveJob, rec: q.RecipientProgress) -> None:
        from faxgate.faxd.network import build_fax_mail
        from faxgate.faxd.tifff import tiff_f_bytes

        recipient = aj.job["recipients"][rec.idx]
        entry = None
        try:
            entry = self.store.directory_get(recipient["network"])
        except (FaxgateError, OSError) as exc:
            log.warning("directory lookup failed: %s", exc)
        has_phone = bool(recipient.get("dial") or recipient.get("number"))
        now = time.time()
        permanent, message = True, "network number no longer in the directory"
        if entry is not None:
            try:
                pages = self._pages_for(aj, rec.idx)
                tiff = (
                    (aj.job_dir / PAGES_FILE).read_bytes()
                    if pages is aj.pages
                    else tiff_f_bytes(pages, self.cfg.render.coding)
                )
                msg = build_fax_mail(
                    aj.job,
                    rec.idx,
                    recipient,
                    entry,
                    tiff=tiff,
                    pages=pages,
                    from_address=self.cfg.receipts.from_address,
                    now=now,
                )
                send_mail(self.cfg.smtp, msg, self.cfg.receipts.from_address, [entry.email])
            except MailTemporaryError as exc:
                permanent, message = False, str(exc)
            except MailPermanentError as exc:
                message = str(exc)
            else:
                with self.cond:
                    q.network_delivered(rec, time.time())
                    self._save(aj, rec)
                self._event(
                    aj, "sent", f"by mail to {entry.email} ({recipient['network']})", rec.idx
                )
                return
        with self.cond:
            q.network_failed(
                self.policy,
                aj.progress,
                rec,
                message,
                permanent=permanent,
                has_phone=has_phone,
                retry_delay=self.cfg.receipts.retry_seconds,
                now=time.time(),
            )
            self._save(aj, rec)
        self._event(aj, "network_failed", f"{message}; now {rec.state} by {rec.route}", rec.idx)

    def _sender(self, email: str) -> Sender | None:
        """The registered sender, or None (also when the store cannot answer:
        the configured defaults then apply)."""
        try:
            return self.store.get_sender(email)
        except (FaxgateError, OSError) as exc:
            log.warning("sender lookup failed: %s", exc)
            return None

    def _sender_limits(self, email: str) -> SenderLimits:
        """The sender's own limits (pages per job …) where set, else the config's."""
        from faxgate.store import SenderLimits

        found = self._sender(email)
        if found is None:
            return SenderLimits(
                self.cfg.limits.max_recipients,
                self.cfg.limits.max_pages,
                self.cfg.limits.jobs_per_day,
            )
        return found.effective_limits(self.cfg.limits)

    def _language(self, sender: str) -> str:
        found = self._sender(sender)
        return (found.language if found else None) or self.cfg.receipts.language

    def _send_notice(self, aj: ActiveJob, kind: str) -> None:
        """Send the receipt (or acceptance notice) with its intent on disk first."""
        from faxgate.faxd import receipts

        p = aj.progress
        mail = p.receipt if kind == "receipt" else p.acceptance
        if not receipts.wants_receipt(p.sender):
            with self.cond:
                mail.state = "not_needed"
                self._save(aj)
            self._event(aj, f"{kind}_not_needed", f"sender {p.sender or '<>'} gets no mail")
            return
        with self.cond:
            mail.state = "sending"
            mail.message_id = mail.message_id or receipts.receipt_message_id(p.job_id, kind)
            mail.attempts += 1
            self._save(aj)
        now = time.time()
        language = self._language(p.sender)
        from_address = self.cfg.receipts.from_address
        try:
            if kind == "receipt":
                pages = self._load_pages(aj) if p.pages_total else []
                msg = receipts.build_receipt(
                    aj.job,
                    p,
                    language=language,
                    from_address=from_address,
                    message_id=mail.message_id,
                    first_page=pages[0] if pages else None,
                    pdf=receipts.pages_pdf(pages)
                    if pages and self.cfg.receipts.attach_pdf
                    else None,
                    now=now,
                )
            else:
                msg = receipts.build_acceptance(
                    aj.job,
                    p,
                    language=language,
                    from_address=from_address,
                    message_id=mail.message_id,
                    now=now,
                )
            send_mail(self.cfg.smtp, msg, "", [p.sender])
        except MailTemporaryError as exc:
            with self.cond:
                mail.last_error = str(exc)
                mail.next_try = time.time() + self.cfg.receipts.retry_seconds
                self._save(aj)
            self._event(aj, f"{kind}_deferred", str(exc))
            return
        except MailPermanentError as exc:
            with self.cond:
                mail.state, mail.last_error = "refused", str(exc)
                self._save(aj)
            self._event(aj, f"{kind}_refused", str(exc))
            return
        with self.cond:
            mail.state, mail.sent_at, mail.last_error = "sent", time.time(), ""
            self._save(aj)
        self._event(aj, f"{kind}_sent", f"to {p.sender} as {mail.message_id}")

    def _finish(self, aj: ActiveJob) -> None:
        """Every recipient final and the receipt handled: move out of ``active/``."""
        target = "done" if aj.progress.outcome == "done" else "failed"
        with self.cond:
            spool.move(self.root, aj.job_id, "active", target)
            self.jobs.pop(aj.job_id, None)
        self._event(aj, "finished", f"{aj.progress.outcome}, moved to {target}/")
        self.write_status()

    # ------------------------------------------------------------ main loop

    def _supervised(self, loop: Callable[..., None], *args: Any) -> None:
        """Run a worker loop; if a bug escapes it, log it and start the loop again
        rather than leave the modem or the mail silently dead."""
        while not self.stopping.is_set():
            try:
                loop(*args)
            except Exception:
                log.exception(
                    "faxd thread %r failed; restarting it", threading.current_thread().name
                )
                self.stopping.wait(1.0)

    def stop(self) -> None:
        """Stop taking work and return from :meth:`run` once the calls in progress
        have finished or ended at a page boundary (see :meth:`_wind_down`).
        Signal-safe: it only sets a flag and writes to a pipe."""
        self.stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _wind_down(self, threads: list[threading.Thread]) -> None:
        """Wait for the worker threads after a stop. A call whose remaining pages
        fit in ``[faxd] stop_grace_seconds`` (by its pace so far) is finished;
        any other ends after the page being sent (EOP, MCF, DCN) and resumes
        there at the next start. When the grace time is over, every call still
        running ends after its current page, well before systemd's SIGKILL."""
        grace = float(self.cfg.faxd.stop_grace_seconds)
        deadline = time.monotonic() + grace
        with self.cond:
            self.cond.notify_all()
            for device, call in self.calls.items():
                estimate = call.remaining_seconds(time.monotonic())
                aj = self.jobs.get(call.job_id)
                where = f"job {call.job_id} rcpt {call.idx} queue-id " + (
                    (aj.progress.queue_id if aj else "") or "-"
                )
                if estimate > grace:
                    call.end_after_current_page()
                    log.info(
                        "%s: stopping: call on %s ends after page %d (about %.0f s left, "
                        "grace %.0f s)",
                        where,
                        device,
                        call.confirmed + 1,
                        estimate,
                        grace,
                    )
                else:
                    log.info(
                        "%s: stopping: call on %s finishes (about %.0f s left)",
                        where,
                        device,
                        estimate,
                    )
        cut_all = False
        for thread in threads:
            if thread.name == "render":
                # Nothing of a render needs flushing (pages.tif and state.json are
                # replaced atomically; an unfinished render is redone), and a
                # LibreOffice conversion may outlast the grace time.
                thread.join(max(0.0, deadline - time.monotonic()))
                continue
            while thread.is_alive():
                if not cut_all and time.monotonic() >= deadline:
                    cut_all = True
                    with self.cond:
                        for call in self.calls.values():
                            call.end_after_current_page()
                thread.join(0.1)

    def run(self, ready: Callable[[], None] | None = None) -> None:
        spool.ensure_layout(self.root)
        (self.root / CONTROL_DIR).mkdir(exist_ok=True)
        self._lock_spool()
        inotify = Inotify()
        if self.watch:
            inotify.watch(self.root / "incoming")
            inotify.watch(self.root / CONTROL_DIR)
        self._recover_active()
        loops: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
            ("render", self._render_loop, ()),
            ("mail", self._mail_loop, ()),
            *((f"modem {m.device}", self._modem_loop, (m,)) for m in self.modems),
        ]
        threads = [
            threading.Thread(target=self._supervised, args=(loop, *args), name=name, daemon=True)
            for name, loop, args in loops
        ]
        if not self.modems:
            log.warning("no modems configured ([fax] modems): phone recipients wait")
        for thread in threads:
            thread.start()
        log.info("faxd started: spool %s, %d modem(s)", self.root, len(self.modems))
        self.write_status()
        if ready:
            ready()
        poller = select.poll()
        poller.register(inotify.fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        next_rescan = 0.0
        try:
            while not self.stopping.is_set():
                now = time.time()
                if self.watch or now >= next_rescan:
                    self._claim_incoming()
                    self._apply_controls()
                self._expire()
                if now >= next_rescan:
                    self._recover_active()
                    self.write_status()
                    next_rescan = now + self.cfg.faxd.rescan_seconds
                timeout = max(0.0, min(self._next_wakeup(now), next_rescan) - time.time())
                if poller.poll(timeout * 1000):
                    inotify.drain()
        finally:
            self.stopping.set()
            self._wind_down(threads)
            for modem in self.modems:
                modem.state = "stopped"
            self.write_status()
            inotify.close()
            if self._lock_fd is not None:  # another faxd may take the spool now
                os.close(self._lock_fd)
                self._lock_fd = None
            log.info("faxd stopped")


def run_daemon(cfg: Any) -> int:
    """``faxgate faxd``: run until SIGTERM or SIGINT."""
    daemon = FaxDaemon(cfg)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: daemon.stop())
    daemon.run(ready=lambda: print(f"READY faxd {os.getpid()}", flush=True))
    return 0
