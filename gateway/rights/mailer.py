"""Sending the one-time code by e-mail through the configured SMTP server (``smtp_url``).

``smtp://host:port`` (plain, for a local relay), ``smtp+starttls://user:pass@host:587``
(STARTTLS, then authentication) or ``smtps://user:pass@host:465`` (TLS from the start). The
standard library's smtplib runs in a worker thread: a slow relay never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlsplit

from gateway.core.errors import ConfigError

SCHEMES = ("smtp", "smtp+starttls", "smtps")


@dataclass(frozen=True)
class SmtpTarget:
    scheme: str
    host: str
    port: int
    username: str
    password: str
    timeout: float = 10.0


def parse_smtp_url(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ConfigError(
            f"GATEWAY_SMTP_URL must be one of {', '.join(s + '://' for s in SCHEMES)} with a host",
            hint="e.g. smtp+starttls://user:password@mail.example.com:587",
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"GATEWAY_SMTP_URL has an invalid port: {exc}") from exc
    default = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}[parts.scheme]
    return SmtpTarget(
        parts.scheme,
        parts.hostname,
        port or default,
        unquote(parts.username or ""),
        unquote(parts.password or ""),
    )


def code_message(sender: str, to: str, site_name: str, code: str, minutes: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"{site_name}: your verification code {code}"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    message.set_content(
        f"Someone (hopefully you) asked {site_name} for a copy, correction or deletion of the\n"
        f"personal data linked to this address.\n\n"
        f"Your verification code: {code}\n\n"
        f"It expires in {minutes} minutes and works once. If you did not ask, ignore this\n"
        f"message: nothing happens without the code.\n"
    )
    return message


def _send(target: SmtpTarget, message: EmailMessage) -> None:
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if target.scheme == "smtps":
        client = smtplib.SMTP_SSL(target.host, target.port, timeout=target.timeout, context=context)
    else:
        client = smtplib.SMTP(target.host, target.port, timeout=target.timeout)
    with client:
        if target.scheme == "smtp+starttls":
            client.starttls(context=context)
        if target.username:
            client.login(target.username, target.password)
        client.send_message(message)


async def send(target: SmtpTarget, message: EmailMessage) -> None:
    """Deliver to the relay; raises OSError or smtplib.SMTPException on failure."""
    await asyncio.to_thread(_send, target, message)
