"""``faxgate config check``: validate and print the effective configuration."""

from __future__ import annotations

import argparse

from faxgate import config


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="inspect the configuration")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    check = actions.add_parser("check", help="validate and print the effective configuration")
    check.add_argument("--doc", action="store_true", help="include each key's documentation")
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    source = cfg.source or "built-in defaults"
    print(f"# configuration OK: {source}")
    print(config.dump(cfg, with_docs=args.doc), end="")
    return 0
