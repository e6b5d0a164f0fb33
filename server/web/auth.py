"""Signing in and out, and who the signed-in user is on every request.

A session holds only ids and times: the user id, the user's `session_epoch` when it was made
(bumping the epoch ends every session of a user at once), how far sign-in got (`password`:
the second factor is pending; `enrol`: the user must set up two-factor first; `full`), when it
was created, when it was last used (to the minute), when the user last proved who they are
(`reauth`) and a handle naming the session in the user's list of sessions. `load_user` refuses
a session that is not `full`, idle for more than `IDLE_TIMEOUT`, older than `ABSOLUTE_TIMEOUT`,
of an inactive user, or from an older epoch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from litestar.connection import ASGIConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import User
from server.db.session import session_scope
from server.web import clock
from server.web.access import CurrentUser, Role
from server.web.sessions import persist_session

IDLE_TIMEOUT = dt.timedelta(minutes=30)
ABSOLUTE_TIMEOUT = dt.timedelta(hours=12)
PENDING_TIMEOUT = dt.timedelta(minutes=10)  # between the password and the second factor
SEEN_RESOLUTION = 60  # seconds: the last-seen time is written at most once a minute
SESSION_KEY = "csm_session"
FULL, PENDING_2FA, PENDING_ENROL = "full", "password", "enrol"
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024

HASHER = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (m=64 MiB, t=3, p=4)
# Verified against when the email is unknown, so both answers take the same time.
_DUMMY_HASH = HASHER.hash("not a real password, only here to spend the same time")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(HASHER.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    return await asyncio.to_thread(_verify, stored, password)


def needs_rehash(stored: str) -> bool:
    return HASHER.check_needs_rehash(stored)


def new_session(user: User, stage: str) -> dict[str, Any]:
    now = clock.now()
    data: dict[str, Any] = {"uid": user.id, "epoch": user.session_epoch, "stage": stage, "created": now, "seen": now}
    if stage == FULL:
        data["reauth"] = now
    return data


def pending_is_fresh(data: dict[str, Any], stage: str) -> bool:
    """A half-finished sign-in (`stage`) that is recent enough to finish."""
    try:
        return data.get("stage") == stage and clock.now() - float(data["created"]) <= PENDING_TIMEOUT.total_seconds()
    except (KeyError, TypeError, ValueError):
        return False


def current_user_of(user: User) -> CurrentUser:
    return CurrentUser(id=user.id, email=user.email, name=user.name or user.email, role=Role(user.role))


def session_is_fresh(data: dict[str, Any]) -> bool:
    now = clock.now()
    try:
        return now - float(data["seen"]) <= IDLE_TIMEOUT.total_seconds() and (
            now - float(data["created"]) <= ABSOLUTE_TIMEOUT.total_seconds()
        )
    except (KeyError, TypeError, ValueError):
        return False


async def load_user(data: dict[str, Any], connection: ASGIConnection[Any, Any, Any, Any]) -> CurrentUser | None:
    """Litestar's `retrieve_user_handler`: the user of a fully signed-in, fresh session, or None."""
    if data.get("stage") != "full" or not session_is_fresh(data):
        return None
    factory: async_sessionmaker[AsyncSession] = connection.app.state.session_factory
    async with session_scope(factory) as session:
        user = await session.get(User, data.get("uid"))
    if user is None or not user.active or user.session_epoch != data.get("epoch"):
        return None
    now = clock.now()
    if now - float(data["seen"]) >= SEEN_RESOLUTION:
        data["seen"] = now
        await persist_session(connection, SESSION_KEY, data, int(ABSOLUTE_TIMEOUT.total_seconds()))
    return current_user_of(user)


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a local path may be a redirect target after sign-in (no open redirects, no header injection).

    Refused: anything with a scheme or host, `//host`, backslashes (browsers read `/\\host` as
    `//host`), control characters (browsers drop tabs and newlines, so `/\t/host` is `//host`),
    the same tricks percent-encoded once, and absurd lengths. What passes is percent-encoded
    where it is not plain ASCII, so it is always a valid header value.
    """
    if not target or len(target) > 2000:
        return default
    for candidate in (target, unquote(target)):
        parts = urlsplit(candidate)
        if parts.scheme or parts.netloc or not candidate.startswith("/") or candidate.startswith("//"):
            return default
        if "\\" in candidate or any(ord(char) < 32 or 127 <= ord(char) < 160 for char in candidate):
            return default
    return quote(target, safe="/?&=#%:@!$'()*+,;~-._")
