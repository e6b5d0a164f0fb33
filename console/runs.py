"""Engine runs in the console: list, status, counts, errors, progress; start one. Connectors' health."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Redirect, Template
from msgspec import Struct
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Run, RunChunk, RunPart, Snapshot
from server.errors import InvalidInput, NotFound
from server.services.after_run import deliver
from server.services.audit import record
from server.services.deliveries import DELIVERY_KINDS, deliveries_of, summary
from server.services.runs import RunRefused, RunRequest, enqueue_run, run_in_background, runnable_manifest
from server.settings import Settings
from server.web.access import Capability, CurrentUser, requires

GUARD = [requires(Capability.MANAGE_RUNS)]
PAGE_SIZE = 50


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


ROUTES = [runs_page, runs_api, run_page, run_api, start_run]
