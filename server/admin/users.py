"""Admin: users and roles (invite, change role, deactivate, reset two-factor, end sessions) and
who must use two-factor sign-in. Every change needs a recent re-authentication and is audited."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.response import Redirect, Template
from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import Conflict
from server.services.audit import record_as
from server.services.security_emails import EMAILED, recent_security_emails
from server.services.security_settings import (
    TwoFactorRequirement,
    set_two_factor_requirement,
    two_factor_requirement,
)
from server.services.twofactor import remaining_recovery_codes_by_user
from server.services.users import (
    change_role,
    end_sessions,
    get_user,
    invite_user,
    list_users,
    reset_two_factor,
    set_active,
    set_password_link,
)
from server.settings import Settings
from server.web.access import Capability, Role, reject_protected_fields, requires
from server.web.context import signed_in_record, signed_in_user, who
from server.web.reauth import require_recent_reauth

MANAGE_USERS = [requires(Capability.MANAGE_USERS)]
MESSAGES = {
    "role": "The role is changed; the user's sessions were signed out.",
    "deactivated": "The user is deactivated and signed out everywhere.",
    "activated": "The user is active again.",
    "2fa-reset": "The user's two-factor set-up is removed; they set it up again at next sign-in if required.",
    "sessions": "Every session of the user is signed out.",
    "requirement": "The two-factor requirement is saved.",
}


class InviteForm(Struct):
    email: str = ""
    name: str = ""
    role: str = "viewer"
    send_email: str = ""  # "yes": the link goes out by email instead of being shown


class LinkForm(Struct):
    send_email: str = ""


def _by_email(request: Request[Any, Any, Any], asked: str) -> bool:
    """Whether a set-password link goes by email: asked for, and SMTP configured."""
    settings: Settings = request.app.state.settings
    return asked == "yes" and bool(settings.smtp_host)


class RoleForm(Struct):
    role: str = ""


def _actor_id(request: Request[Any, Any, Any]) -> int | None:
    user = signed_in_user(request)
    return user.id if user else None


@get("/admin/users", guards=MANAGE_USERS, name="admin_users")
async def users_page(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], ok: FromQuery[str] = ""
) -> Template:
    users = await list_users(db_session)
    unused = await remaining_recovery_codes_by_user(db_session)
    requirement = await two_factor_requirement(db_session)
    return Template(
        "admin/users.html",
        context={
            "users": users,
            "roles": [role.value for role in Role],
            "unused_codes": unused,
            "requirement": requirement,
            "me": _actor_id(request),
            "notice": MESSAGES.get(ok),
            "by_email": bool(request.app.state.settings.smtp_host),
            "security_emails": await recent_security_emails(db_session),
            "email_subjects": {action: kind.subject for action, kind in EMAILED.items()},
        },
    )


@post("/admin/users/invite", guards=MANAGE_USERS, status_code=200)
async def invite(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    data: URLEncodedBody[InviteForm],
) -> Template:
    require_recent_reauth(request)
    reject_protected_fields(await request.form(), {"email", "role"})
    emailed = _by_email(request, data.send_email)
    user = await invite_user(db_session, data.email, data.role, data.name, who(request), emailed=emailed)
    link = None if emailed else set_password_link(request.app.state.settings, user)
    await db_session.commit()
    return Template("admin/link.html", context={"account": user, "link": link, "invited": True, "emailed": emailed})


@post("/admin/users/{user_id:int}/password-link", guards=MANAGE_USERS, status_code=200)
async def password_link(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    user_id: FromPath[int],
    data: URLEncodedBody[LinkForm],
) -> Template:
    """A new set-password link (a forgotten password): earlier links stop working, sessions end.
    Shown to the admin, or emailed to the user by the security-email sender."""
    require_recent_reauth(request)
    user = await get_user(db_session, user_id)
    if not user.active:
        raise Conflict("activate the user first")
    emailed = _by_email(request, data.send_email)
    await end_sessions(db_session, user)
    await record_as(
        db_session,
        who(request),
        "user.password_link_issued",
        object_type="user",
        object_id=user.email,
        detail={"emailed": emailed},
    )
    link = None if emailed else set_password_link(request.app.state.settings, user)
    await db_session.commit()
    return Template("admin/link.html", context={"account": user, "link": link, "invited": False, "emailed": emailed})


@post("/admin/users/{user_id:int}/role", guards=MANAGE_USERS, status_code=303)
async def set_role(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    user_id: FromPath[int],
    data: URLEncodedBody[RoleForm],
) -> Redirect:
    require_recent_reauth(request)
    reject_protected_fields(await request.form(), {"role"})
    user = await get_user(db_session, user_id)
    await change_role(db_session, user, data.role, who(request), _actor_id(request))
    await db_session.commit()
    return Redirect("/admin/users?ok=role", status_code=303)


async def _switch_active(
    request: Request[Any, Any, Any], db_session: AsyncSession, user_id: int, active: bool
) -> Redirect:
    require_recent_reauth(request)
    user = await get_user(db_session, user_id)
    await set_active(db_session, user, active, who(request), _actor_id(request))
    await db_session.commit()
    return Redirect(f"/admin/users?ok={'activated' if active else 'deactivated'}", status_code=303)


@post("/admin/users/{user_id:int}/deactivate", guards=MANAGE_USERS, status_code=303)
async def deactivate(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], user_id: FromPath[int]
) -> Redirect:
    return await _switch_active(request, db_session, user_id, False)


@post("/admin/users/{user_id:int}/activate", guards=MANAGE_USERS, status_code=303)
async def activate(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], user_id: FromPath[int]
) -> Redirect:
    return await _switch_active(request, db_session, user_id, True)


@post("/admin/users/{user_id:int}/reset-2fa", guards=MANAGE_USERS, status_code=303)
async def reset_2fa(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], user_id: FromPath[int]
) -> Redirect:
    require_recent_reauth(request)
    user = await get_user(db_session, user_id)
    await reset_two_factor(db_session, user, who(request))
    await db_session.commit()
    return Redirect("/admin/users?ok=2fa-reset", status_code=303)


@post("/admin/users/{user_id:int}/end-sessions", guards=MANAGE_USERS, status_code=303)
async def end_user_sessions(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], user_id: FromPath[int]
) -> Redirect:
    require_recent_reauth(request)
    user = await get_user(db_session, user_id)
    await end_sessions(db_session, user)
    await record_as(db_session, who(request), "user.sessions_ended", object_type="user", object_id=user.email)
    await db_session.commit()
    return Redirect("/admin/users?ok=sessions", status_code=303)


@post("/admin/security/2fa", guards=MANAGE_USERS, status_code=303)
async def set_requirement(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Response[Any]:
    require_recent_reauth(request)
    form = await request.form()
    roles = {Role(role) for role in form.getall("roles", []) if role in {r.value for r in Role}}
    requirement = TwoFactorRequirement(everyone=form.get("everyone") == "on", roles=frozenset(roles))
    admin = await signed_in_record(request, db_session)
    if requirement.applies_to(admin.role) and not admin.totp_enabled:
        raise Conflict("Turn on two-factor sign-in for yourself first (Security settings), then require it.")
    await set_two_factor_requirement(db_session, requirement, who(request))
    await db_session.commit()
    return Redirect("/admin/users?ok=requirement", status_code=303)


ROUTES = [
    users_page,
    invite,
    password_link,
    set_role,
    deactivate,
    activate,
    reset_2fa,
    end_user_sessions,
    set_requirement,
]
