"""The browsers each user signed in from, known by a random cookie (`csm_device`, never a
credential: it only tells "seen before" from "new"). A sign-in from a browser the user has not
signed in from before is a new device, and the user is emailed about it (ASVS 2.2.3) unless it
is their very first."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.base import utcnow
from server.db.models import KnownDevice, User
from server.db.upsert import upsert

DEVICE_COOKIE = "csm_device"
DEVICE_COOKIE_SECONDS = 400 * 24 * 3600  # the longest browsers keep a cookie
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


def device_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def remember_device(session: AsyncSession, user: User, token: str | None, user_agent: str) -> tuple[str, bool]:
    """The browser's device token (its own, or a new one when it has none or a malformed one) and
    whether this sign-in is from a new device worth telling the user about."""
    if token is None or not _TOKEN.fullmatch(token):
        token = secrets.token_urlsafe(32)
    digest = device_hash(token)
    now = utcnow()
    seen = set(await session.scalars(select(KnownDevice.device_hash).where(KnownDevice.user_id == user.id)))
    # A browser unseen for longer than its cookie lives has forgotten the cookie: forget it too.
    forgotten = now - dt.timedelta(seconds=DEVICE_COOKIE_SECONDS)
    await session.execute(
        delete(KnownDevice).where(KnownDevice.user_id == user.id, KnownDevice.last_seen_at < forgotten)
    )
    row = {"user_id": user.id, "device_hash": digest, "user_agent": user_agent[:300] or None}
    await upsert(
        session,
        KnownDevice,
        [{**row, "first_seen_at": now, "last_seen_at": now}],
        ("user_id", "device_hash"),
        ("user_agent", "last_seen_at"),
    )
    return token, bool(seen) and digest not in seen


async def known_devices(session: AsyncSession, user_id: int) -> list[KnownDevice]:
    """The browsers a user signed in from, the most recently seen first."""
    statement = select(KnownDevice).where(KnownDevice.user_id == user_id).order_by(KnownDevice.last_seen_at.desc())
    return list(await session.scalars(statement))


async def forget_other_devices(session: AsyncSession, user_id: int, token: str | None) -> int:
    """Forget every browser of the user but the one holding `token`: a sign-in from any of them is
    news again. Returns how many were forgotten."""
    keep = device_hash(token) if token else ""
    forgotten = await session.execute(
        delete(KnownDevice).where(KnownDevice.user_id == user_id, KnownDevice.device_hash != keep)
    )
    return int(forgotten.rowcount)  # type: ignore[attr-defined]
