"""Email out of the portal: the templates, the message and one SMTP send (aiosmtplib).

Shared by the CSMs' digests and the security emails (notices, set-password links)."""

from __future__ import annotations

import email.utils
from email.message import EmailMessage
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import aiosmtplib
import css_inline
from jinja2 import Environment, FileSystemLoader, select_autoescape

from server.db.base import utcnow
from server.settings import Settings

TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "email"

# The SMTP server said no, or could not be reached: it did not take the message, so another
# attempt cannot double it. Anything else (the connection dropped, no answer in time) may have
# come after the server took it: such a message is left to a person.
NOT_TAKEN = (
    aiosmtplib.SMTPResponseException,
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPNotSupported,
)
ERROR_LENGTH = 500  # characters of an SMTP error kept on an outbox row


@cache
def templates(html: bool) -> Environment:
    # Autoescaped HTML: customer names and task texts come from the CRM and the policies. The
    # HTML drops the blank lines its tags leave (a long digest stays under mail clients' size
    # limits: Gmail clips an HTML part over 102 KB); the plain text keeps its lines as written.
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        keep_trailing_newline=True,
        trim_blocks=html,
        lstrip_blocks=html,
    )


@cache
def _inliner() -> css_inline.CSSInliner:
    # Mail clients drop <style>; no remote stylesheets are ever fetched.
    return css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


def render(template: str, **context: object) -> tuple[str, str]:
    """`<template>.txt` and `<template>.html` rendered: plain text, and HTML with its styles inlined."""
    text = templates(html=False).get_template(f"{template}.txt").render(**context)
    html = templates(html=True).get_template(f"{template}.html").render(**context)
    return text, _inliner().inline(html)


def message_id(settings: Settings, local_part: str) -> str:
    """A Message-ID on the portal's domain. The same on every attempt at one email, so a mail client
    folds a doubled message into one."""
    domain = urlsplit(settings.base_url).hostname or "localhost"
    return f"<{local_part}@{domain}>"


def email_message(
    settings: Settings, recipient: str, subject: str, text: str, html: str, message_id: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(utcnow())
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # no out-of-office replies to a robot
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


async def send_email(message: EmailMessage, settings: Settings) -> None:
    assert settings.smtp_host is not None
    await aiosmtplib.send(
        message,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        use_tls=settings.smtp_security == "tls",
        start_tls=settings.smtp_security == "starttls",
        timeout=30,
    )


async def send_once(message: EmailMessage, settings: Settings) -> tuple[str, str | None]:
    """Hand `message` to the SMTP server. Returns ("sent", None), ("failed", why) when the server
    did not take it (another attempt cannot double it), or ("unconfirmed", why) when it may have."""
    try:
        await send_email(message, settings)
    except NOT_TAKEN as exc:
        return "failed", f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH]
    except (aiosmtplib.SMTPException, OSError) as exc:
        return "unconfirmed", f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH]
    return "sent", None
