"""The portal's tests: a real app over a database filled by a real engine run, on SQLite and PostgreSQL.

A filled database (a small demo snapshot, one engine run, the users below) is built once per
session and kind, then copied for each test: a file copy on SQLite, `CREATE DATABASE ... TEMPLATE`
on PostgreSQL. Each test gets a fresh copy, a fixed "today" (the snapshot's date) and signs in
through the real /login form.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

import server.web.auth as auth
from connectors.demo import write_demo_snapshot
from server.app import create_app
from server.db.models import Account, Task
from server.db.session import create_engine, session_factory, session_scope
from server.services.runs import RunRequest, run_in_process
from server.services.users import create_user
from server.settings import Settings
from tests.conftest import POLICY_DIR
from tests.services import PostgresTemplate, SqliteTemplate, _admin, _with_database

AS_OF = dt.date(2026, 3, 2)
ACCOUNTS = 60
PASSWORD = "portal tests are long enough"
SECRET_KEY = "portal-test-secret-key-0123456789abcdef"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
STAFF = {
    "admin@test.csm": "admin",
    "manager@test.csm": "manager",
    "viewer@test.csm": "viewer",
    "ops@test.csm": "ops",
}
CSRF_INPUT = re.compile(r'name="_csrf_token" value="([^"]+)"')


@dataclass
class Portfolio:
    """What the filled database holds: the CSMs (who are users) and their customers."""

    csms: list[str]
    accounts: dict[str, list[str]]  # csm -> account ids
    snapshot: Path

    def of(self, csm: str) -> list[str]:
        return self.accounts[csm]


async def fill(url: str, snapshot: Path) -> Portfolio:
    """One engine run over the snapshot and the users; returns who owns what."""
    engine = create_engine(url)
    try:
        factory = session_factory(engine)
        await run_in_process(factory, RunRequest(folder=snapshot, policy_dir=POLICY_DIR))
        async with session_scope(factory) as session:
            rows = (await session.execute(select(Account.csm, Account.id).order_by(Account.id))).all()
            accounts: dict[str, list[str]] = {}
            for csm, account_id in rows:
                accounts.setdefault(csm, []).append(account_id)
            csms = sorted(accounts)
            saved = auth.HASHER
            auth.HASHER = FAST
            try:
                for email, role in {**STAFF, **dict.fromkeys(csms, "csm")}.items():
                    await create_user(session, email, role, PASSWORD, email.split("@")[0].title())
            finally:
                auth.HASHER = saved
        return Portfolio(csms=csms, accounts=accounts, snapshot=snapshot)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def portal_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("portal-snapshot") / "snapshot"
    write_demo_snapshot(folder, accounts=ACCOUNTS, seed=7, as_of=AS_OF)
    return folder


@pytest.fixture(scope="session")
def filled_sqlite(
    sqlite_template: SqliteTemplate, tmp_path_factory: pytest.TempPathFactory, portal_snapshot: Path
) -> tuple[Path, Portfolio]:
    url = sqlite_template.copy(tmp_path_factory.mktemp("portal-sqlite"))
    portfolio = asyncio.run(fill(url, portal_snapshot))
    return Path(url.split("///", 1)[1]), portfolio


@pytest.fixture(scope="session")
def filled_postgres(postgres_template: PostgresTemplate, portal_snapshot: Path) -> tuple[str, Portfolio]:
    """The filled PostgreSQL template (dropped with the other copies of `postgres_template`)."""
    url = postgres_template.copy()
    portfolio = asyncio.run(fill(url, portal_snapshot))
    return url.rsplit("/", 1)[-1], portfolio


@dataclass
class PortalDb:
    url: str
    portfolio: Portfolio
    kind: str


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def portal_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PortalDb]:
    """A fresh copy of the filled database, of each kind."""
    if request.param == "sqlite":
        path, portfolio = request.getfixturevalue("filled_sqlite")
        target = tmp_path / f"portal-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(path, target)
        yield PortalDb(f"sqlite+aiosqlite:///{target}", portfolio, "sqlite")
        return
    template, portfolio = request.getfixturevalue("filled_postgres")
    name = f"csm_portal_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield PortalDb(_with_database(name), portfolio, "postgres")
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def settings_for(url: str) -> Settings:
    return Settings.from_env({"CSM_DATABASE_URL": url, "CSM_SECRET_KEY": SECRET_KEY, "CSM_POLICY_DIR": str(POLICY_DIR)})


def build_app(url: str, today: dt.date = AS_OF) -> Litestar:
    app = create_app(settings_for(url))
    app.state["today"] = lambda: app.state["today_value"]
    app.state["today_value"] = today
    return app


@dataclass
class User:
    """One signed-in person: their own cookies over a shared test client."""

    client: AsyncTestClient[Litestar]
    email: str
    cookies: dict[str, str] = field(default_factory=dict)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if method != "GET" and "csm_csrf" in self.cookies:
            headers.setdefault("x-csrftoken", self.cookies["csm_csrf"])
        self.client.cookies.clear()
        response = await self.client.request(method, url, headers=headers, follow_redirects=False, **kwargs)
        self.client.cookies.clear()
        for raw in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if not morsel.value or morsel.value == "null" or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def htmx(self, method: str, url: str, target: str, **kwargs: Any) -> httpx.Response:
        headers = {"HX-Request": "true", "HX-Target": target, **(kwargs.pop("headers", None) or {})}
        return await self.request(method, url, headers=headers, **kwargs)

    async def post(
        self, url: str, data: dict[str, Any] | list[tuple[str, str]] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """A form post; pairs may repeat a name (checkboxes), as a browser sends them."""
        form: dict[str, Any] = {}
        for name, value in data.items() if isinstance(data, dict) else (data or []):
            if name in form:
                form[name] = [*(form[name] if isinstance(form[name], list) else [form[name]]), value]
            else:
                form[name] = value
        return await self.request("POST", url, data=form, **kwargs)

    async def post_json(self, url: str, body: Any) -> httpx.Response:
        return await self.request("POST", url, json=body)

    async def put_json(self, url: str, body: Any) -> httpx.Response:
        return await self.request("PUT", url, json=body)

    async def patch_json(self, url: str, body: Any) -> httpx.Response:
        return await self.request("PATCH", url, json=body)

    async def delete(self, url: str) -> httpx.Response:
        return await self.request("DELETE", url)

    async def sign_in(self) -> None:
        page = await self.get("/login")
        match = CSRF_INPUT.search(page.text)
        assert match, "the sign-in form has a CSRF field"
        response = await self.request(
            "POST", "/login", data={"email": self.email, "password": PASSWORD, "_csrf_token": match[1]}
        )
        assert response.status_code == 303, response.text[:500]


@dataclass
class Portal:
    """The running app and the people using it."""

    client: AsyncTestClient[Litestar]
    app: Litestar
    db: PortalDb
    users: dict[str, User] = field(default_factory=dict)

    async def as_user(self, email: str) -> User:
        if email not in self.users:
            user = User(self.client, email)
            await user.sign_in()
            self.users[email] = user
        return self.users[email]

    def set_today(self, day: dt.date) -> None:
        self.app.state["today_value"] = day

    @property
    def portfolio(self) -> Portfolio:
        return self.db.portfolio


@pytest.fixture
async def portal(portal_db: PortalDb) -> AsyncIterator[Portal]:
    app = build_app(portal_db.url)
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as client:
        yield Portal(client, app, portal_db)


@pytest.fixture(autouse=True)
def fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "HASHER", FAST)
    monkeypatch.setattr(auth, "_DUMMY_HASH", FAST.hash("dummy"))


# ── reading the database from the test's side ───────────────────────────────────────────


async def db_rows(url: str, statement: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        async with session_scope(session_factory(engine)) as session:
            return list((await session.execute(statement)).all())
    finally:
        await engine.dispose()


async def tasks_of(url: str, account_ids: list[str]) -> list[Task]:
    rows = await db_rows(
        url, select(Task).where(Task.account_id.in_(account_ids), Task.active.is_(True)).order_by(Task.id)
    )
    return [row[0] for row in rows]
