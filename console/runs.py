"""Engine runs in the console: list, status, counts, errors, progress; start one. Connectors' health."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.response import Redirect, Template
from msgspec import Struct
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.files import SnapshotFolderError, read_manifest
from server.db.base import utcnow
from server.db.models import Account, CrmPush, Digest, Run, RunChunk, RunDelivery, RunPart, Snapshot, User
from server.errors import InvalidInput, NotFound
from server.services.after_run import deliver
from server.services.audit import record
from server.services.catalog import load_catalog
from server.services.deliveries import DELIVERY_KINDS, deliveries_of, summary
from server.services.digests import DigestContent, as_recipient, build_digest, previous_counts, render
from server.services.runs import RunRefused, RunRequest, enqueue_run, run_in_background, runnable_manifest
from server.settings import Settings
from server.web.access import Capability, CurrentUser, Role, requires
from server.web.portal_helpers import today

GUARD = [requires(Capability.MANAGE_RUNS)]
PAGE_SIZE = 50
PREVIEW_PROBLEMS = 20  # CRM refusals listed on the connectors page
DIGEST_DAYS_SHOWN = 7


class RunForm(Struct):
    force: str = ""


class RunView(Struct, kw_only=True):
    id: int
    as_of: dt.date
    state: str
    trigger: str
    mode: str
    policy_hash: str
    created_by: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    parts_total: int
    parts_done: int
    chunks_total: int
    chunks_done: int
    counts: dict[str, Any]
    timings: dict[str, Any]
    error: str | None
    snapshot_folder: str | None = None
    bad_rows: list[Any] = []
    bad_by_reason: dict[str, Any] = {}
    errors: list[Any] = []
    deliveries: dict[str, dict[str, Any]] = {}  # digest, crm: what went out after the run


def run_view(run: Run, folder: str | None, parts_done: int, detail: bool = False) -> RunView:
    view = RunView(
        id=run.id,
        as_of=run.as_of,
        state=run.state,
        trigger=run.trigger,
        mode=run.mode,
        policy_hash=run.policy_hash,
        created_by=run.created_by,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        parts_total=run.parts_total,
        parts_done=parts_done,
        chunks_total=run.chunks_total,
        chunks_done=run.chunks_done,
        counts=run.counts,
        timings=run.timings,
        error=run.error,
        snapshot_folder=folder,
    )
    if detail:
        view.bad_rows, view.bad_by_reason, view.errors = run.bad_rows, run.bad_by_reason, run.errors
    return view


# How many of a run's parts are read (the progress of its reading).
PARTS_DONE = (
    select(func.count())
    .select_from(RunPart)
    .where(RunPart.run_id == Run.id, RunPart.state == "done")
    .correlate(Run)
    .scalar_subquery()
)


async def _runs(session: AsyncSession) -> list[RunView]:
    rows = await session.execute(
        select(Run, Snapshot.folder, PARTS_DONE)
        .join(Snapshot, Snapshot.id == Run.snapshot_id)
        .order_by(Run.id.desc())
        .limit(PAGE_SIZE)
    )
    return [run_view(run, folder, parts_done) for run, folder, parts_done in rows]


async def _run(session: AsyncSession, run_id: int) -> RunView:
    row = (
        await session.execute(
            select(Run, Snapshot.folder, PARTS_DONE)
            .join(Snapshot, Snapshot.id == Run.snapshot_id)
            .where(Run.id == run_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"no run {run_id}")
    view = run_view(row[0], row[1], row[2], detail=True)
    if view.state == "succeeded":
        found = (await deliveries_of(session, [run_id])).get(run_id, {})
        view.deliveries = {kind: summary(found.get(kind)) for kind in DELIVERY_KINDS}
    return view


@get("/console/runs", guards=GUARD)
async def runs_page(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
    settings: Settings = request.app.state.settings
    return Template(
        "console/runs.html",
        context={
            "runs": await _runs(db_session),
            "mode": "workers" if settings.redis_url else "in-process",
            "folder": settings.snapshot_dir,
        },
    )


@get("/api/console/runs", guards=GUARD)
async def runs_api(db_session: NamedDependency[AsyncSession]) -> list[RunView]:
    return await _runs(db_session)


@get("/console/runs/{run_id:int}", guards=GUARD)
async def run_page(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], run_id: FromPath[int]
) -> Template:
    run = await _run(db_session, run_id)
    chunks = list(
        await db_session.scalars(select(RunChunk).where(RunChunk.run_id == run_id).order_by(RunChunk.chunk_no))
    )
    template = "console/partials/run_status.html" if request.headers.get("hx-request") else "console/run.html"
    return Template(template, context={"run": run, "chunks": chunks})


@get("/api/console/runs/{run_id:int}", guards=GUARD)
async def run_api(db_session: NamedDependency[AsyncSession], run_id: FromPath[int]) -> RunView:
    return await _run(db_session, run_id)


@post("/console/runs", guards=GUARD, status_code=303)
async def start_run(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    data: URLEncodedBody[RunForm],
) -> Redirect:
    """Start a run of the configured snapshot folder: on the workers when Redis is configured, else here."""
    settings: Settings = request.app.state.settings
    user: CurrentUser = request.user
    try:
        runnable_manifest(settings.snapshot_dir)
    except RunRefused as exc:
        raise InvalidInput(f"cannot start a run: {exc}") from None
    run_request = RunRequest(
        folder=settings.snapshot_dir,
        policy_dir=settings.policy_dir,
        trigger="console",
        mode="workers" if settings.redis_url else "in-process",
        actor=user.email,
        force=data.force == "on",
        chunk_size=settings.chunk_size,
    )
    await record(
        db_session,
        "run.started",
        actor=user.email,
        object_type="snapshot",
        object_id=str(settings.snapshot_dir),
        detail={"force": run_request.force, "mode": run_request.mode},
    )
    if settings.redis_url:
        try:
            await enqueue_run(settings.redis_url, run_request)
        except RunRefused as exc:
            raise InvalidInput(f"cannot start a run: {exc}") from None
    else:
        factory = request.app.state.session_factory
        run_in_background(factory, run_request, then=lambda run: deliver(factory, run.id, settings))
    return Redirect("/console/runs?started=1", status_code=303)


class SnapshotHealth(Struct, kw_only=True):
    folder: str
    readable: bool
    problem: str | None = None
    as_of: dt.date | None = None
    source: str | None = None
    complete: bool | None = None
    files: dict[str, int] = {}
    age_days: int | None = None
    last_run: RunView | None = None


async def snapshot_health(session: AsyncSession, folder: Path) -> SnapshotHealth:
    health = SnapshotHealth(folder=str(folder), readable=False)
    try:
        manifest = read_manifest(folder)
    except SnapshotFolderError as exc:
        health.problem = str(exc)
        return health
    health.readable = True
    health.as_of, health.source, health.complete = manifest.as_of, manifest.source, manifest.complete
    health.files, resolved = _files_of(folder)
    health.age_days = (utcnow().date() - manifest.as_of).days
    row = (
        await session.execute(
            select(Run, Snapshot.folder, PARTS_DONE)
            .join(Snapshot, Snapshot.id == Run.snapshot_id)
            .where(Snapshot.folder == resolved)
            .order_by(Run.id.desc())
            .limit(1)
        )
    ).first()
    if row is not None:
        health.last_run = run_view(row[0], row[1], row[2])
    return health


def _files_of(folder: Path) -> tuple[dict[str, int], str]:
    """The snapshot's files and sizes, and the folder's absolute path (as runs record it)."""
    return {path.name: path.stat().st_size for path in sorted(folder.glob("*.jsonl"))}, str(folder.resolve())


async def _digest_preview(
    session: AsyncSession, settings: Settings, csm: str, day: dt.date
) -> tuple[DigestContent, bool]:
    """The digest `csm` gets on `day` (or would get: False when no user has that email)."""
    user = await session.scalar(select(User).where(User.email == csm))
    viewer = as_recipient(user) if user else CurrentUser(id=0, email=csm, name="", role=Role.CSM)
    previous = await previous_counts(session, user.id, day) if user else None
    catalog = await load_catalog(session, settings.policy_dir)
    return await build_digest(session, viewer, day, settings, catalog, previous), user is not None


async def _delivery_status(session: AsyncSession, kind: str) -> RunDelivery | None:
    return await session.scalar(
        select(RunDelivery).where(RunDelivery.kind == kind).order_by(RunDelivery.run_id.desc()).limit(1)
    )


@get("/console/connectors", guards=GUARD)
async def connectors_page(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], csm: FromQuery[str] = ""
) -> Template:
    """The snapshot source's health; the digests (a preview for any CSM, what went out) and the
    CRM write-back (what the CRM refused)."""
    settings: Settings = request.app.state.settings
    csms = list(await db_session.scalars(select(Account.csm).distinct().order_by(Account.csm)))
    users = set(await db_session.scalars(select(User.email).where(User.active.is_(True), User.role == Role.CSM.value)))
    chosen = csm if csm in csms else (csms[0] if csms else "")
    digest, has_user = await _digest_preview(db_session, settings, chosen, today(request)) if chosen else (None, False)
    recent_digests = (
        await db_session.execute(
            select(Digest.day, Digest.state, func.count())
            .group_by(Digest.day, Digest.state)
            .order_by(Digest.day.desc())
        )
    ).all()
    digest_days: dict[dt.date, dict[str, int]] = {}
    for day, state, count in recent_digests:
        digest_days.setdefault(day, {})[state] = count
    crm_failing = list(
        await db_session.execute(
            select(CrmPush.account_id, Account.name, CrmPush.crm_id, CrmPush.error, CrmPush.failures)
            .join(Account, Account.id == CrmPush.account_id)
            .where(CrmPush.error.is_not(None))
            .order_by(CrmPush.failed_at.desc())
            .limit(PREVIEW_PROBLEMS)
        )
    )
    return Template(
        "console/connectors.html",
        context={
            "health": await snapshot_health(db_session, settings.snapshot_dir),
            "csms": csms,
            "csm": chosen,
            "digest": digest,
            "has_user": has_user,
            "without_user": [email for email in csms if email not in users],
            "digest_days": list(digest_days.items())[:DIGEST_DAYS_SHOWN],
            "last_digest": await _delivery_status(db_session, "digest"),
            "last_crm": await _delivery_status(db_session, "crm"),
            "crm_failing": crm_failing,
            "customers": await db_session.scalar(select(func.count()).select_from(Account)),
            "redis": bool(settings.redis_url),
            "settings": settings,
        },
    )


@get("/console/connectors/digest", guards=GUARD)
async def digest_email(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], csm: FromQuery[str]
) -> Response[str]:
    """The digest email of one CSM, as HTML, exactly as it would be sent now."""
    settings: Settings = request.app.state.settings
    if not await db_session.scalar(select(func.count()).select_from(Account).where(Account.csm == csm)):
        raise NotFound(f"no customer has the CSM {csm!r}")
    digest, _ = await _digest_preview(db_session, settings, csm, today(request))
    _text, html = render(digest)
    return Response(html, media_type="text/html")


@get("/api/console/connectors", guards=GUARD)
async def connectors_api(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> SnapshotHealth:
    settings: Settings = request.app.state.settings
    return await snapshot_health(db_session, settings.snapshot_dir)


ROUTES = [runs_page, runs_api, run_page, run_api, start_run, connectors_page, digest_email, connectors_api]
