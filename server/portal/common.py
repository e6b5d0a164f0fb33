"""What every portal page renders with: `ui`, the user, today, the open customer tabs, band colours."""

from __future__ import annotations

from typing import Any

from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from server.portal import ui
from server.services.preferences import open_tabs
from server.web.auth import safe_next
from server.web.context import is_htmx
from server.web.portal_helpers import (
    AnyRequest,
    catalog,
    current_user,
    htmx_target,
    query_lists,
    settings_of,
    today,
    url_query_lists,
)


async def render(
    request: AnyRequest,
    session: AsyncSession | None,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    with_tabs: bool = True,
) -> Template:
    """A portal template with what every portal page needs: `ui`, the user, today, the open tabs."""
    user = current_user(request)
    base: dict[str, Any] = {"ui": ui, "user": user, "today": today(request)}
    if with_tabs and session is not None and "open_tabs" not in context:
        base["open_tabs"] = await open_tabs(session, user)
    if session is not None and "band_colours" not in context:
        cat = context.get("catalog") or await catalog(request, session)
        base["band_colours"] = {band.name: band.colour for band in cat.bands}
    return Template(
        template,
        context={**base, **context},
        status_code=status_code,
        headers={"Vary": "HX-Request", **(headers or {})},
    )


__all__ = [
    "AnyRequest",
    "catalog",
    "current_user",
    "htmx_target",
    "is_htmx",
    "query_lists",
    "render",
    "safe_next",
    "settings_of",
    "today",
    "url_query_lists",
]
