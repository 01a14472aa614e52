"""A job may name at most the sender's ``max_recipients`` (else ``[limits]``)."""

from __future__ import annotations

from faxgate.milter.rules.base import Facts, Rejection


def check(facts: Facts) -> Rejection | None:
    if facts.sender is None:
        return None
    limit = facts.sender.effective_limits(facts.config.limits).max_recipients
    if len(facts.recipients) > limit:
        return Rejection(
            550,
            "5.7.1",
            f"Too many fax recipients: {len(facts.recipients)}, you may send to at most {limit}",
            "too_many_recipients",
        )
    return None
