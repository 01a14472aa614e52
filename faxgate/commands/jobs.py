"""``faxgate jobs``: fax jobs as the store records them (a sender's outbox with --sender).

Each action is a ``register_<action>(actions)`` function listed in ``ACTIONS``;
adding an action (cancel, retry, ...) means writing one more and listing it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from faxgate.commands.output import (
    clip,
    json_arg,
    open_store,
    print_json,
    render_fields,
    render_table,
    table_time,
)
from faxgate.commands.senders import whole_number
from faxgate.store import JOB_STATES

if TYPE_CHECKING:
    from faxgate.store import Job, JobRecipient, Store

SUBJECT_WIDTH = 40


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("jobs", help="list and inspect fax jobs")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for register_action in ACTIONS:
        register_action(actions)


def job_id_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="ID", help="job id (as in 'faxgate jobs list')")


def register_list(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser("list", help="list jobs, newest first")
    parser.add_argument("--sender", metavar="EMAIL", help="only this sender's jobs (the outbox)")
    parser.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    parser.add_argument(
        "--limit", type=whole_number, default=50, metavar="N", help="at most N jobs (default 50)"
    )
    json_arg(parser)
    parser.set_defaults(handler=run_list)


def run_list(args: argparse.Namespace) -> int:
    jobs = open_store(args).list_jobs(sender=args.sender, state=args.state, limit=args.limit)
    if args.json:
        print_json([job.to_dict() for job in jobs])
        return 0
    rows = [
        (
            job.id,
            table_time(job.created),
            job.sender,
            job.state,
            f"{sum(r.state == 'sent' for r in job.recipients)}/{len(job.recipients)}",
            job.pages_total,
            job.receipt_state,
            clip(job.subject, SUBJECT_WIDTH),
        )
        for job in jobs
    ]
    headers = ("ID", "CREATED", "SENDER", "STATE", "SENT", "PAGES", "RECEIPT", "SUBJECT")
    print(render_table(headers, rows))
    print(f"{len(jobs)} job(s)")
    return 0


def register_show(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser("show", help="show a job, its recipients and its events")
    job_id_arg(parser)
    parser.add_argument(
        "--events", type=whole_number, default=200, metavar="N", help="newest N events (200)"
    )
    json_arg(parser)
    parser.set_defaults(handler=run_show)


def get_job_or_fail(args: argparse.Namespace) -> tuple[Job, Store]:
    """The job named by ``args.job_id`` and the open store; NotFoundError (exit 1) if absent."""
    from faxgate.errors import NotFoundError

    store = open_store(args)
    job = store.get_job(args.job_id)
    if job is None:
        raise NotFoundError(f"no job {args.job_id}")
    return job, store


def run_show(args: argparse.Namespace) -> int:
    job, store = get_job_or_fail(args)
    events = store.events(job.id, limit=args.events)
    if args.json:
        print_json({**job.to_dict(), "events": [e.to_dict() for e in events]})
        return 0
    print(
        render_fields(
            [
                ("job", job.id),
                ("sender", job.sender),
                ("subject", job.subject),
                ("state", job.state),
                ("priority", job.priority),
                ("created", table_time(job.created)),
                ("updated", table_time(job.updated)),
                ("queue id", job.queue_id),
                ("message id", job.message_id),
                ("pages", job.pages_total),
                ("documents", ", ".join(job.documents) or None),
                ("receipt", _receipt_text(job)),
            ]
        )
    )
    print("\nrecipients:")
    print(render_table(RECIPIENT_HEADERS, [recipient_row(r) for r in job.recipients]))
    print("\nevents:")
    rows = [
        (table_time(e.time), e.kind, e.recipient_idx, clip(" ".join(e.detail.split()), 80))
        for e in events
    ]
    print(render_table(("TIME", "EVENT", "RCPT", "DETAIL"), rows))
    return 0


def _receipt_text(job: Job) -> str:
    if job.receipt_sent_at is None:
        return job.receipt_state
    return f"{job.receipt_state} {table_time(job.receipt_sent_at)}"


RECIPIENT_HEADERS = (
    "RCPT",
    "NAME",
    "NUMBER",
    "DIAL",
    "ROUTE",
    "STATE",
    "PAGES",
    "DIALS",
    "TRIES",
    "NEXT TRY",
    "REASON",
)


def recipient_row(r: JobRecipient) -> tuple:
    """One recipient as a table row: who, where, how far delivery got, and why not."""
    number = "-".join(part for part in (r.country, r.area, r.number) if part)
    if r.network:
        number = f"{number}|{r.network}" if number else r.network
    names = "|".join(name for name in (r.name1, r.name2) if name)
    pages = f"{r.pages_confirmed}/{r.pages_total if r.pages_total is not None else '?'}"
    reason = r.last_reason or None
    if r.last_error:
        reason = f"{reason}: {r.last_error}" if reason else r.last_error
    return (
        r.idx,
        clip(names, 30),
        number,
        r.dial,
        r.route,
        r.state,
        pages,
        r.dials,
        r.tries,
        table_time(r.next_try) if r.next_try else None,
        clip(reason, 60) if reason else None,
    )


CONTROL_HELP = {
    "cancel": "cancel a job: waiting recipients at once, a call after the page being sent",
    "retry": "make a job's waiting recipients due now",
    "hold": "stop dialling a job's waiting recipients until released",
    "release": "let held recipients be dialled again",
}


def register_control(actions: argparse._SubParsersAction) -> None:
    """cancel | retry | hold | release: requests the running faxd applies (and a
    stopped one applies when it starts)."""
    for action, text in CONTROL_HELP.items():
        parser = actions.add_parser(action, help=text)
        job_id_arg(parser)
        parser.add_argument(
            "--wait",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="wait this long for faxd to apply the request (10)",
        )
        parser.set_defaults(handler=run_control, control=action)


def run_control(args: argparse.Namespace) -> int:
    from faxgate import config
    from faxgate.faxd.daemon import control_job

    print(control_job(config.load(args.config), args.job_id, args.control, args.wait))
    return 0


ACTIONS: list[Callable[[argparse._SubParsersAction], None]] = [
    register_list,
    register_show,
    register_control,
]
