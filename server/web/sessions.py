"""Server-side sessions that cannot be fixed by an attacker, in the database or in Redis.

Litestar's server-side backend adopts whatever session id a client's cookie carries, even one
the store never issued (`research/ecosystem.md`, "Session fixation"). This backend only keeps
an id the store knows, issues a fresh one otherwise, and `rotate_session` replaces the id at
login and again after the second factor, deleting the old one.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.stores.base import Store
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.base import utcnow
from server.db.models import SessionRecord
from server.db.session import session_scope
from server.db.upsert import upsert

_NEW_ID = "csm_new_session_id"
_KNOWN = "csm_session_known"


class RotatingSessionBackend(ServerSideSessionBackend):
    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        state = connection.scope.setdefault("state", {})
        if state.get(_NEW_ID):
            return str(state[_NEW_ID])
        cookie = connection.cookies.get(self.config.key)
        if cookie and state.get(_KNOWN):
            return cookie
        state[_NEW_ID] = self.generate_session_id()  # never adopt an id the store did not issue
        return str(state[_NEW_ID])

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        data = await super().load_from_connection(connection)
        if data:
            connection.scope.setdefault("state", {})[_KNOWN] = True
        return data


@dataclass
class RotatingSessionConfig(ServerSideSessionConfig):
    _backend_class = RotatingSessionBackend


async def rotate_session(connection: ASGIConnection[Any, Any, Any, Any], store: Store, key: str) -> None:
    """Give this session a new id from now on, and forget the old one."""
    old = connection.cookies.get(key)
    if old:
        await store.delete(old)
    state = connection.scope.setdefault("state", {})
    state[_NEW_ID] = secrets.token_hex(32)
    state[_KNOWN] = False


class DatabaseStore(Store):
    """A Litestar store in the `session_record` table: sessions without Redis (the embedded default)."""

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self.factory = factory

    async def set(self, key: str, value: str | bytes, expires_in: int | dt.timedelta | None = None) -> None:
        data = value.encode() if isinstance(value, str) else value
        if isinstance(expires_in, int):
            expires_in = dt.timedelta(seconds=expires_in)
        expires_at = utcnow() + expires_in if expires_in is not None else None
        async with session_scope(self.factory) as session:
            await upsert(
                session,
                SessionRecord,
                [{"key": key, "value": data, "expires_at": expires_at}],
                ("key",),
                ("value", "expires_at"),
            )

    async def get(self, key: str, renew_for: int | dt.timedelta | None = None) -> bytes | None:
        async with session_scope(self.factory) as session:
            record = await session.get(SessionRecord, key)
            if record is None:
                return None
            if record.expires_at is not None and record.expires_at <= utcnow():
                await session.delete(record)
                return None
            if renew_for is not None:
                seconds = renew_for if isinstance(renew_for, dt.timedelta) else dt.timedelta(seconds=renew_for)
                record.expires_at = utcnow() + seconds
            return record.value

    async def delete(self, key: str) -> None:
        async with session_scope(self.factory) as session:
            await session.execute(delete(SessionRecord).where(SessionRecord.key == key))

    async def delete_all(self) -> None:
        async with session_scope(self.factory) as session:
            await session.execute(delete(SessionRecord))

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        async with session_scope(self.factory) as session:
            expires_at = await session.scalar(select(SessionRecord.expires_at).where(SessionRecord.key == key))
        if expires_at is None:
            return None
        return max(0, int((expires_at - utcnow()).total_seconds()))

    async def delete_expired(self) -> int:
        async with session_scope(self.factory) as session:
            result = await session.execute(delete(SessionRecord).where(SessionRecord.expires_at <= utcnow()))
            return int(result.rowcount)  # type: ignore[attr-defined]
