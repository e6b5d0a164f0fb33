"""Tags, saved filters and settings pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from server.portal.common import AnyRequest, current_user, is_htmx, render, safe_next
from server.services import preferences
from server.services.customers import COLUMNS
from server.services.tags import PALETTE, create_tag, delete_tag, list_tags, update_tag
from server.web.access import SIGNED_IN, Capability, Role, requires

READ = [requires(Capability.READ_CUSTOMERS)]
EDIT = [requires(Capability.EDIT_CUSTOMERS)]

# Other parts of the product add sections to /settings (password, two-factor...): each provider
# returns extra template context; their templates fill `{% block security_settings %}`.
SETTINGS_CONTEXT: list[Callable[[AnyRequest, AsyncSession], Awaitable[dict[str, Any]]]] = []


# ── tags ────────────────────────────────────────────────────────────────────────────────


@get("/tags", guards=READ, name="tags")
async def tags_page(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Template:
    user = current_user(request)
    return await render(
        request,
        db_session,
        "portal/tags.html",
        {
            "tags": await list_tags(db_session, user),
            "palette": PALETTE,
            "can_edit": user.can(Capability.EDIT_CUSTOMERS),
        },
    )


@post("/tags", guards=EDIT, name="tag_create", status_code=303)
async def tag_create(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Redirect:
    form = await request.form()
    await create_tag(db_session, current_user(request), form.get("name") or "", form.get("colour") or None)
    return Redirect(safe_next(form.get("next"), "/tags"), status_code=303)


@post("/tags/{tag_id:int}", guards=EDIT, name="tag_update", status_code=303)
async def tag_update(request: AnyRequest, db_session: NamedDependency[AsyncSession], tag_id: FromPath[int]) -> Redirect:
    form = await request.form()
    await update_tag(db_session, current_user(request), tag_id, form.get("name"), form.get("colour") or None)
    return Redirect("/tags", status_code=303)


@post("/tags/{tag_id:int}/delete", guards=EDIT, name="tag_delete", status_code=303)
async def tag_remove(request: AnyRequest, db_session: NamedDependency[AsyncSession], tag_id: FromPath[int]) -> Redirect:
    await delete_tag(db_session, current_user(request), tag_id)
    return Redirect("/tags", status_code=303)


# ── saved filters ───────────────────────────────────────────────────────────────────────


@post("/filters", guards=READ, name="filter_save", status_code=303)
async def filter_save(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Redirect:
    form = await request.form()
    page = form.get("page") or "overview"
    saved = await preferences.save_filter(
        db_session,
        current_user(request),
        form.get("name") or "",
        form.get("query") or "",
        page,
        shared=form.get("shared") in ("1", "on", "true"),
    )
    return Redirect(preferences.filter_url(saved), status_code=303)


@get("/filters/{filter_id:int}", guards=READ, name="filter_open")
async def filter_open(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], filter_id: FromPath[int]
) -> Redirect:
    """A saved filter's short link: redirects to the page with its query (shareable when shared)."""
    saved = await preferences.get_filter(db_session, current_user(request), filter_id)
    return Redirect(preferences.filter_url(saved), status_code=302)


@post("/filters/{filter_id:int}/delete", guards=READ, name="filter_delete", status_code=303)
async def filter_delete(
    request: AnyRequest, db_session: NamedDependency[AsyncSession], filter_id: FromPath[int]
) -> Redirect:
    form = await request.form()
    await preferences.delete_filter(db_session, current_user(request), filter_id)
    return Redirect(safe_next(form.get("next"), "/"), status_code=303)


# ── settings ────────────────────────────────────────────────────────────────────────────


async def settings_context(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    user = current_user(request)
    columns = await preferences.get_columns(db_session, user)
    context: dict[str, Any] = {
        "columns": columns,
        "hidden_columns": [column for column in COLUMNS if column not in columns],
        "column_labels": COLUMNS,
        "saved_filters": await preferences.list_filters(db_session, user),
        "gets_digests": user.role == Role.CSM,
        "wants_digest": await preferences.wants_digest(db_session, user),
    }
    for provider in SETTINGS_CONTEXT:
        context.update(await provider(request, db_session))
    return context


@get("/settings", opt=SIGNED_IN, name="settings")
async def settings_page(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Template:
    return await render(request, db_session, "portal/settings.html", await settings_context(request, db_session))


@post("/settings/columns", opt=SIGNED_IN, name="settings_columns", status_code=200)
async def settings_columns(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Template | Redirect:
    """Show, hide, move or reset the overview's columns (each button posts this form)."""
    user = current_user(request)
    form = await request.form()
    columns = [column for column in form.getall("column", []) if column]
    move = form.get("move") or ""
    if form.get("reset"):
        await preferences.reset_columns(db_session, user)
    else:
        if ":" in move:
            column, direction = move.rsplit(":", 1)
            columns = preferences.move_column(columns, column, -1 if direction == "up" else 1)
        if form.get("hide"):
            columns = [column for column in columns if column != form.get("hide")]
        if form.get("show"):
            columns = [*columns, form.get("show") or ""]
        await preferences.set_columns(db_session, user, columns)
    if not is_htmx(request):
        return Redirect("/settings", status_code=303)
    context = await settings_context(request, db_session)
    context["flash"] = "Column preferences saved."
    return await render(request, db_session, "portal/partials/settings_columns.html", context, with_tabs=False)


@post("/settings/digest", opt=SIGNED_IN, name="settings_digest", status_code=303)
async def settings_digest(request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Redirect:
    """Turn the morning digest on or off (for CSMs: the only ones who get one)."""
    form = await request.form()
    on = form.get("digest") == "on"
    await preferences.set_digest(db_session, current_user(request), on)
    return Redirect(f"/settings?digest={'on' if on else 'off'}#digest", status_code=303)


ROUTES = [
    tags_page,
    tag_create,
    tag_update,
    tag_remove,
    filter_save,
    filter_open,
    filter_delete,
    settings_page,
    settings_columns,
    settings_digest,
]
