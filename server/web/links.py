"""The deep links of the digest emails: `/go/<token>` checks the signature and the age, then
sends the browser to the customer's tab. It signs no one in: without a session, that page sends
the browser to the sign-in page, which comes back to it."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.params import FromPath
from litestar.response import Redirect, Template

from server.services.digests import LinkExpired, LinkInvalid, link_target
from server.settings import Settings
from server.web.access import PUBLIC


@get("/go/{token:str}", opt=PUBLIC)
async def follow_link(request: Request[Any, Any, Any], token: FromPath[str]) -> Response[Any]:
    settings: Settings = request.app.state.settings
    try:
        target = link_target(settings, token)
    except LinkExpired:
        return Template("link.html", context={"expired": True, "days": settings.digest_link_days}, status_code=410)
    except LinkInvalid:
        return Template("link.html", context={"expired": False}, status_code=404)
    return Redirect(target, status_code=303)


ROUTES = [follow_link]
