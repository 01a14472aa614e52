"""``faxgate faxd``: run the fax daemon in the foreground (systemd runs it so)."""

from __future__ import annotations

import argparse
import logging


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "faxd", help="run the fax daemon: dial spooled jobs, retry, send receipts"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from faxgate import config
    from faxgate.faxd.daemon import run_daemon

    if not args.verbose:
        # A daemon logs one line per state change; that is INFO, not noise.
        logging.getLogger("faxgate").setLevel(logging.INFO)
    return run_daemon(config.load(args.config))
