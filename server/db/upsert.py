"""INSERT ... ON CONFLICT for SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

# SQLite allows at most 32766 bound parameters per statement; stay well below on both.
MAX_PARAMETERS = 30_000


def _insert(session: AsyncSession, table: Table) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def upsert(
    session: AsyncSession,
    model: type[DeclarativeBase],
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    update: Sequence[str] = (),
) -> None:
    """Insert `rows`; on a key conflict update the `update` columns (or do nothing)."""
    if not rows:
        return
    table: Table = model.__table__  # type: ignore[assignment]
    per_row = max(1, len(rows[0]))
    step = max(1, MAX_PARAMETERS // per_row)
    for start in range(0, len(rows), step):
        statement = _insert(session, table)
        if update:
            statement = statement.on_conflict_do_update(
                index_elements=list(keys), set_={name: statement.excluded[name] for name in update}
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=list(keys))
        await session.execute(statement, list(rows[start : start + step]))
