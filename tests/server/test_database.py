"""The schema migrates on both databases, and the audit log refuses changes."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from server.db.models import AuditEvent
from server.db.session import create_engine, session_factory, session_scope
from server.services.audit import record


async def test_audit_log_is_append_only(database_url: str) -> None:
    engine = create_engine(database_url)
    factory = session_factory(engine)
    try:
        async with session_scope(factory) as session:
            await record(session, "test.event", actor="a@example.com\nforged line", detail={"x": 1})
        async with session_scope(factory) as session:
            event = await session.scalar(select(AuditEvent))
            assert event is not None
            assert event.actor == "a@example.com\\x0aforged line"
        for statement in ("UPDATE audit_event SET action = 'x'", "DELETE FROM audit_event"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with session_scope(factory) as session:
                    await session.execute(text(statement))
    finally:
        await engine.dispose()
