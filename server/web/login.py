"""Signing in (password, then the second factor or enrolment), set-password links, signing out.

The steps, each a page under /login (public; each checks the half-finished session itself):

1. `POST /login`: the password. Wrong email and wrong password get the same answer after the
   same work (a dummy Argon2 verify for unknown emails). Then, with a new session id:
   two-factor on -> stage `password` and `/login/2fa`; two-factor required but not set up ->
   stage `enrol` and `/login/enrol`; else signed in.
2. `POST /login/2fa` (a TOTP code) or `POST /login/recovery` (a recovery code); or
   `POST /login/enrol` (confirming a new authenticator). Success gives the session another
   new id and the `full` stage.

Failed attempts are counted per account and per address (server/web/limits.py); past the limit
the answer is 429 "try again in N s" without checking anything. Every outcome is audited.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.response import Redirect, Template
from msgspec import Struct
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.base import utcnow
from server.db.models import User
from server.errors import InvalidInput
from server.services import twofactor
from server.services.audit import record_as
from server.services.devices import DEVICE_COOKIE, DEVICE_COOKIE_SECONDS, remember_device
from server.services.security_settings import two_factor_requirement
from server.services.users import EMAIL, find_by_email, set_password, user_of_set_password_link
from server.settings import Settings
from server.web import clock
from server.web.access import PUBLIC
from server.web.auth import (
    ABSOLUTE_TIMEOUT,
    FULL,
    MAX_PASSWORD_LENGTH,
    PENDING_2FA,
    PENDING_ENROL,
    SESSION_KEY,
    hash_password,
    needs_rehash,
    new_session,
    pending_is_fresh,
    safe_next,
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
    throttle,
    wants_json,
    who,
)
from server.web.limits import (
    CODE_ACCOUNT,
    CODE_ADDRESS,
    LOGIN_ACCOUNT,
    LOGIN_ADDRESS,
    RECOVERY_ACCOUNT,
    RECOVERY_ADDRESS,
    RESET_ACCOUNT,
    RESET_ADDRESS,
    Limit,
)
from server.web.sessions import DatabaseStore, SessionIndex, rotate_session, session_store

WRONG_CREDENTIALS = "The email or the password is not right."
MESSAGES = {
    "password-set": "Your password is set. Sign in with it.",
    "signed-out": "You are signed out of every session.",
    "expired": "That sign-in took too long; start again.",
}
_last_cleanup = 0.0


class LoginForm(Struct):
    email: str = ""
    password: str = ""
    next: str = ""


class CodeForm(Struct):
    code: str = ""


class PasswordForm(Struct):
    password: str = ""
    confirm: str = ""


def session_index(request: Request[Any, Any, Any]) -> SessionIndex:
    return SessionIndex(session_store(request), int(ABSOLUTE_TIMEOUT.total_seconds()))


def too_many(
    request: Request[Any, Any, Any], template: str, context: dict[str, Any], wait: int, what: str = "failed attempts"
) -> Response[Any] | Template:
    """The answer to an attempt past a limit: 429 with "try again in N s" (JSON for API clients)."""
    message = f"Too many {what}. Try again in {wait} s."
    headers = {"Retry-After": str(wait)}
    if wants_json(request):
        return Response({"status": 429, "detail": message, "retry_after": wait}, status_code=429, headers=headers)
    return Template(template, context={**context, "error": message}, status_code=429, headers=headers)


async def count_failure(
    request: Request[Any, Any, Any], actor: str | None, pairs: tuple[tuple[Limit, str], ...], subject: str | None
) -> None:
    for limit, seconds in await throttle(request).failed(*pairs):
        await audit_now(
            request,
            "auth.lockout",
            actor,
            outcome="locked",
            object_type="user" if limit.name.endswith("account") else "address",
            object_id=subject if limit.name.endswith("account") else client_address(request),
            detail={"limit": limit.name, "retry_after": seconds},
        )


def _email_for_audit(text: str) -> str | None:
    """The typed email, for the audit log, only if it looks like one (never a mistyped password)."""
    text = text.strip()
    return text if EMAIL.fullmatch(text) and len(text) <= 320 else None


async def finish_sign_in(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    user: User,
    via: str,
) -> Cookie:
    """All factors passed: audit, commit, then a new session id with the `full` stage. Returns the
    browser's device cookie, for the answer to set."""
    global _last_cleanup  # a per-process "last swept" time
    user.last_login_at = utcnow()
    await record_as(
        db_session,
        who(request, user.email),
        "auth.login",
        object_type="user",
        object_id=user.email,
        detail={"via": via},
    )
    agent = request.headers.get("user-agent", "")
    device, new = await remember_device(db_session, user, request.cookies.get(DEVICE_COOKIE), agent)
    if new:  # the security-email sender tells the user
        await record_as(
            db_session, who(request, user.email), "auth.new_device", object_type="user", object_id=user.email
        )
    await db_session.commit()  # before the session store writes: SQLite has a single writer
    new_id = await rotate_session(request, session_store(request), SESSION_KEY)
    data = new_session(user, FULL)
    data["h"] = secrets.token_hex(8)  # names the session in the user's list; not its id
    request.set_session(data)
    await session_index(request).add(
        user.id,
        data["h"],
        new_id,
        {
            "created": data["created"],
            "ip": client_address(request),
            "agent": request.headers.get("user-agent", "")[:200],
        },
    )
    if time.monotonic() - _last_cleanup > 3600:
        _last_cleanup = time.monotonic()
        for name in ("sessions", "rate_limit"):
            store = request.app.stores.get(name)
            if isinstance(store, DatabaseStore):
                await store.delete_expired()
    settings: Settings = request.app.state.settings
    return Cookie(
        key=DEVICE_COOKIE,
        value=device,
        max_age=DEVICE_COOKIE_SECONDS,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="lax",
    )


async def _pending(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], stage: str
) -> User | None:
    """The user of a fresh half-finished sign-in at `stage`, else None."""
    data = request.session
    if not data or not pending_is_fresh(data, stage):
        return None
    user = await db_session.get(User, data.get("uid"))
    if user is None or not user.active or user.session_epoch != data.get("epoch"):
        return None
    return user


def _restart() -> Redirect:
    return Redirect("/login?ok=expired", status_code=303)


async def _second_factor_step(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    limits: tuple[Limit, Limit],
    template: str,
) -> tuple[User, tuple[tuple[Limit, str], ...]] | Response[Any] | Template:
    """The user waiting for their second factor and the (limit, subject) pairs that throttle their
    attempts; or the answer when there is none (start again) or the attempts are past a limit."""
    user = await _pending(request, db_session, PENDING_2FA)
    if user is None:
        return _restart()
    account, address = limits
    pairs = ((account, f"uid:{user.id}"), (address, client_address(request)))
    wait = await throttle(request).retry_after(*pairs)
    if wait:
        await release(db_session)
        return too_many(request, template, {}, wait)
    return user, pairs


# ── step 1: the password ────────────────────────────────────────────────────────────────


@get("/login", opt=PUBLIC, name="login")
async def login_page(request: Request[Any, Any, Any], next: FromQuery[str] = "", ok: FromQuery[str] = "") -> Template:
    return Template(
        "login.html",
        context={"next": safe_next(next, ""), "error": None, "email": "", "notice": MESSAGES.get(ok)},
    )


@post("/login", opt=PUBLIC, status_code=303)
async def login(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    data: URLEncodedBody[LoginForm],
) -> Response[Any]:
    email = data.email.strip()[:320]
    target = safe_next(data.next)
    context = {"next": safe_next(data.next, ""), "email": email}
    pairs = ((LOGIN_ACCOUNT, email.lower()), (LOGIN_ADDRESS, client_address(request)))
    wait = await throttle(request).retry_after(*pairs)
    if wait:
        return too_many(request, "login.html", context, wait)
    user = await find_by_email(db_session, email) if email else None
    candidate = user if user is not None and user.active else None
    password = data.password if len(data.password) <= MAX_PASSWORD_LENGTH else ""
    ok = await verify_password(candidate.password_hash if candidate else None, password)
    if not ok or candidate is None:
        await release(db_session)
        reason = "unknown email" if user is None else "inactive" if not user.active else "wrong password"
        await audit_now(
            request,
            "auth.login_failed",
            _email_for_audit(email),
            outcome="failed",
            object_type="user",
            object_id=_email_for_audit(email),
            detail={"reason": reason},
        )
        await count_failure(request, _email_for_audit(email), pairs, _email_for_audit(email))
        return Template("login.html", context={**context, "error": WRONG_CREDENTIALS}, status_code=401)
    await throttle(request).reset(pairs[0])
    if candidate.password_hash and needs_rehash(candidate.password_hash):
        candidate.password_hash = await hash_password(password)
    if candidate.totp_enabled:
        return await _pending_step(request, db_session, candidate, PENDING_2FA, target, "/login/2fa")
    requirement = await two_factor_requirement(db_session)
    if requirement.applies_to(candidate.role):
        return await _pending_step(request, db_session, candidate, PENDING_ENROL, target, "/login/enrol")
    device = await finish_sign_in(request, db_session, candidate, "password")
    return Redirect(target, status_code=303, cookies=[device])


async def _pending_step(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    user: User,
    stage: str,
    target: str,
    page: str,
) -> Redirect:
    await record_as(
        db_session,
        who(request, user.email),
        "auth.password_ok",
        object_type="user",
        object_id=user.email,
        detail={"next_step": "2fa" if stage == PENDING_2FA else "enrol"},
    )
    await db_session.commit()
    await rotate_session(request, session_store(request), SESSION_KEY)
    data = new_session(user, stage)
    data["next"] = target
    request.set_session(data)
    return Redirect(page, status_code=303)


# ── step 2: a TOTP code or a recovery code ──────────────────────────────────────────────


@get("/login/2fa", opt=PUBLIC)
async def second_factor_page(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> Response[Any]:
    if await _pending(request, db_session, PENDING_2FA) is None:
        return _restart()
    return Template("security/login_2fa.html", context={"error": None})


@post("/login/2fa", opt=PUBLIC, status_code=303)
async def second_factor(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    data: URLEncodedBody[CodeForm],
) -> Response[Any]:
    step = await _second_factor_step(request, db_session, (CODE_ACCOUNT, CODE_ADDRESS), "security/login_2fa.html")
    if not isinstance(step, tuple):
        return step
    user, pairs = step
    result = await twofactor.check_code(db_session, seed_box(request), user, data.code, clock.now())
    if result is not twofactor.CodeCheck.OK:
        await release(db_session)
        replayed = result is twofactor.CodeCheck.REPLAYED
        await audit_now(
            request,
            "auth.totp_replay" if replayed else "auth.2fa_failed",
            user.email,
            outcome="refused" if replayed else "failed",
            object_type="user",
            object_id=user.email,
        )
        await count_failure(request, user.email, pairs, user.email)
        message = "That code was already used; wait for the next one." if replayed else "That code is not right."
        return Template("security/login_2fa.html", context={"error": message}, status_code=401)
    target = safe_next(request.session.get("next"))
    device = await finish_sign_in(request, db_session, user, "totp")
    await throttle(request).reset(pairs[0])  # after the commit: SQLite has a single writer
    return Redirect(target, status_code=303, cookies=[device])


@get("/login/recovery", opt=PUBLIC)
async def recovery_page(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Response[Any]:
    if await _pending(request, db_session, PENDING_2FA) is None:
        return _restart()
    return Template("security/login_recovery.html", context={"error": None})


@post("/login/recovery", opt=PUBLIC, status_code=200)
async def recovery(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    data: URLEncodedBody[CodeForm],
) -> Response[Any]:
    limits = (RECOVERY_ACCOUNT, RECOVERY_ADDRESS)
    step = await _second_factor_step(request, db_session, limits, "security/login_recovery.html")
    if not isinstance(step, tuple):
        return step
    user, pairs = step
    if not await twofactor.use_recovery_code(db_session, user, data.code):
        await release(db_session)
        await audit_now(
            request, "auth.recovery_code_failed", user.email, outcome="failed", object_type="user", object_id=user.email
        )
        await count_failure(request, user.email, pairs, user.email)
        return Template(
            "security/login_recovery.html",
            context={"error": "That recovery code is not right, or it was used already."},
            status_code=401,
        )
    remaining = await twofactor.remaining_recovery_codes(db_session, user.id)
    await record_as(
        db_session,
        who(request, user.email),
        "auth.recovery_code_used",
        object_type="user",
        object_id=user.email,
        detail={"remaining": remaining},
    )
    target = safe_next(request.session.get("next"))
    device = await finish_sign_in(request, db_session, user, "recovery code")
    context = {"remaining": remaining, "next": target}
    return Template("security/recovery_used.html", context=context, cookies=[device])


# ── enrolment at sign-in (two-factor required, not set up yet) ──────────────────────────


def enrolment_context(secret: str, email: str, action: str, error: str | None = None) -> dict[str, Any]:
    uri = twofactor.provisioning_uri(secret, email)
    return {
        "qr": twofactor.qr_data_uri(uri),
        "secret": secret,
        "grouped_secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        "action": action,
        "error": error,
    }


@get("/login/enrol", opt=PUBLIC)
async def enrol_page(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Response[Any]:
    user = await _pending(request, db_session, PENDING_ENROL)
    if user is None:
        return _restart()
    secret = enrolment_seed(request, user.id)
    context = enrolment_context(secret, user.email, "/login/enrol")
    return Template("security/enrol.html", context={**context, "required": True})


@post("/login/enrol", opt=PUBLIC, status_code=200)
async def enrol(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    data: URLEncodedBody[CodeForm],
) -> Response[Any]:
    user = await _pending(request, db_session, PENDING_ENROL)
    secret = pending_seed(request, user.id) if user else None
    if user is None or secret is None:
        return _restart()
    pairs = ((CODE_ACCOUNT, f"uid:{user.id}"), (CODE_ADDRESS, client_address(request)))
    wait = await throttle(request).retry_after(*pairs)
    context = {**enrolment_context(secret, user.email, "/login/enrol"), "required": True}
    if wait:
        await release(db_session)
        return too_many(request, "security/enrol.html", context, wait)
    step = twofactor.matching_step(secret, data.code, clock.now())
    if step is None:
        await release(db_session)
        await audit_now(
            request,
            "auth.2fa_failed",
            user.email,
            outcome="failed",
            object_type="user",
            object_id=user.email,
            detail={"during": "enrolment"},
        )
        await count_failure(request, user.email, pairs, user.email)
        return Template("security/enrol.html", context={**context, "error": "That code is not right."}, status_code=401)
    codes = await twofactor.enable(db_session, seed_box(request), user, secret, step)
    await record_as(
        db_session,
        who(request, user.email),
        "user.2fa_enabled",
        object_type="user",
        object_id=user.email,
        before={"totp_enabled": False},
        after={"totp_enabled": True},
    )
    target = safe_next(request.session.get("next"))
    device = await finish_sign_in(request, db_session, user, "enrolment")
    context = {"codes": codes, "next": target, "first": True}
    return Template("security/recovery_codes.html", context=context, cookies=[device])


# ── set-password links (invitations, resets by an admin, forgotten passwords) ──────────────────────


async def _invited(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], token: str
) -> User | None:
    return await user_of_set_password_link(db_session, request.app.state.settings, token)


class LinkTokenRedaction(logging.Filter):
    """Keeps the tokens of set-password and digest links out of the web server's access log
    (they are in the path)."""

    TOKEN = re.compile(r"(/login/invite/|/go/)[^\s?\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self.TOKEN.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


@get("/login/invite/{token:str}", opt=PUBLIC)
async def invite_page(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], token: FromPath[str]
) -> Template:
    user = await _invited(request, db_session, token)
    return Template(
        "security/set_password.html",
        context={"valid": user is not None, "email": user.email if user else "", "token": token, "error": None},
        status_code=200 if user else 404,
    )


@post("/login/invite/{token:str}", opt=PUBLIC, status_code=303)
async def invite(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    token: FromPath[str],
    data: URLEncodedBody[PasswordForm],
) -> Response[Any]:
    user = await _invited(request, db_session, token)
    if user is None:
        return Template(
            "security/set_password.html", context={"valid": False, "token": "", "error": None}, status_code=404
        )
    context = {"valid": True, "email": user.email, "token": token}
    if data.password != data.confirm:
        return Template(
            "security/set_password.html", context={**context, "error": "The two passwords differ."}, status_code=400
        )
    try:
        await set_password(db_session, user, data.password, who(request, user.email), "user.password_set")
    except InvalidInput as exc:
        await release(db_session)
        return Template("security/set_password.html", context={**context, "error": exc.message}, status_code=400)
    await db_session.commit()
    return Redirect("/login?ok=password-set", status_code=303)


class ResetForm(Struct):
    email: str = ""


def _reset_context(request: Request[Any, Any, Any], **values: Any) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    return {"email": "", "error": None, "sent": False, "by_email": bool(settings.smtp_host), **values}


@get("/login/reset", opt=PUBLIC)
async def reset_page(request: Request[Any, Any, Any]) -> Template:
    return Template("security/reset_request.html", context=_reset_context(request))


@post("/login/reset", opt=PUBLIC, status_code=200)
async def reset_request(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], data: URLEncodedBody[ResetForm]
) -> Response[Any] | Template:
    """A forgotten password: a set-password link by email. The answer is the same whether the
    address has an account or not; the link only lets them choose a password, and signing in
    still asks for their second factor."""
    email = _email_for_audit(data.email)
    if not request.app.state.settings.smtp_host:
        return Template("security/reset_request.html", context=_reset_context(request), status_code=409)
    if email is None:
        context = _reset_context(request, email=data.email[:320], error="Enter the email address you sign in with.")
        return Template("security/reset_request.html", context=context, status_code=400)
    pairs = ((RESET_ACCOUNT, email.lower()), (RESET_ADDRESS, client_address(request)))
    wait = await throttle(request).retry_after(*pairs)
    if wait:
        context = _reset_context(request, email=email)
        return too_many(request, "security/reset_request.html", context, wait, "requests for a link")
    user = await find_by_email(db_session, email)
    known = user.email if user is not None and user.active else None
    await release(db_session)
    # The web server's security-email sender mails the link (services/security_emails.py).
    await audit_now(
        request,
        "auth.password_reset_requested",
        None,
        outcome="ok" if known else "unknown",
        object_type="user",
        object_id=known or email,
    )
    await count_failure(request, None, pairs, email)
    return Template("security/reset_request.html", context=_reset_context(request, email=email, sent=True))


# ── signing out ─────────────────────────────────────────────────────────────────────────


@post("/logout", opt=PUBLIC, status_code=303)
async def logout(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Redirect:
    """Sign out: ends every session of the user (the epoch), not only this one."""
    data = request.session
    if data and data.get("stage") == FULL and session_is_fresh(data):
        user = await db_session.get(User, data.get("uid"))
        if user is not None and user.session_epoch == data.get("epoch"):
            await db_session.execute(
                update(User).where(User.id == user.id).values(session_epoch=User.session_epoch + 1)
            )
            await record_as(
                db_session, who(request, user.email), "auth.logout", object_type="user", object_id=user.email
            )
            await db_session.commit()
            await session_index(request).clear(user.id)
    await rotate_session(request, session_store(request), SESSION_KEY)
    request.clear_session()
    return Redirect("/login?ok=signed-out", status_code=303)


ROUTES = [
    login_page,
    login,
    second_factor_page,
    second_factor,
    recovery_page,
    recovery,
    enrol_page,
    enrol,
    invite_page,
    invite,
    reset_page,
    reset_request,
    logout,
]
