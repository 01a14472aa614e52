"""``faxgate directory add|list|remove``: network (AF) numbers delivered by e-mail."""

from __future__ import annotations

import argparse

from faxgate.commands.output import open_store, print_json, render_table, table_time


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "directory", help="network numbers (AF...) delivered by e-mail instead of a call"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    add = actions.add_parser("add", help="map a network number to a name and e-mail address")
    add.add_argument("network", metavar="NETWORK", help="network number, e.g. AF90000098")
    add.add_argument("name", metavar="NAME", help="who receives faxes at this number")
    add.add_argument("email", metavar="EMAIL", help="where those faxes are mailed")
    add.add_argument("--replace", action="store_true", help="overwrite an existing entry")
    add.set_defaults(handler=run_add)

    listing = actions.add_parser("list", help="list the directory")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(handler=run_list)

    remove = actions.add_parser("remove", help="remove a network number")
    remove.add_argument("network", metavar="NETWORK")
    remove.set_defaults(handler=run_remove)


def run_add(args: argparse.Namespace) -> int:
    from faxgate import config
    from faxgate.errors import InputError
    from faxgate.store import Store

    cfg = config.load(args.config)
    fax_addresses = {a.strip().strip("<>").strip().lower() for a in cfg.milter.fax_addresses}
    if args.email.strip().strip("<>").strip().lower() in fax_addresses:
        # faxd would mail the fax to the gateway itself, which drops it as a loop.
        raise InputError(
            f"{args.email} is a fax address of this gateway ([milter] fax_addresses):"
            " a network number must be mailed to the person who receives the fax"
        )
    entry = Store.open(cfg).directory_add(args.network, args.name, args.email, replace=args.replace)
    print(f"{entry.network} → {entry.name} <{entry.email}>")
    return 0


def run_list(args: argparse.Namespace) -> int:
    entries = open_store(args).directory_list()
    if args.json:
        print_json([e.to_dict() for e in entries])
        return 0
    rows = [(e.network, e.name, e.email, table_time(e.added)) for e in entries]
    print(render_table(("NETWORK", "NAME", "EMAIL", "ADDED"), rows))
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    store = open_store(args)
    store.directory_remove(args.network)
    print(f"removed {args.network}")
    return 0
