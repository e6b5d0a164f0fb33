"""Dry-runs: evaluate a draft policy set beside the published one over one snapshot, write nothing.

The console starts a dry-run as a background task of the web process; its progress and, at the
end, its report are kept in the `setting` table under `dry_run:<id>`, so any web process can
answer the page that polls it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.files import ReadReport, SnapshotFolderReader
from engine import Evaluator
from engine.compiler import CompiledPolicies
from engine.diff import DiffReport, PolicyDiff
from server.db.base import utcnow
from server.db.models import Setting, Snapshot
from server.db.session import session_scope
from server.db.upsert import upsert
from server.services.ingest import PortalEntries, load_portal_entries

JOB_PREFIX = "dry_run:"
_RUNNING: set[asyncio.Task[None]] = set()  # keeps background tasks referenced until they finish


def evaluate_folder(
    policy_sets: Sequence[CompiledPolicies],
    folder: Path,
    progress: Callable[[int], None] | None = None,
    portal: PortalEntries | None = None,
) -> tuple[list[Evaluator], ReadReport]:
    """Stream one snapshot folder into one evaluator per policy set (one pass over the files),
    with the sentiment and meeting outcomes recorded in the `portal`, as a run reads them."""
    reader = SnapshotFolderReader(folder)
    evaluators = [Evaluator(policies, reader.as_of) for policies in policy_sets]
    report = ReadReport()
    for entity, rows, _lines, _offsets in reader.batches(report):
        if entity == "meetings" and portal is not None:
            rows = portal.with_outcomes(rows, reader.as_of)
        for evaluator in evaluators:
            if entity == "accounts":
                for row in rows:
                    evaluator.add_account(row)
            else:
                evaluator.add_rows(entity, rows)
        if progress is not None:
            progress(report.bytes_read)
    if portal is not None:
        for evaluator in evaluators:
            portal.add_sentiment(evaluator)
    return evaluators, report


def dry_run_folder(
    published: CompiledPolicies,
    draft: CompiledPolicies,
    folder: Path,
    examples: int = 5,
    progress: Callable[[int], None] | None = None,
    portal: PortalEntries | None = None,
) -> tuple[DiffReport, ReadReport]:
    """What publishing `draft` would change for every customer of the snapshot in `folder`
    (with the portal's entries when given: the console passes them, `csm policy dry-run` reads files only)."""
    (before, after), report = evaluate_folder([published, draft], folder, progress, portal)
    diff = PolicyDiff(examples=examples)
    for old, new in zip(before.results(), after.results(), strict=True):
        diff.add(old, new)
    return diff.report(), report


async def latest_snapshot_folder(session: AsyncSession, default: Path) -> Path:
    """The folder of the latest snapshot a run read that is still there, else the configured one."""
    for folder in await session.scalars(select(Snapshot.folder).order_by(Snapshot.id.desc()).limit(20)):
        if (Path(folder) / "manifest.json").is_file():
            return Path(folder)
    return default


async def _save(factory: async_sessionmaker[AsyncSession], job_id: str, value: dict[str, Any]) -> None:
    async with session_scope(factory) as session:
        await upsert(session, Setting, [{"key": JOB_PREFIX + job_id, "value": value}], ("key",), ("value",))


async def start_dry_run(
    factory: async_sessionmaker[AsyncSession],
    published: CompiledPolicies,
    draft: CompiledPolicies,
    folder: Path,
    actor: str,
) -> str:
    """Start a dry-run in the background; returns the id to poll with `dry_run_status`."""
    job_id = secrets.token_hex(8)
    total = SnapshotFolderReader(folder).total_bytes()
    state: dict[str, Any] = {
        "state": "running",
        "bytes": 0,
        "total": total,
        "folder": str(folder),
        "actor": actor,
        "started_at": utcnow().isoformat(),
        "published": published.content_hash,
        "draft": draft.content_hash,
    }
    await _save(factory, job_id, state)
    task = asyncio.create_task(_run(factory, job_id, state, published, draft, folder))
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    return job_id


async def _run(
    factory: async_sessionmaker[AsyncSession],
    job_id: str,
    state: dict[str, Any],
    published: CompiledPolicies,
    draft: CompiledPolicies,
    folder: Path,
) -> None:
    progress = {"bytes": 0}

    def note(done: int) -> None:
        progress["bytes"] = done

    async with session_scope(factory) as session:
        portal = await load_portal_entries(session)
    work = asyncio.ensure_future(asyncio.to_thread(dry_run_folder, published, draft, folder, 5, note, portal))
    while not work.done():
        await asyncio.wait({work}, timeout=1.0)
        await _save(factory, job_id, {**state, "bytes": progress["bytes"]})
    try:
        report, read = work.result()
    except Exception as exc:
        await _save(factory, job_id, {**state, "state": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return
    await _save(
        factory,
        job_id,
        {
            **state,
            "state": "done",
            "bytes": state["total"],
            "finished_at": utcnow().isoformat(),
            "bad_rows": read.bad_row_count,
            "report": msgspec.to_builtins(report),
        },
    )


async def dry_run_status(session: AsyncSession, job_id: str) -> dict[str, Any] | None:
    setting = await session.get(Setting, JOB_PREFIX + job_id)
    return setting.value if setting is not None else None
