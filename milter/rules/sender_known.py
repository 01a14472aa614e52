"""Envelope sender and From: address must be the same registered sender who may fax.

Checking both stops the cheapest forgery (a registered address in only one of
them) and makes the receipt go to the person whose name is on the mail.
"""

from __future__ import annotations

from faxgate.milter.rules.base import Facts, Rejection


def _deny(text: str, reason: str) -> Rejection:
    return Rejection(550, "5.7.1", text, reason)


def check(facts: Facts) -> Rejection | None:
    envelope = facts.envelope_sender
    if facts.sender is None:
        return _deny(f"Sender <{envelope}> is not registered to send faxes", "unknown_sender")
    if len(facts.from_addresses) != 1:
        return _deny("The From: header must contain exactly one address to send a fax", "bad_from")
    if facts.from_addresses[0].lower() != facts.sender.email.lower():
        return _deny(
            f"The From: address must be the envelope sender <{facts.sender.email}> to send a fax",
            "from_mismatch",
        )
    if not facts.sender.enabled:
        return _deny(f"Sender <{facts.sender.email}> is disabled", "sender_disabled")
    if not facts.sender.can_fax:
        return _deny(
            f"Sender <{facts.sender.email}> has no permission to send faxes", "no_fax_permission"
        )
    return None
