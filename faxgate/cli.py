"""The ``faxgate`` command: a thin layer over the library.

Subcommands live in ``faxgate.commands.<name>``; this module only parses the
command line and translates errors into exit codes: 0 ok, 1 not found or
failed, 2 bad usage or input (including configuration errors).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from faxgate.errors import FaxgateError, NotFoundError

# Order here is the order in --help.
COMMANDS = (
    "config",
    "subject",
    "senders",
    "jobs",
    "directory",
    "milter",
    "convert",
    "line",
    "send",
    "faxd",
    "status",
    "check",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faxgate", description="E-mail to fax gateway for Postfix."
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $FAXGATE_CONFIG, else /etc/faxgate/faxgate.toml)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"faxgate.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"faxgate.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except NotFoundError as exc:
        print(f"faxgate: {exc}", file=sys.stderr)
        return 1
    except FaxgateError as exc:
        print(f"faxgate: {exc}", file=sys.stderr)
        return 2 if exc.permanent else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    # ``python -m faxgate.cli`` puts the working directory first on sys.path; run from
    # the repository root, our milter/ folder would then shadow pymilter's ``milter``.
    if not sys.flags.safe_path:
        del sys.path[0]
    sys.exit(main())
