"""Sending the one-time code by e-mail through the configured SMTP server (``smtp_url``).

``smtp://host:port`` (plain, for a local relay), ``smtp+starttls://user:pass@host:587``
(STARTTLS, then authentication) or ``smtps://user:pass@host:465`` (TLS from the start). The
standard library's smtplib runs in a worker thread: a slow relay never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import html
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlsplit

from gateway.core.errors import ConfigError
from gateway.sites.texts import EMAIL_TEXTS

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


def _filled(texts: Mapping[str, str], key: str, values: Mapping[str, object]) -> str:
    """A translated text with its placeholders filled; the English source when a translation
    broke them (`consent-gateway i18n check` reports such catalogs)."""
    try:
        return texts.get(key, EMAIL_TEXTS[key]) % values
    except (KeyError, ValueError, TypeError):
        return EMAIL_TEXTS[key] % values


def code_message(
    sender: str,
    to: str,
    site_name: str,
    code: str,
    minutes: int,
    texts: Mapping[str, str] = EMAIL_TEXTS,
    language: str = "en",
    direction: str = "ltr",
) -> EmailMessage:
    """The code e-mail in the request's language (``texts``: EMAIL_TEXTS translated by the
    site's catalog): a plain-text part and an HTML alternative with the same words."""
    values = {"site": site_name, "code": code, "minutes": minutes}
    subject, intro, code_line, expiry = (
        _filled(texts, key, values)
        for key in ("email_subject", "email_intro", "email_code", "email_expiry")
    )
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    message.set_content(f"{intro}\n\n{code_line}\n\n{expiry}\n")
    e = html.escape
    # The code set apart in the HTML part: big, monospace, easy to copy; no images, no links.
    label, _, _ = code_line.rpartition(code)
    message.add_alternative(
        f'<!doctype html><html lang="{e(language)}" dir="{e(direction)}"><head>'
        f'<meta charset="utf-8"><title>{e(subject)}</title></head>'
        f'<body style="font-family:sans-serif;line-height:1.5">'
        f"<p>{e(intro)}</p>"
        f'<p>{e(label.strip() or code_line)} <strong style="font-family:monospace;'
        f'font-size:1.5em;letter-spacing:.1em">{e(code)}</strong></p>'
        f"<p>{e(expiry)}</p></body></html>\n",
        subtype="html",
    )
    message["Content-Language"] = language
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
