"""``faxgate line``: serve simulated phone lines (spandsp modem + far-end fax) on ptys."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "line",
        help="run simulated phone lines: a Class 1 modem on a pty wired to a fax machine",
        description=(
            "Each --device PATH becomes a symlink to a pty speaking Class 1 (spandsp T.31); "
            "whatever it dials reaches a spandsp fax machine that writes each call to "
            "OUTDIR as <device>-<call>.tif plus a JSON sidecar. Prints 'READY <device>' per "
            "line once usable; stops cleanly on SIGTERM/SIGINT."
        ),
    )
    parser.add_argument(
        "--device",
        action="append",
        required=True,
        metavar="PATH",
        help="path of the modem symlink to create (repeat for several lines)",
    )
    parser.add_argument(
        "--outdir",
        required=True,
        metavar="DIR",
        help="directory for received faxes and call sidecars",
    )
    parser.add_argument(
        "--pacing",
        type=float,
        default=20.0,
        metavar="N",
        help="line seconds per wall second (1 = real time; default 20)",
    )
    parser.add_argument(
        "--behaviour",
        default="answer",
        choices=["answer", "busy", "no-answer", "voice", "hangup-after"],
        help="what the far end does when called (default answer)",
    )
    parser.add_argument(
        "--hangup-after-page",
        type=int,
        metavar="N",
        help="the far end hangs up after confirming N pages",
    )
    parser.add_argument(
        "--max-rate",
        type=int,
        default=14400,
        choices=[2400, 4800, 9600, 14400],
        help="fastest modem the far end offers (default 14400, V.17)",
    )
    parser.add_argument(
        "--ecm",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="offer error correction mode (default off)",
    )
    parser.add_argument(
        "--resolution",
        action="append",
        metavar="NAME",
        choices=["standard", "fine", "superfine"],
        help="resolution the far end accepts (repeat; default all three)",
    )
    parser.add_argument(
        "--compression",
        action="append",
        metavar="NAME",
        choices=["mh", "mr"],
        help="coding the far end accepts (repeat; default mh and mr)",
    )
    parser.add_argument(
        "--noise-dbm0",
        type=float,
        metavar="DBM0",
        help="add white noise at this level to both directions (the modems send at -11 to "
        "-14 dBm0; -70 is quiet; from -65 the far end's V.17 receiver misses some "
        "pages' short training, 1 call in 15 at -60; from about -47 spandsp's receivers "
        "take the noise for a carrier and training fails)",
    )
    parser.add_argument(
        "--csi", default="+86 755 83235170", help="the far end's identification (CSI)"
    )
    parser.add_argument(
        "--ring-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="line seconds a no-answer call rings before NO ANSWER",
    )
    parser.add_argument(
        "--realtime-turns",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run line time at wall speed while the modem waits for the DTE "
        "(for DTEs with real-time timers such as efax)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from faxgate.simline.line import LineOptions
    from faxgate.simline.process import serve

    options = LineOptions(
        pacing=args.pacing,
        behaviour=args.behaviour,
        hangup_after_page=args.hangup_after_page,
        max_rate=args.max_rate,
        ecm=args.ecm,
        resolutions=tuple(args.resolution or ("standard", "fine", "superfine")),
        compressions=tuple(args.compression or ("mh", "mr")),
        noise_dbm0=args.noise_dbm0,
        csi=args.csi,
        ring_seconds=args.ring_seconds,
        realtime_turns=args.realtime_turns,
    )
    return serve(args.device, args.outdir, options)
