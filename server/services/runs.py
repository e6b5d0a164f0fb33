"""Engine runs: snapshot in, scores and reconciled tasks out, in phases any worker can resume.

A run is pinned to one snapshot (by fingerprint) and one published policy version. Its phases:

1. **ingest** (one job per part, `run_part`): stream the snapshot into the engine and the
   daily series, evaluate the part's customers, and stage what the chunks need in `run_fact`
   (its account line, where its raw rows lie in the files, its result). A run is read as one
   part, or split by customer into several that workers read side by side (each reads every
   file, but checks, folds and stages only its own customers). The process that finishes the
   last part adds up their counts and splits the customers into chunks (`run_chunk`).
2. **chunks** (any number of jobs, any number of workers): each claims a chunk in the
   database and, in one transaction, writes its customers' accounts and raw rows (read back
   from the snapshot, refused if it changed), health and CHI history, and applies the
   reconciliation plan of `engine.reconcile` to their tasks.
3. **finish** (one job): adds up the counts, drops the staging rows, closes the run.

Every phase is idempotent: a worker killed at any point leaves the database in a state from
which re-running the phase reaches the same end, and a chunk's state lives in the database,
not in Redis. The in-process mode (`csm run`, the embedded default) runs the same phases one
after the other.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
from arq import create_pool
from arq.connections import RedisSettings
from redis.exceptions import RedisError
from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.files import Part, ReadReport, SnapshotFolderError, SnapshotFolderReader, read_manifest
from engine import Evaluator
from engine.reconcile import StoredTask, engine_values, plan_reconciliation
from engine.snapshot import FILE_ENTITIES, Manifest
from server.db.base import utcnow
from server.db.models import (
    Account,
    ChiPoint,
    PolicyVersion,
    Run,
    RunChunk,
    RunFact,
    RunPart,
    Snapshot,
    Task,
    TaskEvent,
)
from server.db.session import session_scope
from server.db.upsert import upsert
from server.services.ingest import (
    Ingestion,
    StagedAccount,
    account_columns,
    load_portal_entries,
    spanning,
    stage_account,
    stream_snapshot,
    write_records,
    write_series,
)
from server.services.policies import compile_files, current_policies

log = logging.getLogger("csm.runs")
KEPT_ERRORS = 100
WRITE_BATCH = 2_000
STALE_CHUNK = dt.timedelta(minutes=15)  # a chunk claimed longer ago than this is presumed lost

Factory = async_sessionmaker[AsyncSession]


class RunRefused(Exception):
    """The run cannot start or go on (bad folder, bad rows under --strict...); nothing was written."""


class RunInProgress(Exception):
    """Another process is reading this run's snapshot; it carries the run on (nothing to do here)."""


@dataclass(frozen=True)
class RunRequest:
    folder: Path
    policy_dir: Path
    trigger: str = "cli"
    mode: str = "in-process"
    actor: str | None = None
    force: bool = False
    strict: bool = False
    chunk_size: int = 1000
    parts: int = 1  # ingestion split into this many parts, one job each (workers)


def snapshot_fingerprint(folder: Path) -> str:
    """Identity of a snapshot folder: its manifest and the size and time of every file."""
    digest = hashlib.sha256((folder / "manifest.json").read_bytes())
    for entity in FILE_ENTITIES:
        path = folder / f"{entity}.jsonl"
        if path.is_file():
            stat = path.stat()
            digest.update(f"{entity}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


async def prepare_run(session: AsyncSession, request: RunRequest) -> tuple[Run, bool]:
    """The run for this snapshot and the published policies: a new one, or the one to resume.

    Returns (run, finished): `finished` is True when an identical run already succeeded
    (and `force` was not given), in which case there is nothing to do.
    """
    manifest = runnable_manifest(request.folder)
    fingerprint = snapshot_fingerprint(request.folder)
    snapshot = await session.scalar(select(Snapshot).where(Snapshot.fingerprint == fingerprint))
    if snapshot is None:
        snapshot = Snapshot(
            fingerprint=fingerprint,
            folder=str(request.folder.resolve()),
            source=manifest.source,
            as_of=manifest.as_of,
            manifest=msgspec.to_builtins(manifest),
        )
        session.add(snapshot)
        await session.flush()
    version, compiled = await current_policies(session, request.policy_dir)
    existing = await session.scalar(
        select(Run)
        .where(Run.snapshot_id == snapshot.id, Run.policy_version_id == version.id)
        .order_by(Run.id.desc())
        .limit(1)
    )
    if existing is not None and not request.force:
        if existing.state == "succeeded":
            return existing, True
        if existing.state != "failed":
            return existing, False
    run = Run(
        snapshot_id=snapshot.id,
        policy_version_id=version.id,
        policy_hash=compiled.content_hash,
        as_of=manifest.as_of,
        trigger=request.trigger,
        mode=request.mode,
        chunk_size=request.chunk_size,
        parts_total=request.parts,
        created_by=request.actor,
    )
    session.add(run)
    await session.flush()
    session.add_all(RunPart(run_id=run.id, part_no=number) for number in range(request.parts))
    return run, False


async def _run_inputs(factory: Factory, run_id: int) -> tuple[Run, Snapshot, PolicyVersion]:
    async with session_scope(factory) as session:
        run = await session.get(Run, run_id)
        assert run is not None
        snapshot = await session.get(Snapshot, run.snapshot_id)
        version = await session.get(PolicyVersion, run.policy_version_id)
        assert snapshot is not None
        assert version is not None
        return run, snapshot, version


async def _set_run(factory: Factory, run_id: int, **values: Any) -> None:
    async with session_scope(factory) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(**values))


def runnable_manifest(folder: Path) -> Manifest:
    """The snapshot folder's manifest, or RunRefused saying why the folder cannot be run."""
    try:
        return read_manifest(folder)
    except (SnapshotFolderError, OSError) as exc:
        raise RunRefused(str(exc)) from None


def check_strictly(folder: Path) -> None:
    """--strict: read the whole snapshot first and refuse it if any row is bad (nothing written)."""
    runnable_manifest(folder)
    report = ReadReport()
    for _batch in SnapshotFolderReader(folder).batches(report):
        pass  # only the bad rows matter here
    if report.bad_row_count:
        first = "; ".join(str(bad) for bad in report.bad_rows[:5])
        raise RunRefused(f"{report.bad_row_count} bad rows (first: {first}); nothing was written (--strict)")


async def claim_part(
    factory: Factory, run_id: int, part_no: int, worker: str, stale_after: dt.timedelta = STALE_CHUNK
) -> bool:
    """Take a part of the run's ingestion unless it is done or another process reads it (a
    heartbeat older than `stale_after` is presumed lost): of two processes, one reads it. The
    parts of a run that failed meanwhile are left alone."""
    now = utcnow()
    reading = select(Run.id).where(Run.id == run_id, Run.state.in_(("pending", "ingesting")))
    async with session_scope(factory) as session:
        claimed = await session.execute(
            update(RunPart)
            .where(
                RunPart.run_id.in_(reading),
                RunPart.part_no == part_no,
                or_(
                    RunPart.state == "pending",
                    and_(RunPart.state == "running", RunPart.heartbeat_at < now - stale_after),
                ),
            )
            .values(state="running", worker=worker, attempts=RunPart.attempts + 1, started_at=now, heartbeat_at=now)
        )
        if not claimed.rowcount:  # type: ignore[attr-defined]
            return False
        await session.execute(
            update(Run)
            .where(Run.id == run_id, Run.state == "pending")
            .values(state="ingesting", started_at=func.coalesce(Run.started_at, now), error=None)
        )
        return True


async def pending_parts(factory: Factory, run_id: int) -> list[int]:
    async with session_scope(factory) as session:
        rows = await session.scalars(
            select(RunPart.part_no).where(RunPart.run_id == run_id, RunPart.state != "done").order_by(RunPart.part_no)
        )
        return list(rows)


async def note_waiting_part(factory: Factory, run_id: int, part_no: int) -> None:
    """A queued part's job is alive, waiting for a free worker: the sweeper leaves it be."""
    async with session_scope(factory) as session:
        await session.execute(
            update(RunPart)
            .where(RunPart.run_id == run_id, RunPart.part_no == part_no, RunPart.state == "pending")
            .values(heartbeat_at=utcnow())
        )


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a phase of a run.

    A run creates millions of objects and next to no reference cycles, and holds millions more
    (the snapshot's accumulators, the staged results): each automatic collection walks them all
    and finds nothing, which cost a third of the storage phases' time. Cycles made meanwhile
    wait for the next collection after the phase.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


async def ingest(
    factory: Factory,
    run_id: int,
    progress: Callable[[int], None] | None = None,
    stale_after: dt.timedelta = STALE_CHUNK,
) -> None:
    """Phase 1 in this process: read every part not yet staged, then create the chunks.

    Raises RunInProgress when another process is reading a part."""
    for part_no in await pending_parts(factory, run_id):
        if not await ingest_part(factory, run_id, part_no, progress=progress, stale_after=stale_after):
            raise RunInProgress(f"run {run_id} is being read by another process, which carries it on")
    await close_ingestion(factory, run_id)


async def ingest_part(
    factory: Factory,
    run_id: int,
    part_no: int,
    worker: str = "in-process",
    progress: Callable[[int], None] | None = None,
    stale_after: dt.timedelta = STALE_CHUNK,
) -> bool:
    """Phase 1 for one part: read, evaluate and stage its customers. False if another process
    reads it or it is done."""
    if not await claim_part(factory, run_id, part_no, worker, stale_after):
        return False
    with collector_paused():
        await _read_and_stage(factory, run_id, part_no, progress)
    return True


async def _read_and_stage(factory: Factory, run_id: int, part_no: int, progress: Callable[[int], None] | None) -> None:
    run, snapshot, version = await _run_inputs(factory, run_id)
    started = time.perf_counter()
    folder = Path(snapshot.folder)
    compiled = compile_files(version.files)
    async with session_scope(factory) as session:
        portal = await load_portal_entries(session)
    reader = SnapshotFolderReader(folder)
    ingestion = Ingestion(Evaluator(compiled, run.as_of), portal, run.as_of)
    series_written = 0
    this_part = (RunPart.run_id == run_id) & (RunPart.part_no == part_no)

    async def write(batch: list[Any]) -> None:
        nonlocal series_written
        async with session_scope(factory) as session:
            series_written += await write_series(session, batch, run.as_of)
            await session.execute(update(RunPart).where(this_part).values(heartbeat_at=utcnow()))
        if progress is not None:
            progress(ingestion.report.bytes_read)

    await stream_snapshot(reader, Part(part_no, run.parts_total), ingestion, write)
    read_seconds = time.perf_counter() - started
    report = ingestion.report
    account_ids = sorted(ingestion.accounts)
    # Whose data did not arrive whole: their tasks are not resolved by this run.
    all_incomplete = not reader.manifest.complete or report.unattributed
    incomplete = report.incomplete_accounts

    encoder = msgspec.msgpack.Encoder()
    for start in range(0, len(account_ids), WRITE_BATCH):
        rows = []
        for account_id in account_ids[start : start + WRITE_BATCH]:
            complete = not all_incomplete and account_id not in incomplete
            staged = stage_account(ingestion, account_id, complete)
            rows.append(
                {"run_id": run_id, "account_id": account_id, "complete": complete, "data": encoder.encode(staged)}
            )
        async with session_scope(factory) as session:
            await upsert(session, RunFact, rows, ("run_id", "account_id"), ("complete", "data"))
            await session.execute(update(RunPart).where(this_part).values(heartbeat_at=utcnow()))
    counts = {
        "customers": len(account_ids),
        "rows": sum(report.rows_kept.values()),
        "bad_rows": report.bad_row_count,
        "incomplete_customers": len(account_ids) if all_incomplete else len(incomplete & set(account_ids)),
        "series_written": series_written,
        "bytes": report.bytes_read,
    }
    async with session_scope(factory) as session:
        await session.execute(
            update(RunPart)
            .where(this_part)
            .values(
                state="done",
                finished_at=utcnow(),
                counts=counts,
                bad_rows=[msgspec.to_builtins(bad) for bad in report.bad_rows[:KEPT_ERRORS]],
                bad_by_reason=dict(report.bad_by_reason),
                timings={
                    "read": round(read_seconds, 3),
                    "evaluate_and_stage": round(time.perf_counter() - started - read_seconds, 3),
                },
            )
        )


async def close_ingestion(factory: Factory, run_id: int) -> bool:
    """Once every part is staged: add up their counts and split the customers into chunks.

    One process does it (the run leaves "ingesting" in the same transaction); False when a
    part is still being read or the run is closed already."""
    async with session_scope(factory) as session:
        parts = list(await session.scalars(select(RunPart).where(RunPart.run_id == run_id).order_by(RunPart.part_no)))
        if any(part.state != "done" for part in parts):
            return False
        closing = await session.execute(
            update(Run).where(Run.id == run_id, Run.state == "ingesting").values(state="processing")
        )
        if not closing.rowcount:  # type: ignore[attr-defined]
            return False
        run = await session.get(Run, run_id)
        assert run is not None
        account_ids = list(
            await session.scalars(
                select(RunFact.account_id).where(RunFact.run_id == run_id).order_by(RunFact.account_id)
            )
        )
        chunks = [account_ids[i : i + run.chunk_size] for i in range(0, len(account_ids), run.chunk_size)]
        await session.execute(delete(RunChunk).where(RunChunk.run_id == run_id))
        session.add_all(
            RunChunk(run_id=run_id, chunk_no=number, first_account=ids[0], last_account=ids[-1])
            for number, ids in enumerate(chunks)
        )
        counts: Counter[str] = Counter()
        bad_by_reason: Counter[str] = Counter()
        for part in parts:
            counts.update({name: value for name, value in part.counts.items() if name != "bytes"})
            bad_by_reason.update(part.bad_by_reason)
        counts["bytes"] = max(part.counts.get("bytes", 0) for part in parts)  # each part reads every byte
        file_order = {f"{entity}.jsonl": index for index, entity in enumerate(FILE_ENTITIES)}
        bad_rows = sorted(
            (bad for part in parts for bad in part.bad_rows), key=lambda bad: (file_order[bad["file"]], bad["line"])
        )
        run.chunks_total = len(chunks)
        run.chunks_done = 0
        run.counts = dict(counts)
        run.bad_rows = bad_rows[:KEPT_ERRORS]
        run.bad_by_reason = dict(bad_by_reason)
        # A phase's seconds add up its jobs' (as the chunks' do); on several workers they overlap.
        run.timings = {
            phase: round(sum(part.timings.get(phase, 0) for part in parts), 3)
            for phase in ("read", "evaluate_and_stage")
        }
        return True


async def claim_chunk(
    factory: Factory, run_id: int, chunk_no: int, worker: str, stale_after: dt.timedelta = STALE_CHUNK
) -> bool:
    """Take a chunk unless it is done or being processed (claims older than `stale_after` are presumed lost)."""
    now = utcnow()
    async with session_scope(factory) as session:
        claimed = await session.execute(
            update(RunChunk)
            .where(
                RunChunk.run_id == run_id,
                RunChunk.chunk_no == chunk_no,
                or_(
                    RunChunk.state == "pending",
                    and_(RunChunk.state == "running", RunChunk.started_at < now - stale_after),
                ),
            )
            .values(state="running", worker=worker, attempts=RunChunk.attempts + 1, started_at=now)
        )
        return bool(claimed.rowcount)  # type: ignore[attr-defined]


async def process_chunk(
    factory: Factory, run_id: int, chunk_no: int, worker: str = "in-process", stale_after: dt.timedelta = STALE_CHUNK
) -> bool:
    """Phase 2 for one chunk. Returns False if another worker holds it or it is already done."""
    if not await claim_chunk(factory, run_id, chunk_no, worker, stale_after):
        return False
    with collector_paused():
        await _apply_chunk(factory, run_id, chunk_no)
    return True


async def _apply_chunk(factory: Factory, run_id: int, chunk_no: int) -> None:
    started = time.perf_counter()
    decoder = msgspec.msgpack.Decoder(StagedAccount)
    async with session_scope(factory) as session:
        run = await session.get(Run, run_id)
        chunk = await session.get(RunChunk, (run_id, chunk_no))
        assert run is not None
        assert chunk is not None
        facts = await session.execute(
            select(RunFact.account_id, RunFact.data)
            .where(
                RunFact.run_id == run_id,
                RunFact.account_id >= chunk.first_account,
                RunFact.account_id <= chunk.last_account,
            )
            .order_by(RunFact.account_id)
        )
        staged = [(account_id, decoder.decode(data)) for account_id, data in facts]
        counts, errors = await apply_results(session, run, staged)
        counts["seconds"] = round(time.perf_counter() - started, 3)
        chunk.state = "done"
        chunk.finished_at = utcnow()
        chunk.counts = {**counts, "errors": errors[:20]}
        await session.execute(update(Run).where(Run.id == run_id).values(chunks_done=Run.chunks_done + 1))


async def apply_results(
    session: AsyncSession, run: Run, staged: Sequence[tuple[str, StagedAccount]]
) -> tuple[dict[str, Any], list[str]]:
    """Write these customers' accounts and raw rows, health, CHI history and reconciled tasks
    (one transaction). The raw rows are read back from the snapshot, which must not have changed."""
    snapshot = await session.get(Snapshot, run.snapshot_id)
    assert snapshot is not None
    folder = Path(snapshot.folder)
    if snapshot_fingerprint(folder) != snapshot.fingerprint:
        raise RunRefused(f"{folder}: the snapshot changed since this run read it; start a new run")
    now = utcnow()
    counts: Counter[str] = Counter()
    errors: list[str] = []
    scored_accounts = []  # both lists: an executemany takes rows with the same columns
    unscored_accounts = []
    points = []
    for account_id, item in staged:
        result = item.result
        counts["scored"] += result.chi is not None
        if result.errors:
            counts["customers_with_errors"] += 1
            errors.extend(f"{account_id}: {issue.where}: {issue.message}" for issue in result.errors)
        facts = item.facts
        values: dict[str, Any] = {
            **account_columns(item.line, run.id, run.as_of),
            "policy_segments": result.segments,
            "facts": facts,
            "products": facts.get("contracted_product_codes", []),
            "has_active_order": bool(facts.get("has_active_order", False)),
            "renewal_date": _date(facts.get("renewal_date")),
            "scored_run_id": run.id,
            "updated_at": now,
        }
        if result.chi is None:  # the customer keeps its last score
            unscored_accounts.append(values)
        else:
            scored_accounts.append(values)
            values.update(
                chi=result.chi,
                band=result.band,
                sections=result.sections,
                points_lost=result.points_lost,
                reasons=msgspec.to_builtins(result.reasons),
                coverage=result.coverage,
                policy_hash=result.policy_hash,
            )
            points.append(
                {
                    "account_id": account_id,
                    "run_id": run.id,
                    "as_of": run.as_of,
                    "chi": result.chi,
                    "band": result.band,
                    "policy_hash": result.policy_hash,
                    "sections": result.sections,
                }
            )
    for accounts in (scored_accounts, unscored_accounts):
        if accounts:
            await upsert(session, Account, accounts, ("id",), [name for name in accounts[0] if name != "id"])
    counts["records_written"] += await write_records(session, folder, staged, run.id)
    await upsert(session, ChiPoint, points, ("account_id", "run_id"))
    counts["chi_points"] += len(points)
    await _reconcile(session, run, staged, now, counts)
    return dict(counts), errors


def _date(value: Any) -> dt.date | None:
    return dt.date.fromisoformat(value) if isinstance(value, str) else None


async def _reconcile(
    session: AsyncSession, run: Run, staged: Sequence[tuple[str, StagedAccount]], now: dt.datetime, counts: Counter[str]
) -> None:
    ids = [account_id for account_id, _ in staged]
    stored: dict[str, dict[str, StoredTask]] = {account_id: {} for account_id in ids}
    for task in await session.scalars(select(Task).where(spanning(Task.account_id, ids))):
        if task.account_id not in stored:
            continue  # another customer's, between two of this chunk's
        stored[task.account_id][task.id] = StoredTask(
            task_id=task.id,
            rule=task.rule,
            active=task.active,
            due_on=task.due_on,
            category=task.category,
            severity=task.severity,
            title=task.title,
            description=task.description,
            evidence=task.evidence,
            thresholds=task.thresholds,
            condition=task.condition,
            severity_case=task.severity_case,
            policy_hash=task.policy_hash,
        )
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    def event(task_id: str, kind: str, before: str | None = None, after: str | None = None) -> None:
        events.append(
            {
                "task_id": task_id,
                "at": now,
                "actor": "engine",
                "kind": kind,
                "from_value": before,
                "to_value": after,
                "run_id": run.id,
            }
        )

    for account_id, item in staged:
        plan = plan_reconciliation(
            item.result.tasks,
            stored[account_id],
            policy_hash=run.policy_hash,
            complete=item.complete,
            failed_rules=item.result.failed_rules,
        )
        counts["withheld"] += plan.withheld
        for firing in plan.insert:
            inserts.append(
                {
                    **engine_values(firing, run.policy_hash),
                    "id": firing.task_id,
                    "rule": firing.rule,
                    "account_id": account_id,
                    "key": firing.key,
                    "due_on": firing.due_on,
                    "active": True,
                    "opened_at": now,
                    "updated_at": now,
                    "opened_run_id": run.id,
                    "updated_run_id": run.id,
                }
            )
            event(firing.task_id, "opened", None, firing.severity)
        for change in plan.update:
            updates.append({"id": change.task_id, **change.values, "updated_at": now, "updated_run_id": run.id})
            if "severity" in change.values:
                event(change.task_id, "severity", change.severity_before, change.values["severity"])
        for change in plan.reactivate:
            updates.append(
                {
                    "id": change.task_id,
                    **change.values,
                    "active": True,
                    "reopened_at": now,
                    "resolved_at": None,
                    "updated_at": now,
                    "updated_run_id": run.id,
                }
            )
            event(change.task_id, "reopened", None, change.values.get("severity", change.severity_before))
        for task_id in plan.resolve:
            updates.append(
                {"id": task_id, "active": False, "resolved_at": now, "updated_at": now, "updated_run_id": run.id}
            )
            event(task_id, "resolved")
        counts["opened"] += len(plan.insert)
        counts["updated"] += len(plan.update)
        counts["reopened"] += len(plan.reactivate)
        counts["resolved"] += len(plan.resolve)
    # A second worker may have raced us to a chunk presumed lost: an existing id is not an error.
    await upsert(session, Task, inserts, ("id",))
    for start in range(0, len(updates), WRITE_BATCH):
        await session.execute(update(Task), updates[start : start + WRITE_BATCH])
    if events:
        await session.execute(insert(TaskEvent), events)


async def pending_chunks(factory: Factory, run_id: int) -> list[int]:
    async with session_scope(factory) as session:
        rows = await session.scalars(
            select(RunChunk.chunk_no)
            .where(RunChunk.run_id == run_id, RunChunk.state != "done")
            .order_by(RunChunk.chunk_no)
        )
        return list(rows)


async def finish_run(factory: Factory, run_id: int) -> Run:
    """Phase 3: add up the chunks' counts and close the run (once every chunk is done)."""
    async with session_scope(factory) as session:
        run = await session.get(Run, run_id)
        assert run is not None
        if run.state == "succeeded":
            return run
        open_chunks = await session.scalar(
            select(func.count()).select_from(RunChunk).where(RunChunk.run_id == run_id, RunChunk.state != "done")
        )
        if open_chunks:
            raise RunRefused(f"run {run_id} still has {open_chunks} chunks to process")
        totals: Counter[str] = Counter()
        errors: list[str] = []
        chunk_seconds = 0.0
        for chunk in await session.scalars(select(RunChunk).where(RunChunk.run_id == run_id)):
            for name, value in chunk.counts.items():
                if name == "errors":
                    errors.extend(value)
                elif name == "seconds":
                    chunk_seconds += value
                else:
                    totals[name] += value
        await session.execute(delete(RunFact).where(RunFact.run_id == run_id))
        run.counts = {**run.counts, **totals}
        run.errors = errors[:KEPT_ERRORS]
        run.error = None  # an earlier attempt's failure, overcome
        run.timings = {**run.timings, "write_customers": round(chunk_seconds, 3)}
        run.state = "succeeded"
        run.finished_at = utcnow()
        if run.started_at is not None:
            run.timings = {**run.timings, "total": round((run.finished_at - run.started_at).total_seconds(), 3)}
        return run


async def fail_run(factory: Factory, run_id: int, error: str) -> None:
    await _set_run(factory, run_id, state="failed", error=error[:2000], finished_at=utcnow())


async def run_in_process(
    factory: Factory,
    request: RunRequest,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Run, bool]:
    """The whole run in this process (the embedded default): the same phases the workers run.

    Returns (run, already_done). `progress(phase, done, total)` is called as work advances.
    """
    if request.strict:
        check_strictly(request.folder)
    async with session_scope(factory) as session:
        run, finished = await prepare_run(session, request)
    if finished:
        return run, True
    total_bytes = SnapshotFolderReader(request.folder).total_bytes()
    try:
        if run.state in ("pending", "ingesting"):
            await ingest(factory, run.id, lambda done: progress("read", done, total_bytes) if progress else None)
        chunks = await pending_chunks(factory, run.id)
        for index, chunk_no in enumerate(chunks):
            await process_chunk(factory, run.id, chunk_no)
            if progress is not None:
                progress("tasks", index + 1, len(chunks))
        run = await finish_run(factory, run.id)
    except RunInProgress:
        raise
    except RunRefused as exc:
        await fail_run(factory, run.id, str(exc))
        raise
    except Exception as exc:
        await fail_run(factory, run.id, f"{type(exc).__name__}: {exc}")
        raise
    return run, False


_BACKGROUND: set[asyncio.Task[Any]] = set()


def run_in_background(
    factory: Factory, request: RunRequest, then: Callable[[Run], Awaitable[object]] | None = None
) -> None:
    """Start a run in this process without waiting for it (the console, in embedded mode);
    `then` follows a run that succeeded (its deliveries)."""

    async def work() -> None:
        try:
            run, already_done = await run_in_process(factory, request)
            if then is not None and not already_done:
                await then(run)
        except Exception:  # recorded on the run by run_in_process; nothing else to tell here
            log.exception("background run failed")

    task = asyncio.create_task(work())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def enqueue_run(redis_url: str, request: RunRequest) -> str:
    """Queue a run for the arq workers; returns the job id. A folder that cannot be run, or Redis
    out of reach, is refused here rather than in a worker's log."""
    runnable_manifest(request.folder)
    try:
        # One quick retry: whoever starts a run is waiting for the answer.
        redis = await create_pool(replace(RedisSettings.from_dsn(redis_url), conn_retries=1))
    except (RedisError, OSError) as exc:
        raise RunRefused(f"cannot reach Redis at {redis_url}: {exc}") from None
    try:
        folder = str(request.folder.resolve())
        arguments = (request.trigger, request.force, folder, request.actor)
        job = await redis.enqueue_job("start_run", *arguments, _job_id=f"start:{folder}:{time.time_ns()}")
        assert job is not None  # the job id is new every time
        return job.job_id
    finally:
        await redis.aclose()
