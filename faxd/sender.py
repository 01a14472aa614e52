"""Send one fax through one Class 1 modem: the T.30 machine driven over the port.

``send_fax`` is the glue between the sans-I/O ``T30Sender`` and the transport:
it opens and locks the device, resets and probes the modem, turns each action
into AT commands and each modem answer into an event, and always ends with the
line on hook and the port closed. Every failure becomes a ``CallResult`` with a
stable reason; nothing escapes as a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from faxgate.faxd import t4
from faxgate.faxd.class1 import Class1Modem, ModemError, ReceivedFrame
from faxgate.faxd.frames import Session
from faxgate.faxd.modem import (
    DEFAULT_LOCK_DIR,
    ModemGone,
    PortLocked,
    SerialPort,
    SerialSettings,
    reset_and_probe,
)
from faxgate.faxd.page import PAGE_WIDTH, FaxPage
from faxgate.faxd.t30 import (
    Action,
    AwaitSilence,
    CallResult,
    Dial,
    Event,
    Finished,
    FrameReceived,
    HangUp,
    ModemResult,
    ReceiveFrame,
    SenderOptions,
    SendFrames,
    SendPage,
    SendTraining,
    Silence,
    T30Sender,
    TimerExpired,
    action_to_dict,
    event_to_dict,
)

log = logging.getLogger(__name__)

_LINES_PER_STEP = {"standard": 1, "fine": 2, "superfine": 4}


@dataclass(frozen=True)
class SendOptions:
    """Everything about one call that is not the number or the pages."""

    station_id: str = ""
    dial_prefix: str = "ATDT"
    max_rate: int = 14400
    coding: str = "mr"
    dial_timeout: float = 90.0
    t1: float = 35.0
    t4: float = 3.0
    flow_control: str = "xonxoff"
    lock_dir: str | None = DEFAULT_LOCK_DIR
    baudrate: int = 115200
    short_train: bool = True
    #: Line seconds per wall second: a simulated line's pacing. Protocol timers
    #: are line time, so they shrink by this factor; 1 for real modems.
    time_scale: float = 1.0

    @classmethod
    def from_config(cls, fax: Any, **overrides: Any) -> SendOptions:
        """From the ``[fax]`` config section (``FaxConfig``)."""
        values = {
            "station_id": fax.station_id,
            "dial_prefix": fax.dial_prefix,
            "max_rate": fax.max_rate,
            "coding": fax.coding,
            "dial_timeout": fax.dial_timeout_seconds,
            "t1": fax.t1_seconds,
            "t4": fax.t4_seconds,
            "flow_control": fax.flow_control,
            "lock_dir": fax.lock_dir or None,
            "baudrate": fax.baudrate,
        }
        values.update(overrides)
        return cls(**values)

    def sender_options(self) -> SenderOptions:
        return SenderOptions(
            station_id=self.station_id,
            dial_prefix=self.dial_prefix,
            max_rate=self.max_rate,
            coding=self.coding,
            dial_timeout=self.dial_timeout,
            t1=self.t1,
            t4=self.t4,
            time_scale=self.time_scale,
            short_train=self.short_train,
        )


def convert_resolution(image: Image.Image, source: str, target: str) -> Image.Image:
    """Re-sample vertically: drop lines to go coarser, repeat them to go finer."""
    if source == target:
        return image
    rows = np.asarray(image.convert("1"), dtype=bool)
    have, want = _LINES_PER_STEP[source], _LINES_PER_STEP[target]
    rows = rows[:: have // want] if have > want else np.repeat(rows, want // have, axis=0)
    return Image.fromarray(rows)


class ImagePages:
    """FaxPage images coded with the T.4 encoder for whatever session DCS set."""

    def __init__(self, pages: Sequence[FaxPage]) -> None:
        if not pages:
            raise ValueError("a fax needs at least one page")
        self._pages = list(pages)
        for number, page in enumerate(self._pages, start=1):
            if page.image.width != PAGE_WIDTH:
                raise ValueError(
                    f"page {number} is {page.image.width} pixels wide; fax pages are {PAGE_WIDTH}"
                )
        self._coded: dict[tuple[int, str, str, int], bytes] = {}
        finest = max(_LINES_PER_STEP[p.resolution] for p in self._pages)
        self._resolution = next(r for r, n in _LINES_PER_STEP.items() if n == finest)

    @property
    def count(self) -> int:
        return len(self._pages)

    @property
    def resolution(self) -> str:
        return self._resolution

    def image_for(self, index: int, resolution: str) -> Image.Image:
        """The page as it is sent at ``resolution`` (what the far end should decode)."""
        page = self._pages[index]
        return convert_resolution(page.image, page.resolution, resolution)

    def encode(self, index: int, session: Session) -> bytes:
        return self.coded(index, session.resolution, session.coding, session.min_bits_per_line)

    def coded(self, index: int, resolution: str, coding: str, min_bits_per_line: int = 0) -> bytes:
        """T.4 data of page ``index``; cached, since the same page is often sent again
        (RTN) and the first page is coded before dialling to keep the turn-around short."""
        key = (index, resolution, coding, min_bits_per_line)
        data = self._coded.get(key)
        if data is None:
            data = t4.encode_image(
                self.image_for(index, resolution),
                coding,  # type: ignore[arg-type]
                k=t4.k_for_resolution(resolution),
                min_bits_per_line=min_bits_per_line,
                rtc=True,
                lsb_first=True,
            )
            self._coded = {k: v for k, v in self._coded.items() if k[0] >= index}
            self._coded[key] = data
        return data


def _event_for(answer: ReceivedFrame | str) -> Event:
    if isinstance(answer, ReceivedFrame):
        return FrameReceived(answer.data, answer.fcs_ok)
    if answer == "TIMEOUT":
        return TimerExpired()
    return ModemResult(answer)


def perform(modem: Class1Modem, action: Action) -> Event:
    """Carry out one action on the modem and report what came of it."""
    if isinstance(action, Dial):
        return _event_for(modem.dial(action.command, action.timeout))
    if isinstance(action, ReceiveFrame):
        return _event_for(modem.receive_frame(action.timeout))
    if isinstance(action, SendFrames):
        return ModemResult(modem.send_frames(list(action.frames)))
    if isinstance(action, SendTraining):
        return ModemResult(modem.send_data(action.modulation, bytes(action.length), action.timeout))
    if isinstance(action, SendPage):
        return ModemResult(modem.send_data(action.modulation, action.data, action.timeout))
    if isinstance(action, Silence):
        return ModemResult(modem.silence(action.tens_of_ms))
    if isinstance(action, AwaitSilence):
        return ModemResult(modem.await_silence(action.tens_of_ms))
    if isinstance(action, HangUp):
        try:
            return ModemResult(modem.hang_up())
        except ModemError:
            return ModemResult("ERROR")
    raise TypeError(f"cannot perform {action!r}")


def run_call(
    modem: Class1Modem,
    machine: T30Sender,
    record: list[dict[str, Any]] | None = None,
    on_page_confirmed: Callable[[int], None] | None = None,
) -> CallResult:
    """Drive ``machine`` over ``modem`` until it finishes; transport failures end the
    call with reason ``modem_error``. ``on_page_confirmed(next_page)`` is called as
    soon as the far end confirms a page (``next_page`` counts from page 0), so a
    queue can persist progress before the call goes on."""
    clock = time.monotonic
    action = machine.start(clock())
    confirmed = machine.result.pages_confirmed
    try:
        while not isinstance(action, Finished):
            if record is not None:
                record.append({"action": action_to_dict(action)})
            event = perform(modem, action)
            now = clock()
            if record is not None:
                record.append({"t": round(now - machine.started_at, 3), **event_to_dict(event)})
            action = machine.handle(event, now)
            if on_page_confirmed is not None and machine.result.pages_confirmed > confirmed:
                confirmed = machine.result.pages_confirmed
                on_page_confirmed(machine.result.next_page)
    except ModemGone as exc:
        return machine.abort("modem_error", str(exc), clock())
    except ModemError as exc:
        result = machine.abort("modem_error", str(exc), clock())
        _hang_up_quietly(modem)
        return result
    if record is not None:
        record.append({"action": action_to_dict(action)})
    return action.result


def _hang_up_quietly(modem: Class1Modem) -> None:
    try:
        modem.abort(0.5)
        modem.hang_up()
    except (ModemError, ModemGone):
        pass


def send_fax(
    device: str,
    dial: str,
    pages: Sequence[FaxPage] | ImagePages,
    options: SendOptions | None = None,
    *,
    first_page: int = 0,
    record: list[dict[str, Any]] | None = None,
    on_page_confirmed: Callable[[int], None] | None = None,
) -> CallResult:
    """Dial ``dial`` (digits as the dial plan produced them) on ``device`` and send
    ``pages`` from ``first_page`` on. Never raises for call or modem trouble."""
    options = options or SendOptions()
    source = pages if isinstance(pages, ImagePages) else ImagePages(pages)
    machine = T30Sender(dial, source, options.sender_options(), first_page=first_page)
    settings = SerialSettings(
        baudrate=options.baudrate, flow_control=options.flow_control, lock_dir=options.lock_dir
    )

    def trace(direction: str, text: str) -> None:
        log.debug("%s %s %s", device, direction, text)

    port = SerialPort(device, settings)
    try:
        port.open()
    except (ModemGone, PortLocked, ModemError) as exc:
        return machine.abort("modem_error", str(exc), time.monotonic())
    try:
        modem = Class1Modem(port, trace)
        try:
            reset_and_probe(modem)
        except (ModemGone, ModemError) as exc:
            return machine.abort("modem_error", f"modem not ready: {exc}", time.monotonic())
        # Most far ends take our best resolution and MR with no scan-time fill:
        # code the first page for that now, not in the gap after CFR.
        source.coded(first_page, source.resolution, options.coding)
        return run_call(modem, machine, record, on_page_confirmed)
    finally:
        port.close()
