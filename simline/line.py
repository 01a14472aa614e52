"""The simulated phone line: a spandsp T.31 modem on a pty, wired to a spandsp fax.

One ``SimulatedLine`` is one modem and one far end, run by a background
thread. Every 160 samples (20 ms of line time, or ``20 ms / pacing`` of wall
time) the far end's audio goes into the modem and the modem's audio into the
far end. While no call is up the line ticks at real time, which keeps an idle
line cheap.

Each call the modem dials leaves a record in the output directory: a JSON
sidecar ``<device>-<call>.json`` written last (temp file + rename, so its
presence means the far end is done with the call) and, when pages arrived, the
TIFF the far end wrote, ``<device>-<call>.tif``. Call numbers continue from
the sidecars already in the directory. spandsp writes the TIFF itself, always
re-encoded as Group 3 2-D (T4Options 5, FillOrder LSB-first, min-is-white),
one IFD per page, one pixel row per received scan line (standard pages are not
stretched); Pillow/libtiff read it directly and ``ReceivedFax.images()``
returns the pages as PIL mode "1" images (black = 0).

Sidecar fields: device, call, dialled, behaviour, result ("ok" or a reason,
see ``ReceivedFax``), result_code and result_text (spandsp's T30_ERR_* code
and sentence, null for calls that never reached a fax), pages, bit_rate,
resolution (standard|fine|superfine), x_resolution and y_resolution (pixels
per metre), width, length (rows of the last page), encoding used on the line
(MH|MR), ecm, bad_rows, remote_ident (the caller's TSI), csi (ours),
line_seconds (sample clock from ATD to the end of the far end's session),
started_at and ended_at (UTC ISO 8601), tiff (file name or null) and frames:
every T.30 frame the far end saw, ``{"t": line seconds since ATD, "dir":
"rx" (from the caller) | "tx", "frame": "DCS", "hex": "ff1383..."}``.

Class 1 as spandsp 0.0.6 speaks it (useful to a DTE written against this
line): echo is on until ATE0; ATD returns CONNECT only once the far end's V.21
flags arrive, followed by the first frame; +FRH=3 may print CONNECT more than
once before a frame; a far end that never sends V.21 ends the dial with NO
CARRIER after S7 seconds (default 60, line time); Class 1 commands while on
hook and ATA answer ERROR. The pty has no modem-control lines: flow control is
the kernel's pty buffer plus our not reading while T.31 drops CTS, so open it
without XON/XOFF (0x11/0x13 occur in HDLC data) and flush stale input after
opening.

Closing the port stands for DTR dropping (see ``ptyport`` for how the close is
seen): what the DTE wrote before closing still reaches the modem, then the
modem goes on hook as on ATH (the far end gets the same short drain, so a
DCN already sent still counts; a call cut mid-page is recorded as
"calldropped"), and once the call is recorded the modem is replaced by a
fresh one in command state (like ATZ, echo back on) and output nobody read is
discarded, so the next opener starts clean. A DTE that opens the port during
that drain waits a few milliseconds for its first answer.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import re
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from faxgate.errors import InputError, TemporaryError
from faxgate.simline import spandsp
from faxgate.simline.ptyport import PtyPort
from faxgate.simline.spandsp import CallEvent, ModemControl

log = logging.getLogger("faxgate.simline")

BLOCK = 160  # samples per tick: 20 ms at 8 kHz
BEHAVIOURS = ("answer", "busy", "no-answer", "voice", "hangup-after")
RATES = {  # highest bit rate → spandsp modem support mask (none = V.27ter 2400 fallback only)
    2400: 0,
    4800: spandsp.SUPPORT_V27TER,
    9600: spandsp.SUPPORT_V27TER | spandsp.SUPPORT_V29,
    14400: spandsp.SUPPORT_V27TER | spandsp.SUPPORT_V29 | spandsp.SUPPORT_V17,
}
RESOLUTIONS = {
    "standard": spandsp.SUPPORT_STANDARD_RESOLUTION,
    "fine": spandsp.SUPPORT_FINE_RESOLUTION,
    "superfine": spandsp.SUPPORT_SUPERFINE_RESOLUTION,
}
COMPRESSIONS = {
    "mh": spandsp.SUPPORT_T4_1D_COMPRESSION,
    "mr": spandsp.SUPPORT_T4_2D_COMPRESSION,
}
BUSY_AFTER_SECONDS = 1.5  # line time from dialling to the BUSY result
FAR_END_HANGUP_DELAY = 0.5  # line time between a failed far-end session and its hang-up
# Line time the far end keeps listening after the modem hangs up: a DTE may send ATH
# the moment the modem reports its last frame (DCN) sent, while that frame's last
# bits are still in the far end's demodulator.
DRAIN_SECONDS = 0.3
DBM0_RMS = 32768.0 * 10 ** (-6.16 / 20)  # rms of a 0 dBm0 signal, as spandsp's awgn.c
_STEM = re.compile(r"^(?P<device>.+)-(?P<call>\d{4,})\.json$")
# Verbose result codes that end the modem's turn in a Class 1 dialogue.
FINAL_RESULTS = tuple(
    b"\r\n" + code + b"\r\n"
    for code in (b"OK", b"ERROR", b"NO CARRIER", b"BUSY", b"NO ANSWER", b"NO DIALTONE", b"+FCERROR")
)
TRANSMIT_COMMAND = re.compile(rb"\+FT[HM]=\d", re.IGNORECASE)


class LineError(TemporaryError):
    """The simulated line stopped working (its thread died)."""


@dataclass(frozen=True)
class LineOptions:
    """How the far end behaves and how fast line time runs.

    ``pacing``: line seconds per wall second (1 = real time; tests use 20-50).
    ``behaviour``: answer | busy | no-answer | voice | hangup-after.
    ``hangup_after_page``: the far end hangs up once it has confirmed this many
    pages (implies behaviour hangup-after). ``max_rate``: top modem offered in
    DIS (2400 = V.27ter fallback, 4800 = V.27ter, 9600 = V.29, 14400 = V.17).
    ``ring_seconds``: line seconds a no-answer call rings before NO ANSWER
    (like a modem's S7 timer). ``noise_dbm0``: white Gaussian noise added to
    both directions, on spandsp's dBm0 scale (0 dBm0 = rms 32768 × 10^(-6.16/20),
    as ``awgn_init_dbm0``). Measured with faxgate's sender at V.17: TCF
    passes at 14400 up to -48 dBm0 (real lines: -70 to -60), but the far
    end's V.17 receiver misses the short training before a page now and then
    (page not received, call fails): in about 1 call in 4 at -55 dBm0, 1 in 15
    at -60, 1 in 100 at -65, none in 200 at -70. Around -47.5 the receivers
    start taking the noise for a carrier, so
    TCF fails at random and training falls back to 12000 or 9600, or the call
    fails; from about -46 TCF fails at every rate (training_failed), and from
    about -40 even V.21 breaks (no valid DIS). The modems' own signals are far
    louder (-11 to -14 dBm0, measured): carrier detection, not the
    signal-to-noise ratio, limits the range.
    ``compressions``: codings offered in DIS ("mh", "mr").
    ``realtime_turns``: while the modem waits for the DTE (see ``DteTurn``)
    line time runs at wall speed, so a DTE written for real time (efax) keeps
    its real turn-around times instead of pacing times longer ones; leave it
    off for a DTE that divides its own timers by ``pacing``.
    """

    pacing: float = 20.0
    behaviour: str = "answer"
    hangup_after_page: int | None = None
    max_rate: int = 14400
    ecm: bool = False
    resolutions: tuple[str, ...] = ("standard", "fine", "superfine")
    noise_dbm0: float | None = None
    csi: str = "+86 755 83235170"
    compressions: tuple[str, ...] = ("mh", "mr")
    ring_seconds: float = 60.0
    realtime_turns: bool = False

    def __post_init__(self) -> None:
        behaviour = self.behaviour.replace("_", "-")
        if behaviour not in BEHAVIOURS:
            raise InputError(f"unknown behaviour {self.behaviour!r}; choose from {BEHAVIOURS}")
        if self.hangup_after_page is not None:
            if self.hangup_after_page < 1:
                raise InputError("hangup_after_page must be at least 1")
            if behaviour == "answer":
                behaviour = "hangup-after"
            elif behaviour != "hangup-after":
                raise InputError(f"hangup_after_page does not go with behaviour {behaviour}")
        if behaviour == "hangup-after" and self.hangup_after_page is None:
            raise InputError("behaviour hangup-after needs hangup_after_page")
        object.__setattr__(self, "behaviour", behaviour)
        if not 0 < self.pacing <= 200:
            raise InputError(f"pacing must be in (0, 200], not {self.pacing}")
        if self.max_rate not in RATES:
            raise InputError(f"max_rate must be one of {sorted(RATES)}, not {self.max_rate}")
        if isinstance(self.resolutions, str) or not self.resolutions:
            raise InputError("resolutions must be a non-empty tuple of names")
        object.__setattr__(self, "resolutions", tuple(self.resolutions))
        for name in self.resolutions:
            if name not in RESOLUTIONS:
                raise InputError(f"unknown resolution {name!r}; choose from {list(RESOLUTIONS)}")
        object.__setattr__(self, "compressions", tuple(self.compressions))
        if not self.compressions or "mh" not in self.compressions:
            raise InputError("compressions must include 'mh' (T.4 requires it)")
        for name in self.compressions:
            if name not in COMPRESSIONS:
                raise InputError(f"unknown compression {name!r}; choose from {list(COMPRESSIONS)}")
        if self.noise_dbm0 is not None and not -90 <= self.noise_dbm0 <= 0:
            raise InputError("noise_dbm0 must be between -90 and 0")
        if len(self.csi.encode("ascii", "replace")) > 20:
            raise InputError("csi is at most 20 characters (T.30)")
        if self.ring_seconds <= 0:
            raise InputError("ring_seconds must be positive")


class DteTurn:
    """Follows the Class 1 dialogue to tell when the modem is waiting for the DTE.

    The modem's turn ends with a final result code, or with CONNECT to a
    transmit command (+FTH/+FTM: the modem now waits for data); the DTE's turn
    ends with the first byte it sends. Only verbose result codes (ATV1, the
    default) are recognised.
    """

    def __init__(self) -> None:
        self.waiting = False
        self._tail = b""
        self._command = bytearray()
        self._reading_command = True
        self._transmit = False

    def modem_sent(self, data: bytes) -> None:
        self._tail = (self._tail + data)[-16:]
        if self._tail.endswith(FINAL_RESULTS):
            self.waiting = True
            self._reading_command = True
            self._command.clear()
        elif self._tail.endswith(b"\r\nCONNECT\r\n") and self._transmit:
            self.waiting = True

    def dte_sent(self, data: bytes) -> None:
        self.waiting = False
        if self._reading_command:
            end = data.find(b"\r")
            self._command += data if end < 0 else data[:end]
            if end >= 0 or len(self._command) > 80:
                self._transmit = bool(TRANSMIT_COMMAND.search(self._command))
                self._reading_command = False


@dataclass(frozen=True)
class ReceivedFax:
    """One finished call as the far end saw it (parsed from its JSON sidecar).

    ``result`` is "ok" or a reason: a spandsp T30_ERR_* name in lower case
    (e.g. "rx_dcndata"), or "busy", "no_answer", "not_a_fax", "far_end_hangup",
    "calldropped".
    """

    tiff: Path | None
    pages: int
    bit_rate: int
    resolution: str
    remote_ident: str
    result: str
    line_seconds: float
    json: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    @property
    def call(self) -> int:
        return int(self.json["call"])

    @property
    def device(self) -> str:
        return str(self.json["device"])

    @classmethod
    def from_sidecar(cls, path: Path) -> ReceivedFax:
        data = json.loads(path.read_text(encoding="utf-8"))
        tiff = path.with_name(data["tiff"]) if data.get("tiff") else None
        return cls(
            tiff=tiff,
            pages=int(data["pages"]),
            bit_rate=int(data["bit_rate"]),
            resolution=str(data["resolution"]),
            remote_ident=str(data["remote_ident"]),
            result=str(data["result"]),
            line_seconds=float(data["line_seconds"]),
            json=data,
        )

    def images(self) -> list[Any]:
        """The received pages as PIL mode "1" images (black = 0), decoded by libtiff."""
        from PIL import Image

        if self.tiff is None:
            return []
        pages = []
        with Image.open(self.tiff) as tiff:
            for index in range(getattr(tiff, "n_frames", 1)):
                tiff.seek(index)
                pages.append(tiff.convert("1"))
        return pages


def read_sidecars(outdir: str | Path, device: str | None = None) -> list[ReceivedFax]:
    """All finished calls in ``outdir`` (optionally of one device), by end time then call."""
    found = []
    for path in Path(outdir).glob("*.json"):
        match = _STEM.match(path.name)
        if not match or (device is not None and match["device"] != device):
            continue
        try:
            found.append(ReceivedFax.from_sidecar(path))
        except (OSError, ValueError, KeyError):
            continue  # not one of ours
    found.sort(key=lambda fax: (fax.json.get("ended_at", ""), fax.device, fax.call))
    return found


def wait_for_fax(
    outdir: str | Path, count: int = 1, timeout: float = 60, device: str | None = None
) -> list[ReceivedFax]:
    """Poll ``outdir`` until at least ``count`` calls have finished; return them.

    Every call leaves a sidecar, failed ones too (check ``.result``). Raises
    TimeoutError with what did arrive when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = read_sidecars(outdir, device)
        if len(found) >= count:
            return found
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{len(found)} of {count} calls finished in {outdir} within {timeout} s: "
                + ", ".join(f"{fax.device}#{fax.call}={fax.result}" for fax in found)
            )
        time.sleep(0.05)


def white_noise(level_dbm0: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise samples (float) at ``level_dbm0``, spandsp's dBm0 scale."""
    return rng.normal(0.0, DBM0_RMS * 10 ** (level_dbm0 / 20), count)


def _resolution_name(y_resolution: int) -> str:
    if y_resolution <= 0:
        return ""
    if y_resolution < 5000:
        return "standard"
    if y_resolution < 10000:
        return "fine"
    return "superfine"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _voice_loop() -> np.ndarray:
    """Two seconds of speech-like sound: low formant tones in syllables, then a pause.

    Kept below 1.3 kHz so nothing resembles CED (2100 Hz) or V.21 (1650/1850 Hz).
    """
    t = np.arange(2 * spandsp.SAMPLE_RATE) / spandsp.SAMPLE_RATE
    tones = sum(amp * np.sin(2 * np.pi * f * t) for f, amp in ((180, 1.0), (520, 0.6), (1150, 0.3)))
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) * (t < 1.4)
    level = DBM0_RMS * 10 ** (-16 / 20) * math.sqrt(2) / 1.9
    return (tones * syllables * level).astype(np.int16)


@dataclass
class _Call:
    """One dialled call, from ATD to on-hook."""

    number: int
    dialled: str
    started_clock: int
    started_at: str
    stem: str
    # ringing | voice | connected → over (far end done) or draining (near end on hook
    # first: the far end hears the last of the line before it is told) → ended
    stage: str = "ringing"
    due_clock: int | None = None  # line time of the next scripted event
    onhook_clock: int | None = None  # line time the modem went on hook
    fax: _FaxFarEnd | None = None
    voice_pos: int = 0
    recorded: bool = False


@dataclass
class _FaxFarEnd:
    """A spandsp fax terminal in answer mode and what its callbacks learnt."""

    state: int
    t30: int
    part: Path
    phase_d_count: int = 0
    hangup_armed: bool = False
    near_end_quiet: bool = False
    finished: bool = False
    completion: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    remote_ident: str = ""
    frames: list[dict[str, Any]] = field(default_factory=list)
    hung_up: bool = False


class SimulatedLine:
    """One emulated Class 1 modem at ``device`` wired to one spandsp far end."""

    def __init__(
        self, device: str | Path, outdir: str | Path, options: LineOptions = LineOptions()
    ) -> None:
        self.device = Path(device).absolute()
        self.outdir = Path(outdir).absolute()
        self.options = options
        self.name = self.device.name
        self._lib = spandsp.library()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._port: PtyPort | None = None
        self._t31: int | None = None
        self._outbox = bytearray()
        self._cts = True
        self._turn = DteTurn()
        self._dte_seen = False  # a DTE had the port open when we last looked
        self._modem_reset_due = False  # the DTE closed the port: reset after the call ends
        self._events: list[tuple[str, str]] = []
        self._clock = 0  # samples since start
        self._call_samples = 0  # samples spent off hook
        self._call: _Call | None = None
        self._next_call = 1
        self._a = spandsp.Samples()
        self._b = spandsp.Samples()
        self._a_np = np.ctypeslib.as_array(self._a)
        self._b_np = np.ctypeslib.as_array(self._b)
        self._rng = np.random.default_rng()
        self._voice = _voice_loop()
        # ctypes callback objects must outlive every C call that may invoke them.
        self._callbacks = (
            spandsp.AtTxHandler(self._on_at_tx),
            spandsp.ModemControlHandler(self._on_modem_control),
            spandsp.PhaseDHandler(self._on_phase_d),
            spandsp.PhaseEHandler(self._on_phase_e),
            spandsp.FrameHandler(self._on_frame),
        )

    # --- public API --------------------------------------------------------------------

    @property
    def line_seconds(self) -> float:
        """Line time spent off hook (in calls) since start, from the sample clock."""
        return self._call_samples / spandsp.SAMPLE_RATE

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Create the pty and its symlink, then run the line in a background thread."""
        if self._thread is not None:
            raise RuntimeError("SimulatedLine already started")
        self.outdir.mkdir(parents=True, exist_ok=True)
        self._next_call = 1 + max(
            (
                int(m["call"])
                for p in self.outdir.glob(f"{self.name}-*.json")
                if (m := _STEM.match(p.name)) and m["device"] == self.name
            ),
            default=0,
        )
        self._port = PtyPort(self.device)
        try:
            self._t31 = self._new_modem()
        except LineError:
            self._port.close()
            raise
        self._thread = threading.Thread(target=self._run, name=f"simline-{self.name}", daemon=True)
        self._thread.start()
        log.info("line %s ready on %s (%s)", self.device, self._port.slave_name, self.options)

    def stop(self, timeout: float = 10) -> None:
        """Stop the thread, finish any call in progress (its sidecar is written), remove the symlink."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise LineError(
                f"simulated line {self.device} failed: {self._error!r}"
            ) from self._error

    def received(self) -> list[ReceivedFax]:
        """Finished calls of this line, ordered by call number."""
        return sorted(read_sidecars(self.outdir, self.name), key=lambda fax: fax.call)

    def wait_for_fax(self, count: int = 1, timeout: float = 60) -> list[ReceivedFax]:
        """Like ``wait_for_fax`` for this line only, failing fast if the line died."""
        deadline = time.monotonic() + timeout
        while True:
            self.raise_if_failed()
            found = self.received()
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{len(found)} of {count} calls finished on {self.device} within {timeout} s"
                )
            time.sleep(0.05)

    def __enter__(self) -> SimulatedLine:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the loop ----------------------------------------------------------------------

    def _new_modem(self) -> int:
        on_tx, on_control = self._callbacks[0], self._callbacks[1]
        modem = self._lib.t31_init(None, on_tx, None, on_control, None, None, None)
        if not modem:
            raise LineError("t31_init failed")
        return int(modem)

    def _run(self) -> None:
        assert self._port is not None
        master = self._port.master
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                self._pump_input()
                self._watch_dte()
                self._flush_output()
                self._handle_events()
                now = time.monotonic()
                if now >= next_tick:
                    self._tick()
                    self._handle_events()
                    self._flush_output()
                    realtime = self._call is None or (
                        self.options.realtime_turns and self._turn.waiting
                    )
                    period = 0.02 if realtime else 0.02 / self.options.pacing
                    next_tick += period
                    if next_tick < now - 5 * period:
                        next_tick = now  # fell behind: slow line time rather than burst
                    continue
                # Without a DTE the master polls readable (hang-up) all the time.
                readers = [master] if self._cts and self._dte_seen else []
                writers = [master] if self._outbox and self._dte_seen else []
                select.select(readers, writers, [], next_tick - now)
        except BaseException as exc:  # reported through raise_if_failed()
            self._error = exc
            log.exception("simulated line %s failed", self.device)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            if self._call is not None:
                self._end_call("calldropped")
        except Exception:
            log.exception("could not record the call in progress on %s", self.device)
        if self._t31:
            self._lib.t31_free(self._t31)
            self._t31 = None
        if self._port is not None:
            self._port.close()

    def _pump_input(self) -> None:
        """Feed what the DTE wrote to T.31, in small pieces, only while CTS is on."""
        assert self._port is not None
        if self._modem_reset_due:
            return  # a new DTE's input waits for the fresh modem
        budget = 4096
        while self._cts and budget > 0:
            # T.31's transmit buffer is 4 KB with CTS off at 3 KB: 256 more never overflow.
            data = self._port.read(256)
            if not data:
                return
            self._dte_seen = True  # also a DTE that wrote and closed between two looks
            if log.isEnabledFor(logging.DEBUG) and len(data) < 80:
                log.debug("%s DTE> %r", self.name, data)
            self._turn.dte_sent(data)
            self._lib.t31_at_rx(self._t31, data, len(data))
            budget -= len(data)

    def _watch_dte(self) -> None:
        """The DTE closing the port drops DTR: go on hook, then reset the modem (like ATZ)."""
        assert self._port is not None
        if self._port.dte_attached():
            if not self._modem_reset_due:
                self._dte_seen = True
        elif self._dte_seen:
            self._pump_input()  # its last words (an ATH, say) were written before the close
            self._dte_seen = False
            self._modem_reset_due = True
            log.info("%s: the DTE closed the port (DTR drop)", self.name)
            self._events.append(("onhook", ""))
            self._handle_events()
        if self._modem_reset_due and self._call is None:
            self._lib.t31_free(self._t31)
            self._t31 = None
            self._t31 = self._new_modem()
            self._outbox.clear()
            self._events.clear()
            self._cts = True
            self._turn = DteTurn()
            self._port.discard_unread()
            self._modem_reset_due = False
            log.info("%s: modem reset, waiting for a DTE", self.name)

    def _flush_output(self) -> None:
        if not self._dte_seen:
            self._outbox.clear()  # nobody to read it (the DTE left)
        elif self._outbox and self._port is not None:
            taken = self._port.write(self._outbox)
            del self._outbox[:taken]

    def _tick(self) -> None:
        """Exchange one 20 ms block of audio between the modem and the far end."""
        call = self._call
        far_audio, near_audio = self._a, self._b
        produced = 0
        if call is not None and call.fax is not None:
            produced = self._lib.fax_tx(call.fax.state, far_audio, BLOCK)
        if produced < BLOCK:
            ctypes.memset(ctypes.addressof(far_audio) + 2 * produced, 0, 2 * (BLOCK - produced))
        if call is not None and call.stage == "voice":
            self._voice_block(call)
        self._add_noise(self._a_np)
        self._lib.t31_rx(self._t31, far_audio, BLOCK)
        produced = self._lib.t31_tx(self._t31, near_audio, BLOCK)
        if produced < BLOCK:
            ctypes.memset(ctypes.addressof(near_audio) + 2 * produced, 0, 2 * (BLOCK - produced))
        self._add_noise(self._b_np)
        if call is not None and call.fax is not None and not call.fax.finished:
            self._lib.fax_rx(call.fax.state, near_audio, BLOCK)
            self._watch_hangup(call, call.fax, produced)
        self._clock += BLOCK
        if call is not None:
            if call.onhook_clock is None:
                self._call_samples += BLOCK
            self._advance_call(call)

    def _add_noise(self, block: np.ndarray) -> None:
        if self.options.noise_dbm0 is not None:
            noisy = block + white_noise(self.options.noise_dbm0, BLOCK, self._rng)
            block[:] = np.clip(noisy, -32768, 32767).astype(np.int16)

    def _voice_block(self, call: _Call) -> None:
        start = call.voice_pos
        chunk = np.take(self._voice, range(start, start + BLOCK), mode="wrap")
        self._a_np[:] = chunk
        call.voice_pos = (start + BLOCK) % len(self._voice)

    # --- call handling -----------------------------------------------------------------

    def _handle_events(self) -> None:
        while self._events:
            kind, detail = self._events.pop(0)
            if kind == "call":
                if self._call is not None:
                    self._end_call("calldropped")
                self._begin_call(detail)
            elif kind == "onhook" and self._call is not None:
                call = self._call
                if call.fax is not None and not call.fax.finished:
                    if call.stage != "draining":
                        call.stage = "draining"
                        call.onhook_clock = self._clock
                        call.due_clock = self._clock + int(DRAIN_SECONDS * spandsp.SAMPLE_RATE)
                else:
                    self._end_call(None)

    def _begin_call(self, dialled: str) -> None:
        number = self._next_call
        self._next_call += 1
        call = _Call(
            number=number,
            dialled=dialled,
            started_clock=self._clock,
            started_at=_now(),
            stem=f"{self.name}-{number:04d}",
        )
        self._call = call
        behaviour = self.options.behaviour
        log.info("%s: call %d to %r (%s)", self.name, number, dialled, behaviour)
        if behaviour == "busy":
            call.due_clock = self._clock + int(BUSY_AFTER_SECONDS * spandsp.SAMPLE_RATE)
        elif behaviour == "no-answer":
            call.due_clock = self._clock + int(self.options.ring_seconds * spandsp.SAMPLE_RATE)
        elif behaviour == "voice":
            call.stage = "voice"
            self._lib.t31_call_event(self._t31, CallEvent.CONNECTED)
        else:
            call.fax = self._new_fax(call)
            call.stage = "connected"
            self._lib.t31_call_event(self._t31, CallEvent.CONNECTED)

    def _advance_call(self, call: _Call) -> None:
        """Run the scripted events of the call whose time has come."""
        fax = call.fax
        if call.due_clock is not None and self._clock >= call.due_clock:
            call.due_clock = None
            if self.options.behaviour == "busy" and call.stage == "ringing":
                self._lib.t31_call_event(self._t31, CallEvent.BUSY)
                self._end_call("busy")
            elif self.options.behaviour == "no-answer" and call.stage == "ringing":
                self._lib.t31_call_event(self._t31, CallEvent.NO_ANSWER)
                self._end_call("no_answer")
            elif call.stage == "over":
                self._lib.t31_call_event(self._t31, CallEvent.HANGUP)
            elif call.stage == "draining":
                self._end_call(None)
            return
        if fax is not None and fax.hung_up:
            # hang-up after page N: the far end drops the line, the modem reports NO CARRIER.
            self._lib.t30_terminate(fax.t30)
            self._finish_fax(call, override="far_end_hangup")
            self._lib.t31_call_event(self._t31, CallEvent.HANGUP)
        elif fax is not None and fax.finished:
            self._finish_fax(call)

    def _watch_hangup(self, call: _Call, fax: _FaxFarEnd, near_produced: int) -> None:
        """After the last page to accept, hang up when the sender starts its next signal."""
        if not fax.hangup_armed:
            return
        if near_produced == 0:
            fax.near_end_quiet = True
        elif fax.near_end_quiet:
            fax.hung_up = True

    def _new_fax(self, call: _Call) -> _FaxFarEnd:
        lib, options = self._lib, self.options
        state = lib.fax_init(None, 0)
        if not state:
            raise LineError("fax_init failed")
        t30 = lib.fax_get_t30_state(state)
        part = self.outdir / f".{call.stem}.tif.part"
        lib.t30_set_tx_ident(t30, options.csi.encode("ascii", "replace"))
        lib.t30_set_rx_file(t30, os.fsencode(part), -1)
        lib.t30_set_ecm_capability(t30, int(options.ecm))
        lib.t30_set_supported_modems(t30, RATES[options.max_rate])
        resolutions = spandsp.SUPPORT_R8_RESOLUTION
        for name in options.resolutions:
            resolutions |= RESOLUTIONS[name]
        lib.t30_set_supported_resolutions(t30, resolutions)
        compressions = 0
        for name in options.compressions:
            compressions |= COMPRESSIONS[name]
        lib.t30_set_supported_compressions(t30, compressions)
        _, _, on_phase_d, on_phase_e, on_frame = self._callbacks
        lib.t30_set_phase_d_handler(t30, on_phase_d, None)
        lib.t30_set_phase_e_handler(t30, on_phase_e, None)
        lib.t30_set_real_time_frame_handler(t30, on_frame, None)
        return _FaxFarEnd(state=state, t30=t30, part=part)

    def _finish_fax(self, call: _Call, override: str | None = None) -> None:
        """Free the far end (never inside a callback), then publish TIFF and sidecar."""
        fax = call.fax
        assert fax is not None
        call.fax = None
        self._lib.fax_free(fax.state)
        result = override or spandsp.completion_name(fax.completion)
        self._record(call, result, fax)
        if call.stage == "draining":  # the modem is on hook already
            self._end_call(None)
        elif call.stage != "ended":
            call.stage = "over"
            if result != "ok" and override is None:
                # A failed far end gives up and hangs up shortly after.
                call.due_clock = self._clock + int(FAR_END_HANGUP_DELAY * spandsp.SAMPLE_RATE)

    def _end_call(self, result: str | None) -> None:
        """The modem went on hook (or the call failed to connect): record and forget the call."""
        call = self._call
        if call is None:
            return
        call.stage = "ended"
        if call.onhook_clock is None:
            call.onhook_clock = self._clock
        if call.fax is not None:
            fax = call.fax
            if not fax.finished:
                self._lib.t30_terminate(fax.t30)  # calls our phase E handler
            if not fax.finished:
                fax.finished = True
                fax.completion = spandsp.COMPLETION_CODES.index("CALLDROPPED")
            self._finish_fax(call)
        self._call = None
        if not call.recorded:
            fallback = {"busy": "busy", "no-answer": "no_answer", "voice": "not_a_fax"}.get(
                self.options.behaviour, "calldropped"
            )
            self._record(call, result or fallback, None)
        log.info("%s: call %d on hook", self.name, call.number)

    def _record(self, call: _Call, result: str, fax: _FaxFarEnd | None) -> None:
        """Move the TIFF into place, then write the sidecar atomically (it is the commit)."""
        if call.recorded:
            return
        call.recorded = True
        tiff_name = None
        stats = fax.stats if fax else {}
        pages = stats.get("pages_rx", 0)
        if fax is not None and fax.part.exists():
            if pages > 0:
                tiff_name = f"{call.stem}.tif"
                os.replace(fax.part, self.outdir / tiff_name)
            else:
                fax.part.unlink()
        code = fax.completion if fax else None
        record = {
            "device": self.name,
            "call": call.number,
            "dialled": call.dialled,
            "behaviour": self.options.behaviour,
            "result": result,
            "result_code": code,
            "result_text": spandsp.completion_text(code) if code is not None else result,
            "pages": pages,
            "bit_rate": stats.get("bit_rate", 0) if pages else 0,
            "resolution": _resolution_name(stats.get("y_resolution", 0)) if pages else "",
            "x_resolution": stats.get("x_resolution", 0),
            "y_resolution": stats.get("y_resolution", 0),
            "width": stats.get("width", 0),
            "length": stats.get("length", 0),
            "encoding": spandsp.ENCODING_NAMES.get(stats.get("encoding", 0), ""),
            "ecm": bool(stats.get("error_correcting_mode", 0)),
            "bad_rows": stats.get("bad_rows", 0),
            "remote_ident": fax.remote_ident if fax else "",
            "csi": self.options.csi,
            "line_seconds": round(
                (min(self._clock, call.onhook_clock or self._clock) - call.started_clock)
                / spandsp.SAMPLE_RATE,
                3,
            ),
            "started_at": call.started_at,
            "ended_at": _now(),
            "tiff": tiff_name,
            "frames": fax.frames if fax else [],
        }
        final = self.outdir / f"{call.stem}.json"
        temporary = self.outdir / f".{call.stem}.json.tmp"
        temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, final)
        log.info("%s: call %d recorded: %s, %d pages", self.name, call.number, result, pages)

    # --- callbacks from spandsp (run inside our own C calls, on the line thread) --------

    def _guard(self, what: str, func: Callable[[], int | None]) -> int:
        try:
            return int(func() or 0)
        except Exception as exc:  # an exception must not unwind through C
            log.exception("%s: error in %s callback", self.name, what)
            self._error = self._error or exc
            self._stop.set()
            return 0

    def _on_at_tx(self, _s: int, _user: int, buf: Any, length: int) -> int:
        data = ctypes.string_at(buf, length)
        if log.isEnabledFor(logging.DEBUG) and length < 80:
            log.debug("%s <DCE %r", self.name, data)
        self._outbox += data
        self._turn.modem_sent(data)
        if len(self._outbox) > 1 << 20:  # nobody reads the port: keep the newest
            del self._outbox[: len(self._outbox) - (1 << 20)]
        return length

    def _on_modem_control(self, _s: int, _user: int, op: int, num: int | None) -> int:
        def handle() -> int:
            if op == ModemControl.CALL and num:
                # ATD always passes its dial string; a CALL without one is 0.0.6's
                # at_set_at_rx_mode() misusing the op argument for a DTE timeout.
                self._events.append(("call", ctypes.string_at(num).decode("ascii", "replace")))
            elif op in (ModemControl.HANGUP, ModemControl.ONHOOK):
                self._events.append(("onhook", ""))
            elif op == ModemControl.CTS:
                self._cts = bool(num)
            elif op == ModemControl.ANSWER:
                return -1  # no incoming calls on this line: ATA answers ERROR
            return 0

        return self._guard("modem control", handle)

    def _current_fax(self, t30: int) -> _FaxFarEnd | None:
        call = self._call
        if call is not None and call.fax is not None and call.fax.t30 == t30:
            return call.fax
        return None

    def _on_phase_d(self, t30: int, _user: int, fcf: int) -> int:
        def handle() -> int:
            fax = self._current_fax(t30)
            if fax is None:
                return 0
            fax.phase_d_count += 1
            limit = self.options.hangup_after_page
            if limit is not None and fax.phase_d_count >= limit and (fcf & 0xFE) != spandsp.FCF_EOP:
                fax.hangup_armed = True
            return 0

        return self._guard("phase D", handle)

    def _on_phase_e(self, t30: int, _user: int, completion: int) -> None:
        def handle() -> None:
            fax = self._current_fax(t30)
            if fax is None or fax.finished:
                return
            stats = spandsp.T30Stats()
            self._lib.t30_get_transfer_statistics(t30, ctypes.byref(stats))
            fax.stats = {name: getattr(stats, name) for name, _ in spandsp.T30Stats._fields_}
            ident = self._lib.t30_get_rx_ident(t30)
            fax.remote_ident = ident.decode("latin-1").strip() if ident else ""
            fax.completion = completion
            fax.finished = True

        self._guard("phase E", handle)

    def _on_frame(self, t30: int, _user: int, incoming: int, msg: Any, length: int) -> None:
        def handle() -> None:
            fax = self._current_fax(t30)
            call = self._call
            if fax is None or call is None or length < 3:
                return
            frame = ctypes.string_at(msg, length)
            fax.frames.append(
                {
                    "t": round((self._clock - call.started_clock) / spandsp.SAMPLE_RATE, 3),
                    "dir": "rx" if incoming else "tx",
                    "frame": spandsp.frame_name(frame[2]),
                    "hex": frame.hex(),
                }
            )

        self._guard("frame", handle)
