"""The arq worker: the weekday-morning run, shared by any number of workers, and its sweeper.

    csm worker            (or: arq server.worker.WorkerSettings)

Jobs carry ids only; the database is the ledger. A run's phases (see server.services.runs) are
jobs: `start_run` enqueues one `ingest_part` per part of the customers (`CSM_INGEST_PARTS`),
the part that completes the reading enqueues one `process_chunk` per chunk, the chunk that
completes the run enqueues `finish_run`, and that enqueues what goes out after the run:
`send_digests` (the CSMs' morning emails) and `push_crm` (the CHI write-back). arq delivers
at least once and re-runs a killed job only after the longest job timeout has passed, so
`sweep_runs` (every `CSM_SWEEP_SECONDS`) looks at the database instead: a chunk claimed longer
ago than `CSM_STALE_SECONDS`, a part whose heartbeat stopped, a run whose parts or chunks are
all done but which was never moved on, a finished run whose deliveries never started — each
gets a fresh job. Claims in the database make a second copy of a job harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from arq import cron
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Retry, func
from sqlalchemy import select

from server.db.base import utcnow
from server.db.models import Run, RunChunk, RunDelivery, RunPart
from server.db.session import create_engine, session_factory, session_scope
from server.services.crm import push_health
from server.services.digests import MAX_ATTEMPTS, send_digests
from server.services.runs import (
    RunRefused,
    RunRequest,
    close_ingestion,
    fail_run,
    finish_run,
    ingest_part,
    note_waiting_part,
    pending_chunks,
    pending_parts,
    prepare_run,
    process_chunk,
)
from server.services.tasks import wake_snoozed_tasks
from server.settings import Settings

log = logging.getLogger("csm.worker")
SETTINGS = Settings.from_env()
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
DIGEST_RETRY_SECONDS = 300  # a digest the SMTP server refused waits this long times the try number


async def startup(ctx: dict[str, Any]) -> None:
    ctx["settings"] = SETTINGS
    ctx["reading"] = set()  # the parts this worker reads (arq gives each job a copy of ctx, not of this set)
    ctx["engine"] = create_engine(SETTINGS.database_url)
    ctx["factory"] = session_factory(ctx["engine"])


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["engine"].dispose()


async def _enqueue_chunks(redis: ArqRedis, factory: Any, run_id: int) -> int:
    chunks = await pending_chunks(factory, run_id)
    for chunk_no in chunks:
        await redis.enqueue_job("process_chunk", run_id, chunk_no, _job_id=f"chunk:{run_id}:{chunk_no}")
    if not chunks:
        await redis.enqueue_job("finish_run", run_id, _job_id=f"finish:{run_id}")
    return len(chunks)


async def start_run(
    ctx: dict[str, Any],
    trigger: str = "schedule",
    force: bool = False,
    folder: str | None = None,
    actor: str | None = None,
) -> str:
    """Create (or resume) the run of the latest snapshot with the published policies; ingest it."""
    settings: Settings = ctx["settings"]
    factory = ctx["factory"]
    request = RunRequest(
        folder=Path(folder) if folder else settings.snapshot_dir,
        policy_dir=settings.policy_dir,
        trigger=trigger,
        mode="workers",
        force=force,
        chunk_size=settings.chunk_size,
        parts=settings.ingest_parts,
        actor=actor,
    )
    try:
        async with session_scope(factory) as session:
            run, finished = await prepare_run(session, request)
    except RunRefused as exc:
        log.error("run refused: %s", exc)
        return f"refused: {exc}"
    if finished:
        return f"run {run.id} already done"
    return await ingest_run(ctx, run.id)


async def ingest_run(ctx: dict[str, Any], run_id: int) -> str:
    """Queue the run's parts not yet read; once all are, close the reading and queue the chunks."""
    factory = ctx["factory"]
    async with session_scope(factory) as session:
        run = await session.get(Run, run_id)
        state = run.state if run is not None else "missing"
    if state in ("pending", "ingesting"):
        parts = await pending_parts(factory, run_id)
        for part_no in parts:
            await ctx["redis"].enqueue_job("ingest_part", run_id, part_no, _job_id=f"part:{run_id}:{part_no}")
        if parts:
            return f"run {run_id}: {len(parts)} parts queued"
        await close_ingestion(factory, run_id)
    queued = await _enqueue_chunks(ctx["redis"], factory, run_id)
    return f"run {run_id}: {queued} chunks queued"


async def ingest_part_job(ctx: dict[str, Any], run_id: int, part_no: int) -> str:
    settings: Settings = ctx["settings"]
    factory = ctx["factory"]
    reading: set[str] = ctx["reading"]
    if reading:
        # One part at a time per worker: the parts are there to spread memory and CPU over
        # workers, and arq hands a worker as many jobs as it has room for. Back to the queue,
        # for a worker that is free (or for this one, once it is).
        await ctx["redis"].enqueue_job(
            "ingest_part", run_id, part_no, _job_id=f"part:{run_id}:{part_no}:{time.time_ns()}", _defer_by=1
        )
        await note_waiting_part(factory, run_id, part_no)
        return f"part {run_id}/{part_no}: handed back (this worker is reading part {', '.join(sorted(reading))})"
    part = f"{run_id}/{part_no}"
    reading.add(part)
    try:
        read = await ingest_part(factory, run_id, part_no, WORKER_NAME, stale_after=settings.stale_after)
    except Exception as exc:
        await fail_run(factory, run_id, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        reading.discard(part)
    outcome = f"part {run_id}/{part_no}: {'read' if read else 'not read here (done, being read, or its run failed)'}"
    if not await close_ingestion(factory, run_id):
        return outcome
    queued = await _enqueue_chunks(ctx["redis"], factory, run_id)
    return f"{outcome}; {queued} chunks queued"


async def process_chunk_job(ctx: dict[str, Any], run_id: int, chunk_no: int) -> str:
    settings: Settings = ctx["settings"]
    try:
        done = await process_chunk(ctx["factory"], run_id, chunk_no, WORKER_NAME, stale_after=settings.stale_after)
    except RunRefused as exc:  # the snapshot changed under the run: no retry can help
        await fail_run(ctx["factory"], run_id, str(exc))
        return f"chunk {run_id}/{chunk_no}: {exc}"
    if not await pending_chunks(ctx["factory"], run_id):
        await ctx["redis"].enqueue_job("finish_run", run_id, _job_id=f"finish:{run_id}")
    return f"chunk {run_id}/{chunk_no}: {'processed' if done else 'taken by another worker or done'}"


async def finish_run_job(ctx: dict[str, Any], run_id: int) -> str:
    try:
        run = await finish_run(ctx["factory"], run_id)
    except RunRefused as exc:
        return str(exc)  # a chunk is still open; its job (or the sweeper) will finish the run
    # What goes out after the run, each in its own job (a second copy finds its work done).
    for kind, job in DELIVERY_JOBS.items():
        await ctx["redis"].enqueue_job(job, run_id, _job_id=f"{kind}:{run_id}")
    return f"run {run.id} {run.state}"


async def send_digests_job(ctx: dict[str, Any], run_id: int) -> str:
    """Every CSM's digest for today, each sent once; refused sends are tried again later."""
    outcomes = await send_digests(ctx["factory"], run_id, ctx["settings"])
    if outcomes["failed"] and ctx["job_try"] < MAX_ATTEMPTS:
        raise Retry(defer=DIGEST_RETRY_SECONDS * ctx["job_try"])
    return f"run {run_id} digests: " + (", ".join(f"{name} {n}" for name, n in sorted(outcomes.items())) or "none")


async def push_crm_job(ctx: dict[str, Any], run_id: int) -> str:
    counts = await push_health(ctx["factory"], run_id, ctx["settings"])
    return f"run {run_id} CRM write-back: " + (", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "off")


async def sweep_runs(ctx: dict[str, Any]) -> str:
    """Give fresh jobs to work the database says is unfinished and unattended."""
    settings: Settings = ctx["settings"]
    factory = ctx["factory"]
    redis: ArqRedis = ctx["redis"]
    stale = utcnow() - settings.stale_after
    actions = []
    async with session_scope(factory) as session:
        runs = list(await session.scalars(select(Run).where(Run.state.in_(("pending", "ingesting", "processing")))))
        parts = {run.id: list(await session.scalars(select(RunPart).where(RunPart.run_id == run.id))) for run in runs}
        chunks = {
            run.id: list(
                await session.scalars(select(RunChunk).where(RunChunk.run_id == run.id, RunChunk.state != "done"))
            )
            for run in runs
        }
    for run in runs:
        if run.state in ("pending", "ingesting"):
            actions.extend(await _sweep_parts(redis, run, parts[run.id], stale))
            continue
        open_chunks = chunks[run.id]
        if not open_chunks:
            await redis.enqueue_job("finish_run", run.id, _job_id=f"finish:{run.id}:sweep:{int(utcnow().timestamp())}")
            actions.append(f"run {run.id}: finish")
            continue
        for chunk in open_chunks:
            lost = chunk.state == "running" and chunk.started_at is not None and chunk.started_at < stale
            if chunk.state == "pending" or lost:
                # A new job id: arq keeps the old one (and its result) and would refuse it.
                await redis.enqueue_job(
                    "process_chunk", run.id, chunk.chunk_no, _job_id=f"chunk:{run.id}:{chunk.chunk_no}:{chunk.attempts}"
                )
                if lost:
                    actions.append(f"run {run.id}: chunk {chunk.chunk_no} re-queued")
    actions.extend(await _sweep_deliveries(redis, factory, stale))
    return "; ".join(actions) or "nothing to do"


DELIVERY_JOBS = {"digest": "send_digests", "crm": "push_crm"}


async def _sweep_deliveries(redis: ArqRedis, factory: Any, stale: dt.datetime) -> list[str]:
    """Jobs for the deliveries of the day's finished runs that never started (their worker died
    between closing the run and queuing them)."""
    async with session_scope(factory) as session:
        finished = select(Run.id).where(
            Run.state == "succeeded", Run.finished_at < stale, Run.finished_at > utcnow() - dt.timedelta(days=1)
        )
        run_ids = list(await session.scalars(finished))
        delivered = select(RunDelivery.run_id, RunDelivery.kind).where(RunDelivery.run_id.in_(run_ids))
        started = {(run_id, kind) for run_id, kind in await session.execute(delivered)}
    actions = []
    for run_id in run_ids:
        for kind, job in DELIVERY_JOBS.items():
            if (run_id, kind) not in started:
                await redis.enqueue_job(job, run_id, _job_id=f"{kind}:{run_id}:sweep:{int(utcnow().timestamp())}")
                actions.append(f"run {run_id}: {kind} queued")
    return actions


async def _sweep_parts(redis: ArqRedis, run: Run, parts: list[RunPart], stale: dt.datetime) -> list[str]:
    """Fresh jobs for a run's parts that nobody reads, or for closing the reading if all are read."""
    actions = []
    if all(part.state == "done" for part in parts):
        last_read = max((part.finished_at for part in parts if part.finished_at), default=run.created_at)
        if last_read < stale:
            await redis.enqueue_job("ingest_run", run.id, _job_id=f"ingest:{run.id}:{int(last_read.timestamp())}")
            actions.append(f"run {run.id}: reading closed")
        return actions
    for part in parts:
        # A running part's heartbeat comes from its reading, a pending one's from its job waiting.
        last_sign_of_life = part.heartbeat_at or run.created_at
        if part.state != "done" and last_sign_of_life < stale:
            # A new job id per attempt: arq keeps the old one (and its result) and would refuse it.
            await redis.enqueue_job(
                "ingest_part", run.id, part.part_no, _job_id=f"part:{run.id}:{part.part_no}:{part.attempts}"
            )
            actions.append(f"run {run.id}: part {part.part_no} re-queued")
    return actions


async def wake_snoozed(ctx: dict[str, Any]) -> str:
    """Snoozed tasks whose date has come go back to the state they had (a transition by "system")."""
    settings: Settings = ctx["settings"]
    today = dt.datetime.now(settings.timezone).date()
    async with session_scope(ctx["factory"]) as session:
        woken = await wake_snoozed_tasks(session, today)
    return f"{woken} tasks woken"


async def scheduled_run(ctx: dict[str, Any]) -> str:
    return await start_run(ctx, "schedule")


def _sweep_seconds() -> set[int]:
    step = max(1, min(60, SETTINGS.sweep_seconds))
    return set(range(0, 60, step))


def redis_settings() -> RedisSettings:
    if not SETTINGS.redis_url:
        raise RuntimeError("CSM_REDIS_URL is not set: the worker needs Redis (the embedded default is `csm run`)")
    return RedisSettings.from_dsn(SETTINGS.redis_url)


class WorkerSettings:
    functions = [  # noqa: RUF012  (arq reads these class attributes)
        func(start_run, name="start_run", timeout=3 * 3600, max_tries=3),
        func(ingest_run, name="ingest_run", timeout=600, max_tries=3),
        func(ingest_part_job, name="ingest_part", timeout=3 * 3600, max_tries=3),
        func(process_chunk_job, name="process_chunk", timeout=1800, max_tries=5),
        func(finish_run_job, name="finish_run", timeout=600, max_tries=5),
        func(sweep_runs, name="sweep_runs", timeout=120, max_tries=2),
        func(send_digests_job, name="send_digests", timeout=1800, max_tries=MAX_ATTEMPTS),
        func(push_crm_job, name="push_crm", timeout=1800, max_tries=3),
    ]
    cron_jobs = [  # noqa: RUF012
        cron(
            scheduled_run,
            name="scheduled_run",
            weekday={0, 1, 2, 3, 4},
            hour=SETTINGS.run_at.hour,
            minute=SETTINGS.run_at.minute,
            max_tries=3,
            timeout=3 * 3600,
            unique=True,
        ),
        cron(sweep_runs, name="sweep", second=_sweep_seconds(), max_tries=2, timeout=120, unique=True),
        cron(wake_snoozed, name="wake_snoozed", hour={0, 5}, minute=1, max_tries=3, timeout=300, unique=True),
    ]
    timezone = SETTINGS.timezone
    on_startup = startup
    on_shutdown = shutdown
    health_check_interval = 30
    job_completion_wait = 30
    keep_result = 600
    max_jobs = 4
    burst = os.environ.get("CSM_WORKER_BURST") == "1"  # stop when the queue is empty (tests, one-off runs)
    redis_settings = redis_settings() if SETTINGS.redis_url else None


__all__ = ["WorkerSettings"]
