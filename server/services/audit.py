"""The audit trail: append-only records of security and business events (who, when, what, before, after).

Never pass secrets: passwords, TOTP codes and secrets, recovery codes and session ids must not
reach `before`, `after` or `detail`. The table refuses UPDATE and DELETE at the database level.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import AuditEvent

MAX_TEXT = 300


def _clean(value: str | None) -> str | None:
    """One line, bounded: no newlines or control characters to forge log lines with."""
    if value is None:
        return None
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in value)[:MAX_TEXT]


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
    event = AuditEvent(
        action=action,
        actor=_clean(actor),
        object_type=object_type,
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
