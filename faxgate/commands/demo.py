"""``faxgate demo``: the whole gateway on loopback, one real fax mail, the results."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from faxgate.demo import DEFAULT_PACING, DEFAULT_TIMEOUT

    parser = sub.add_parser(
        "demo",
        help="run the whole gateway on loopback and send one fax mail through it (needs root)",
        description=(
            "Starts a private Postfix on 127.0.0.1 (own config and queue; the system Postfix "
            "is not touched), the milter, faxd with two simulated phone lines and a mailbox "
            "for receipts; registers a demo sender, mails a PDF and a Chinese text file to the "
            "fax address, shows the job's progress, then prints where the received faxes and "
            "the receipt are. Everything it starts is stopped again at the end."
        ),
    )
    parser.add_argument(
        "--workdir",
        default="demo-output",
        metavar="DIR",
        help="where the store, spool, faxes, receipt and logs go (default ./demo-output; "
        "an earlier demo's files there are replaced)",
    )
    parser.add_argument(
        "--pacing",
        type=float,
        default=DEFAULT_PACING,
        metavar="N",
        help=f"simulated line seconds per wall second (default {DEFAULT_PACING:g})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"give up if the job is not finished after S seconds (default {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from faxgate.demo import run_demo
    from faxgate.errors import InputError

    if args.pacing <= 0 or args.timeout <= 0:
        raise InputError("--pacing and --timeout must be positive")
    try:
        result = run_demo(args.workdir, pacing=args.pacing, timeout=args.timeout)
    except KeyboardInterrupt:
        print("faxgate demo: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    print(f"\ndemo OK: job {result.job_id} {result.job_state}")
    return 0
