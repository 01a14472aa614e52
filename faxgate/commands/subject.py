"""``faxgate subject parse``: show how a Subject is understood and what would be dialled."""

from __future__ import annotations

import argparse
import json

from faxgate import config


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("subject", help="parse fax Subjects with the configured dial plan")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    parse = actions.add_parser(
        "parse",
        help="parse a Subject into recipients and dial strings",
        description="Exit 0 when the Subject is valid, 2 with the column and a hint otherwise.",
    )
    parse.add_argument("--json", action="store_true", help="print a JSON array (for scripts)")
    parse.add_argument(
        "subject", metavar="SUBJECT", help="the decoded Subject, e.g. '86-755-83235170/金恒科技'"
    )
    parse.set_defaults(handler=run_parse)


def run_parse(args: argparse.Namespace) -> int:
    from faxgate.commands.output import render_table
    from faxgate.grammar.subject import RECIPIENT_KEYS, parse_subject

    cfg = config.load(args.config)
    recipients = parse_subject(args.subject, cfg.dialplan, cfg.limits.max_recipients)
    rows = [r.to_dict() for r in recipients]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(render_table(RECIPIENT_KEYS, [[row[key] for key in RECIPIENT_KEYS] for row in rows]))
    return 0
