"""Security emails: users hear of what happens to their account, and get set-password links.

The audit log is the outbox. An event that concerns a user (a reused two-factor code, a recovery
code used, two-factor turned off or reset, a new password, a set-password link asked for or
emailed by an admin) is written in the same transaction as the change itself, so no email can be
lost to a crash between the two. `send_security_emails` goes through the recent events of those
kinds that have no `security_email` row yet: inserting that row is the claim (its key is the
event's id, so two senders cannot both take one), then the message goes out and the row says
sent. As with the digests, a refusal by the server is tried again (3 attempts), and a send cut
short after the server may have taken it is not.

Set-password links are made when the email is sent, never stored. The web server runs the sender
every few seconds while SMTP is configured (`run_security_email_sender`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.base import utcnow
from server.db.models import AuditEvent, SecurityEmail, User
from server.db.session import session_scope
from server.services import mail
from server.services.users import SET_PASSWORD_MAX_AGE, set_password_link
from server.settings import Settings

log = logging.getLogger("csm.security_emails")

Factory = async_sessionmaker[AsyncSession]
MAX_ATTEMPTS = 3
RECENT = dt.timedelta(hours=24)  # older events are not emailed (say, once SMTP is first configured)
SEND_EVERY = 5.0  # seconds between two looks at the audit log in the web server
RETRY_AFTER = dt.timedelta(minutes=2)  # times the attempts made: a refused email waits 2, then 4 minutes


@dataclass(frozen=True)
class SecurityEmailKind:
    subject: str
    what: str  # one sentence: what happened
    advice: str  # what to do if it was not them
    link: bool = False  # carries a new set-password link


NOT_YOU = "If this was not you, change your password now and tell your administrator."
EMAILED: dict[str, SecurityEmailKind] = {
    "auth.totp_replay": SecurityEmailKind(
        "A used sign-in code was tried on your account",
        "Someone signed in with your password and then entered a two-factor code that had already been used."
        " The code was refused.",
        "If this was not you, your password is known to someone else: change it now and tell your administrator.",
    ),
    "auth.new_device": SecurityEmailKind(
        "New sign-in to your account",
        "Your account was signed in to from a browser it had not been signed in from before.",
        NOT_YOU,
    ),
    "auth.recovery_code_used": SecurityEmailKind(
        "A recovery code was used to sign in",
        "Your account was signed in to with one of your recovery codes.",
        NOT_YOU,
    ),
    "user.2fa_disabled": SecurityEmailKind(
        "Two-factor sign-in was turned off", "Two-factor sign-in was turned off for your account.", NOT_YOU
    ),
    "user.2fa_reset": SecurityEmailKind(
        "Your two-factor sign-in was reset",
        "An administrator removed the two-factor set-up of your account; you set it up again at your next sign-in.",
        "If you did not ask for this, tell your administrator.",
    ),
    "user.recovery_codes_regenerated": SecurityEmailKind(
        "New recovery codes were made",
        "New recovery codes were made for your account; the old ones stopped working.",
        NOT_YOU,
    ),
    "user.password_changed": SecurityEmailKind(
        "Your password was changed", "The password of your account was changed.", NOT_YOU
    ),
    "user.password_set": SecurityEmailKind(
        "Your password was set", "A password was chosen for your account through a set-password link.", NOT_YOU
    ),
    "auth.password_reset_requested": SecurityEmailKind(
        "Choose a new password",
        "Someone, probably you, asked for a link to choose a new password for your account.",
        "If it was not you, ignore this email: your password stays as it is.",
        link=True,
    ),
    "user.password_link_issued": SecurityEmailKind(
        "Choose a new password",
        "An administrator sent you a link to choose a new password; your sessions were signed out.",
        "If you did not ask for this, tell your administrator.",
        link=True,
    ),
    "user.invited": SecurityEmailKind(
        "You are invited to CSM Portal",
        "An administrator invited you to CSM Portal. Choose your password to sign in.",
        "If you did not expect this, ignore this email.",
        link=True,
    ),
}
# Links an admin made go out by email only when the admin asked for it (else they hand it over).
ONLY_WHEN_ASKED = {"user.password_link_issued", "user.invited"}


def why_not_emailed(event: AuditEvent) -> str | None:
    """Why a user is not emailed about this audit event, or None when they are."""
    if event.action not in EMAILED or event.object_type != "user":
        return "not an event users are emailed about"
    if event.outcome not in ("ok", "refused"):
        return f"not emailed: {event.outcome}"  # a link asked for an address with no active user
    if event.action in ONLY_WHEN_ASKED and not (event.detail or {}).get("emailed"):
        return "not emailed (an admin handed the link over)"
    return None


def render_security_email(event: AuditEvent, user: User, settings: Settings) -> tuple[str, str, str]:
    """Subject, plain text and HTML of the email for `event`, to `user` (with a fresh link if it
    carries one)."""
    kind = EMAILED[event.action]
    context: dict[str, Any] = {
        "kind": kind,
        "user": user,
        "at": event.at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "ip": event.ip,
        "user_agent": event.user_agent,
        "actor": event.actor if event.actor != user.email else None,
        "remaining": (event.detail or {}).get("remaining"),
        "link": set_password_link(settings, user) if kind.link else None,
        "link_hours": SET_PASSWORD_MAX_AGE // 3600,
        "portal": settings.base_url.rstrip("/"),
    }
    text, html = mail.render("security", **context)
    return kind.subject, text, html


CLAIMABLE_AGAIN = and_(SecurityEmail.state == "failed", SecurityEmail.attempts < MAX_ATTEMPTS)


async def _claim(factory: Factory, event: AuditEvent, recipient: str, retry: bool) -> bool:
    try:
        async with session_scope(factory) as session:
            if retry:
                claimed = await session.execute(
                    update(SecurityEmail)
                    .where(SecurityEmail.audit_event_id == event.id, CLAIMABLE_AGAIN)
                    .values(state="sending", attempts=SecurityEmail.attempts + 1)
                )
                return bool(claimed.rowcount)  # type: ignore[attr-defined]
            session.add(SecurityEmail(audit_event_id=event.id, recipient=recipient, action=event.action))
    except IntegrityError:
        return False  # another sender took it
    return True


async def _mark(factory: Factory, event_id: int, **values: Any) -> None:
    async with session_scope(factory) as session:
        await session.execute(update(SecurityEmail).where(SecurityEmail.audit_event_id == event_id).values(**values))


async def _skip(factory: Factory, event: AuditEvent, recipient: str, why: str) -> None:
    try:
        async with session_scope(factory) as session:
            session.add(
                SecurityEmail(
                    audit_event_id=event.id,
                    recipient=recipient,
                    action=event.action,
                    state="skipped",
                    attempts=0,
                    error=why,
                )
            )
    except IntegrityError:
        pass  # decided by another sender already


async def send_security_email(factory: Factory, settings: Settings, event: AuditEvent, retry: bool) -> str:
    """Email one event to its user. Returns sent, skipped, failed (tried again later) or unconfirmed."""
    async with session_scope(factory) as session:
        user = await session.scalar(select(User).where(User.email == event.object_id))
    recipient = event.object_id or ""
    if user is None or not user.active:
        await _skip(factory, event, recipient, "no active user with this email")
        return "skipped"
    subject, text, html = render_security_email(event, user, settings)  # before the claim: nothing to undo
    if not await _claim(factory, event, user.email, retry):
        return "skipped"
    message_id = mail.message_id(settings, f"security.{event.id}")
    message = mail.email_message(settings, user.email, subject, text, html, message_id)
    outcome, error = await mail.send_once(message, settings)
    if outcome == "failed":
        await _mark(factory, event.id, state="failed", error=error)
    elif outcome == "unconfirmed":
        await _mark(factory, event.id, error=error)  # stays "sending"
    else:
        await _mark(factory, event.id, state="sent", sent_at=utcnow(), error=None)
    return outcome


async def send_security_emails(
    factory: Factory, settings: Settings, now: dt.datetime | None = None, stop: asyncio.Event | None = None
) -> Counter[str]:
    """Email every recent security event not emailed yet (and retry refused ones), until `stop` is
    set. Idempotent."""
    outcomes: Counter[str] = Counter()
    if not settings.smtp_host:
        return outcomes
    now = now or utcnow()
    async with session_scope(factory) as session:
        rows = (
            await session.execute(
                select(AuditEvent, SecurityEmail.state, SecurityEmail.attempts, SecurityEmail.created_at)
                .outerjoin(SecurityEmail, SecurityEmail.audit_event_id == AuditEvent.id)
                .where(
                    AuditEvent.at >= now - RECENT,
                    AuditEvent.action.in_(EMAILED),
                    or_(SecurityEmail.audit_event_id.is_(None), CLAIMABLE_AGAIN),
                )
                .order_by(AuditEvent.id)
            )
        ).all()
    for event, state, attempts, first_tried in rows:
        if stop is not None and stop.is_set():
            break
        if state is not None and first_tried > now - attempts * RETRY_AFTER:
            continue  # refused lately: give the server time
        why_not = why_not_emailed(event) if state is None else None
        if why_not:
            await _skip(factory, event, event.object_id or "", why_not)
            outcomes["not emailed"] += 1
            continue
        outcomes[await send_security_email(factory, settings, event, retry=state is not None)] += 1
    return outcomes


async def recent_security_emails(session: AsyncSession, limit: int = 20) -> list[SecurityEmail]:
    """The latest emails sent or tried (not the events decided not to email), newest first."""
    return list(
        await session.scalars(
            select(SecurityEmail)
            .where(SecurityEmail.state != "skipped")
            .order_by(SecurityEmail.created_at.desc(), SecurityEmail.audit_event_id.desc())
            .limit(limit)
        )
    )


async def run_security_email_sender(factory: Factory, settings: Settings, stop: asyncio.Event) -> None:
    """The web server's sender: looks every few seconds until `stop` is set, then returns after the
    email in hand (a shutdown does not cut a send short). A failure is logged; the next look tries again."""
    while not stop.is_set():
        try:
            sent = await send_security_emails(factory, settings, stop=stop)
            if sent:
                log.info("security emails: %s", dict(sent))
        except Exception:
            log.exception("security emails: sending failed; trying again")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SEND_EVERY)
