"""The audit trail: append-only records of security and business events (who, when, what, before, after).

Never pass secrets: passwords, TOTP codes and secrets, recovery codes, session ids, set-password
links and CSRF tokens must not reach `before`, `after` or `detail` (`record` refuses keys that
name them). The table refuses UPDATE and DELETE at the database level.

Action names are `area.event` in lower case; the known ones are listed in `ACTIONS` (and in
docs/security.md). Other parts of the product record their own with the same function, e.g.
`record(session, "policy.published", actor=email, object_type="policy", object_id=version, ...)`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import AuditEvent

MAX_TEXT = 300
ACTION = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)+")
# Keys that must never carry a value into the audit log.
SECRET_KEYS = re.compile(r"password|passwd|secret|token|totp_code|recovery_code|session_id|cookie|^otp$|^code$", re.I)

ACTIONS: dict[str, str] = {
    # sign-in and sessions
    "auth.login": "signed in (after every factor)",
    "auth.login_failed": "a sign-in with a wrong email or password (or an inactive account)",
    "auth.password_ok": "the password step passed; the second factor is pending",
    "auth.2fa_failed": "a wrong two-factor code",
    "auth.totp_replay": "a two-factor code that was already used (refused)",
    "auth.recovery_code_used": "signed in with a recovery code",
    "auth.new_device": "signed in from a browser the user had not signed in from before (they are emailed)",
    "auth.password_reset_requested": "a set-password link asked for on the sign-in page (unknown: no such user)",
    "auth.recovery_code_failed": "a wrong recovery code",
    "auth.lockout": "too many failed attempts: further attempts refused for a while",
    "auth.logout": "signed out (ends every session of the user)",
    "auth.reauth": "confirmed their identity before a sensitive action",
    "auth.reauth_failed": "a wrong password or code when confirming identity",
    "session.ended": "a user ended one of their other sessions",
    "session.ended_others": "a user ended all their other sessions",
    # users and two-factor
    "user.created": "a user was created with a password (CLI, demo)",
    "user.invited": "an admin invited a user (a set-password link was issued)",
    "user.password_link_issued": "an admin issued a new set-password link",
    "user.password_set": "a user set their password through a set-password link",
    "user.password_changed": "a user changed their password",
    "user.role_changed": "a user's role changed (before/after)",
    "user.deactivated": "a user was deactivated (all sessions ended)",
    "user.activated": "a user was activated again",
    "user.sessions_ended": "an admin ended every session of a user",
    "user.2fa_enabled": "a user turned on two-factor sign-in",
    "user.2fa_disabled": "a user turned off two-factor sign-in",
    "user.2fa_reset": "an admin removed a user's two-factor set-up",
    "user.browsers_forgotten": "a user forgot the browsers they signed in from, but the one in use",
    "user.recovery_codes_regenerated": "a user made new recovery codes (the old ones stop working)",
    "settings.2fa_requirement_changed": "an admin changed who must use two-factor sign-in",
    "settings.2fa_seeds_resealed": "the two-factor seeds were sealed again under a new secret key",
    # authorisation
    "access.denied": "a signed-in user was refused (wrong role, someone else's object, CSRF, a protected field)",
    # the audit log itself and exports
    "audit.exported": "the audit log was exported (CSV or JSON Lines)",
    "export.health": "health scores were exported",
    "export.tasks": "tasks were exported",
    "export.customers": "the customer overview was exported (CSV or JSON Lines)",
    # business events recorded by the portal and the console
    "task.state_changed": "a task's state changed (before/after)",
    "task.snoozed": "a task was snoozed until a date",
    "task.commented": "a comment on a task was changed",
    "task.assigned": "a task's assignee changed",
    "tag.created": "a tag was created",
    "tag.deleted": "a tag was deleted",
    "tag.assigned": "tags were added to customers",
    "tag.removed": "tags were removed from customers",
    "tag.renamed": "a tag was renamed or recoloured",
    "filter.saved": "a saved filter (view) was created or changed",
    "filter.deleted": "a saved filter was deleted",
    "customer.sentiment_recorded": "a CSM recorded a customer's sentiment",
    "customer.meeting_outcome_recorded": "a CSM recorded a meeting outcome",
    "policy.draft_saved": "a policy draft was saved",
    "policy.published": "a policy version was published (with comment, before/after hashes)",
    "policy.rolled_back": "the published policy was rolled back to an earlier version",
    "run.started": "an engine run was started from the console",
    "digest.sent_again": "a digest cut short or refused by the SMTP server was sent again by hand from the console",
}


@dataclass(frozen=True)
class Who:
    """Who does something, and from where (the CLI has no address)."""

    actor: str | None
    ip: str | None = None
    user_agent: str | None = None


CLI = Who("cli")


def _clean(value: str | None) -> str | None:
    """One line, bounded: no newlines or control characters to forge log lines with."""
    if value is None:
        return None
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in value)[:MAX_TEXT]


def _check_no_secrets(values: Mapping[str, Any] | None) -> None:
    if not values:
        return
    for key, value in values.items():
        if SECRET_KEYS.search(str(key)):
            raise ValueError(f"audit records may not carry '{key}'")
        if isinstance(value, Mapping):
            _check_no_secrets(value)


async def record(
    session: AsyncSession,
    action: str,
    *,
    actor: str | None,
    object_type: str | None = None,
    object_id: str | None = None,
    outcome: str = "ok",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> AuditEvent:
    if not ACTION.fullmatch(action) or len(action) > 60:
        raise ValueError(f"audit action '{action}' is not of the form area.event")
    for values in (before, after, detail):
        _check_no_secrets(values)
    event = AuditEvent(
        action=action,
        actor=_clean(actor),
        object_type=_clean(object_type),
        object_id=_clean(object_id),
        outcome=outcome,
        before=before,
        after=after,
        detail=detail or {},
        ip=_clean(ip),
        user_agent=_clean(user_agent),
    )
    session.add(event)
    await session.flush()
    return event


async def record_as(session: AsyncSession, who: Who, action: str, **fields: Any) -> AuditEvent:
    return await record(session, action, actor=who.actor, ip=who.ip, user_agent=who.user_agent, **fields)


# ── searching and exporting ─────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class AuditQuery:
    actor: str = ""  # part of the actor's email
    action: str = ""  # an action, or an area ("auth.")
    object: str = ""  # part of the object's type or id
    outcome: str = ""
    since: dt.date | None = None  # UTC days, inclusive
    until: dt.date | None = None

    def statement(self) -> Select[AuditEvent]:
        statement = select(AuditEvent)
        if self.actor:
            statement = statement.where(AuditEvent.actor.icontains(self.actor, autoescape=True))
        if self.action:
            if self.action.endswith("."):
                statement = statement.where(AuditEvent.action.startswith(self.action, autoescape=True))
            else:
                statement = statement.where(AuditEvent.action == self.action)
        if self.object:
            statement = statement.where(
                AuditEvent.object_id.icontains(self.object, autoescape=True)
                | AuditEvent.object_type.icontains(self.object, autoescape=True)
            )
        if self.outcome:
            statement = statement.where(AuditEvent.outcome == self.outcome)
        if self.since:
            statement = statement.where(AuditEvent.at >= dt.datetime.combine(self.since, dt.time(), dt.UTC))
        if self.until:
            end = dt.datetime.combine(self.until + dt.timedelta(days=1), dt.time(), dt.UTC)
            statement = statement.where(AuditEvent.at < end)
        return statement

    def as_dict(self) -> dict[str, str]:
        values = {
            "actor": self.actor,
            "action": self.action,
            "object": self.object,
            "outcome": self.outcome,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        return {key: value for key, value in values.items() if value}


async def search(session: AsyncSession, query: AuditQuery, *, before_id: int | None, limit: int) -> list[AuditEvent]:
    """The newest matching events, `limit` at a time, older than `before_id` (keyset paging)."""
    statement = query.statement()
    if before_id is not None:
        statement = statement.where(AuditEvent.id < before_id)
    return list((await session.scalars(statement.order_by(AuditEvent.id.desc()).limit(limit))).all())


EXPORT_FIELDS = (
    "id",
    "at",
    "actor",
    "action",
    "object_type",
    "object_id",
    "outcome",
    "ip",
    "user_agent",
    "before",
    "after",
    "detail",
)


def event_row(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "outcome": event.outcome,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "before": event.before,
        "after": event.after,
        "detail": event.detail,
    }


def _csv_cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


async def export_rows(session: AsyncSession, query: AuditQuery, fmt: str) -> AsyncIterator[bytes]:
    """The matching events, oldest first, as CSV (with a header) or JSON Lines, in chunks."""
    statement = query.statement().order_by(AuditEvent.id).execution_options(yield_per=500)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if fmt == "csv":
        writer.writerow(EXPORT_FIELDS)
    chunk: list[bytes] = []
    result = await session.stream_scalars(statement)
    async for event in result:
        row = event_row(event)
        if fmt == "csv":
            writer.writerow([_csv_cell(row[name]) for name in EXPORT_FIELDS])
            chunk.append(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
        else:
            chunk.append(msgspec.json.encode(row) + b"\n")
        if len(chunk) >= 200:
            yield b"".join(chunk)
            chunk = []
    if buffer.getvalue():  # the CSV header of an export without rows
        chunk.append(buffer.getvalue().encode())
    if chunk:
        yield b"".join(chunk)
