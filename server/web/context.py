"""Small request helpers shared by the security pages: who is asking, from where, in what form."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import User
from server.db.session import session_scope
from server.errors import InvalidInput
from server.services import twofactor
from server.services.audit import Who, record_as
from server.services.twofactor import SeedBox
from server.web.access import CurrentUser
from server.web.limits import Throttle

log = logging.getLogger("csm.security")


def wants_json(request: ASGIConnection[Any, Any, Any, Any]) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def is_htmx(request: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """An htmx request that wants a fragment (a history restore wants the whole page)."""
    headers = request.headers
    return headers.get("hx-request") == "true" and headers.get("hx-history-restore-request") != "true"


def client_address(request: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer address as the server saw it (behind a proxy, run uvicorn with --proxy-headers
    and --forwarded-allow-ips set to the proxy: X-Forwarded-For is never trusted here)."""
    return request.client.host if request.client else "unknown"


def signed_in_user(request: ASGIConnection[Any, Any, Any, Any]) -> CurrentUser | None:
    user = request.scope.get("user")
    return user if isinstance(user, CurrentUser) else None


def who(request: ASGIConnection[Any, Any, Any, Any], actor: str | None = None) -> Who:
    if actor is None:
        user = signed_in_user(request)
        actor = user.email if user else None
    return Who(actor=actor, ip=client_address(request), user_agent=request.headers.get("user-agent", "")[:300] or None)


async def signed_in_record(request: ASGIConnection[Any, Any, Any, Any], db_session: AsyncSession) -> User:
    """The signed-in user's database row."""
    current = signed_in_user(request)
    user = await db_session.get(User, current.id) if current else None
    if user is None:
        raise InvalidInput("sign in first")
    return user


def factory_of(request: ASGIConnection[Any, Any, Any, Any]) -> async_sessionmaker[AsyncSession]:
    return request.app.state.session_factory  # type: ignore[no-any-return]


def seed_box(request: ASGIConnection[Any, Any, Any, Any]) -> SeedBox:
    return request.app.state.seed_box  # type: ignore[no-any-return]


def pending_seed(request: Request[Any, Any, Any], user_id: int) -> str | None:
    """The TOTP seed this session is enrolling (kept sealed in the session), if any."""
    sealed = request.session.get("enrol_seed")
    return seed_box(request).open(sealed, user_id) if isinstance(sealed, str) else None


def enrolment_seed(request: Request[Any, Any, Any], user_id: int) -> str:
    """The seed this session is enrolling, drawn the first time (the page can be reloaded)."""
    seed = pending_seed(request, user_id)
    if seed is None:
        seed = twofactor.new_secret()
        request.set_session({**request.session, "enrol_seed": seed_box(request).seal(seed, user_id)})
    return seed


async def audit_now(request: ASGIConnection[Any, Any, Any, Any], action: str, actor: str | None, **fields: Any) -> None:
    """Record an event in its own transaction, kept even when the request fails (failed sign-ins).

    The request's own database session must hold no write at this point (SQLite has one writer).
    """
    async with session_scope(factory_of(request)) as session:
        await record_as(session, who(request, actor), action, **fields)
    log.info("audit %s actor=%r outcome=%s", action, actor, fields.get("outcome", "ok"))


async def release(db_session: AsyncSession) -> None:
    """End the request's transaction, writing nothing, before writing elsewhere (the session or
    attempt store, an audit record of its own): SQLite lets one connection write at a time.
    Loaded objects stay readable (detached, not expired)."""
    db_session.expunge_all()
    await db_session.rollback()


def throttle(request: Request[Any, Any, Any]) -> Throttle:
    return Throttle(request.app.stores.get("rate_limit"))
