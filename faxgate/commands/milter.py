"""``faxgate milter``: run the Postfix milter on ``[milter] socket``."""

from __future__ import annotations

import argparse
import logging


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "milter",
        help="run the Postfix milter (checks fax mail at SMTP time and spools jobs)",
        description="Serve the milter on [milter] socket until SIGTERM. Mail to none of "
        "[milter] fax_addresses passes untouched.",
    )
    parser.add_argument(
        "--socket", metavar="SPEC", help="override [milter] socket (inet:PORT@HOST or unix:PATH)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from faxgate import config
    from faxgate.faxd import spool
    from faxgate.milter import app

    cfg = config.load(args.config)
    if args.socket:
        cfg = dataclasses.replace(cfg, milter=dataclasses.replace(cfg.milter, socket=args.socket))
    if not args.verbose:
        # One log line per decision (accepted, rejected and why) is INFO, not noise.
        logging.getLogger("faxgate").setLevel(logging.INFO)
    try:
        spool.ensure_layout(cfg.spool.directory)
    except spool.SpoolError as exc:
        # Serve anyway: ordinary mail must flow; fax mail gets 451 until this is fixed.
        logging.getLogger("faxgate.milter").error("%s; fax mail will be deferred (451)", exc)
    app.run(cfg)
    return 0
