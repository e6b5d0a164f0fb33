"""Signing in and out, and who the signed-in user is on every request.

A session holds only ids and times: the user id, the user's `session_epoch` when it was made
(bumping the epoch ends every session of a user at once), how far sign-in got (`password`
or `full`), when it was created and when it was last used. `load_user` refuses a session
that is idle for more than `IDLE_TIMEOUT`, older than `ABSOLUTE_TIMEOUT`, of an inactive user,
or from an older epoch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from litestar.connection import ASGIConnection
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import User
from server.db.session import session_scope
from server.web.access import CurrentUser, Role

IDLE_TIMEOUT = dt.timedelta(minutes=30)
ABSOLUTE_TIMEOUT = dt.timedelta(hours=12)
SESSION_KEY = "csm_session"
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


def _now() -> float:
    return time.time()


def new_session(user: User, stage: str) -> dict[str, Any]:
    now = _now()
    return {"uid": user.id, "epoch": user.session_epoch, "stage": stage, "created": now, "seen": now}


async def find_user(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


def current_user_of(user: User) -> CurrentUser:
    return CurrentUser(id=user.id, email=user.email, name=user.name or user.email, role=Role(user.role))


def session_is_fresh(data: dict[str, Any]) -> bool:
    now = _now()
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
    data["seen"] = _now()
    return current_user_of(user)


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a local path may be a redirect target after sign-in (no open redirects)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(char) < 32 for char in target):
        return default
    return target
