"""``faxgate check``: one line per dependency (config, SMTP, store, spool, modems), OK or why not."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "check",
        help="check the configuration, SMTP server, store, spool and modems",
        description=(
            "Validates the configuration, connects to the SMTP server for receipts ([smtp]: "
            "EHLO, STARTTLS and AUTH as configured, nothing is sent), opens the store, writes "
            "and removes a probe file in every spool directory, looks for LibreOffice and "
            "probes each modem of [fax] modems (AT, ATZ, ATE0, AT+FCLASS=? must list 1, "
            "identity). Prints one line per check; exits 1 if any fails. Run it as the user "
            "the services run as (e.g. sudo -u faxgate faxgate check)."
        ),
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from faxgate import config
    from faxgate.checks import CheckResult, run_checks
    from faxgate.errors import ConfigError

    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        print(CheckResult("config", False, str(exc)).line())
        return 1
    results = run_checks(cfg)
    for result in results:
        print(result.line(), flush=True)
    failed = [r.name for r in results if not r.ok]
    print(
        f"{len(results) - len(failed)} of {len(results)} checks OK"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0
