"""Per-user preferences: the overview's columns, the strip of open customer tabs, saved filters,
whether a CSM gets the morning digest.

The open tabs live here (in the database, per user) rather than in the browser's localStorage:
the strip is rendered by the server with the page (no flash of an empty strip, no script
needed), follows the user to another browser or machine, and a customer reassigned to another
CSM silently drops out of it because every read goes through the access filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Account, SavedFilter, UserPreference
from server.db.upsert import upsert
from server.errors import Forbidden, InvalidInput, NotFound
from server.services import audit
from server.services.customers import COLUMNS, DEFAULT_COLUMNS
from server.web.access import CurrentUser

COLUMNS_KEY = "overview.columns"
DIGEST_KEY = "digest.email"
TABS_KEY = "customer.tabs"
MAX_TABS = 12
DETAIL_TABS = ("tasks", "chi", "commercial", "usage", "activity", "retention")
FILTER_PAGE_PATHS = {"overview": "/", "dashboard": "/dashboard"}
FILTER_PAGES = tuple(FILTER_PAGE_PATHS)
MAX_FILTER_NAME = 120
MAX_QUERY = 2000


async def _get(session: AsyncSession, user: CurrentUser, key: str) -> dict[str, Any] | None:
    preference = await session.get(UserPreference, (user.email, key), populate_existing=True)
    return preference.value if preference is not None else None


async def _put(session: AsyncSession, user: CurrentUser, key: str, value: dict[str, Any]) -> None:
    row = {"user_email": user.email, "key": key, "value": value}
    await upsert(session, UserPreference, [row], ("user_email", "key"), ("value",))


# ── the morning digest ──────────────────────────────────────────────────────────────────


async def wants_digest(session: AsyncSession, user: CurrentUser) -> bool:
    """On unless the user turned it off."""
    stored = await _get(session, user, DIGEST_KEY)
    return bool(stored.get("on", True)) if stored else True


async def set_digest(session: AsyncSession, user: CurrentUser, on: bool) -> None:
    await _put(session, user, DIGEST_KEY, {"on": on})


async def digest_turned_off(session: AsyncSession) -> set[str]:
    """The emails of the users who turned the morning digest off."""
    rows = await session.execute(
        select(UserPreference.user_email, UserPreference.value).where(UserPreference.key == DIGEST_KEY)
    )
    return {email for email, value in rows if isinstance(value, dict) and value.get("on") is False}


# ── columns ─────────────────────────────────────────────────────────────────────────────


async def get_columns(session: AsyncSession, user: CurrentUser) -> list[str]:
    stored = await _get(session, user, COLUMNS_KEY)
    if not stored:
        columns = list(DEFAULT_COLUMNS)
        return [c for c in columns if c != "csm"] if not user.sees_every_customer else columns
    return [column for column in stored.get("columns", []) if column in COLUMNS]


def check_columns(columns: Sequence[str]) -> list[str]:
    chosen: list[str] = []
    for column in columns:
        if column not in COLUMNS:
            raise InvalidInput(
                f"unknown column {column[:40]!r}; expected some of {', '.join(COLUMNS)}", field="columns"
            )
        if column not in chosen:
            chosen.append(column)
    return chosen


async def set_columns(session: AsyncSession, user: CurrentUser, columns: Sequence[str]) -> list[str]:
    chosen = check_columns(columns)
    await _put(session, user, COLUMNS_KEY, {"columns": chosen})
    return chosen


async def reset_columns(session: AsyncSession, user: CurrentUser) -> list[str]:
    await _put(session, user, COLUMNS_KEY, {})
    return await get_columns(session, user)


def move_column(columns: list[str], column: str, offset: int) -> list[str]:
    if column not in columns:
        return columns
    index = columns.index(column)
    target = max(0, min(len(columns) - 1, index + offset))
    moved = [c for c in columns if c != column]
    moved.insert(target, column)
    return moved


# ── open customer tabs ──────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class OpenTab:
    id: str
    name: str
    tab: str
    chi: int | None
    band: str | None


async def open_tabs(session: AsyncSession, user: CurrentUser) -> list[OpenTab]:
    """The user's open customer tabs, in order; customers they no longer see are left out."""
    stored = (await _get(session, user, TABS_KEY)) or {}
    entries = [entry for entry in stored.get("tabs", []) if isinstance(entry, dict) and entry.get("id")]
    if not entries:
        return []
    ids = [str(entry["id"]) for entry in entries]
    rows = {
        row.id: row
        for row in await session.execute(
            select(Account.id, Account.name, Account.chi, Account.band).where(
                Account.id.in_(ids), user.customer_filter()
            )
        )
    }
    tabs = []
    for entry in entries:
        row = rows.get(str(entry["id"]))
        if row is not None:
            tab = entry.get("tab") if entry.get("tab") in DETAIL_TABS else "tasks"
            tabs.append(OpenTab(row.id, row.name, str(tab), row.chi, row.band))
    return tabs


async def remember_tab(session: AsyncSession, user: CurrentUser, account_id: str, tab: str) -> None:
    """Open (or update) the customer's tab; call it after the access check passed."""
    stored = (await _get(session, user, TABS_KEY)) or {}
    entries = [entry for entry in stored.get("tabs", []) if isinstance(entry, dict) and entry.get("id")]
    for entry in entries:
        if entry["id"] == account_id:
            if entry.get("tab") == tab:
                return  # nothing changed: no write on a plain page view
            entry["tab"] = tab
            break
    else:
        entries.append({"id": account_id, "tab": tab})
        entries = entries[-MAX_TABS:]
    await _put(session, user, TABS_KEY, {"tabs": entries})


async def close_tab(session: AsyncSession, user: CurrentUser, account_id: str) -> str | None:
    """Close the customer's tab; returns the id of the tab to show next (its neighbour), if any."""
    stored = (await _get(session, user, TABS_KEY)) or {}
    entries = [entry for entry in stored.get("tabs", []) if isinstance(entry, dict) and entry.get("id")]
    ids = [entry["id"] for entry in entries]
    if account_id not in ids:
        return None
    index = ids.index(account_id)
    remaining = [entry for entry in entries if entry["id"] != account_id]
    await _put(session, user, TABS_KEY, {"tabs": remaining})
    if not remaining:
        return None
    return str(remaining[min(index, len(remaining) - 1)]["id"])


async def close_all_tabs(session: AsyncSession, user: CurrentUser) -> None:
    await _put(session, user, TABS_KEY, {"tabs": []})


# ── saved filters ───────────────────────────────────────────────────────────────────────


def clean_query(query: str) -> str:
    """A saved filter's query string, normalised, without paging."""
    query = query.lstrip("?")
    if len(query) > MAX_QUERY:
        raise InvalidInput(f"the filter is too long (at most {MAX_QUERY} characters)", field="query")
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=False) if k != "page"]
    return urlencode(pairs)


def filter_url(saved: SavedFilter) -> str:
    """Where a saved filter opens: its page, with its query."""
    path = FILTER_PAGE_PATHS.get(saved.page, "/")
    return f"{path}?{saved.query}" if saved.query else path


async def list_filters(session: AsyncSession, user: CurrentUser, page: str | None = None) -> list[SavedFilter]:
    statement = select(SavedFilter).where(or_(SavedFilter.owner == user.email, SavedFilter.shared.is_(True)))
    if page is not None:
        statement = statement.where(SavedFilter.page == page)
    return list(await session.scalars(statement.order_by(SavedFilter.page, SavedFilter.name)))


async def get_filter(session: AsyncSession, user: CurrentUser, filter_id: int) -> SavedFilter:
    saved = await session.get(SavedFilter, filter_id)
    if saved is None or (saved.owner != user.email and not saved.shared):
        raise NotFound(f"no saved filter {filter_id}")
    return saved


async def save_filter(
    session: AsyncSession, user: CurrentUser, name: str, query: str, page: str = "overview", shared: bool = False
) -> SavedFilter:
    """Save (or overwrite, by name) a filter of the user's."""
    cleaned = " ".join("".join(c for c in name if c.isprintable()).split())
    if not cleaned:
        raise InvalidInput("a saved filter needs a name", field="name")
    if len(cleaned) > MAX_FILTER_NAME:
        raise InvalidInput(f"a name may be at most {MAX_FILTER_NAME} characters long", field="name")
    if page not in FILTER_PAGES:
        raise InvalidInput(f"unknown page {page!r}; expected one of {', '.join(FILTER_PAGES)}", field="page")
    normalised = clean_query(query)
    saved = await session.scalar(
        select(SavedFilter).where(SavedFilter.owner == user.email, SavedFilter.name == cleaned)
    )
    action = "filter.saved"
    if saved is None:
        saved = SavedFilter(name=cleaned, page=page, query=normalised, owner=user.email, shared=shared)
        session.add(saved)
    else:
        saved.page, saved.query, saved.shared = page, normalised, shared
    await session.flush()
    await audit.record(
        session,
        action,
        actor=user.email,
        object_type="saved_filter",
        object_id=str(saved.id),
        after={"name": cleaned, "page": page, "query": normalised[:300], "shared": shared},
    )
    return saved


async def delete_filter(session: AsyncSession, user: CurrentUser, filter_id: int) -> None:
    saved = await get_filter(session, user, filter_id)
    if saved.owner != user.email:
        raise Forbidden("only its owner may delete a saved filter")
    await session.delete(saved)
    await session.flush()
    await audit.record(
        session,
        "filter.deleted",
        actor=user.email,
        object_type="saved_filter",
        object_id=str(filter_id),
        before={"name": saved.name, "query": saved.query[:300]},
    )
