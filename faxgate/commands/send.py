"""``faxgate send``: render files and send them as one fax through one modem, now.

No queue, no retries: the admin's tool for testing a modem or a line, and a
building block for scripts. Exit 0 when the far end confirmed every page, 1
when the call failed, 2 for bad usage or input.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from faxgate.commands import pageopts

if TYPE_CHECKING:
    from faxgate.faxd.t30 import CallResult


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "send",
        help="send one fax straight through one modem (no queue)",
        description="Render FILEs to fax pages, dial NUMBER on the Class 1 modem at "
        "--device and send them. NUMBER is dialled exactly as given (digits, * #, "
        "',' pause, W wait for dial tone); no dial plan is applied.",
    )
    parser.add_argument("--device", required=True, metavar="PATH", help="Class 1 modem device")
    parser.add_argument("--json", action="store_true", help="print the call result as JSON")
    pageopts.add_arguments(parser, "our number in TSI and the header (default fax.station_id)")
    parser.add_argument(
        "--coding", choices=("mh", "mr"), help="preferred coding (default fax.coding)"
    )
    parser.add_argument("--max-rate", type=int, choices=(14400, 12000, 9600, 7200, 4800, 2400))
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="N",
        help="for a simulated line: its pacing (protocol timers shrink by N); default 1",
    )
    parser.add_argument("number", metavar="NUMBER", help="what to dial")
    parser.add_argument("files", nargs="+", metavar="FILE", help="documents, in page order")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from faxgate import config
    from faxgate.errors import InputError
    from faxgate.faxd.sender import SendOptions, send_fax
    from faxgate.faxd.t30 import DIAL_STRING
    from faxgate.render import Document, RenderOptions, render_documents

    if not DIAL_STRING.fullmatch(args.number):
        raise InputError(
            f"cannot dial {args.number!r}: use digits, * #, ',' (pause) and W (wait), at most 40"
        )
    if args.time_scale <= 0:
        raise InputError("--time-scale must be positive")
    if not Path(args.device).exists():
        raise InputError(f"no such device: {args.device}")
    cfg = config.load(args.config)
    cfg = pageopts.apply(cfg, args)
    documents = []
    for name in args.files:
        try:
            documents.append(Document(Path(name).read_bytes(), Path(name).name))
        except OSError as exc:
            raise InputError(f"cannot read {name}: {exc.strerror or exc}") from None
    pages = render_documents(documents, RenderOptions.from_config(cfg))
    if not pages:
        raise InputError("the files gave no pages to send")
    overrides: dict[str, object] = {"time_scale": args.time_scale}
    if args.coding:
        overrides["coding"] = args.coding
    if args.max_rate:
        overrides["max_rate"] = args.max_rate
    options = SendOptions.from_config(cfg.fax, **overrides)
    result = send_fax(args.device, args.number, pages, options)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_result(result)
    return 0 if result.ok else 1


def _print_result(result: CallResult) -> None:
    status = "sent" if result.ok else f"FAILED ({result.reason})"
    print(f"{status}: {result.message}")
    print(f"pages confirmed: {result.pages_confirmed} of {result.pages_total}")
    if result.remote_ident:
        print(f"remote ident: {result.remote_ident}")
    if result.bit_rate:
        print(f"line: {result.modulation}, {result.resolution}, {(result.coding or '').upper()}")
    print(f"off hook: {result.line_seconds:.1f} s")
