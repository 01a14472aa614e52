"""Line seconds per page: faxgate (MH, MR) against efax on the same simulated line.

Times come from the simulated line's sample clock (line seconds off hook per
call, from its sidecars), not wall time, so host speed does not enter. efax
waits in wall time, so its call runs with the line's ``realtime_turns`` (line
time at wall speed while efax has the turn); at pacing 1, the default, that
changes nothing.
The same fine-resolution text page is sent three times in one run: by
faxgate with MH, by faxgate with MR, and by Debian's efax (Class 1, MH only).
Each faxgate call is also compared with its physical minimum: the far end's own
answer time up to the end of its DIS (measured), plus the nominal durations of
the shortest T.30 exchange around the encoded page at the negotiated rate.

    .venv/bin/python bench/bench_line.py [--pacing 1] [--page letter|full]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

from faxgate.faxd.frames import MODULATIONS, Session
from faxgate.faxd.page import FaxPage
from faxgate.faxd.sender import ImagePages, SendOptions, send_fax
from faxgate.faxd.t30 import CallResult
from faxgate.render import Document, RenderOptions, render_documents
from faxgate.simline import LineOptions, SimulatedLine, efax

# Lower bounds T.30 allows, so the "minimum" really is one:
V21_PREAMBLE = 0.85  # 1 s -15 % of flags before the first frame of a V.21 burst
GAP = 0.055  # 75 ms -20 ms between the end of one signal and the start of the next
TCF = 1.35  # 1.5 s -10 % of zeros
#: Training durations in seconds (V.17 long/short, V.29, V.27 ter).
TRAIN_LONG = {"V.17": 1.393, "V.29": 0.253, "V.27ter 4800": 0.708, "V.27ter 2400": 0.943}
TRAIN_SHORT = {"V.17": 0.142}

LETTER = """Dear colleague,

thank you for your letter of 28 November. As agreed on the telephone, we
send you the revised schedule for the installation of the fax gateway at
your Shenzhen office. The work is planned in three stages:

 1. Survey of the existing PBX lines and the two analogue trunks.
 2. Installation of the server, the USB modems and the Postfix relay.
 3. Acceptance test: ten faxes to each branch, receipts checked by mail.

Each stage takes about two working days. Please make sure that the server
room is accessible from 8:30 and that somebody from your IT department can
answer questions about the mail system. The price stays as quoted
(reference Q-2026-117), travel included.

Should you need to move a date, a short note by fax or mail is enough; we
will confirm within one working day.

With kind regards,

The faxgate team
"""


def v21_seconds(frame_lengths: list[int]) -> float:
    """One V.21 burst: preamble, then each frame with its FCS and a closing flag."""
    return V21_PREAMBLE + sum((n + 3) * 8 for n in frame_lengths) / 300


def minimum_seconds(result: CallResult, page_bytes: int, dis_at: float) -> float:
    """The far end's measured answer (to the end of DIS) + the shortest exchange."""
    rate = result.bit_rate or 14400
    name = result.modulation or ""
    family = name.split()[0]
    train_long = TRAIN_LONG.get(family, TRAIN_LONG.get(name, 1.0))
    train_short = TRAIN_SHORT.get(family, train_long)
    tsi_dcs = [3 + 20, 3 + 3]
    response = [3]
    exchange = (
        GAP
        + v21_seconds(tsi_dcs)
        + GAP
        + train_long
        + TCF
        + GAP
        + v21_seconds(response)  # CFR
        + GAP
        + train_short
        + page_bytes * 8 / rate
        + GAP
        + v21_seconds([3])  # EOP
        + GAP
        + v21_seconds(response)  # MCF
        + GAP
        + v21_seconds([3])  # DCN
    )
    return dis_at + exchange


def page_bytes(page: FaxPage, result: CallResult) -> int:
    """The page as faxgate coded it for the session it negotiated."""
    modulation = next(
        m for m in MODULATIONS if m.bit_rate == result.bit_rate and m.name == result.modulation
    )
    session = Session(modulation, result.resolution or "fine", result.coding or "mh", 0)
    return len(ImagePages([page]).encode(0, session))


def dis_received_at(result: CallResult) -> float:
    """Line seconds from dialling to the DIS, from faxgate's transcript (line time)."""
    for seconds, direction, name, _ in result.transcript:
        if direction == "<" and name == "DIS":
            return seconds
    raise RuntimeError("no DIS in the transcript")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pacing",
        type=float,
        default=1.0,
        help="line seconds per wall second (default 1: real time)",
    )
    parser.add_argument(
        "--page",
        choices=("letter", "full"),
        default="letter",
        help="a short business letter, or a page filled with text (first page of it)",
    )
    args = parser.parse_args(argv)
    if shutil.which("efax") is None:
        print("efax is not installed (apt-get install efax)", file=sys.stderr)
        return 2
    text = LETTER if args.page == "letter" else LETTER * 3
    pages = render_documents(
        [Document(text.encode(), "letter.txt")], RenderOptions(resolution="fine", header=None)
    )
    page = pages[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        device, out = work / "ttyBENCH", work / "out"
        options = LineOptions(pacing=args.pacing, resolutions=("standard", "fine"))
        results: dict[str, CallResult] = {}
        # faxgate divides its own timers by the pacing (time_scale), so its line runs
        # paced throughout; efax waits in wall time, so the same far end serves it with
        # realtime_turns (line time runs at wall speed while efax has the turn). At
        # pacing 1 the two are the same line.
        with SimulatedLine(device, out, options) as line:
            for coding in ("mh", "mr"):
                send = SendOptions(
                    lock_dir=None,
                    station_id="+86 755 5550100",
                    coding=coding,
                    time_scale=args.pacing,
                )
                results[coding] = send_fax(str(device), "5550199", [page], send)
                if not results[coding].ok:
                    print(f"faxgate {coding}: {results[coding].message}", file=sys.stderr)
                    return 1
            line.wait_for_fax(2, timeout=120)
        efax_options = dataclasses.replace(options, realtime_turns=True)
        with SimulatedLine(device, out, efax_options) as line:
            tiff = efax.write_tiff_f(page.image, work / "page.tif", "fine")
            sent = efax.send(device, [tiff], "5550199", "+86 755 5550100", timeout=600)
            if sent.returncode != 0:
                print(f"efax failed ({sent.outcome}): {sent.log}", file=sys.stderr)
                return 1
            calls = line.wait_for_fax(3, timeout=120)
        seconds = {
            name: call.line_seconds for name, call in zip(("mh", "mr", "efax"), calls, strict=True)
        }
        for call in calls:
            if not call.ok or call.pages != 1:
                print(f"call {call.call} failed at the far end: {call.result}", file=sys.stderr)
                return 1
    efax_s = seconds["efax"]
    print(
        f"one fine A4 text page ({args.page}, {page.image.size[1]} lines), far end spandsp, "
        f"pacing {args.pacing:g}"
    )
    print(
        f"{'sender':<16}{'rate':>7}{'bytes':>8}{'line s':>9}{'minimum':>9}"
        f"{'vs min':>8}{'vs efax':>9}{'min/efax':>10}"
    )
    worst = 0.0
    for coding in ("mh", "mr"):
        result = results[coding]
        size = page_bytes(page, result)
        minimum = minimum_seconds(result, size, dis_received_at(result))
        s = seconds[coding]
        worst = max(worst, s / minimum)
        print(
            f"{'faxgate ' + coding.upper():<16}{result.bit_rate:>7}{size:>8}{s:>9.2f}"
            f"{minimum:>9.2f}{s / minimum:>7.2f}x{s / efax_s:>8.2f}x{minimum / efax_s:>9.2f}x"
        )
    print(f"{'efax (MH)':<16}{calls[2].bit_rate:>7}{'':>8}{efax_s:>9.2f}{'':>9}{'':>8}{1:>8.2f}x")
    mh, mr = seconds["mh"] / efax_s, seconds["mr"] / efax_s
    print(
        f"targets: MH <= efax: {'met' if mh <= 1 else 'MISSED'}; "
        f"MR <= 0.7x efax: {'met' if mr <= 0.7 else 'MISSED'}; "
        f"within 1.15x of the minimum: {'met' if worst <= 1.15 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
