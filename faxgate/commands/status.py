"""``faxgate status``: is faxd running, what are the modems doing, how full is the
queue, and what went wrong lately."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from faxgate.commands.output import clip, print_json, render_fields, render_table, table_time

#: Event kinds worth an admin's attention.
ERROR_KINDS = frozenset(
    {"failed", "partial", "network_failed", "receipt_deferred", "receipt_refused", "rejected"}
)
RECENT_SECONDS = 24 * 3600


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("status", help="faxd, modems, queue sizes and recent errors")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "--errors", type=int, default=10, metavar="N", help="show the newest N errors (10)"
    )
    parser.set_defaults(handler=run)


def collect(cfg: Any, errors: int = 10) -> dict[str, Any]:
    """Everything ``faxgate status`` shows, as plain data."""
    from faxgate.faxd import spool
    from faxgate.faxd.daemon import STATUS_FILE, faxd_pid, read_state
    from faxgate.store import Store

    root = Path(cfg.spool.directory)
    pid = faxd_pid(root)
    daemon: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        daemon = json.loads((root / STATUS_FILE).read_text(encoding="utf-8"))
    modems = daemon.get("modems") if pid is not None else None
    if not modems:
        modems = [{"device": d, "state": "stopped" if pid is None else "?"} for d in cfg.fax.modems]
    spool_counts = {state: len(spool.list_jobs(root, state)) for state in spool.STATES}
    waiting: dict[str, int] = {}
    for job_id in spool.list_jobs(root, "active"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            progress = read_state(root / "active" / job_id)
            for rec in progress.recipients if progress else []:
                if not rec.final:
                    waiting[rec.state] = waiting.get(rec.state, 0) + 1
    recent = [
        e.to_dict()
        for e in Store.open(cfg).events(limit=500, since=time.time() - RECENT_SECONDS)
        if e.kind in ERROR_KINDS
    ][-errors:]
    return {
        "faxd": {"running": pid is not None, "pid": pid, "started": daemon.get("started")},
        "modems": modems,
        "spool": spool_counts,
        "recipients": waiting,
        "recent_errors": recent,
    }


def run(args: argparse.Namespace) -> int:
    from faxgate import config

    status = collect(config.load(args.config), args.errors)
    if args.json:
        print_json(status)
        return 0
    faxd = status["faxd"]
    running = f"running (pid {faxd['pid']})" if faxd["running"] else "NOT running"
    waiting = ", ".join(f"{n} {state}" for state, n in sorted(status["recipients"].items()))
    print(
        render_fields(
            [
                ("faxd", running),
                ("since", table_time(faxd["started"]) if faxd["running"] else None),
                ("spool", ", ".join(f"{n} {state}" for state, n in status["spool"].items())),
                ("recipients", waiting or "none waiting"),
            ]
        )
    )
    print("\nmodems:")
    rows = [
        (
            m.get("device"),
            m.get("state"),
            m.get("job_id"),
            m.get("recipient"),
            m.get("calls"),
            clip(m.get("last_error") or "", 60) or None,
        )
        for m in status["modems"]
    ]
    print(render_table(("DEVICE", "STATE", "JOB", "RCPT", "CALLS", "LAST ERROR"), rows))
    print("\nrecent errors (24 h):")
    rows = [
        (table_time(e["time"]), e["kind"], e["job_id"], e["recipient_idx"], clip(e["detail"], 70))
        for e in status["recent_errors"]
    ]
    print(render_table(("TIME", "EVENT", "JOB", "RCPT", "DETAIL"), rows))
    return 0 if faxd["running"] else 1
