"""The milter's policy, one rule per module, in the order they run.

``SENDER_RULES`` run when the headers are complete (before the body is sent),
``JOB_RULES`` once the Subject has been parsed into recipients.
"""

from __future__ import annotations

from faxgate.milter.rules import (
    auth_results,
    daily_quota,
    destinations,
    recipient_count,
    sender_known,
    smtp_auth,
)
from faxgate.milter.rules.base import Facts, Rejection, Rule, first_rejection

SENDER_RULES: tuple[Rule, ...] = (sender_known.check, smtp_auth.check, auth_results.check)
JOB_RULES: tuple[Rule, ...] = (recipient_count.check, daily_quota.check, destinations.check)

__all__ = ["JOB_RULES", "SENDER_RULES", "Facts", "Rejection", "Rule", "first_rejection"]
