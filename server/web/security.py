"""A user's own security settings at /settings/security: password, two-factor, recovery codes, sessions.

Changing the password or the two-factor set-up ends every other session of the user (their
epoch moves on; this session is re-issued with a new id). Turning two-factor on or off and
making new recovery codes need a recent re-authentication.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.response import Redirect, Template
from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import User
from server.errors import Conflict, InvalidInput
from server.portal.manage import SETTINGS_CONTEXT
from server.services import twofactor
from server.services.audit import record_as
from server.services.devices import DEVICE_COOKIE, device_hash, forget_other_devices, known_devices
from server.services.security_settings import two_factor_requirement
from server.services.users import end_sessions, set_password
from server.web import clock
from server.web.access import SIGNED_IN, reject_protected_fields
from server.web.auth import (
    FULL,
    MAX_PASSWORD_LENGTH,
    SESSION_KEY,
    new_session,
    session_is_fresh,
    verify_password,
)
from server.web.context import (
    audit_now,
    client_address,
    enrolment_seed,
    pending_seed,
    release,
    seed_box,
    signed_in_record,
    throttle,
    who,
)
from server.web.limits import LOGIN_ACCOUNT, LOGIN_ADDRESS
from server.web.login import CodeForm, count_failure, enrolment_context, session_index, too_many
from server.web.reauth import require_recent_reauth
from server.web.sessions import rotate_session, session_store

BASE = "/settings/security"
MESSAGES = {
    "password": "Your password is changed. Your other sessions are signed out.",
    "2fa-off": "Two-factor sign-in is off. Your other sessions are signed out.",
    "session-ended": "That session is signed out.",
    "others-ended": "Every other session is signed out.",
    "browsers-forgotten": "The other browsers are forgotten: a sign-in from any of them will be emailed to you.",
}


class ChangePasswordForm(Struct):
    current_password: str = ""
    new_password: str = ""
    confirm: str = ""


async def reissue_session(request: Request[Any, Any, Any], user: User) -> None:
    """After the user's epoch moved on (other sessions ended): this session, with a new id and epoch."""
    old = dict(request.session)
    new_id = await rotate_session(request, session_store(request), SESSION_KEY)
    data = new_session(user, FULL)
    data["created"] = old.get("created", data["created"])
    # A new id is not a new proof of identity: the window for sensitive actions stays where it was.
    data["reauth"] = old.get("reauth")
    data["h"] = old.get("h") or secrets.token_hex(8)
    request.set_session(data)
    index = session_index(request)
    entries = await index.entries(user.id)
    mine = entries.get(data["h"], {"created": data["created"], "ip": client_address(request), "agent": ""})
    await index.clear(user.id)
    await index.add(user.id, data["h"], new_id, {key: value for key, value in mine.items() if key != "sid"})


async def live_sessions(request: Request[Any, Any, Any], user: User) -> list[dict[str, Any]]:
    """The user's sessions that still work, newest first (dead ones are dropped from the list)."""
    index = session_index(request)
    store = session_store(request)
    rows, dead = [], []
    current = request.session.get("h")
    for handle, entry in (await index.entries(user.id)).items():
        raw = await store.get(str(entry.get("sid", "")))
        data = msgspec.json.decode(raw) if raw else None
        if (
            not isinstance(data, dict)
            or data.get("stage") != FULL
            or data.get("epoch") != user.session_epoch
            or not session_is_fresh(data)
        ):
            dead.append(handle)
            continue
        rows.append(
            {
                "handle": handle,
                "current": handle == current,
                "created": _when(data.get("created")),
                "seen": _when(data.get("seen")),
                "ip": entry.get("ip", ""),
                "agent": entry.get("agent", ""),
            }
        )
    if dead:
        await index.remove(user.id, *dead)
    rows.sort(key=lambda row: row["created"], reverse=True)  # newest first ("YYYY-MM-DD HH:MM" sorts)
    rows.sort(key=lambda row: not row["current"])  # this one on top (the sort is stable)
    return rows


def _when(value: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError):
        return ""


@get(BASE, opt=SIGNED_IN, name="security_settings")
async def security_page(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], ok: FromQuery[str] = ""
) -> Template:
    user = await signed_in_record(request, db_session)
    requirement = await two_factor_requirement(db_session)
    return Template(
        "security/settings.html",
        context={
            "account": user,
            "required": requirement.applies_to(user.role),
            "remaining": await twofactor.remaining_recovery_codes(db_session, user.id),
            "sessions": await live_sessions(request, user),
            "browsers": await known_devices(db_session, user.id),
            "this_browser": device_hash(request.cookies.get(DEVICE_COOKIE) or ""),
            "notice": MESSAGES.get(ok),
            "error": None,
        },
    )


async def _page_with_error(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], message: str, status: int
) -> Template:
    page: Template = await security_page.fn(request=request, db_session=db_session)
    page.context["error"] = message
    page.status_code = status
    return page


@post(f"{BASE}/password", opt=SIGNED_IN, status_code=303)
async def change_password(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    data: URLEncodedBody[ChangePasswordForm],
) -> Response[Any]:
    reject_protected_fields(await request.form())
    user = await signed_in_record(request, db_session)
    pairs = ((LOGIN_ACCOUNT, user.email.lower()), (LOGIN_ADDRESS, client_address(request)))
    wait = await throttle(request).retry_after(*pairs)
    if wait:
        page = await _page_with_error(request, db_session, "", 429)
        await release(db_session)
        return too_many(request, "security/settings.html", page.context, wait)
    current_ok = len(data.current_password) <= MAX_PASSWORD_LENGTH and await verify_password(
        user.password_hash, data.current_password
    )
    if not current_ok:
        page = await _page_with_error(request, db_session, "Your current password is not right.", 400)
        await release(db_session)
        await audit_now(
            request, "auth.reauth_failed", user.email, outcome="failed", detail={"reason": "wrong current password"}
        )
        await count_failure(request, user.email, pairs, user.email)
        return page
    if data.new_password != data.confirm:
        return await _page_with_error(request, db_session, "The two new passwords differ.", 400)
    try:
        await set_password(db_session, user, data.new_password, who(request), "user.password_changed")
    except InvalidInput as exc:
        await release(db_session)
        return await _page_with_error(request, db_session, exc.message, 400)
    await db_session.commit()
    await reissue_session(request, user)
    return Redirect(f"{BASE}?ok=password", status_code=303)


@get(f"{BASE}/2fa", opt=SIGNED_IN)
async def two_factor_page(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Response[Any]:
    require_recent_reauth(request)
    user = await signed_in_record(request, db_session)
    if user.totp_enabled:
        return Redirect(BASE, status_code=303)
    secret = enrolment_seed(request, user.id)
    context = enrolment_context(secret, user.email, f"{BASE}/2fa")
    return Template("security/enrol.html", context={**context, "required": False})


@post(f"{BASE}/2fa", opt=SIGNED_IN, status_code=200)
async def enable_two_factor(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    data: URLEncodedBody[CodeForm],
) -> Response[Any]:
    require_recent_reauth(request)
    user = await signed_in_record(request, db_session)
    secret = pending_seed(request, user.id)
    if user.totp_enabled or secret is None:
        return Redirect(BASE, status_code=303)
    step = twofactor.matching_step(secret, data.code, clock.now())
    if step is None:
        context = enrolment_context(secret, user.email, f"{BASE}/2fa", "That code is not right.")
        return Template("security/enrol.html", context={**context, "required": False}, status_code=400)
    codes = await twofactor.enable(db_session, seed_box(request), user, secret, step)
    await _two_factor_switched(request, db_session, user, on=True)
    return Template("security/recovery_codes.html", context={"codes": codes, "next": BASE, "first": True})


async def _two_factor_switched(
    request: Request[Any, Any, Any], db_session: AsyncSession, user: User, *, on: bool
) -> None:
    """After two-factor was turned on or off: every session ends, this one continues under a new id."""
    await end_sessions(db_session, user)
    await record_as(
        db_session,
        who(request),
        "user.2fa_enabled" if on else "user.2fa_disabled",
        object_type="user",
        object_id=user.email,
        before={"totp_enabled": not on},
        after={"totp_enabled": on},
    )
    await db_session.commit()
    await reissue_session(request, user)


@post(f"{BASE}/2fa/disable", opt=SIGNED_IN, status_code=303)
async def disable_two_factor(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> Response[Any]:
    require_recent_reauth(request)
    user = await signed_in_record(request, db_session)
    if not user.totp_enabled:
        return Redirect(BASE, status_code=303)
    if (await two_factor_requirement(db_session)).applies_to(user.role):
        raise Conflict("Two-factor sign-in is required for your role; it cannot be turned off.")
    await twofactor.disable(db_session, user)
    await _two_factor_switched(request, db_session, user, on=False)
    return Redirect(f"{BASE}?ok=2fa-off", status_code=303)


@post(f"{BASE}/recovery-codes", opt=SIGNED_IN, status_code=200)
async def regenerate_recovery_codes(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> Response[Any]:
    require_recent_reauth(request)
    user = await signed_in_record(request, db_session)
    if not user.totp_enabled:
        return Redirect(BASE, status_code=303)
    codes = await twofactor.new_recovery_codes(db_session, user)
    await record_as(
        db_session, who(request), "user.recovery_codes_regenerated", object_type="user", object_id=user.email
    )
    await db_session.commit()
    return Template("security/recovery_codes.html", context={"codes": codes, "next": BASE, "first": False})


@post(f"{BASE}/sessions/{{handle:str}}/end", opt=SIGNED_IN, status_code=303)
async def end_one_session(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], handle: FromPath[str]
) -> Redirect:
    user = await signed_in_record(request, db_session)
    if handle == request.session.get("h"):
        raise InvalidInput("This is the session you are using; sign out instead.")
    entry = (await session_index(request).entries(user.id)).get(handle)
    if entry is None:
        raise InvalidInput("There is no such session (it may have ended already).")
    await session_store(request).delete(str(entry.get("sid", "")))
    await session_index(request).remove(user.id, handle)
    await audit_now(
        request, "session.ended", user.email, object_type="user", object_id=user.email, detail={"session": handle[:6]}
    )
    return Redirect(f"{BASE}?ok=session-ended", status_code=303)


@post(f"{BASE}/sessions/end-others", opt=SIGNED_IN, status_code=303)
async def end_other_sessions(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Redirect:
    user = await signed_in_record(request, db_session)
    await end_sessions(db_session, user)
    await record_as(db_session, who(request), "session.ended_others", object_type="user", object_id=user.email)
    await db_session.commit()
    await reissue_session(request, user)
    return Redirect(f"{BASE}?ok=others-ended", status_code=303)


@post(f"{BASE}/browsers/forget-others", opt=SIGNED_IN, status_code=303)
async def forget_other_browsers(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Redirect:
    """Say after a shared computer: the browsers other than this one are no longer known."""
    user = await signed_in_record(request, db_session)
    forgotten = await forget_other_devices(db_session, user.id, request.cookies.get(DEVICE_COOKIE))
    await record_as(
        db_session,
        who(request),
        "user.browsers_forgotten",
        object_type="user",
        object_id=user.email,
        detail={"forgotten": forgotten},
    )
    return Redirect(f"{BASE}?ok=browsers-forgotten", status_code=303)


async def settings_summary(request: Request[Any, Any, Any], db_session: AsyncSession) -> dict[str, Any]:
    """The Security section of /settings (template settings/security.html): a summary and links."""
    user = await signed_in_record(request, db_session)
    requirement = await two_factor_requirement(db_session)
    return {
        "security": {
            "totp_enabled": user.totp_enabled,
            "required": requirement.applies_to(user.role),
            "recovery_codes": await twofactor.remaining_recovery_codes(db_session, user.id),
            "sessions": len(await live_sessions(request, user)),
            "password_changed": user.password_changed_at.strftime("%Y-%m-%d") if user.password_changed_at else "",
        }
    }


SETTINGS_CONTEXT.append(settings_summary)

ROUTES = [
    security_page,
    change_password,
    two_factor_page,
    enable_two_factor,
    disable_two_factor,
    regenerate_recovery_codes,
    end_one_session,
    end_other_sessions,
    forget_other_browsers,
]
