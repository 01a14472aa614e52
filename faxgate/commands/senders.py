"""``faxgate senders``: register who may fax, with per-sender limits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from faxgate.commands.output import (
    cell,
    json_arg,
    open_store,
    print_json,
    render_fields,
    render_table,
    table_time,
)
from faxgate.store import CSV_COLUMNS, DESTINATION_SCOPES, LANGUAGES

if TYPE_CHECKING:
    from faxgate.store import Sender

LIMIT_OPTIONS = ("max_recipients", "max_pages", "jobs_per_day")


# ---- argument types -------------------------------------------------------------


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def number_or_default(text: str) -> int | None:
    """A limit for ``senders set``: a number, or ``default`` for the configured one."""
    return None if text.strip().lower() == "default" else whole_number(text)


def language_or_default(text: str) -> str | None:
    word = text.strip().lower()
    if word == "default":
        return None
    if word not in LANGUAGES:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(LANGUAGES)} or default")
    return word


# ---- commands -------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("senders", help="manage who may send faxes")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for register_action in ACTIONS:
        register_action(actions)


def _email_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("email", metavar="EMAIL", help="the sender's e-mail address")


def register_add(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser("add", help="register a sender")
    _email_arg(parser)
    parser.add_argument("--name", default="", help="display name")
    parser.add_argument("--login", help="SMTP AUTH login that must be used (require_auth)")
    parser.add_argument("--disabled", action="store_true", help="register but keep disabled")
    parser.add_argument("--no-fax", action="store_true", help="register without fax permission")
    for option in LIMIT_OPTIONS:
        parser.add_argument(
            "--" + option.replace("_", "-"),
            type=whole_number,
            metavar="N",
            help=f"per-sender {option.replace('_', ' ')} (default: the configured limit)",
        )
    parser.add_argument(
        "--destinations",
        choices=DESTINATION_SCOPES,
        default="domestic",
        help="widest destinations allowed (default: domestic; each includes the ones before)",
    )
    parser.add_argument(
        "--allow-premium", action="store_true", help="may call premium-rate numbers"
    )
    parser.add_argument("--language", choices=LANGUAGES, help="receipt language")
    json_arg(parser)
    parser.set_defaults(handler=run_add)


def run_add(args: argparse.Namespace) -> int:
    store = open_store(args)
    sender = store.add_sender(
        args.email,
        args.name,
        enabled=not args.disabled,
        can_fax=not args.no_fax,
        smtp_login=args.login,
        max_recipients=args.max_recipients,
        max_pages=args.max_pages,
        jobs_per_day=args.jobs_per_day,
        destinations=args.destinations,
        allow_premium=args.allow_premium,
        language=args.language,
    )
    _report(args, sender, "added")
    return 0


def register_set(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser("set", help="change a sender's name, login, permissions or limits")
    _email_arg(parser)
    parser.add_argument("--name", help="display name")
    login = parser.add_mutually_exclusive_group()
    login.add_argument("--login", dest="smtp_login", metavar="LOGIN", help="SMTP AUTH login")
    login.add_argument(
        "--no-login", dest="smtp_login", action="store_const", const="", help="remove the login"
    )
    fax = parser.add_mutually_exclusive_group()
    fax.add_argument(
        "--fax", dest="can_fax", action="store_const", const=True, help="grant fax permission"
    )
    fax.add_argument(
        "--no-fax", dest="can_fax", action="store_const", const=False, help="revoke fax permission"
    )
    for option in LIMIT_OPTIONS:
        parser.add_argument(
            "--" + option.replace("_", "-"),
            dest=option,
            type=number_or_default,
            default=argparse.SUPPRESS,
            metavar="N|default",
            help=f"per-sender {option.replace('_', ' ')}; 'default' = the configured limit",
        )
    parser.add_argument(
        "--destinations", choices=DESTINATION_SCOPES, help="widest destinations allowed"
    )
    premium = parser.add_mutually_exclusive_group()
    premium.add_argument(
        "--allow-premium",
        dest="allow_premium",
        action="store_const",
        const=True,
        help="may call premium-rate numbers",
    )
    premium.add_argument(
        "--no-premium",
        dest="allow_premium",
        action="store_const",
        const=False,
        help="may not call premium-rate numbers",
    )
    parser.add_argument(
        "--language",
        type=language_or_default,
        default=argparse.SUPPRESS,
        metavar="en|zh|default",
        help="receipt language; 'default' = the configured one",
    )
    json_arg(parser)
    parser.set_defaults(handler=run_set)


def run_set(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {}
    for name in ("name", "can_fax", "destinations", "allow_premium"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.smtp_login is not None:
        fields["smtp_login"] = args.smtp_login or None
    for name in (*LIMIT_OPTIONS, "language"):
        if hasattr(args, name):  # SUPPRESS: present only when given, None means "default"
            fields[name] = getattr(args, name)
    store = open_store(args)
    sender = store.update_sender(args.email, **fields)
    _report(args, sender, "updated")
    return 0


def register_list(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser("list", help="list senders")
    json_arg(parser)
    parser.set_defaults(handler=run_list)


def run_list(args: argparse.Namespace) -> int:
    senders = open_store(args).list_senders()
    if args.json:
        print_json([s.to_dict() for s in senders])
        return 0
    rows = [
        (
            s.email,
            s.name,
            s.enabled,
            s.can_fax,
            s.smtp_login,
            s.destinations + (" +premium" if s.allow_premium else ""),
            "/".join(cell(v) for v in (s.max_recipients, s.max_pages, s.jobs_per_day)),
            s.language,
        )
        for s in senders
    ]
    headers = ("EMAIL", "NAME", "ENABLED", "FAX", "LOGIN", "DESTINATIONS", "RCPT/PAGES/DAY", "LANG")
    print(render_table(headers, rows))
    print(f"{len(senders)} sender(s); '-' = configured default")
    return 0


def register_show(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser("show", help="show one sender")
    _email_arg(parser)
    json_arg(parser)
    parser.set_defaults(handler=run_show)


def run_show(args: argparse.Namespace) -> int:
    from faxgate.errors import NotFoundError

    sender = open_store(args).get_sender(args.email)
    if sender is None:
        raise NotFoundError(f"no sender {args.email}")
    _report(args, sender, None)
    return 0


def _switch(name: str, help_text: str, fields: dict[str, Any], verb: str) -> Callable:
    def register_switch(actions: argparse._SubParsersAction) -> None:
        parser = actions.add_parser(name, help=help_text)
        _email_arg(parser)
        json_arg(parser)
        parser.set_defaults(handler=run_switch)

    def run_switch(args: argparse.Namespace) -> int:
        sender = open_store(args).update_sender(args.email, **fields)
        _report(args, sender, verb)
        return 0

    return register_switch


def register_remove(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser("remove", help="remove a sender (their job history stays)")
    _email_arg(parser)
    parser.set_defaults(handler=run_remove)


def run_remove(args: argparse.Namespace) -> int:
    open_store(args).remove_sender(args.email)
    print(f"removed sender {args.email.strip().lower()}")
    return 0


def register_import(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "import",
        help="create or update senders from a CSV file (all rows or none)",
        description=(
            f"CSV with a header row; columns: {', '.join(CSV_COLUMNS)} (only email is "
            "required). Yes/no cells accept yes/no/true/false/1/0. An empty cell leaves "
            "the field unchanged (new senders get the default); 'default' in a limit or "
            "language cell resets it to the configured default. Any bad row imports nothing."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="CSV file (UTF-8), '-' for stdin")
    parser.set_defaults(handler=run_import)


def run_import(args: argparse.Namespace) -> int:
    from faxgate.errors import InputError

    store = open_store(args)
    if args.file == "-":
        count = store.import_senders_csv(sys.stdin, source="<stdin>")
    else:
        try:
            with open(args.file, encoding="utf-8-sig", newline="") as fileobj:
                count = store.import_senders_csv(fileobj, source=args.file)
        except OSError as exc:
            raise InputError(f"cannot read {args.file}: {exc.strerror}") from None
    print(f"imported {count} sender(s) from {args.file}")
    return 0


def _report(args: argparse.Namespace, sender: Sender, verb: str | None) -> None:
    if args.json:
        print_json(sender.to_dict())
        return
    if verb:
        print(f"{verb} sender {sender.email}")
    print(
        render_fields(
            [
                ("email", sender.email),
                ("name", sender.name),
                ("enabled", sender.enabled),
                ("fax permission", sender.can_fax),
                ("SMTP login", sender.smtp_login),
                ("destinations", sender.destinations),
                ("premium-rate", sender.allow_premium),
                ("max recipients", _limit_text(sender.max_recipients)),
                ("max pages", _limit_text(sender.max_pages)),
                ("jobs per day", _limit_text(sender.jobs_per_day, unlimited=0)),
                ("language", sender.language or "default"),
                ("created", table_time(sender.created)),
                ("updated", table_time(sender.updated)),
            ]
        )
    )


def _limit_text(value: int | None, unlimited: int | None = None) -> str:
    if value is None:
        return "default"
    return "unlimited" if value == unlimited else str(value)


ACTIONS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    register_add,
    register_set,
    register_list,
    register_show,
    _switch("enable", "allow a sender to fax again", {"enabled": True}, "enabled"),
    _switch(
        "disable", "stop a sender from faxing (keeps the record)", {"enabled": False}, "disabled"
    ),
    register_remove,
    register_import,
)
