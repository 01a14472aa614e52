"""Toll-fraud guard: where may this sender's faxes be dialled?

Order per recipient: ``[policy] allow_prefixes`` exempt a number from the
prefix lists; ``deny_prefixes`` always block; premium-rate prefixes block
unless the sender has ``allow_premium``; and the call's scope (internal <
local < domestic < international) must be within the sender's
``destinations``. Network-only recipients are not dialled and pass.
Internal extensions (``0-0-N``) have no E.164 form for the prefix lists, and
the modem dials N as written, so N may be at most ``[policy]
max_extension_digits`` long: a longer "extension" is a public number in
disguise.
"""

from __future__ import annotations

import re

from faxgate.config import DialplanConfig
from faxgate.grammar.subject import Recipient
from faxgate.milter.mimeparts import ascii_safe
from faxgate.milter.rules.base import Facts, Rejection

_NOT_DIGIT = re.compile(r"\D")


def scope(recipient: Recipient, plan: DialplanConfig) -> str:
    """internal, local, domestic or international, as seen from this fax server."""
    if recipient.is_internal:
        return "internal"
    if recipient.country != plan.country_code:
        return "international"
    if recipient.area in (plan.area_code, "0", ""):
        return "local"
    return "domestic"


def _label(position: int, recipient: Recipient) -> str:
    number = recipient.e164 or recipient.dial or recipient.number
    name = f" {ascii_safe(recipient.name1, 60)}" if recipient.name1 else ""
    return f"Recipient {position} ({number}{name})"


def _matches(digits: str, prefixes: list[str]) -> str | None:
    for prefix in prefixes:
        clean = _NOT_DIGIT.sub("", prefix)
        if clean and digits.startswith(clean):
            return clean
    return None


def check(facts: Facts) -> Rejection | None:
    sender = facts.sender
    if sender is None:
        return None
    policy, plan = facts.config.policy, facts.config.dialplan
    for position, recipient in enumerate(facts.recipients, 1):
        if recipient.is_network_only:
            continue
        if recipient.is_internal and len(recipient.number or "") > policy.max_extension_digits:
            return Rejection(
                550,
                "5.7.1",
                f"{_label(position, recipient)}: internal extensions have at most"
                f" {policy.max_extension_digits} digits",
                "extension_too_long",
            )
        digits = _NOT_DIGIT.sub("", recipient.e164 or "")
        exempt = bool(digits) and _matches(digits, policy.allow_prefixes) is not None
        if digits and not exempt:
            blocked = _matches(digits, policy.deny_prefixes)
            if blocked:
                return Rejection(
                    550,
                    "5.7.1",
                    f"{_label(position, recipient)}: numbers starting +{blocked} are blocked",
                    "destination_denied",
                )
            premium = _matches(digits, policy.premium_prefixes)
            if premium and not sender.allow_premium:
                return Rejection(
                    550,
                    "5.7.1",
                    f"{_label(position, recipient)}: premium-rate number (+{premium}...)"
                    " not allowed for you",
                    "premium_denied",
                )
        where = scope(recipient, plan)
        if not sender.allows_destination(where):
            return Rejection(
                550,
                "5.7.1",
                f"{_label(position, recipient)}: {where} faxes are not allowed for you"
                f" (limit: {sender.destinations})",
                "destination_scope",
            )
    return None
