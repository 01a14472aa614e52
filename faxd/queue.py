"""The fax queue's decisions, without I/O: who is called next, and what a call's
result means for the recipient.

Everything here works on plain dataclasses and the time passed in, so the
retry policy can be tested exhaustively without modems, threads or clocks.
The daemon (``faxgate.faxd.daemon``) owns the I/O: it persists a
:class:`JobProgress` as ``state.json`` after every change and mirrors it into
the store.

Policy, HylaFAX-like by default: busy → retry in 3 min; no answer / no carrier
→ 5 min; a protocol failure after reaching the fax → 1 min; at most 12 dials
and 3 tries (a try is a call that reached fax carrier); the job gives up
``kill_time`` after it was queued. A retry resumes at the first page the far
end did not confirm. Jobs with a lower ``priority`` number go first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from faxgate.errors import ConfigError

#: Recipient states. Final ones never change again (`jobs retry` only hurries waiting ones).
PENDING, DIALING, SENT, FAILED, PARTIAL, CANCELLED, HELD = (
    "pending",
    "dialing",
    "sent",
    "failed",
    "partial",
    "cancelled",
    "held",
)
FINAL_STATES = frozenset({SENT, FAILED, PARTIAL, CANCELLED})

#: How a recipient is reached.
ROUTE_PHONE, ROUTE_NETWORK = "phone", "network"

#: Call reasons (from the sender) grouped by the retry delay they earn.
BUSY_REASONS = frozenset({"busy"})
NO_ANSWER_REASONS = frozenset({"no_answer"})
NO_CARRIER_REASONS = frozenset({"no_carrier", "no_dialtone", "not_a_fax"})
PROTOCOL_REASONS = frozenset(
    {"training_failed", "page_rejected", "remote_hangup", "timeout", "modem_error", "interrupted"}
)

#: Reasons the queue itself gives a recipient (besides the call reasons); each
#: one, like each call reason, has a plain text in every receipt template.
QUEUE_REASONS = frozenset(
    {
        "expired",
        "too_many_dials",
        "too_many_tries",
        "cancelled",
        "render_failed",
        "no_route",
        "network_failed",
    }
)


@dataclass(frozen=True)
class SendingWindow:
    """Local time of day during which calls may be placed; may wrap midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> SendingWindow | None:
        """``"08:00-20:00"`` → a window; ``""`` → None (always open)."""
        text = text.strip()
        if not text:
            return None
        try:
            first, second = text.split("-")
            start = time.fromisoformat(first.strip())
            end = time.fromisoformat(second.strip())
        except ValueError:
            raise ConfigError(
                f"sending window {text!r} is not 'HH:MM-HH:MM' (e.g. '08:00-20:00')"
            ) from None
        if start == end:
            raise ConfigError(f"sending window {text!r} is empty (start equals end)")
        return cls(start, end)

    def is_open(self, moment: datetime) -> bool:
        now = moment.time()
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def next_open(self, moment: datetime) -> datetime:
        """``moment`` if the window is open then, else the next time it opens."""
        if self.is_open(moment):
            return moment
        opening = moment.replace(
            hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0
        )
        if opening <= moment:
            opening += timedelta(days=1)
        return opening


@dataclass(frozen=True)
class RetryPolicy:
    busy_delay: float = 180.0
    no_answer_delay: float = 300.0
    no_carrier_delay: float = 300.0
    protocol_error_delay: float = 60.0
    max_dials: int = 12
    max_tries: int = 3
    kill_time: float = 10800.0
    window: SendingWindow | None = None

    @classmethod
    def from_config(cls, faxd: Any) -> RetryPolicy:
        """Build from a ``FaxdConfig``."""
        return cls(
            busy_delay=float(faxd.busy_retry_seconds),
            no_answer_delay=float(faxd.no_answer_retry_seconds),
            no_carrier_delay=float(faxd.no_carrier_retry_seconds),
            protocol_error_delay=float(faxd.protocol_error_retry_seconds),
            max_dials=int(faxd.max_dials),
            max_tries=int(faxd.max_tries),
            kill_time=float(faxd.kill_time_seconds),
            window=SendingWindow.parse(faxd.sending_window),
        )

    def delay_for(self, reason: str | None) -> float:
        if reason in BUSY_REASONS:
            return self.busy_delay
        if reason in NO_ANSWER_REASONS:
            return self.no_answer_delay
        if reason in NO_CARRIER_REASONS:
            return self.no_carrier_delay
        return self.protocol_error_delay


@dataclass(frozen=True)
class CallOutcome:
    """What the queue needs from one call's result (see ``sender.CallResult``)."""

    ok: bool
    reason: str | None = None
    pages_confirmed: int = 0
    reached_fax_carrier: bool = False
    remote_ident: str = ""
    bit_rate: int | None = None
    resolution: str | None = None
    line_seconds: float = 0.0
    message: str = ""
    #: False when the modem failed before dialling: the recipient is not to blame.
    dialled: bool = True
    #: faxd ended the call at a page boundary because it is stopping (SIGTERM).
    interrupted: bool = False

    @classmethod
    def from_result(
        cls, result: Any, first_page: int = 0, *, pages_total: int = 0, interrupted: bool = False
    ) -> CallOutcome:
        """From a ``CallResult`` whose page count is relative to ``first_page``. A call
        faxd ended early (``interrupted``) is ok only if every page was confirmed."""
        confirmed = first_page + int(result.pages_confirmed or 0)
        cut = interrupted and bool(result.ok) and confirmed < pages_total
        return cls(
            ok=bool(result.ok) and not cut,
            reason="interrupted" if cut else result.reason,
            interrupted=cut,
            pages_confirmed=confirmed,
            reached_fax_carrier=bool(result.reached_fax_carrier),
            remote_ident=result.remote_ident or "",
            bit_rate=result.bit_rate,
            resolution=result.resolution,
            line_seconds=float(result.line_seconds or 0.0),
            message=result.message or "",
            dialled=bool(result.dials),
        )


@dataclass
class RecipientProgress:
    """Where one recipient of a job stands. ``pages_confirmed`` counts pages the
    far end confirmed (MCF) over all calls; a retry starts at that page."""

    idx: int
    route: str = ROUTE_PHONE
    state: str = PENDING
    dials: int = 0
    tries: int = 0
    pages_confirmed: int = 0
    pages_total: int = 0
    next_try: float = 0.0
    last_reason: str | None = None
    last_call_reason: str | None = None
    last_error: str = ""
    remote_ident: str = ""
    bitrate: int | None = None
    resolution: str | None = None
    line_seconds: float = 0.0
    finished_at: float | None = None
    cancel_requested: bool = False

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass
class MailProgress:
    """An outgoing mail of a job (receipt or acceptance notice).

    ``sending`` is written to disk with a stable ``message_id`` *before* the SMTP
    conversation; a restart finding ``sending`` sends again with the same
    Message-ID, so the only duplicate possible is a crash between the server's
    250 and writing ``sent``."""

    state: str = "pending"  # pending | sending | sent | not_needed
    message_id: str = ""
    attempts: int = 0
    next_try: float = 0.0
    last_error: str = ""
    sent_at: float | None = None


@dataclass
class JobProgress:
    """The queue state of a job, persisted as the job directory's ``state.json``."""

    job_id: str
    created: float
    priority: int = 127
    queue_id: str = ""
    sender: str = ""
    expires: float = 0.0
    pages_total: int = 0
    rendered: bool = False
    #: Page 0 is a cover page naming the first recipient; others get their own.
    cover_page: bool = False
    render_error: str = ""
    recipients: list[RecipientProgress] = field(default_factory=list)
    receipt: MailProgress = field(default_factory=MailProgress)
    acceptance: MailProgress = field(default_factory=lambda: MailProgress(state="not_needed"))
    version: int = 1

    @property
    def final(self) -> bool:
        return all(r.final for r in self.recipients)

    @property
    def outcome(self) -> str:
        """Job state for the store: queued | active | held | done | failed | partial
        | cancelled."""
        states = [r.state for r in self.recipients]
        if not all(s in FINAL_STATES for s in states):
            if any(s == DIALING for s in states):
                return "active"
            if all(s in (HELD, *FINAL_STATES) for s in states) and HELD in states:
                return "held"
            return "queued"
        if all(s == SENT for s in states):
            return "done"
        if all(s == CANCELLED for s in states):
            return "cancelled"
        if any(s in (SENT, PARTIAL) for s in states):
            return "partial"
        return "failed"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobProgress:
        data = dict(data)
        recipients = [RecipientProgress(**r) for r in data.pop("recipients", [])]
        receipt = MailProgress(**data.pop("receipt", {}))
        acceptance = MailProgress(**data.pop("acceptance", {"state": "not_needed"}))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            recipients=recipients,
            receipt=receipt,
            acceptance=acceptance,
            **{k: v for k, v in data.items() if k in known},
        )


def new_job(
    job_id: str,
    created: float,
    routes: Iterable[str],
    policy: RetryPolicy,
    *,
    priority: int = 127,
    queue_id: str = "",
    sender: str = "",
) -> JobProgress:
    """A fresh job: every recipient due at once by its route."""
    return JobProgress(
        job_id=job_id,
        created=created,
        priority=priority,
        queue_id=queue_id,
        sender=sender,
        expires=created + policy.kill_time,
        recipients=[
            RecipientProgress(idx=i, route=route, next_try=created)
            for i, route in enumerate(routes)
        ],
    )


def _finish(rec: RecipientProgress, state: str, reason: str | None, now: float) -> None:
    rec.state = state
    if reason is not None:
        rec.last_reason = reason
    rec.finished_at = now


def _failed_state(rec: RecipientProgress) -> str:
    return PARTIAL if 0 < rec.pages_confirmed < rec.pages_total else FAILED


def begin_call(rec: RecipientProgress, now: float) -> int:
    """Mark the recipient dialing (one more dial) and return the first page to
    send. Persist this before dialing so a crash still counts the dial."""
    rec.state = DIALING
    rec.dials += 1
    rec.next_try = now
    return rec.pages_confirmed


def page_confirmed(rec: RecipientProgress, pages_confirmed: int) -> None:
    """The far end confirmed pages up to ``pages_confirmed`` (absolute count)."""
    rec.pages_confirmed = max(rec.pages_confirmed, pages_confirmed)


def apply_call(
    policy: RetryPolicy,
    job: JobProgress,
    rec: RecipientProgress,
    outcome: CallOutcome,
    now: float,
) -> None:
    """Record a finished call and decide: sent, retry later, or give up. A call
    that never dialled (the local modem failed) costs the recipient no dial."""
    if not outcome.dialled:
        rec.dials = max(0, rec.dials - 1)
    page_confirmed(rec, outcome.pages_confirmed)
    if outcome.reached_fax_carrier:
        rec.tries += 1
    rec.line_seconds += outcome.line_seconds
    if outcome.remote_ident:
        rec.remote_ident = outcome.remote_ident
    if outcome.bit_rate:
        rec.bitrate = outcome.bit_rate
    if outcome.resolution:
        rec.resolution = outcome.resolution
    rec.last_error = outcome.message
    if outcome.ok or (rec.pages_total and rec.pages_confirmed >= rec.pages_total):
        rec.last_reason = None
        rec.last_error = ""
        _finish(rec, SENT, None, now)
        return
    rec.last_reason = rec.last_call_reason = outcome.reason or "modem_error"
    if rec.cancel_requested:
        _finish(rec, CANCELLED, "cancelled", now)
        return
    if outcome.interrupted:
        # faxd is stopping, not the far end failing: no try is charged and the
        # next start resumes at once from the first unconfirmed page.
        if outcome.reached_fax_carrier:
            rec.tries -= 1
        rec.state = PENDING
        rec.next_try = now
        return
    if rec.tries >= policy.max_tries:
        _finish(rec, _failed_state(rec), "too_many_tries", now)
        return
    if rec.dials >= policy.max_dials:
        _finish(rec, _failed_state(rec), "too_many_dials", now)
        return
    next_try = now + policy.delay_for(rec.last_reason)
    if next_try >= job.expires:
        _finish(rec, _failed_state(rec), "expired", now)
        return
    rec.state = PENDING
    rec.next_try = next_try


def network_delivered(rec: RecipientProgress, now: float) -> None:
    rec.pages_confirmed = rec.pages_total
    rec.last_reason = None
    rec.last_error = ""
    _finish(rec, SENT, None, now)


def network_failed(
    policy: RetryPolicy,
    job: JobProgress,
    rec: RecipientProgress,
    message: str,
    *,
    permanent: bool,
    has_phone: bool,
    retry_delay: float,
    now: float,
) -> None:
    """A mail delivery to a network number failed. Permanently: fall back to the
    phone number if there is one. Temporarily: retry by mail until expiry."""
    rec.last_error = message
    rec.last_reason = "network_failed"
    if permanent:
        if has_phone:
            rec.route = ROUTE_PHONE
            rec.state = PENDING
            rec.next_try = now
            return
        _finish(rec, FAILED, "network_failed", now)
        return
    if now + retry_delay >= job.expires:
        _finish(rec, FAILED, "expired", now)
        return
    rec.state = PENDING
    rec.next_try = now + retry_delay


def expire(
    job: JobProgress, now: float, in_progress: Collection[int] = ()
) -> list[RecipientProgress]:
    """Give up on waiting recipients of an expired job; calls and mail deliveries
    in progress (``in_progress`` indexes) are left to finish. Returns the
    recipients that became final."""
    if now < job.expires:
        return []
    ended = []
    for rec in job.recipients:
        if rec.state in (PENDING, HELD) and rec.idx not in in_progress:
            _finish(rec, _failed_state(rec), "expired", now)
            ended.append(rec)
    return ended


def fail_all(job: JobProgress, reason: str, message: str, now: float) -> None:
    """Every unfinished recipient fails (e.g. the documents cannot be rendered)."""
    for rec in job.recipients:
        if not rec.final:
            rec.last_error = message
            _finish(rec, FAILED, reason, now)


def cancel(job: JobProgress, now: float) -> list[RecipientProgress]:
    """Cancel waiting recipients at once; a call in progress is cancelled when it
    ends (unless it sent everything). Returns the recipients cancelled now."""
    ended = []
    for rec in job.recipients:
        if rec.state in (PENDING, HELD):
            _finish(rec, CANCELLED, "cancelled", now)
            ended.append(rec)
        elif rec.state == DIALING:
            rec.cancel_requested = True
    return ended


def hold(job: JobProgress) -> list[RecipientProgress]:
    changed = [r for r in job.recipients if r.state == PENDING]
    for rec in changed:
        rec.state = HELD
    return changed


def release(job: JobProgress, now: float) -> list[RecipientProgress]:
    changed = [r for r in job.recipients if r.state == HELD]
    for rec in changed:
        rec.state = PENDING
        rec.next_try = now
    return changed


def retry_now(job: JobProgress, now: float) -> list[RecipientProgress]:
    """Make waiting recipients due at once (the admin's ``jobs retry``)."""
    changed = [r for r in job.recipients if r.state == PENDING]
    for rec in changed:
        rec.next_try = now
    return changed


def recover_after_crash(job: JobProgress, now: float) -> list[RecipientProgress]:
    """A recipient left ``dialing`` by a crash is due again at once; its
    ``pages_confirmed`` (persisted after every MCF) says where to resume, and
    if every page was confirmed it is sent."""
    changed = [r for r in job.recipients if r.state == DIALING]
    for rec in changed:
        if rec.pages_total and rec.pages_confirmed >= rec.pages_total:
            # The far end confirmed the last page; only the hang-up was lost.
            rec.last_reason = None
            _finish(rec, SENT, None, now)
        elif rec.cancel_requested:
            _finish(rec, CANCELLED, "cancelled", now)
        else:
            rec.state = PENDING
            rec.next_try = now
    return changed


def _window_open_at(policy: RetryPolicy, when: float) -> float:
    if policy.window is None:
        return when
    return policy.window.next_open(datetime.fromtimestamp(when)).timestamp()


def due_calls(
    jobs: Iterable[JobProgress], policy: RetryPolicy, now: float
) -> list[tuple[JobProgress, RecipientProgress]]:
    """Phone recipients that may be dialled now, most urgent first: lower priority
    number, then earlier next try, then older job, then recipient order."""
    if policy.window is not None and not policy.window.is_open(datetime.fromtimestamp(now)):
        return []
    due = [
        (job, rec)
        for job in jobs
        if job.rendered
        for rec in job.recipients
        if rec.route == ROUTE_PHONE and rec.state == PENDING and rec.next_try <= now
    ]
    due.sort(
        key=lambda jr: (jr[0].priority, jr[1].next_try, jr[0].created, jr[0].job_id, jr[1].idx)
    )
    return due


def due_network(
    jobs: Iterable[JobProgress], now: float
) -> list[tuple[JobProgress, RecipientProgress]]:
    """Network-number recipients to deliver by mail now (no sending window)."""
    due = [
        (job, rec)
        for job in jobs
        if job.rendered
        for rec in job.recipients
        if rec.route == ROUTE_NETWORK and rec.state == PENDING and rec.next_try <= now
    ]
    due.sort(key=lambda jr: (jr[0].priority, jr[1].next_try, jr[0].created, jr[1].idx))
    return due


def next_wakeup(jobs: Iterable[JobProgress], policy: RetryPolicy, now: float) -> float | None:
    """The earliest future time something becomes due (a retry, an expiry, a
    mail retry, the sending window opening), or None."""
    times: list[float] = []
    for job in jobs:
        if not job.final:
            times.append(job.expires)
        for rec in job.recipients:
            if rec.state == PENDING:
                when = rec.next_try
                if rec.route == ROUTE_PHONE:
                    when = _window_open_at(policy, max(when, now))
                times.append(when)
        for mail in (job.receipt, job.acceptance):
            if mail.state in ("pending", "sending") and (mail is job.acceptance or job.final):
                times.append(mail.next_try)
    future = [t for t in times if t > now]
    return min(future) if future else None
