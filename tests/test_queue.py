"""The queue policy without I/O: retry delays by cause, limits, expiry, window,
priority, and the state round trip through ``state.json`` data."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from faxgate.config import FaxdConfig
from faxgate.errors import ConfigError
from faxgate.faxd import queue as q

T0 = 1_700_000_000.0
POLICY = q.RetryPolicy()


def make_job(n: int = 1, pages: int = 3, **kw) -> q.JobProgress:
    job = q.new_job("j1", T0, [q.ROUTE_PHONE] * n, POLICY, **kw)
    job.rendered = True
    job.pages_total = pages
    for rec in job.recipients:
        rec.pages_total = pages
    return job


def fail(reason: str, carrier: bool = False, pages: int = 0) -> q.CallOutcome:
    return q.CallOutcome(
        ok=False, reason=reason, reached_fax_carrier=carrier, pages_confirmed=pages
    )


@pytest.mark.parametrize(
    ("reason", "delay"),
    [
        ("busy", 180),
        ("no_answer", 300),
        ("no_carrier", 300),
        ("no_dialtone", 300),
        ("training_failed", 60),
        ("page_rejected", 60),
        ("remote_hangup", 60),
    ],
)
def test_next_try_by_cause(reason: str, delay: int) -> None:
    job = make_job()
    rec = job.recipients[0]
    q.begin_call(rec, T0)
    q.apply_call(POLICY, job, rec, fail(reason), T0 + 10)
    assert rec.state == q.PENDING
    assert rec.next_try == T0 + 10 + delay
    assert rec.last_reason == reason


def test_defaults_match_config_defaults() -> None:
    assert q.RetryPolicy.from_config(FaxdConfig()) == POLICY


def test_success_and_resume_from_first_unconfirmed_page() -> None:
    job = make_job(pages=5)
    rec = job.recipients[0]
    assert q.begin_call(rec, T0) == 0
    q.page_confirmed(rec, 2)
    q.apply_call(POLICY, job, rec, fail("remote_hangup", carrier=True, pages=2), T0 + 60)
    assert (rec.state, rec.pages_confirmed, rec.tries) == (q.PENDING, 2, 1)
    assert q.begin_call(rec, T0 + 200) == 2
    q.apply_call(
        POLICY, job, rec, q.CallOutcome(ok=True, pages_confirmed=5, remote_ident="X"), T0 + 260
    )
    assert rec.state == q.SENT and rec.pages_confirmed == 5 and rec.dials == 2
    assert job.final and job.outcome == "done"


def test_max_dials() -> None:
    policy = q.RetryPolicy(busy_delay=1, max_dials=4)
    job = make_job()
    rec = job.recipients[0]
    for i in range(4):
        assert rec.state == q.PENDING
        q.begin_call(rec, T0 + i * 10)
        q.apply_call(policy, job, rec, fail("busy"), T0 + i * 10 + 1)
    assert rec.state == q.FAILED and rec.last_reason == "too_many_dials" and rec.dials == 4


def test_max_tries_counts_only_calls_that_reached_fax_carrier() -> None:
    policy = q.RetryPolicy(protocol_error_delay=1, no_answer_delay=1)
    job = make_job(pages=4)
    rec = job.recipients[0]
    q.begin_call(rec, T0)
    q.apply_call(policy, job, rec, fail("no_answer"), T0 + 1)
    for i in range(3):
        assert rec.state == q.PENDING
        q.begin_call(rec, T0 + 10 * (i + 1))
        q.apply_call(
            policy, job, rec, fail("training_failed", carrier=True, pages=1), T0 + 20 * (i + 1)
        )
    assert rec.tries == 3 and rec.dials == 4
    assert rec.state == q.PARTIAL and rec.last_reason == "too_many_tries"
    assert job.outcome == "partial"


def test_retry_after_kill_time_gives_up_now() -> None:
    policy = q.RetryPolicy(kill_time=600)
    job = q.new_job("j", T0, [q.ROUTE_PHONE], policy)
    job.rendered = True
    rec = job.recipients[0]
    q.begin_call(rec, T0 + 100)
    q.apply_call(policy, job, rec, fail("no_answer"), T0 + 200)
    assert rec.state == q.PENDING  # 200 + 300 < 600
    q.begin_call(rec, T0 + 500)
    q.apply_call(policy, job, rec, fail("no_answer"), T0 + 550)
    assert rec.state == q.FAILED and rec.last_reason == "expired"
    assert job.outcome == "failed"


def test_expire_ends_waiting_but_not_dialing_recipients() -> None:
    job = make_job(n=3)
    a, b, c = job.recipients
    q.begin_call(b, T0)
    q.hold(job)
    assert q.expire(job, job.expires - 1) == []
    ended = q.expire(job, job.expires)
    assert ended == [a, c]
    assert a.state == q.FAILED and a.last_reason == "expired" and c.state == q.FAILED
    assert b.state == q.DIALING and not job.final


def test_window_parse_and_wraps_midnight() -> None:
    assert q.SendingWindow.parse("") is None
    day = q.SendingWindow.parse("08:00-20:00")
    assert day is not None
    assert day.is_open(datetime(2026, 1, 1, 8, 0))
    assert not day.is_open(datetime(2026, 1, 1, 20, 0))
    assert day.next_open(datetime(2026, 1, 1, 21, 30)) == datetime(2026, 1, 2, 8, 0)
    assert day.next_open(datetime(2026, 1, 1, 5, 0)) == datetime(2026, 1, 1, 8, 0)
    night = q.SendingWindow.parse("22:00-06:00")
    assert night is not None
    assert night.is_open(datetime(2026, 1, 1, 23, 0)) and night.is_open(datetime(2026, 1, 1, 5, 59))
    assert not night.is_open(datetime(2026, 1, 1, 12, 0))
    for bad in ("8-20", "08:00", "10:00-10:00", "25:00-26:00"):
        with pytest.raises(ConfigError):
            q.SendingWindow.parse(bad)


def test_window_closed_means_nothing_due_and_wakeup_at_opening() -> None:
    closed_at = datetime(2026, 1, 1, 21, 0).timestamp()
    policy = q.RetryPolicy(window=q.SendingWindow.parse("08:00-20:00"), kill_time=86400)
    job = q.new_job("j", closed_at, [q.ROUTE_PHONE, q.ROUTE_NETWORK], policy)
    job.rendered = True
    assert q.due_calls([job], policy, closed_at) == []
    assert [r.idx for _, r in q.due_network([job], closed_at)] == [1]
    job.recipients[1].state = q.SENT
    assert q.next_wakeup([job], policy, closed_at) == datetime(2026, 1, 2, 8, 0).timestamp()


def test_priority_then_next_try_order() -> None:
    urgent = q.new_job("b-urgent", T0 + 50, [q.ROUTE_PHONE], POLICY, priority=10)
    normal_old = q.new_job("a-old", T0, [q.ROUTE_PHONE, q.ROUTE_PHONE], POLICY)
    later = q.new_job("c-later", T0 + 1, [q.ROUTE_PHONE], POLICY)
    for job in (urgent, normal_old, later):
        job.rendered = True
    normal_old.recipients[1].next_try = T0 + 500  # retry not yet due
    unrendered = q.new_job("d", T0, [q.ROUTE_PHONE], POLICY)
    order = q.due_calls([later, normal_old, urgent, unrendered], POLICY, T0 + 100)
    assert [(j.job_id, r.idx) for j, r in order] == [("b-urgent", 0), ("a-old", 0), ("c-later", 0)]
    assert q.next_wakeup([normal_old], POLICY, T0 + 100) == T0 + 500


def test_cancel_hold_release_retry_and_crash_recovery() -> None:
    job = make_job(n=3)
    a, b, c = job.recipients
    q.begin_call(a, T0)
    assert q.hold(job) == [b, c] and job.outcome == "active"
    assert q.release(job, T0 + 5) == [b, c] and b.next_try == T0 + 5
    c.next_try = T0 + 999
    assert q.retry_now(job, T0 + 6) == [b, c] and c.next_try == T0 + 6
    assert q.cancel(job, T0 + 7) == [b, c]
    assert a.cancel_requested and not job.final
    q.apply_call(POLICY, job, a, fail("busy"), T0 + 8)
    assert a.state == q.CANCELLED and job.outcome == "cancelled"

    crashed = make_job(n=2)
    q.begin_call(crashed.recipients[0], T0)
    q.page_confirmed(crashed.recipients[0], 2)
    assert q.recover_after_crash(crashed, T0 + 30) == [crashed.recipients[0]]
    assert crashed.recipients[0].state == q.PENDING
    assert q.begin_call(crashed.recipients[0], T0 + 31) == 2
    q.page_confirmed(crashed.recipients[0], 3)  # the last MCF arrived, then the crash
    assert q.recover_after_crash(crashed, T0 + 40) == [crashed.recipients[0]]
    assert crashed.recipients[0].state == q.SENT


def test_network_fallback_to_phone_and_temporary_retry() -> None:
    job = q.new_job("n", T0, [q.ROUTE_NETWORK, q.ROUTE_NETWORK, q.ROUTE_NETWORK], POLICY)
    a, b, c = job.recipients
    q.network_failed(
        POLICY, job, a, "550 no", permanent=True, has_phone=True, retry_delay=60, now=T0
    )
    assert (a.route, a.state, a.next_try) == (q.ROUTE_PHONE, q.PENDING, T0)
    q.network_failed(
        POLICY, job, b, "550 no", permanent=True, has_phone=False, retry_delay=60, now=T0
    )
    assert b.state == q.FAILED and b.last_reason == "network_failed"
    q.network_failed(
        POLICY, job, c, "down", permanent=False, has_phone=False, retry_delay=60, now=T0
    )
    assert c.state == q.PENDING and c.next_try == T0 + 60
    q.network_delivered(c, T0 + 60)
    assert c.state == q.SENT


def test_state_round_trips_through_json() -> None:
    job = make_job(n=2)
    q.begin_call(job.recipients[0], T0)
    job.receipt.state = "sending"
    job.receipt.message_id = "<r@x>"
    again = q.JobProgress.from_dict(json.loads(json.dumps(job.to_dict())))
    assert again == job


def test_local_modem_failure_costs_no_dial() -> None:
    job = make_job()
    rec = job.recipients[0]
    q.begin_call(rec, T0)
    q.apply_call(
        POLICY, job, rec, q.CallOutcome(ok=False, reason="modem_error", dialled=False), T0 + 1
    )
    assert (rec.state, rec.dials, rec.next_try) == (q.PENDING, 0, T0 + 61)


def test_call_faxd_ended_early_charges_no_try_and_is_due_at_once() -> None:
    from types import SimpleNamespace

    job = make_job(pages=5)
    rec = job.recipients[0]
    first = q.begin_call(rec, T0)
    result = SimpleNamespace(
        ok=True,
        reason=None,
        pages_confirmed=2,
        reached_fax_carrier=True,
        remote_ident="+86 755 1",
        bit_rate=9600,
        resolution="fine",
        line_seconds=40.0,
        message="2 page(s) sent",
        dials=1,
    )
    outcome = q.CallOutcome.from_result(result, first, pages_total=5, interrupted=True)
    assert (outcome.ok, outcome.reason, outcome.interrupted) == (False, "interrupted", True)
    q.apply_call(POLICY, job, rec, outcome, T0 + 50)
    assert (rec.state, rec.next_try, rec.tries, rec.dials) == (q.PENDING, T0 + 50, 0, 1)
    assert rec.pages_confirmed == 2 and rec.last_call_reason == "interrupted"
    # Ended early after the last page anyway: that is a full success.
    whole = q.CallOutcome.from_result(result, 3, pages_total=5, interrupted=True)
    assert whole.ok and not whole.interrupted
    # A call that failed on its own is a failure like any other, stop or not.
    failed = SimpleNamespace(**{**vars(result), "ok": False, "reason": "remote_hangup"})
    outcome = q.CallOutcome.from_result(failed, 0, pages_total=5, interrupted=True)
    assert (outcome.reason, outcome.interrupted) == ("remote_hangup", False)


def test_cancel_requested_during_a_cut_call_cancels() -> None:
    job = make_job(pages=5)
    rec = job.recipients[0]
    q.begin_call(rec, T0)
    assert q.cancel(job, T0 + 1) == [] and rec.cancel_requested
    cut = q.CallOutcome(
        ok=False,
        reason="interrupted",
        interrupted=True,
        pages_confirmed=2,
        reached_fax_carrier=True,
    )
    q.apply_call(POLICY, job, rec, cut, T0 + 20)
    assert (rec.state, rec.last_reason, rec.pages_confirmed) == (q.CANCELLED, "cancelled", 2)
    assert job.outcome == "cancelled"


def test_job_priority_names_and_numbers(tmp_path) -> None:
    from faxgate import config
    from faxgate.faxd.daemon import FaxDaemon

    cfg = config.parse({"spool": {"directory": str(tmp_path)}, "faxd": {"default_priority": 100}})
    daemon = FaxDaemon(cfg)
    ranks = [daemon._priority({"priority": p}) for p in ("high", "normal", "low", None)]
    assert ranks == [36, 100, 164, 100]
    assert daemon._priority({"priority": 7}) == 7 and daemon._priority({"priority": 999}) == 255
    assert daemon._priority({}) == 100
