"""With ``[milter] require_auth``, the SMTP AUTH login must be the sender's login.

Envelope and From: are trivially forged; the login is what the MTA verified.
"""

from __future__ import annotations

from faxgate.milter.rules.base import Facts, Rejection


def check(facts: Facts) -> Rejection | None:
    if not facts.config.milter.require_auth or facts.sender is None:
        return None
    login = facts.auth_login
    if not login:
        return Rejection(
            550, "5.7.1", "Log in (SMTP AUTH) to send faxes from this address", "not_authenticated"
        )
    expected = facts.sender.smtp_login
    if expected is None or login.casefold() != expected.casefold():
        return Rejection(
            550,
            "5.7.1",
            f"SMTP login {login!r} may not send faxes as <{facts.sender.email}>",
            "login_mismatch",
        )
    return None
