"""Refusals of signed-in users go to the audit log as `access.denied` (ASVS 16.3.2).

Written after the response is sent, in a transaction of their own: the request's transaction
is rolled back on an error, and the refusal must be kept all the same. Covered: every 403 of a
signed-in user (wrong role, CSRF failure, someone else's object, a protected field), and every
`NotFound` raised by a lookup (a forged or foreign id, in the path or in the body; the router's
own 404 for an unknown URL is not one).
Anonymous refusals are not audited (they are 401s, and would let anyone fill the log).
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request
from litestar.background_tasks import BackgroundTask
from litestar.exceptions import HTTPException

from server.db.session import session_scope
from server.errors import AppError, NotFound
from server.services.audit import Who, record_as
from server.web.context import factory_of, signed_in_user, who

log = logging.getLogger("csm.security")


def audit_denial(request: Request[Any, Any, Any], exc: Exception, status: int) -> BackgroundTask | None:
    user = signed_in_user(request)
    if user is None:
        return None
    object_lookup = isinstance(exc, NotFound)  # raised by a lookup, never by the router
    if status != 403 and not object_lookup:
        return None
    if isinstance(exc, AppError):
        reason, extra = exc.message, exc.extra
    elif isinstance(exc, HTTPException):
        reason, extra = exc.detail, exc.extra if isinstance(exc.extra, dict) else {}
    else:
        reason, extra = type(exc).__name__, {}
    detail = {
        "method": request.method,
        "path": request.url.path[:300],
        "status": status,
        "reason": str(reason)[:300],
    }
    if extra.get("reason"):
        detail["kind"] = str(extra["reason"])[:60]
    fields = {
        "object_type": str(extra.get("object_type") or "route")[:60],
        "object_id": str(extra.get("object_id") or f"{request.method} {request.url.path}")[:300],
        "outcome": "denied",
        "detail": detail,
    }
    return BackgroundTask(_write, request, who(request), fields)


async def _write(request: Request[Any, Any, Any], actor: Who, fields: dict[str, Any]) -> None:
    try:
        async with session_scope(factory_of(request)) as session:
            await record_as(session, actor, "access.denied", **fields)
    except Exception:  # the response is gone; never let the audit write crash the server
        log.exception("could not audit a refusal")
