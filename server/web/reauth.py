"""Recent re-authentication before sensitive actions (ASVS 7.5.1 / 13).

A handler that changes something sensitive calls `require_recent_reauth(request)` first (roles,
invitations, two-factor changes, policy publishing, audit exports...). Unless the user proved who
they are within `REAUTH_WINDOW` (signing in counts), it raises `ReauthRequired`, which the error
handler turns into the prompt: a redirect to `/reauth?next=...` for pages, an `HX-Redirect` for
htmx, and `403 {"code": "reauth_required", "reauth_url": ...}` for the JSON API. The prompt asks
for a two-factor code when the user has two-factor on, else the password; success gives the
session a new id and a fresh `reauth` time, then returns to `next`.

    from server.web.reauth import require_recent_reauth

    @post("/console/policies/publish", guards=[requires(Capability.MANAGE_POLICIES)])
    async def publish(request: Request, ...) -> ...:
        require_recent_reauth(request)
        ...
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery, URLEncodedBody
from litestar.response import Redirect, Template
from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import AppError
from server.services import twofactor
from server.web import clock
from server.web.access import SIGNED_IN
from server.web.auth import MAX_PASSWORD_LENGTH, SESSION_KEY, safe_next, verify_password
from server.web.context import (
    audit_now,
    client_address,
    is_htmx,
    release,
    seed_box,
    signed_in_record,
    throttle,
    wants_json,
)
from server.web.limits import CODE_ACCOUNT, CODE_ADDRESS, LOGIN_ACCOUNT, LOGIN_ADDRESS
from server.web.login import count_failure, session_index, too_many
from server.web.sessions import rotate_session, session_store

REAUTH_WINDOW = 5 * 60  # seconds


class ReauthRequired(AppError):
    status_code = 403

    def __init__(self, message: str = "Confirm it is you before doing this.") -> None:
        super().__init__(message, extra={"code": "reauth_required"})


def has_recent_reauth(request: Request[Any, Any, Any]) -> bool:
    try:
        return clock.now() - float(request.session.get("reauth", 0)) <= REAUTH_WINDOW
    except (TypeError, ValueError):
        return False


def require_recent_reauth(request: Request[Any, Any, Any]) -> None:
    """Raise `ReauthRequired` unless the signed-in user re-authenticated in the last five minutes."""
    if not has_recent_reauth(request):
        raise ReauthRequired


def _return_path(request: Request[Any, Any, Any]) -> str:
    """Where to come back to after the prompt: this page for a GET, the page the form was on otherwise."""
    if request.method == "GET" and not is_htmx(request):
        query = request.url.query
        return safe_next(request.url.path + (f"?{query}" if query else ""))
    referrer = request.headers.get("hx-current-url") or request.headers.get("referer") or ""
    parts = urlsplit(referrer)
    if parts.netloc and parts.netloc != request.url.netloc:
        return "/"
    return safe_next(parts.path + (f"?{parts.query}" if parts.query else ""))


def reauth_response(request: Request[Any, Any, Any], exc: ReauthRequired) -> Response[Any]:
    target = f"/reauth?next={quote(_return_path(request), safe='')}"
    if wants_json(request):
        body = {"status": 403, "detail": exc.message, "code": "reauth_required", "reauth_url": target}
        return Response(content=body, status_code=403)
    if is_htmx(request):
        return Response(content="", status_code=403, headers={"HX-Redirect": target})
    return Redirect(target, status_code=303)


# ── the prompt ──────────────────────────────────────────────────────────────────────────


class ReauthForm(Struct):
    password: str = ""
    code: str = ""
    next: str = ""


@get("/reauth", opt=SIGNED_IN, name="reauth")
async def reauth_page(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], next: FromQuery[str] = "/"
) -> Template:
    user = await signed_in_record(request, db_session)
    return Template(
        "security/reauth.html",
        context={"next": safe_next(next), "uses_code": user.totp_enabled, "error": None},
    )


@post("/reauth", opt=SIGNED_IN, status_code=303)
async def reauth(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    data: URLEncodedBody[ReauthForm],
) -> Response[Any]:
    user = await signed_in_record(request, db_session)
    target = safe_next(data.next)
    address = client_address(request)
    pairs = (
        ((CODE_ACCOUNT, f"uid:{user.id}"), (CODE_ADDRESS, address))
        if user.totp_enabled
        else ((LOGIN_ACCOUNT, user.email), (LOGIN_ADDRESS, address))
    )
    limiter = throttle(request)
    context = {"next": target, "uses_code": user.totp_enabled}
    wait = await limiter.retry_after(*pairs)
    if wait:
        await release(db_session)
        return too_many(request, "security/reauth.html", context, wait)
    if user.totp_enabled:
        result = await twofactor.check_code(db_session, seed_box(request), user, data.code, clock.now())
        ok = result is twofactor.CodeCheck.OK
        reason = result.value
    else:
        ok = len(data.password) <= MAX_PASSWORD_LENGTH and await verify_password(user.password_hash, data.password)
        reason = "ok" if ok else "wrong"
    if not ok:
        await release(db_session)
        await audit_now(request, "auth.reauth_failed", user.email, outcome="failed", detail={"reason": reason})
        await count_failure(request, user.email, pairs, user.email)
        message = (
            "That code was already used; wait for the next one."
            if reason == "replayed"
            else "That is not right; try again."
        )
        return Template("security/reauth.html", context={**context, "error": message}, status_code=401)
    await db_session.commit()
    await limiter.reset(pairs[0])
    await audit_now(request, "auth.reauth", user.email, object_type="user", object_id=user.email)
    data_now = dict(request.session)
    new_id = await rotate_session(request, session_store(request), SESSION_KEY)
    data_now["reauth"] = clock.now()
    request.set_session(data_now)
    if data_now.get("h"):
        await session_index(request).replace_id(user.id, str(data_now["h"]), new_id)
    return Redirect(target, status_code=303)


ROUTES = [reauth_page, reauth]
