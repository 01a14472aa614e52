"""The T.30 transmitter (calling station, no ECM) as a sans-I/O state machine.

``T30Sender`` never touches a port or a clock. It is fed events — a frame the
modem received (FCS good or bad), a modem result code, a timer that ran out —
together with the current time, and answers with the next action for the
transport: dial, send frames, send training or page data, wait for a frame
with a timeout, be silent, hang up, or finish with a ``CallResult``. Exactly one
event answers each action. This keeps the protocol testable by replaying
transcripts of real calls and hand-made faults, and keeps the transport's job
small enough to meet Class 1's tens-of-milliseconds turn-around.

Internally the procedure is a generator that reads top to bottom like the
T.30 flow chart: phase A (call), B (DIS → DCS/TCF → CFR/FTT), C (page data),
D (MPS/EOP → MCF/RTN/RTP/PIN/PIP), E (DCN, hang up).
"""

from __future__ import annotations

import math
import re
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from faxgate.faxd import frames as fr
from faxgate.faxd.frames import Frame, FrameError, Modulation, Session

#: Stable reason codes of a failed call (the queue's retry policy keys on them).
REASONS = (
    "busy",
    "no_answer",
    "no_carrier",
    "no_dialtone",
    "not_a_fax",
    "training_failed",
    "page_rejected",
    "remote_hangup",
    "modem_error",
    "timeout",
)

#: What may follow ATD: digits, ``*``/``#``, ``,`` (pause) and ``W`` (wait for dial
#: tone). Anything else could smuggle modem commands (``;``, CR) into the dial string.
DIAL_STRING = re.compile(r"[0-9*#,Ww]{1,40}")

# --- events (transport → machine) --------------------------------------------------


@dataclass(frozen=True)
class FrameReceived:
    """An HDLC frame as the modem delivered it, and its FCS verdict (OK/ERROR)."""

    data: bytes
    fcs_ok: bool = True


@dataclass(frozen=True)
class ModemResult:
    """A final result code: OK, CONNECT, NO CARRIER, ERROR, BUSY, NO DIALTONE,
    NO ANSWER, +FCERROR."""

    code: str


@dataclass(frozen=True)
class TimerExpired:
    """The timeout of a Dial or ReceiveFrame action ran out with nothing received."""


Event = FrameReceived | ModemResult | TimerExpired

# --- actions (machine → transport) ---------------------------------------------------


@dataclass(frozen=True)
class Dial:
    command: str  # e.g. "ATDT5551234"
    timeout: float  # T1


@dataclass(frozen=True)
class ReceiveFrame:
    timeout: float  # T2/T4


@dataclass(frozen=True)
class SendFrames:
    frames: tuple[bytes, ...]  # address, control, FCF, FIF; the modem adds the FCS


@dataclass(frozen=True)
class SendTraining:
    modulation: int  # +FTM code
    length: int  # zero bytes (TCF)
    timeout: float = 600.0  # until the modem says the TCF is on the line


@dataclass(frozen=True)
class SendPage:
    modulation: int
    page: int
    data: bytes = field(repr=False)
    timeout: float = 600.0


@dataclass(frozen=True)
class Silence:
    tens_of_ms: int  # +FTS


@dataclass(frozen=True)
class AwaitSilence:
    tens_of_ms: int  # +FRS: the far end's carrier is off this long, so we may talk


@dataclass(frozen=True)
class HangUp:
    pass


@dataclass(frozen=True)
class Finished:
    result: CallResult


Action = (
    Dial
    | ReceiveFrame
    | SendFrames
    | SendTraining
    | SendPage
    | Silence
    | AwaitSilence
    | HangUp
    | Finished
)


# --- the result ----------------------------------------------------------------------


@dataclass
class CallResult:
    """Everything one call produced: outcome, what was confirmed, and the transcript.

    ``pages_confirmed`` counts pages confirmed (MCF/RTP/PIP) in this call,
    ``confirmed_pages`` their absolute indices, ``next_page`` where a retry
    resumes; ``transcript`` holds ``(seconds, direction, name, hex)`` tuples.
    ``line_seconds`` and the transcript's seconds are line time since dialling
    (wall time for a real modem; scaled by ``time_scale`` on a simulated line)."""

    ok: bool = False
    reason: str | None = None
    pages_confirmed: int = 0
    confirmed_pages: list[int] = field(default_factory=list)
    first_page: int = 0
    next_page: int = 0
    pages_total: int = 0
    remote_ident: str = ""
    bit_rate: int | None = None
    modulation: str | None = None
    resolution: str | None = None
    coding: str | None = None
    line_seconds: float = 0.0
    dials: int = 0
    reached_fax_carrier: bool = False
    transcript: list[tuple[float, str, str, str]] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["transcript"] = [list(entry) for entry in self.transcript]
        return data


# --- what the machine needs from outside -----------------------------------------


class PageSource(Protocol):
    """The pages of the job, coded on demand for the session DCS commanded."""

    @property
    def count(self) -> int: ...

    @property
    def resolution(self) -> str: ...

    def encode(self, index: int, session: Session) -> bytes:
        """Page ``index`` coded for ``session``. Called right after CFR/MCF, where
        Class 1 leaves little time: implementations should cache."""
        ...


@dataclass(frozen=True)
class SenderOptions:
    """Knobs of the procedure. Timers are line seconds; ``time_scale`` is line
    seconds per wall second (1 for a real modem, the pacing of a simulated line)."""

    station_id: str = ""
    dial_prefix: str = "ATDT"
    max_rate: int = 14400
    coding: str = "mr"  # preferred; MH if the far end has no 2D coding
    dial_timeout: float = 90.0  # dialling until a fax answer (the modem's own S7 is shorter)
    t1: float = 35.0  # from the first fax carrier until a valid DIS
    #: NO CARRIER sooner than this after dialling: the call never connected
    #: (no_carrier); later: something answered that is not a fax (not_a_fax).
    answer_grace: float = 10.0
    t2: float = 6.0  # between frames of the far end's repeated DIS while we wait for a valid one
    t4: float = 3.0  # for a response to a command
    command_tries: int = 3  # sends of one command without a valid response
    train_tries: int = 3  # TCF attempts at the lowest rate before giving up
    page_resends: int = 3  # RTN/PIN → retrain and send the page again, at most this often
    tcf_seconds: float = 1.5
    data_margin: float = 10.0  # beyond its own duration, for a page to be sent
    time_scale: float = 1.0
    short_train: bool = True  # V.17 short training for pages after a good TCF
    #: +FRS before we transmit after receiving (tens of ms; 0: no +FRS), so the
    #: far end hears the 75 ms gap T.30 wants even from a quick host.
    turnaround_silence: int = 7


class CallFailed(Exception):
    def __init__(self, reason: str, message: str, *, send_dcn: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.send_dcn = send_dcn


_DIAL_RESULTS = {
    "BUSY": ("busy", "the line is busy"),
    "NO ANSWER": ("no_answer", "nobody answered"),
    "NO DIALTONE": ("no_dialtone", "no dial tone"),
    "NO CARRIER": ("no_carrier", "the call ended without a fax answer (no carrier)"),
    "ERROR": ("modem_error", "the modem refused the dial command"),
}


_DCS_RESPONSES = frozenset({fr.CFR, fr.FTT, fr.DIS})
_PAGE_RESPONSES = frozenset({fr.MCF, fr.RTN, fr.RTP, fr.PIN, fr.PIP})


def _frame_ok(event: Event) -> bool:
    return isinstance(event, ModemResult) and event.code == "OK"


class T30Sender:
    """One outgoing call. ``start(now)`` gives the first action; ``handle(event, now)``
    the next one, until a ``Finished`` action carries the ``CallResult``."""

    def __init__(
        self,
        number: str,
        pages: PageSource,
        options: SenderOptions | None = None,
        *,
        first_page: int = 0,
    ) -> None:
        if not DIAL_STRING.fullmatch(number):
            raise ValueError(f"not a dial string: {number!r}")
        if not 0 <= first_page < pages.count:
            raise ValueError(f"first_page {first_page} outside 0..{pages.count - 1}")
        self.number = number
        self.pages = pages
        self.options = options or SenderOptions()
        self.result = CallResult(
            first_page=first_page, next_page=first_page, pages_total=pages.count
        )
        self.now = 0.0
        self._start_time = 0.0
        self._connected = False
        self._no_carrier = False
        self._trained: Session | None = None  # what the last CFR accepted
        self._procedure = self._run()
        next(self._procedure)  # to the priming yield; start() sends the first None
        self.finished = False

    @property
    def started_at(self) -> float:
        """The time ``start`` was called with: the moment of dialling."""
        return self._start_time

    # --- driving ---------------------------------------------------------------------

    def start(self, now: float) -> Action:
        self.now = self._start_time = now
        return self._advance(None)

    def handle(self, event: Event, now: float) -> Action:
        if self.finished:
            raise RuntimeError("the call is over")
        self.now = now
        if isinstance(event, FrameReceived):
            self._note_frame("<", event)
        elif isinstance(event, ModemResult) and event.code not in ("OK", "CONNECT"):
            self._note("<", event.code, "")
        elif isinstance(event, TimerExpired):
            self._note("<", "TIMEOUT", "")
        return self._advance(event)

    def abort(self, reason: str, message: str, now: float) -> CallResult:
        """The transport failed (device gone, modem error): close the result."""
        self.now = now
        self._procedure.close()
        return self._finish(reason, message).result

    def _advance(self, event: Event | None) -> Action:
        try:
            action = self._procedure.send(event)
        except StopIteration:
            raise RuntimeError("T.30 procedure ended without a result") from None
        if isinstance(action, Finished):
            self.finished = True
        elif isinstance(action, SendFrames):
            for data in action.frames:
                self._note_frame(">", FrameReceived(data))
        return action

    # --- bookkeeping -------------------------------------------------------------------

    def _wall(self, line_seconds: float) -> float:
        return line_seconds / self.options.time_scale

    def _send_timeout(self, data_bytes: int, modulation: Modulation) -> float:
        """How long the modem may take to put TCF or page data on the line: the
        data's own line time plus the data margin, in wall time."""
        return self._wall(data_bytes * 8 / modulation.bit_rate + self.options.data_margin)

    def _elapsed(self) -> float:
        """Line seconds since dialling: wall time × ``time_scale`` (the same for a real
        modem), so transcripts and ``line_seconds`` read alike at any pacing."""
        return round((self.now - self._start_time) * self.options.time_scale, 3)

    def _note(self, direction: str, name: str, hexdata: str) -> None:
        self.result.transcript.append((self._elapsed(), direction, name, hexdata))

    def _note_frame(self, direction: str, event: FrameReceived) -> None:
        try:
            name = Frame.parse(event.data).name
        except FrameError:
            name = "garbled"
        if not event.fcs_ok:
            name += " (bad FCS)"
        self._note(direction, name, event.data.hex())

    def _finish(self, reason: str | None, message: str) -> Finished:
        result = self.result
        result.ok = reason is None
        result.reason = reason
        result.message = message
        result.pages_confirmed = len(result.confirmed_pages)
        result.line_seconds = self._elapsed()
        self.finished = True
        return Finished(result)

    # --- the procedure -----------------------------------------------------------------

    def _run(self) -> Generator[Action | None, Event | None, None]:
        yield  # primed by start()
        try:
            yield from self._call()
        except CallFailed as failure:
            if self._connected:
                if failure.send_dcn and self.result.reached_fax_carrier:
                    yield self._frames(fr.DCN)
                yield HangUp()
            yield self._finish(failure.reason, failure.message)
            return
        yield self._finish(None, self._success_message())

    def _success_message(self) -> str:
        r = self.result
        return (
            f"{r.pages_confirmed} page(s) sent to {r.remote_ident or 'the far end'} "
            f"at {r.bit_rate} bit/s, {r.resolution}, {(r.coding or '').upper()}"
        )

    def _turnaround(self) -> list[Action]:
        """Wait for the far end's silence before we start sending (its result does
        not matter: a modem without +FRS must not fail the call)."""
        tens = self.options.turnaround_silence
        return [AwaitSilence(tens)] if tens else []

    def _frames(self, *fcfs_and_fifs: int | tuple[int, bytes]) -> SendFrames:
        """Our commands carry the X bit: we are the station that received DIS."""
        items = [f if isinstance(f, tuple) else (f, b"") for f in fcfs_and_fifs]
        return SendFrames(
            tuple(
                Frame(fcf | fr.X_BIT, fif, final=i == len(items) - 1).to_bytes()
                for i, (fcf, fif) in enumerate(items)
            )
        )

    def _call(self) -> Generator[Action, Event | None, None]:
        opts = self.options
        self.result.dials = 1
        event = yield Dial(opts.dial_prefix + self.number, self._wall(opts.dial_timeout))
        if (
            isinstance(event, ModemResult)
            and event.code == "NO CARRIER"
            and self.now - self._start_time >= self._wall(opts.answer_grace)
        ):
            raise CallFailed("not_a_fax", "the call was answered, but not by a fax (NO CARRIER)")
        if isinstance(event, ModemResult):
            reason, message = _DIAL_RESULTS.get(
                event.code, ("modem_error", f"unexpected answer to dialling: {event.code}")
            )
            raise CallFailed(reason, message)
        self._connected = True
        if isinstance(event, TimerExpired):
            raise CallFailed("not_a_fax", f"no fax answer within {opts.dial_timeout:g} s")
        capabilities = yield from self._phase_b_receive_dis(event)
        yield from self._send_document(capabilities)

    def _phase_b_receive_dis(
        self, event: Event | None
    ) -> Generator[Action, Event | None, fr.Capabilities]:
        """Collect NSF/CSI/DIS until a valid DIS; the answerer repeats DIS until T1."""
        deadline = self.now + self._wall(self.options.t1)
        while True:
            if isinstance(event, FrameReceived):
                self.result.reached_fax_carrier = True
                frame = self._parse(event)
                if frame is not None:
                    if frame.kind == fr.CSI:
                        self.result.remote_ident = fr.decode_ident(frame.fif)
                    elif frame.kind == fr.DCN:
                        raise CallFailed("remote_hangup", "the far end sent DCN", send_dcn=False)
                    elif frame.kind == fr.DIS:
                        try:
                            return fr.parse_dis(frame.fif)
                        except FrameError:
                            pass  # wait for the repeated DIS
            remaining = deadline - self.now
            if remaining <= 0:
                raise CallFailed("timeout", "no valid DIS from the far end within T1")
            event = yield ReceiveFrame(min(remaining, self._wall(self.options.t2)))

    def _parse(self, event: FrameReceived) -> Frame | None:
        if not event.fcs_ok:
            return None
        try:
            return Frame.parse(event.data)
        except FrameError:
            return None

    def _receive_response(self) -> Generator[Action, Event | None, Frame | None]:
        """Wait up to T4 for the final frame of a response; None if none came intact."""
        deadline = self.now + self._wall(self.options.t4)
        while True:
            remaining = deadline - self.now
            if remaining <= 0:
                return None
            event = yield ReceiveFrame(remaining)
            if isinstance(event, TimerExpired):
                return None
            if isinstance(event, ModemResult):
                if event.code == "NO CARRIER":
                    self._no_carrier = True
                if event.code == "ERROR":
                    return None
                continue  # NO CARRIER / +FCERROR: a carrier without a frame; listen on
            frame = self._parse(event)
            if frame is None:
                continue  # bad FCS: the rest of the response may still come
            if frame.kind == fr.CSI:
                self.result.remote_ident = fr.decode_ident(frame.fif)
            if frame.final or frame.kind == fr.DCN:
                return frame

    def _exchange(
        self, name: str, steps: list[Action], expected: frozenset[int]
    ) -> Generator[Action, Event | None, Frame]:
        """Send a command and return its valid response, repeating the command when
        the response is missing, garbled, CRP or not one of ``expected`` (at most
        ``command_tries`` sends). DCN ends the call."""
        only_no_carrier = True
        for _ in range(self.options.command_tries):
            for step in steps:
                event = yield step
                if not isinstance(step, AwaitSilence):
                    self._check_sent(event, name)
            self._no_carrier = False
            frame = yield from self._receive_response()
            if frame is None:
                only_no_carrier = only_no_carrier and self._no_carrier
                continue
            only_no_carrier = False
            if frame.kind not in expected and frame.kind != fr.DCN:
                continue  # CRP, or a frame that answers nothing we said
            if frame.kind == fr.DCN:
                raise CallFailed(
                    "remote_hangup", f"the far end sent DCN after {name}", send_dcn=False
                )
            return frame
        tries = self.options.command_tries
        if only_no_carrier:
            raise CallFailed(
                "remote_hangup",
                f"the far end went silent (NO CARRIER) after {name}, {tries} tries",
                send_dcn=False,
            )
        raise CallFailed("timeout", f"no valid response to {name} after {tries} tries")

    def _check_sent(self, event: Event | None, what: str) -> None:
        """A transmit step must end in OK; NO CARRIER there means the line dropped."""
        if _frame_ok(event):
            return
        if isinstance(event, ModemResult) and event.code == "NO CARRIER":
            raise CallFailed(
                "remote_hangup", f"the line dropped while sending {what}", send_dcn=False
            )
        raise CallFailed("modem_error", f"modem failed while sending {what}: {event}")

    def _modulations(self, capabilities: fr.Capabilities) -> list[Modulation]:
        usable = [m for m in capabilities.modulations if m.bit_rate <= self.options.max_rate]
        if not usable:
            raise CallFailed("training_failed", "no modulation in common with the far end")
        return usable

    def _session(self, capabilities: fr.Capabilities, modulation: Modulation) -> Session:
        resolution = capabilities.best_resolution(self.pages.resolution)
        coding = "mr" if self.options.coding == "mr" and capabilities.mr else "mh"
        return Session(
            modulation=modulation,
            resolution=resolution,
            coding=coding,
            scan_ms=fr.dcs_scan_ms(capabilities.scan_ms(resolution)),
            unlimited_length=capabilities.unlimited_length,
        )

    def _train(
        self, capabilities: fr.Capabilities, modulations: list[Modulation], start: int
    ) -> Generator[Action, Event | None, int]:
        """DCS + TCF until CFR; FTT steps down one rate. Returns the index trained at."""
        index = start
        tries_at_lowest = 0
        tsi = (fr.TSI, fr.encode_ident(self.options.station_id))
        while True:
            session = self._session(capabilities, modulations[index])
            modulation = session.modulation
            tcf_bytes = math.ceil(self.options.tcf_seconds * modulation.bit_rate / 8)
            steps: list[Action] = [
                *self._turnaround(),
                self._frames(tsi, (fr.DCS, fr.build_dcs(session))),
                Silence(8),  # T.30: 75 ms between DCS and TCF
                SendTraining(
                    modulation.ftm_long,
                    tcf_bytes,
                    timeout=self._send_timeout(tcf_bytes, modulation),
                ),
            ]
            response = yield from self._exchange("DCS", steps, _DCS_RESPONSES)
            if response.kind == fr.CFR:
                self._trained = session
                r = self.result
                r.bit_rate, r.modulation = modulation.bit_rate, modulation.name
                r.resolution, r.coding = session.resolution, session.coding
                return index
            if response.kind == fr.DIS:
                continue  # the far end missed our DCS and repeated DIS: start over
            # FTT: the receiver did not like the TCF; one rate lower
            if index + 1 < len(modulations):
                index += 1
                continue
            tries_at_lowest += 1
            if tries_at_lowest >= self.options.train_tries:
                raise CallFailed(
                    "training_failed", f"training failed down to {modulation.name} bit/s"
                )

    def _send_document(
        self, capabilities: fr.Capabilities
    ) -> Generator[Action, Event | None, None]:
        if not capabilities.receiver:
            raise CallFailed("not_a_fax", "the far end's DIS says it cannot receive faxes")
        modulations = self._modulations(capabilities)
        index = yield from self._train(capabilities, modulations, 0)
        page = self.result.first_page
        rejections = 0
        while page < self.pages.count:
            session = self._trained
            assert session is not None  # set by _train before the first page
            data = self.pages.encode(page, session)
            modulation = session.modulation
            # After a good TCF every page of the session may use V.17's short
            # training (T.30 5.3.2.6); the receiver expects it.
            code = modulation.ftm_short if self.options.short_train else modulation.ftm_long
            timeout = self._send_timeout(len(data), modulation)
            for step in self._turnaround():
                yield step
            event = yield SendPage(code, page, data, timeout=timeout)
            self._check_sent(event, f"page {page + 1}")
            last = page == self.pages.count - 1
            post = fr.EOP if last else fr.MPS
            name = "EOP" if last else "MPS"
            response = yield from self._exchange(
                name, [Silence(8), self._frames(post)], _PAGE_RESPONSES
            )
            kind = response.kind
            if kind in (fr.MCF, fr.RTP, fr.PIP):
                self.result.confirmed_pages.append(page)
                self.result.pages_confirmed = len(self.result.confirmed_pages)
                page += 1
                self.result.next_page = page
                rejections = 0
                if kind != fr.MCF and page < self.pages.count:
                    index = yield from self._train(capabilities, modulations, index)
            else:  # RTN or PIN: the page was not good enough; retrain and send it again
                rejections += 1
                if rejections > self.options.page_resends:
                    raise CallFailed(
                        "page_rejected",
                        f"page {page + 1} rejected {rejections} times ({response.name})",
                    )
                lower = min(index + 1, len(modulations) - 1)
                index = yield from self._train(capabilities, modulations, lower)
        for step in self._turnaround():
            yield step
        yield self._frames(fr.DCN)
        yield HangUp()


# --- transcripts of the event/action exchange (recording and replay) ----------------


def event_to_dict(event: Event) -> dict[str, Any]:
    if isinstance(event, FrameReceived):
        return {"frame": event.data.hex(), "fcs_ok": event.fcs_ok}
    if isinstance(event, ModemResult):
        return {"result": event.code}
    return {"timeout": True}


def event_from_dict(data: dict[str, Any]) -> Event:
    if "frame" in data:
        return FrameReceived(bytes.fromhex(data["frame"]), bool(data.get("fcs_ok", True)))
    if "result" in data:
        return ModemResult(str(data["result"]))
    return TimerExpired()


def action_to_dict(action: Action) -> dict[str, Any]:
    """A comparable summary of an action (page data by length, timeouts rounded)."""
    if isinstance(action, Dial):
        return {"dial": action.command}
    if isinstance(action, ReceiveFrame):
        return {"receive": True}
    if isinstance(action, SendFrames):
        return {"send": [f.hex() for f in action.frames]}
    if isinstance(action, SendTraining):
        return {"tcf": action.modulation, "bytes": action.length}
    if isinstance(action, SendPage):
        return {"page": action.page, "modulation": action.modulation}
    if isinstance(action, Silence):
        return {"silence": action.tens_of_ms}
    if isinstance(action, AwaitSilence):
        return {"await_silence": action.tens_of_ms}
    if isinstance(action, HangUp):
        return {"hangup": True}
    return {"finished": action.result.reason or "ok"}
