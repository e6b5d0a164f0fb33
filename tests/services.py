"""Real services for tests: SQLite files and PostgreSQL databases made from a migrated template, Redis.

PostgreSQL and Redis tests run whenever the servers answer. When they do not, the tests skip
with the reason, except under CI (`CI` set), where an unreachable server is a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

import pytest
from alembic import command

from server.db.migrate import alembic_config

T = TypeVar("T")
POSTGRES_URL = os.environ.get("CSM_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CSM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def reachable(url: str) -> bool:
    parts = urlsplit(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port free on 127.0.0.1 (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require(name: str, url: str) -> None:
    if not reachable(url):
        unavailable(f"{name} is not reachable at {url}", f"set CSM_TEST_{name.upper()}_URL")


def unavailable(message: str, hint: str) -> NoReturn:
    """A service the tests need is missing: a skip saying so, except under CI, where it fails."""
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI needs it")
    pytest.skip(f"{message} ({hint}; under CI this fails)")


def in_thread(function: Callable[[], T]) -> T:
    """Run `function` in a fresh thread: Alembic and asyncio.run need a thread without an event
    loop, and the Playwright tests leave one running in the main thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function).result()


def migrate(url: str) -> None:
    in_thread(lambda: command.upgrade(alembic_config(url), "head"))


class SqliteTemplate:
    def __init__(self, folder: Path) -> None:
        self.path = folder / "template.db"
        migrate(f"sqlite+aiosqlite:///{self.path}")

    def copy(self, folder: Path) -> str:
        target = folder / f"csm-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(self.path, target)
        return f"sqlite+aiosqlite:///{target}"


async def _admin(statement: str) -> None:
    import asyncpg

    parts = urlsplit(POSTGRES_URL.replace("+asyncpg", ""))
    connection = await asyncpg.connect(
        host=parts.hostname,
        port=parts.port,
        user=parts.username or "postgres",
        database=parts.path.lstrip("/") or "postgres",
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _with_database(name: str) -> str:
    parts = urlsplit(POSTGRES_URL)
    return parts._replace(path=f"/{name}").geturl()


class PostgresTemplate:
    """A migrated template database; each test gets a copy (CREATE DATABASE ... TEMPLATE)."""

    def __init__(self) -> None:
        self.name = f"csm_template_{uuid.uuid4().hex[:8]}"
        self.copies: list[str] = []
        in_thread(lambda: asyncio.run(_admin(f'CREATE DATABASE "{self.name}"')))
        migrate(_with_database(self.name))

    def copy(self) -> str:
        name = f"csm_test_{uuid.uuid4().hex[:10]}"
        in_thread(lambda: asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"')))
        self.copies.append(name)
        return _with_database(name)

    def drop(self, name: str) -> None:
        in_thread(lambda: asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))

    def close(self) -> None:
        for name in [*self.copies, self.name]:
            self.drop(name)
