"""A sender may submit ``jobs_per_day`` jobs in 24 hours (0 = unlimited).

A message resent after a client timeout (same Message-ID) is the job already
counted: it must reach the spool's duplicate check, not bounce on the quota.
"""

from __future__ import annotations

from faxgate.milter.rules.base import Facts, Rejection


def check(facts: Facts) -> Rejection | None:
    if facts.sender is None:
        return None
    limit = facts.sender.effective_limits(facts.config.limits).jobs_per_day
    if limit <= 0:
        return None
    used = facts.store.jobs_today(facts.sender.email)
    if used < limit:
        return None
    if facts.message_id and facts.store.find_job(facts.sender.email, facts.message_id):
        return None
    return Rejection(
        550,
        "5.7.1",
        f"Daily fax quota reached: {used} of {limit} jobs in the last 24 hours",
        "quota_exceeded",
    )
