"""Sign-in and sign-out pages."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template
from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.base import utcnow
from server.web.auth import SESSION_KEY, find_user, new_session, safe_next, verify_password
from server.web.sessions import rotate_session

WRONG_CREDENTIALS = "The email or the password is not right."


class LoginForm(Struct):
    email: str = ""
    password: str = ""
    next: str = ""


@get("/login", exclude_from_auth=True, name="login")
async def login_page(request: Request[Any, Any, Any], next: str = "") -> Template:
    return Template("login.html", context={"next": safe_next(next, ""), "error": None, "email": ""})


@post("/login", exclude_from_auth=True, status_code=303)
async def login(
    request: Request[Any, Any, Any],
    db_session: AsyncSession,
    data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Redirect | Template:
    user = await find_user(db_session, data.email[:320])
    candidate = user if user is not None and user.active else None
    ok = await verify_password(candidate.password_hash if candidate else None, data.password[:1024])
    if not ok or candidate is None:
        return Template(
            "login.html",
            context={"next": safe_next(data.next, ""), "error": WRONG_CREDENTIALS, "email": data.email[:320]},
            status_code=401,
        )
    await rotate_session(request, request.app.stores.get("sessions"), SESSION_KEY)
    request.set_session(new_session(candidate, "full"))
    candidate.last_login_at = utcnow()
    return Redirect(safe_next(data.next), status_code=303)


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    await rotate_session(request, request.app.stores.get("sessions"), SESSION_KEY)
    request.clear_session()
    return Redirect("/login", status_code=303)


ROUTES = [login_page, login, logout]
