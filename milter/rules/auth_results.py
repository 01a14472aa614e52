"""With ``[milter] require_dkim``, a trusted Authentication-Results header must
show DKIM or DMARC passing for the From: domain.

Only headers whose authserv-id is ``[milter] trusted_authserv_id`` count: anyone
can write an Authentication-Results header, so the border MTA must remove
incoming ones with that id (RFC 8601 section 5) and add its own.

Of those, only the topmost counts: the MTA adds its result above the headers
the message arrived with, so a forged ``dkim=pass`` further down (one the MTA
failed to remove) never outvotes the MTA's own ``dkim=fail`` or ``none``.
"""

from __future__ import annotations

import re

from faxgate.milter.rules.base import Facts, Rejection

_PROPERTY = re.compile(r"([A-Za-z0-9_.-]+)\s*=\s*(\"[^\"]*\"|[^\s;]+)")


def _strip_comments(value: str) -> str:
    """``value`` with (nested) comments replaced by a space, in one pass.

    Removing the innermost comment until nothing changes was quadratic: 50,000
    nested parentheses in one header took seconds per header.
    """
    out: list[str] = []
    depth = 0
    escaped = False
    for char in value:
        if not depth:
            if char == "(":
                depth = 1
            else:
                out.append(char)
        elif escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if not depth:
                out.append(" ")
    return "".join(out)


def trusted_headers(facts: Facts) -> list[str]:
    """The topmost Authentication-Results value of the trusted authserv-id (0 or 1 item)."""
    trusted = facts.config.milter.trusted_authserv_id.strip().lower()
    if not trusted:
        return []
    for value in facts.authentication_results:
        authserv = _strip_comments(value).split(";", 1)[0].split()
        if authserv and authserv[0].lower() == trusted:
            return [value]
    return []


def _aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment: equal, or one is a subdomain of the other."""
    domain = domain.strip().strip('"').lstrip("@").lower().rstrip(".")
    if not domain or not from_domain:
        return False
    if "@" in domain:
        domain = domain.rpartition("@")[2]
    return (
        domain == from_domain
        or from_domain.endswith("." + domain)
        or domain.endswith("." + from_domain)
    )


def passes(value: str, from_domain: str) -> bool:
    """Whether one Authentication-Results value has an aligned dkim or dmarc pass."""
    for resinfo in _strip_comments(value).split(";")[1:]:
        props = {k.lower(): v.strip('"') for k, v in _PROPERTY.findall(resinfo)}
        method = next(iter(props), "")
        if props.get(method, "").lower() != "pass":
            continue
        if method == "dkim":
            domain = props.get("header.d") or props.get("d") or props.get("header.i", "")
            if _aligned(domain, from_domain):
                return True
        elif method == "dmarc" and _aligned(props.get("header.from", ""), from_domain):
            return True
    return False


def check(facts: Facts) -> Rejection | None:
    if not facts.config.milter.require_dkim:
        return None
    domain = facts.from_domain
    if any(passes(value, domain) for value in trusted_headers(facts)):
        return None
    return Rejection(
        550,
        "5.7.1",
        f"No trusted DKIM or DMARC pass for the From: domain {domain or '(none)'}",
        "not_dkim_verified",
    )
