"""Outgoing mail over SMTP for receipts and network-number (T.37-style) faxes.

One function, one connection per message: faxd sends few mails and each must
succeed or fail on its own. Failures are classified so the caller knows whether
waiting can help: a refused connection, a timeout or a 4xx reply is
:class:`MailTemporaryError` (the mail waits and is retried); a 5xx for every
recipient is :class:`MailPermanentError`.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from faxgate.errors import PermanentError, TemporaryError


class MailTemporaryError(TemporaryError):
    """The SMTP server is unreachable or deferred the mail; try again later."""


class MailPermanentError(PermanentError):
    """The SMTP server refused the mail for good (5xx)."""


@dataclass
class SessionInfo:
    """What an SMTP session established: the EHLO reply, TLS and AUTH."""

    greeting: str
    ehlo_code: int
    encrypted: bool = False
    authenticated: bool = False


def _raise_for_code(code: int, text: str) -> None:
    if 500 <= code < 600:
        raise MailPermanentError(text)
    raise MailTemporaryError(text)


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def tls_context(smtp: Any) -> ssl.SSLContext:
    """The TLS context for STARTTLS to ``smtp`` (an ``SmtpConfig``).

    Opportunistic STARTTLS only protects against eavesdropping and must not stop
    mail: like Postfix's ``may`` level it does not verify the certificate (a
    stock Debian Postfix offers STARTTLS with its self-signed snakeoil
    certificate). ``starttls = "required"``, or AUTH to a server not on
    loopback (the password must not reach an impostor), verifies certificate
    and name unless ``smtp.tls_verify`` is off."""
    verify = smtp.tls_verify and (
        smtp.starttls == "required" or (bool(smtp.user) and smtp.host not in LOOPBACK_HOSTS)
    )
    if verify:
        return ssl.create_default_context()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@contextlib.contextmanager
def session(smtp: Any, timeout: float | None = None) -> Iterator[tuple[smtplib.SMTP, SessionInfo]]:
    """An SMTP connection to ``smtp`` (an ``SmtpConfig``) after EHLO, STARTTLS
    and AUTH as configured: STARTTLS follows ``smtp.starttls`` (off /
    opportunistic / required) with certificate checks as :func:`tls_context`
    says; AUTH is used when ``smtp.user`` is set, and only over TLS unless the
    server is on loopback. Shared by :func:`send_mail` and ``faxgate check``.
    Raises smtplib/ssl/OSError errors as they come, and
    :class:`MailTemporaryError` for a policy refusal."""
    where = f"{smtp.host}:{smtp.port}"
    wait = smtp.timeout_seconds if timeout is None else timeout
    with smtplib.SMTP(smtp.host, smtp.port, timeout=wait) as client:
        code, greeting = client.ehlo()
        info = SessionInfo(greeting=greeting.decode(errors="replace"), ehlo_code=code)
        if smtp.starttls != "off":
            if client.has_extn("starttls"):
                client.starttls(context=tls_context(smtp))
                client.ehlo()
                info.encrypted = True
            elif smtp.starttls == "required":
                raise MailTemporaryError(
                    f"SMTP {where} does not offer STARTTLS ([smtp] starttls = required)"
                )
        if smtp.user:
            if not info.encrypted and smtp.host not in LOOPBACK_HOSTS:
                raise MailTemporaryError(
                    f"SMTP {where}: refusing to send the AUTH password without TLS"
                )
            client.login(smtp.user, smtp.password)
            info.authenticated = True
        yield client, info


def send_mail(
    smtp: Any,
    message: EmailMessage,
    envelope_from: str,
    recipients: list[str],
) -> None:
    """Send ``message`` through the server of ``smtp`` (an ``SmtpConfig``),
    connected as :func:`session` says.

    ``envelope_from`` may be ``""`` (the null reverse-path that RFC 3834
    recommends for automatic replies, so bounces of receipts cannot loop).
    """
    where = f"{smtp.host}:{smtp.port}"
    try:
        with session(smtp) as (client, _):
            refused = client.send_message(message, from_addr=envelope_from, to_addrs=recipients)
            if refused:
                text = "; ".join(f"{rcpt}: {code} {msg!r}" for rcpt, (code, msg) in refused.items())
                raise MailTemporaryError(f"SMTP {where}: some recipients refused: {text}")
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        text = "; ".join(f"{rcpt}: {code} {msg!r}" for rcpt, (code, msg) in exc.recipients.items())
        _raise_for_code(min(codes) if codes else 451, f"SMTP {where}: refused {text}")
    except smtplib.SMTPAuthenticationError as exc:
        raise MailTemporaryError(f"SMTP {where}: authentication failed: {exc}") from exc
    except smtplib.SMTPResponseException as exc:
        _raise_for_code(exc.smtp_code, f"SMTP {where}: {exc.smtp_code} {exc.smtp_error!r}")
    except (TimeoutError, smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise MailTemporaryError(f"SMTP {where}: {exc}") from exc
