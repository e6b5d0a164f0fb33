"""Request helpers shared by the portal's pages and their JSON twins (server.portal, server.api):
who is asking, what day it is for them, the policies' catalog, the query string, htmx, exports."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
from litestar import Request
from litestar.exceptions import NotAuthorizedException
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.session import session_scope
from server.errors import InvalidInput
from server.services import audit
from server.services.catalog import Catalog, load_catalog
from server.services.customers import EXPORT_FIELDS, CustomerQuery, count_customers, export_customers
from server.settings import Settings
from server.web.access import CurrentUser

AnyRequest = Request[Any, Any, Any]
EXPORT_FORMATS = ("csv", "jsonl")


def current_user(request: AnyRequest) -> CurrentUser:
    user = request.scope.get("user")
    if not isinstance(user, CurrentUser):
        raise NotAuthorizedException("sign in first")
    return user


def settings_of(request: AnyRequest) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def today(request: AnyRequest) -> dt.date:
    """Today in the deployment's time zone (tests may set `app.state.today` to a callable)."""
    clock: Callable[[], dt.date] | None = request.app.state.get("today")
    if clock is not None:
        return clock()
    return dt.datetime.now(settings_of(request).timezone).date()


async def catalog(request: AnyRequest, session: AsyncSession) -> Catalog:
    return await load_catalog(session, settings_of(request).policy_dir)


def _params_of(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Query-string pairs as each name's values, the form the filters' parsers read."""
    params: dict[str, list[str]] = {}
    for key, value in pairs:
        params.setdefault(key, []).append(value)
    return params


def query_lists(request: AnyRequest) -> dict[str, list[str]]:
    return _params_of(request.query_params.multi_items())


def url_query_lists(url: str) -> dict[str, list[str]]:
    """The query of a page's URL (a form's `next`), to redraw that page's list after a change."""
    return _params_of(parse_qsl(urlsplit(url).query))


def htmx_target(request: AnyRequest) -> str:
    return request.headers.get("hx-target") or ""


# ── exports ─────────────────────────────────────────────────────────────────────────────


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list):
        return "; ".join(item.get("product", "") if isinstance(item, dict) else str(_csv_cell(item)) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {item}" for key, item in value.items())
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # no formulas in a spreadsheet opened from an export
    return "" if value is None else value


async def export_stream(
    request: AnyRequest, db_session: AsyncSession, query: CustomerQuery, cat: Catalog, fmt: str
) -> Stream:
    """The filter's customers (every page) as CSV or JSON Lines, audit-logged with the filter and size.

    The rows stream from a session of their own, so a large export does not hold the request's.
    """
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"unknown export format {fmt[:20]!r}; expected csv or jsonl", field="format")
    user = current_user(request)
    day = today(request)
    count = await count_customers(db_session, user, query, day)
    await audit.record(
        db_session,
        "export.customers",
        actor=user.email,
        object_type="customers",
        detail={"format": fmt, "filter": "&".join(f"{k}={v}" for k, v in query.filter_params())[:300], "rows": count},
        ip=request.client.host if request.client else None,
    )
    await db_session.commit()  # the record stands even if the download is cut short
    factory = request.app.state.session_factory

    async def body() -> AsyncIterator[bytes]:
        async with session_scope(factory) as session:
            rows = export_customers(session, user, query, cat, day)
            if fmt == "csv":
                yield _csv_line(list(EXPORT_FIELDS)).encode()
                async for row in rows:
                    yield _csv_line([_csv_cell(row[name]) for name in EXPORT_FIELDS]).encode()
            else:
                async for row in rows:
                    yield msgspec.json.encode(row) + b"\n"

    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return Stream(
        body(),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="customers-{day.isoformat()}.{fmt}"',
            "X-Export-Rows": str(count),
        },
    )
