"""Admin: search the audit log and export it (CSV or JSON Lines, streamed; the export is audited)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Stream, Template
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.session import session_scope
from server.errors import InvalidInput
from server.services.audit import ACTIONS, AuditQuery, export_rows, record_as, search
from server.web.access import Capability, requires
from server.web.context import factory_of, who
from server.web.reauth import require_recent_reauth

READ_AUDIT = [requires(Capability.READ_AUDIT)]
PAGE_SIZE = 50
OUTCOMES = ("ok", "failed", "refused", "locked", "denied")


def _day(text: str, field: str) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"'{text[:20]}' is not a date (YYYY-MM-DD)", field=field) from None


def _query(actor: str, action: str, object: str, outcome: str, since: str, until: str) -> AuditQuery:
    return AuditQuery(
        actor=actor.strip()[:320],
        action=action.strip()[:60],
        object=object.strip()[:300],
        outcome=outcome.strip()[:20],
        since=_day(since.strip(), "since"),
        until=_day(until.strip(), "until"),
    )


@get("/admin/audit", guards=READ_AUDIT, name="admin_audit")
async def audit_page(
    db_session: NamedDependency[AsyncSession],
    actor: FromQuery[str] = "",
    action: FromQuery[str] = "",
    object: FromQuery[str] = "",
    outcome: FromQuery[str] = "",
    since: FromQuery[str] = "",
    until: FromQuery[str] = "",
    before: FromQuery[int | None] = None,
) -> Template:
    query = _query(actor, action, object, outcome, since, until)
    events = await search(db_session, query, before_id=before, limit=PAGE_SIZE + 1)
    more = len(events) > PAGE_SIZE
    events = events[:PAGE_SIZE]
    filters = query.as_dict()
    older = urlencode({**filters, "before": events[-1].id}) if more and events else None
    areas = sorted({name.split(".", 1)[0] + "." for name in ACTIONS})
    return Template(
        "admin/audit.html",
        context={
            "events": events,
            "filters": filters,
            "older": older,
            "actions": sorted(ACTIONS),
            "areas": areas,
            "outcomes": OUTCOMES,
            "export_query": urlencode(filters),
        },
    )


@get("/admin/audit/export", guards=READ_AUDIT)
async def audit_export(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    format: FromQuery[str] = "csv",
    actor: FromQuery[str] = "",
    action: FromQuery[str] = "",
    object: FromQuery[str] = "",
    outcome: FromQuery[str] = "",
    since: FromQuery[str] = "",
    until: FromQuery[str] = "",
) -> Stream:
    require_recent_reauth(request)
    if format not in ("csv", "jsonl"):
        raise InvalidInput("format must be csv or jsonl", field="format")
    query = _query(actor, action, object, outcome, since, until)
    await record_as(
        db_session,
        who(request),
        "audit.exported",
        object_type="audit_log",
        detail={"format": format, "filters": query.as_dict()},
    )
    await db_session.commit()
    factory = factory_of(request)

    async def rows() -> AsyncIterator[bytes]:
        async with session_scope(factory) as session:
            async for chunk in export_rows(session, query, format):
                yield chunk

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return Stream(
        rows,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.{format}"'},
    )


ROUTES = [audit_page, audit_export]
