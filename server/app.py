"""The web application: portal pages, the JSON API and the admin console over one database.

`create_app(settings)` is the composition root: it builds the database engine, the session
store (the database, or Redis when `CSM_REDIS_URL` is set), sessions that cannot be fixed,
CSRF protection, security headers, templates, the front-end libraries installed by npm, and
mounts the route handlers of each part.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from advanced_alchemy.extensions.litestar import AsyncSessionConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from litestar import Litestar, Request, Response, get
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.plugins.htmx import HTMXPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.security.session_auth import SessionAuth
from litestar.static_files import create_static_files_router
from litestar.stores.base import Store
from litestar.stores.redis import RedisStore
from litestar.template.config import TemplateConfig
from sqlalchemy import text

from console import ROUTES as CONSOLE_ROUTES
from server.admin import ROUTES as ADMIN_ROUTES
from server.api import ROUTES as API_ROUTES
from server.db.session import create_engine, session_factory
from server.errors import AppError
from server.portal import ROUTES as PORTAL_ROUTES
from server.services.security_emails import run_security_email_sender
from server.services.twofactor import SeedBox
from server.settings import Settings
from server.web.access import PUBLIC
from server.web.auth import ABSOLUTE_TIMEOUT, SESSION_KEY, load_user
from server.web.context import is_htmx, wants_json
from server.web.denials import audit_denial
from server.web.headers import add_security_headers
from server.web.links import ROUTES as LINK_ROUTES
from server.web.login import ROUTES as LOGIN_ROUTES
from server.web.login import LinkTokenRedaction
from server.web.reauth import ROUTES as REAUTH_ROUTES
from server.web.reauth import ReauthRequired, reauth_response
from server.web.security import ROUTES as SECURITY_ROUTES
from server.web.sessions import DatabaseStore, RotatingSessionBackend, RotatingSessionConfig

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
log = logging.getLogger("csm.app")
SHUTDOWN_WAIT = 35.0  # seconds for the security-email sender to finish its email (SMTP times out at 30)
NODE_MODULES = ROOT / "node_modules"
# Front-end libraries from npm (package.json), served by the app itself: no CDN.
VENDOR = {
    "htmx": ("htmx.org/dist", "htmx.min.js"),
    "uplot": ("uplot/dist", "uPlot.iife.min.js"),
    "codemirror": ("codemirror", "lib/codemirror.js"),
}
PUBLIC_PATHS = ["^/login", "^/go/", "^/static/", "^/vendor/", "^/healthz", "^/favicon"]


class MissingAssets(RuntimeError):
    pass


def check_assets(modules: Path = NODE_MODULES) -> None:
    missing = [f"{folder}/{probe}" for folder, probe in VENDOR.values() if not (modules / folder / probe).is_file()]
    if missing:
        raise MissingAssets(f"front-end libraries missing ({', '.join(missing)}): run `npm ci` in {ROOT}")


@get("/healthz", opt=PUBLIC)
async def healthz(request: Request[Any, Any, Any]) -> dict[str, Any]:
    factory = request.app.state.session_factory
    async with factory() as session:
        await session.execute(text("SELECT 1"))
    return {"status": "ok"}


def handle_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """One place turns every error into JSON (API), a fragment (htmx) or a page.

    A refusal of a signed-in user (403) is written to the audit log as `access.denied`.
    """
    if isinstance(exc, ReauthRequired):
        return reauth_response(request, exc)
    response = _error_response(request, exc)
    response.background = audit_denial(request, exc, response.status_code or 500)
    return response


def _error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, AppError):
        status, message, extra = exc.status_code, exc.message, {"field": exc.field, **exc.extra}
    elif isinstance(exc, ValidationException):
        status, message, extra = 400, "The request is not valid.", {"errors": exc.extra}
    elif isinstance(exc, HTTPException):
        status, message, extra = exc.status_code, exc.detail, {}
    else:
        request.logger.exception("unexpected error")
        status, message, extra = 500, "Something went wrong on our side; it has been logged.", {}
    if status == 401 and not wants_json(request):
        query = request.url.query
        target = f"/login?next={quote(request.url.path + (f'?{query}' if query else ''), safe='')}"
        if is_htmx(request):
            return Response(content="", status_code=401, headers={"HX-Redirect": target})
        return Redirect(target)
    if wants_json(request):
        body = {"status": status, "detail": message, **{k: v for k, v in extra.items() if v is not None}}
        return Response(content=body, status_code=status)
    if is_htmx(request):
        return Template(
            "partials/flash.html",
            context={"level": "error", "message": message},
            status_code=status,
            headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"},
        )
    return Template("error.html", context={"status": status, "message": message}, status_code=status)


def create_app(settings: Settings | None = None, *, route_handlers: list[Any] | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    check_assets()
    access_log = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, LinkTokenRedaction) for existing in access_log.filters):
        access_log.addFilter(LinkTokenRedaction())
    engine = create_engine(settings.database_url)
    factory = session_factory(engine)
    alchemy = SQLAlchemyAsyncConfig(
        engine_instance=engine,
        session_dependency_key="db_session",
        before_send_handler="autocommit_include_redirects",
        session_config=AsyncSessionConfig(expire_on_commit=False),
    )
    stores: dict[str, Store]
    if settings.redis_url:
        root_store = RedisStore.with_client(url=settings.redis_url, namespace="csm")
        stores = {"sessions": root_store.with_namespace("sessions"), "rate_limit": root_store.with_namespace("limits")}
    else:
        root = DatabaseStore(factory)
        stores = {"sessions": root.with_namespace("sessions"), "rate_limit": root.with_namespace("limits")}
    session_config = RotatingSessionConfig(
        key=SESSION_KEY,
        max_age=int(ABSOLUTE_TIMEOUT.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        store="sessions",
        exclude=["^/static/", "^/vendor/"],
    )
    auth = SessionAuth[Any, RotatingSessionBackend](
        retrieve_user_handler=load_user,
        session_backend_config=session_config,  # type: ignore[arg-type]  # a subclass of the stock config
        exclude=PUBLIC_PATHS,
    )
    csrf = CSRFConfig(
        secret=settings.secret(),
        cookie_name="csm_csrf",
        cookie_secure=settings.secure_cookies,
        cookie_httponly=True,
        cookie_samesite="lax",
        header_name="x-csrftoken",
        exclude=["^/healthz"],
    )
    vendor = [
        create_static_files_router(path=f"/vendor/{name}", directories=[NODE_MODULES / folder], name=f"vendor_{name}")
        for name, (folder, _probe) in VENDOR.items()
    ]
    handlers: list[Any] = [
        healthz,
        *LOGIN_ROUTES,
        *LINK_ROUTES,
        *REAUTH_ROUTES,
        *SECURITY_ROUTES,
        create_static_files_router(path="/static", directories=[STATIC], name="static"),
        *vendor,
        *PORTAL_ROUTES,
        *API_ROUTES,
        *ADMIN_ROUTES,
        *CONSOLE_ROUTES,
        *(route_handlers or []),
    ]

    stop_sending = asyncio.Event()

    async def start_security_emails(app: Litestar) -> None:
        if settings.smtp_host:  # without SMTP the events stay in the audit log only
            app.state.security_email_sender = asyncio.create_task(
                run_security_email_sender(factory, settings, stop_sending)
            )

    async def dispose(app: Litestar) -> None:
        sender = app.state.get("security_email_sender")
        if sender is not None:
            stop_sending.set()  # the email in hand is finished, then the sender returns
            try:
                await asyncio.wait_for(sender, SHUTDOWN_WAIT)
            except TimeoutError:
                log.warning(
                    "security emails: the sender did not stop in %s s; an email may be left unconfirmed", SHUTDOWN_WAIT
                )
        await engine.dispose()

    return Litestar(
        route_handlers=handlers,
        plugins=[SQLAlchemyPlugin(config=alchemy), HTMXPlugin()],
        on_app_init=[auth.on_app_init],
        on_startup=[start_security_emails],
        on_shutdown=[dispose],
        stores=stores,
        csrf_config=csrf,
        before_send=[add_security_headers(hsts=settings.secure_cookies)],
        template_config=TemplateConfig(directory=[TEMPLATES], engine=JinjaTemplateEngine),
        openapi_config=OpenAPIConfig(
            title="CSM Portal API", version="1", path="/api/schema", render_plugins=[JsonRenderPlugin()]
        ),
        exception_handlers={Exception: handle_error},
        state=State({"session_factory": factory, "settings": settings, "seed_box": SeedBox(settings.secret())}),
        request_max_body_size=2 * 1024 * 1024,
        debug=False,
    )


__all__ = ["MissingAssets", "NotAuthorizedException", "PermissionDeniedException", "create_app"]
