"""Server-side sessions that cannot be fixed by an attacker, in the database or in Redis.

Litestar's server-side backend adopts whatever session id a client's cookie carries, even one
the store never issued (`research/ecosystem.md`, "Session fixation"). This backend:

- only keeps an id the store knows and that looks like one we issue (64 hex digits), and issues
  a fresh one otherwise: a cookie can never name a key of our choosing, nor a key of another
  namespace;
- `rotate_session` replaces the id at login, after the second factor and at re-authentication,
  deleting the old one;
- writes nothing for a visitor without a session (no row per anonymous request) and does not
  rewrite a session whose data did not change (no write per request); `persist_session` writes
  a changed session at once, before the handler opens its own transaction (SQLite has one writer).

`SessionIndex` keeps, per user, the sessions they have open, so a user can see and end them.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.stores.base import NamespacedStore, Store
from litestar.types import Empty, Message, ScopeSession
from litestar.utils.dataclass import extract_dataclass_items
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.base import utcnow
from server.db.models import SessionRecord
from server.db.session import session_scope
from server.db.upsert import upsert

_NEW_ID = "csm_new_session_id"
_KNOWN = "csm_session_known"
_LOADED = "csm_session_loaded"
SESSION_ID = re.compile(r"[0-9a-f]{64}")


def _state(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
    return connection.scope.setdefault("state", {})


class RotatingSessionBackend(ServerSideSessionBackend):
    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        state = _state(connection)
        if state.get(_NEW_ID):
            return str(state[_NEW_ID])
        cookie = connection.cookies.get(self.config.key)
        if cookie and state.get(_KNOWN):
            return cookie
        state[_NEW_ID] = self.generate_session_id()  # never adopt an id the store did not issue
        return str(state[_NEW_ID])

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        cookie = connection.cookies.get(self.config.key)
        if not cookie or not SESSION_ID.fullmatch(cookie):
            return {}
        store = self.config.get_store_from_app(connection.scope["app"])
        raw = await self.get(cookie, store=store)
        if raw is None:
            return {}
        try:
            data = self.deserialize_data(raw)
        except (ValueError, TypeError, msgspec.DecodeError):
            return {}
        if not isinstance(data, dict):
            return {}
        state = _state(connection)
        state[_KNOWN] = True
        state[_LOADED] = raw
        return data

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        state = _state(connection)
        store = self.config.get_store_from_app(connection.scope["app"])
        headers = MutableScopeHeaders.from_message(message)
        cookie = connection.cookies.get(self.config.key)
        params = dict(extract_dataclass_items(self.config, exclude_none=True, include=Cookie.__dict__.keys()))
        if scope_session is Empty or not scope_session:
            if state.get(_KNOWN) and cookie and not state.get(_NEW_ID):
                await self.delete(cookie, store=store)
            if cookie:
                headers.add(
                    "Set-Cookie", Cookie(value="", key=self.config.key, expires=0, **params).to_header(header="")
                )
            return
        session_id = self.get_session_id(connection)
        data = self.serialize_data(scope_session, connection.scope)
        if session_id == cookie and state.get(_KNOWN) and state.get(_LOADED) == data:
            return  # unchanged: nothing to write, the browser has the cookie
        await self.set(session_id=session_id, data=data, store=store)
        headers.add("Set-Cookie", Cookie(value=session_id, key=self.config.key, **params).to_header(header=""))


@dataclass
class RotatingSessionConfig(ServerSideSessionConfig):
    _backend_class = RotatingSessionBackend


def session_store(connection: ASGIConnection[Any, Any, Any, Any]) -> Store:
    return connection.app.stores.get("sessions")


def current_session_id(connection: ASGIConnection[Any, Any, Any, Any], key: str) -> str | None:
    """The id this session has (or will have once the response is sent), if it is a stored one."""
    state = _state(connection)
    if state.get(_NEW_ID) and not state.get(_KNOWN):
        return str(state[_NEW_ID])
    cookie = connection.cookies.get(key)
    return cookie if cookie and state.get(_KNOWN) else None


async def rotate_session(connection: ASGIConnection[Any, Any, Any, Any], store: Store, key: str) -> str:
    """Give this session a new id from now on, and forget the old one. Returns the new id."""
    state = _state(connection)
    old = connection.cookies.get(key)
    if old and state.get(_KNOWN):
        await store.delete(old)
    previous_new = state.get(_NEW_ID)
    if previous_new:
        await store.delete(str(previous_new))
    new_id = secrets.token_hex(32)
    state[_NEW_ID] = new_id
    state[_KNOWN] = False
    state.pop(_LOADED, None)
    return new_id


async def persist_session(
    connection: ASGIConnection[Any, Any, Any, Any], key: str, data: dict[str, Any], max_age: int
) -> None:
    """Write the session now (e.g. its last-seen time) rather than when the response starts.

    The response-time write would come after the handler's own writes, and SQLite lets one
    connection write at a time: writing early keeps the two apart.
    """
    session_id = current_session_id(connection, key)
    if not session_id:
        return
    raw = ServerSideSessionBackend.serialize_data(data, connection.scope)
    await session_store(connection).set(session_id, raw, expires_in=max_age)
    _state(connection)[_LOADED] = raw


# ── the database store ──────────────────────────────────────────────────────────────────


class DatabaseStore(NamespacedStore):
    """A Litestar store in the `session_record` table: sessions and counters without Redis.

    Keys are prefixed with the namespace, so the session store and the rate-limit store share
    the table without sharing keys.
    """

    def __init__(self, factory: async_sessionmaker[AsyncSession], namespace: str = "") -> None:
        self.factory = factory
        self.namespace = namespace

    def with_namespace(self, namespace: str) -> DatabaseStore:
        return DatabaseStore(self.factory, f"{self.namespace}:{namespace}" if self.namespace else namespace)

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}" if self.namespace else key

    @staticmethod
    def _expiry(expires_in: int | dt.timedelta | None) -> dt.datetime | None:
        if expires_in is None:
            return None
        if isinstance(expires_in, int):
            expires_in = dt.timedelta(seconds=expires_in)
        return utcnow() + expires_in

    async def set(self, key: str, value: str | bytes, expires_in: int | dt.timedelta | None = None) -> None:
        data = value.encode() if isinstance(value, str) else value
        async with session_scope(self.factory) as session:
            await upsert(
                session,
                SessionRecord,
                [{"key": self._key(key), "value": data, "expires_at": self._expiry(expires_in)}],
                ("key",),
                ("value", "expires_at"),
            )

    async def get(self, key: str, renew_for: int | dt.timedelta | None = None) -> bytes | None:
        async with session_scope(self.factory) as session:
            row = (
                await session.execute(
                    select(SessionRecord.value, SessionRecord.expires_at).where(SessionRecord.key == self._key(key))
                )
            ).first()
            if row is None:
                return None
            value, expires_at = row
            if expires_at is not None and expires_at <= utcnow():
                await session.execute(delete(SessionRecord).where(SessionRecord.key == self._key(key)))
                return None
            if renew_for is not None:
                await session.execute(
                    update(SessionRecord)
                    .where(SessionRecord.key == self._key(key))
                    .values(expires_at=self._expiry(renew_for))
                )
            return bytes(value)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, expires_in: int | dt.timedelta | None = None
    ) -> bool:
        """Set `key` to `value` only if it still holds `expected` (None: only if absent). Atomic."""
        async with session_scope(self.factory) as session:
            if expected is None:
                await session.execute(delete(SessionRecord).where(SessionRecord.key == self._key(key), _expired()))
                table: Any = SessionRecord.__table__
                dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
                statement = (
                    dialect.insert(table)
                    .values(key=self._key(key), value=value, expires_at=self._expiry(expires_in))
                    .on_conflict_do_nothing(index_elements=["key"])
                )
                inserted = await session.execute(statement)
                return int(inserted.rowcount) == 1  # type: ignore[attr-defined]
            result = await session.execute(
                update(SessionRecord)
                .where(SessionRecord.key == self._key(key), SessionRecord.value == expected)
                .values(value=value, expires_at=self._expiry(expires_in))
            )
            return int(result.rowcount) == 1  # type: ignore[attr-defined]

    async def delete(self, key: str) -> None:
        async with session_scope(self.factory) as session:
            await session.execute(delete(SessionRecord).where(SessionRecord.key == self._key(key)))

    async def delete_all(self) -> None:
        async with session_scope(self.factory) as session:
            statement = delete(SessionRecord)
            if self.namespace:
                statement = statement.where(SessionRecord.key.startswith(f"{self.namespace}:", autoescape=True))
            await session.execute(statement)

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        async with session_scope(self.factory) as session:
            expires_at = await session.scalar(
                select(SessionRecord.expires_at).where(SessionRecord.key == self._key(key))
            )
        if expires_at is None:
            return None
        return max(0, int((expires_at - utcnow()).total_seconds()))

    async def delete_expired(self) -> int:
        async with session_scope(self.factory) as session:
            result = await session.execute(delete(SessionRecord).where(_expired()))
            return int(result.rowcount)  # type: ignore[attr-defined]


def _expired() -> Any:
    return SessionRecord.expires_at <= utcnow()


# ── the sessions of a user ──────────────────────────────────────────────────────────────


class SessionIndex:
    """Per user, the sessions they signed in: `handle -> {sid, created, ip, agent}`.

    Kept in the session store under `user-<id>` (a key no session cookie can name). Updates are
    read-modify-write: two sign-ins in the same instant may leave one out of the list; ending
    every session (the user's epoch) never depends on this list.
    """

    def __init__(self, store: Store, ttl: int) -> None:
        self.store = store
        self.ttl = ttl

    @staticmethod
    def _key(user_id: int) -> str:
        return f"user-{user_id}"

    async def entries(self, user_id: int) -> dict[str, dict[str, Any]]:
        raw = await self.store.get(self._key(user_id))
        if raw is None:
            return {}
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    async def _save(self, user_id: int, entries: dict[str, dict[str, Any]]) -> None:
        if entries:
            await self.store.set(self._key(user_id), msgspec.json.encode(entries), expires_in=self.ttl)
        else:
            await self.store.delete(self._key(user_id))

    async def add(self, user_id: int, handle: str, session_id: str, info: dict[str, Any]) -> None:
        entries = await self.entries(user_id)
        entries[handle] = {"sid": session_id, **info}
        await self._save(user_id, entries)

    async def remove(self, user_id: int, *handles: str) -> None:
        entries = await self.entries(user_id)
        for handle in handles:
            entries.pop(handle, None)
        await self._save(user_id, entries)

    async def clear(self, user_id: int) -> None:
        await self.store.delete(self._key(user_id))

    async def replace_id(self, user_id: int, handle: str, session_id: str) -> None:
        entries = await self.entries(user_id)
        if handle in entries:
            entries[handle]["sid"] = session_id
            await self._save(user_id, entries)
