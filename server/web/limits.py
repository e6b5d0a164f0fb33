"""Brute-force limits on sign-in, second-factor and recovery-code attempts.

Failed attempts are counted per account and per client address in fixed windows, in the
app's "rate_limit" store (the database, or Redis when configured): counts survive a restart
and are shared by every worker. Once a count reaches its limit, further attempts are refused
without being checked until the window ends, with "try again in N s".

Counting is atomic: a Lua script on Redis, a compare-and-set on the database.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.stores.base import Store
from litestar.stores.redis import RedisStore

from server.web import clock
from server.web.sessions import DatabaseStore


@dataclass(frozen=True)
class Limit:
    name: str
    attempts: int
    window: int  # seconds


LOGIN_ACCOUNT = Limit("login-account", 10, 15 * 60)
LOGIN_ADDRESS = Limit("login-address", 50, 15 * 60)
CODE_ACCOUNT = Limit("code-account", 5, 5 * 60)
CODE_ADDRESS = Limit("code-address", 20, 5 * 60)
RECOVERY_ACCOUNT = Limit("recovery-account", 5, 15 * 60)
RECOVERY_ADDRESS = Limit("recovery-address", 20, 15 * 60)
# Every request for a set-password link counts: each sends an email.
RESET_ACCOUNT = Limit("reset-account", 3, 60 * 60)
RESET_ADDRESS = Limit("reset-address", 20, 60 * 60)

_REDIS_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


def subject_key(limit: Limit, subject: str) -> str:
    digest = hashlib.sha256(subject.strip().lower().encode()).hexdigest()[:40]
    return f"{limit.name}:{digest}"


@dataclass(frozen=True)
class Count:
    failures: int
    retry_after: int  # seconds until the window ends


class Throttle:
    """Counts failures for (limit, subject) pairs in a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ── counters ──

    async def _peek(self, limit: Limit, key: str) -> Count:
        if isinstance(self.store, RedisStore):
            redis: Any = self.store._redis
            full = self.store._make_key(key)
            value, ttl = await redis.get(full), await redis.ttl(full)
            return Count(int(value or 0), max(0, int(ttl)))
        raw = await self.store.get(key)
        failures, until = _decode(raw)
        now = clock.now()
        if until <= now:
            return Count(0, 0)
        return Count(failures, math.ceil(until - now))

    async def _hit(self, limit: Limit, key: str) -> Count:
        if isinstance(self.store, RedisStore):
            redis: Any = self.store._redis
            failures, ttl = await redis.eval(_REDIS_HIT, 1, self.store._make_key(key), limit.window)
            return Count(int(failures), int(ttl))
        for _attempt in range(20):
            raw = await self.store.get(key)
            failures, until = _decode(raw)
            now = clock.now()
            if until <= now:
                failures, until = 0, now + limit.window
            new = msgspec.json.encode({"n": failures + 1, "until": until})
            expires = max(1, math.ceil(until - now))
            if isinstance(self.store, DatabaseStore):
                if await self.store.compare_and_set(key, raw, new, expires):
                    return Count(failures + 1, expires)
                continue  # another request counted in between: count again
            await self.store.set(key, new, expires_in=expires)  # other stores: best effort
            return Count(failures + 1, expires)
        raise RuntimeError("the attempt counter is too contended")

    # ── what the sign-in code uses ──

    async def retry_after(self, *pairs: tuple[Limit, str]) -> int:
        """Seconds to wait if any pair is at its limit, else 0."""
        worst = 0
        for limit, subject in pairs:
            count = await self._peek(limit, subject_key(limit, subject))
            if count.failures >= limit.attempts:
                worst = max(worst, count.retry_after)
        return worst

    async def failed(self, *pairs: tuple[Limit, str]) -> list[tuple[Limit, int]]:
        """Count a failure for each pair; returns the limits this failure just reached."""
        reached = []
        for limit, subject in pairs:
            count = await self._hit(limit, subject_key(limit, subject))
            if count.failures == limit.attempts:
                reached.append((limit, count.retry_after))
        return reached

    async def reset(self, *pairs: tuple[Limit, str]) -> None:
        for limit, subject in pairs:
            await self.store.delete(subject_key(limit, subject))


def _decode(raw: bytes | None) -> tuple[int, float]:
    if raw is None:
        return 0, 0.0
    try:
        data = msgspec.json.decode(raw)
        return int(data["n"]), float(data["until"])
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        return 0, 0.0
