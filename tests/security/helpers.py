"""A browser for the security tests: its own cookie jar over one AsyncTestClient, CSRF tokens
taken from the page like a browser would, sign-in with every factor, and seeded users."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pyotp
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from server.app import create_app
from server.db.models import Account, AuditEvent, Task, TaskState, User
from server.db.session import create_engine, session_factory, session_scope
from server.services.users import create_user
from server.settings import Settings

PASSWORD = "correct horse battery staple"
SECRET_KEY = "test-secret-key-for-the-security-suite-0123456789"
CSRF_INPUT = re.compile(r'name="_csrf_token" value="([^"]+)"')


def settings_for(url: str, **env: str) -> Settings:
    return Settings.from_env({"CSM_DATABASE_URL": url, "CSM_SECRET_KEY": SECRET_KEY, **env})


def build_app(url: str, **env: str) -> Litestar:
    return create_app(settings_for(url, **env))


@asynccontextmanager
async def running(url: str, **env: str) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app on `url`, served to an AsyncTestClient (in its own thread and event loop)."""
    base = "https://testserver.local" if env.get("CSM_BASE_URL", "").startswith("https") else "http://testserver.local"
    async with AsyncTestClient(app=build_app(url, **env), base_url=base) as client:
        yield client


@dataclass
class Browser:
    """One browser: its cookies, sent by hand so that several browsers can share one client."""

    client: AsyncTestClient[Litestar]
    cookies: dict[str, str] = field(default_factory=dict)

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.cookies:
            headers["cookie"] = self.cookie_header()
        self.client.cookies.clear()
        response = await self.client.request(method, url, headers=headers, follow_redirects=False, **kwargs)
        self.client.cookies.clear()
        for raw in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                expired = (morsel["expires"] and "1970" in morsel["expires"]) or morsel["max-age"] == "0"
                if expired or not morsel.value or morsel.value == "null":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def csrf(self) -> str:
        if "csm_csrf" not in self.cookies:
            await self.get("/login")
        return self.cookies["csm_csrf"]

    async def post(
        self, url: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form.setdefault("_csrf_token", await self.csrf())
        return await self.request("POST", url, data=form, **kwargs)

    async def send(self, method: str, url: str, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        """A state-changing request the way the app's own pages make it: a form with the CSRF token,
        or, under /api/, JSON with the token in the `x-csrftoken` header."""
        if url.startswith("/api/"):
            headers = {"x-csrftoken": await self.csrf(), "accept": "application/json", **kwargs.pop("headers", {})}
            return await self.request(method, url, json=body or {}, headers=headers, **kwargs)
        form = {"_csrf_token": await self.csrf(), **(body or {})}
        return await self.request(method, url, data=form, **kwargs)

    @property
    def session(self) -> str | None:
        return self.cookies.get("csm_session")

    async def login(
        self,
        email: str,
        password: str = PASSWORD,
        *,
        secret: str | None = None,
        next: str = "",
        at: float | None = None,
    ) -> httpx.Response:
        response = await self.post("/login", {"email": email, "password": password, "next": next})
        if secret is not None and response.headers.get("location") == "/login/2fa":
            code = pyotp.TOTP(secret).at(at if at is not None else time.time())
            response = await self.post("/login/2fa", {"code": code})
        return response

    async def reauth(self, password: str = PASSWORD, code: str | None = None) -> httpx.Response:
        fields = {"code": code} if code is not None else {"password": password}
        return await self.post("/reauth", {**fields, "next": "/"})


def location(response: httpx.Response) -> str:
    return response.headers.get("location", "")


# ── the database, seen from the test's side (its own engine) ────────────────────────────


@asynccontextmanager
async def database(url: str) -> AsyncIterator[Any]:
    engine = create_engine(url)
    try:
        async with session_scope(session_factory(engine)) as session:
            yield session
    finally:
        await engine.dispose()


async def seed_users(url: str, *users: tuple[str, str]) -> dict[str, int]:
    """Users (email, role) with PASSWORD; returns their ids by email."""
    ids = {}
    async with database(url) as session:
        for email, role in users:
            user = await create_user(session, email, role, PASSWORD, email.split("@")[0].title())
            ids[email] = user.id
    return ids


async def seed_customers(url: str, owners: dict[str, str]) -> dict[str, str]:
    """One customer and one open task per (account id -> CSM email); returns task ids by account."""
    tasks = {}
    async with database(url) as session:
        for account_id, csm in owners.items():
            session.add(
                Account(
                    id=account_id,
                    name=f"Customer {account_id} Secret Name",
                    tier="gold",
                    csm=csm,
                    acv=120000.0,
                    currency="EUR",
                    chi=55,
                    band="At Risk",
                )
            )
            await session.flush()
            task_id = f"t{account_id}"[:32]
            session.add(
                Task(
                    id=task_id,
                    rule="renewal_soon",
                    account_id=account_id,
                    key="",
                    category="commercial",
                    severity="High",
                    title=f"Renewal of {account_id}",
                    description="Renewal in 30 days",
                    due_on=dt.date.today(),
                    policy_hash="0" * 64,
                )
            )
            session.add(TaskState(task_id=task_id))
            tasks[account_id] = task_id
    return tasks


async def user_row(url: str, email: str) -> User:
    async with database(url) as session:
        user = await session.scalar(select(User).where(User.email == email))
        assert user is not None
        return user


async def audit_events(url: str, action: str | None = None) -> list[AuditEvent]:
    async with database(url) as session:
        statement = select(AuditEvent).order_by(AuditEvent.id)
        if action:
            statement = statement.where(AuditEvent.action == action)
        return list((await session.scalars(statement)).all())


async def enable_totp(browser: Browser, password: str = PASSWORD) -> tuple[str, list[str], int]:
    """Turn on two-factor through the pages; returns the secret, the recovery codes and the step used."""
    page = await browser.get("/settings/security/2fa")
    if page.status_code == 303:
        await browser.reauth(password)
        page = await browser.get("/settings/security/2fa")
    assert page.status_code == 200, page.text
    secret = re.search(r'aria-label="Set-up key">([A-Z2-7 ]+)<', page.text)
    assert secret, page.text
    key = secret[1].replace(" ", "")
    now = time.time()
    response = await browser.post("/settings/security/2fa", {"code": pyotp.TOTP(key).at(now)})
    assert response.status_code == 200, response.text
    codes = re.findall(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>", response.text)
    assert len(codes) == 10
    return key, codes, int(now) // 30


class MovedClock:
    """The web layer's clock, `seconds` ahead of the real one (timeouts without waiting)."""

    def __init__(self, real: Callable[[], float]) -> None:
        self.real = real
        self.seconds = 0.0

    def now(self) -> float:
        return self.real() + self.seconds
