"""What every policy rule sees and returns.

A rule is a function ``check(facts) -> Rejection | None`` in a module of its
own; the milter runs them in table order and stops at the first rejection, so
each rule stays small and testable and the order is visible in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faxgate.config import Config
    from faxgate.grammar.subject import Recipient
    from faxgate.store import Sender, Store


@dataclass(frozen=True)
class Rejection:
    """An SMTP reply: ``code`` (550), enhanced status ``dsn`` ("5.7.1"), ASCII ``text``."""

    code: int
    dsn: str
    text: str
    #: Short machine-friendly reason for the event log ("unknown_sender", ...).
    reason: str = "rejected"


@dataclass
class Facts:
    """The message as far as the rules are concerned, gathered by the milter."""

    config: Config
    store: Store
    envelope_sender: str  # without <>, "" for the null sender
    from_addresses: list[str]  # addresses in the From: header
    auth_login: str | None  # {auth_authen}
    authentication_results: list[str]  # every Authentication-Results header value
    sender: Sender | None = None  # the registered sender of the envelope address
    message_id: str = ""  # the Message-ID header as decoded ("" if none)
    recipients: list[Recipient] = field(default_factory=list)

    @property
    def from_domain(self) -> str:
        if len(self.from_addresses) != 1:
            return ""
        return self.from_addresses[0].rpartition("@")[2].lower()


Rule = Callable[[Facts], "Rejection | None"]


def first_rejection(rules: Sequence[Rule], facts: Facts) -> Rejection | None:
    """Run ``rules`` in order; the first rejection wins."""
    for rule in rules:
        rejection = rule(facts)
        if rejection is not None:
            return rejection
    return None
