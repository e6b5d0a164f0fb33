"""arq workers on real Redis and PostgreSQL: one worker, two workers, and workers killed mid-run.

Every test compares the final state (tasks, CHI history, customer health) with a clean
in-process run over the same snapshot; only timestamps and run ids may differ.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from arq import create_pool
from arq.connections import RedisSettings
from redis.asyncio import Redis
from sqlalchemy import select

from connectors.demo import write_demo_snapshot
from server.db.base import utcnow
from server.db.models import Account, ChiPoint, Run, RunChunk, RunDelivery, RunPart, Task
from server.db.session import create_engine, session_factory, session_scope
from server.services.runs import RunRequest, prepare_run, run_in_process
from server.settings import Settings
from server.worker import ingest_part_job, sweep_runs
from tests.conftest import POLICY_DIR, ROOT
from tests.hubspot_fake import FakeHubSpot, serving
from tests.security.helpers import seed_users
from tests.services import REDIS_URL, PostgresTemplate, require
from tests.smtp import smtp_server

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]
AS_OF = dt.date(2026, 12, 4)
CHUNK_SIZE = 25
KILL_ROUNDS = 10


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("worker") / "snapshot"
    write_demo_snapshot(folder, accounts=300, seed=11, as_of=AS_OF)
    return folder


@pytest.fixture
def redis_url() -> Iterator[str]:
    require("redis", REDIS_URL)
    asyncio.run(_flush(REDIS_URL))
    yield REDIS_URL
    asyncio.run(_flush(REDIS_URL))


async def _flush(url: str) -> None:
    client = Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def final_state(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        async with session_scope(session_factory(engine)) as session:
            tasks = {
                t.id: (t.rule, t.account_id, t.key, t.severity, t.title, t.active, t.due_on)
                for t in await session.scalars(select(Task))
            }
            points = sorted((p.account_id, p.chi, p.band) for p in await session.scalars(select(ChiPoint)))
            health = {
                a.id: (a.chi, a.band, tuple(r["text"] for r in a.reasons))
                for a in await session.scalars(select(Account))
            }
            runs = [(r.state, r.chunks_done, r.chunks_total) for r in await session.scalars(select(Run))]
        return {"tasks": tasks, "points": points, "health": health, "runs": runs}
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def reference(snapshot: Path, postgres_template: PostgresTemplate) -> dict[str, Any]:
    """The state a clean, single-process run leaves behind."""
    url = postgres_template.copy()

    async def clean_run() -> dict[str, Any]:
        engine = create_engine(url)
        try:
            await run_in_process(
                session_factory(engine), RunRequest(folder=snapshot, policy_dir=POLICY_DIR, chunk_size=CHUNK_SIZE)
            )
        finally:
            await engine.dispose()
        return await final_state(url)

    return asyncio.run(clean_run())


def worker_env(database_url: str, redis_url: str, burst: bool, parts: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CSM_DATABASE_URL": database_url,
        "CSM_REDIS_URL": redis_url,
        "CSM_POLICY_DIR": str(POLICY_DIR),
        "CSM_CHUNK_SIZE": str(CHUNK_SIZE),
        "CSM_INGEST_PARTS": str(parts),
        "CSM_STALE_SECONDS": "2",
        "CSM_SWEEP_SECONDS": "1",
        "CSM_WORKER_BURST": "1" if burst else "0",
        **extra,
    }


def start_worker(
    database_url: str, redis_url: str, burst: bool = False, parts: int = 1, **extra: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "worker"],
        cwd=ROOT,
        env=worker_env(database_url, redis_url, burst, parts, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def enqueue(redis_url: str, folder: Path) -> None:
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        await redis.enqueue_job("start_run", "test", False, str(folder), _job_id=f"start:{time.time_ns()}")
    finally:
        await redis.aclose()


async def run_progress(url: str) -> tuple[str | None, int]:
    engine = create_engine(url)
    try:
        async with session_scope(session_factory(engine)) as session:
            run = await session.scalar(select(Run).order_by(Run.id.desc()).limit(1))
            done = len(list(await session.scalars(select(RunChunk).where(RunChunk.state == "done"))))
        return (run.state if run else None), done
    finally:
        await engine.dispose()


def wait_for(url: str, predicate: Any, timeout: float) -> tuple[str | None, int]:
    deadline = time.monotonic() + timeout
    while True:
        state = asyncio.run(run_progress(url))
        if predicate(*state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"run did not get there within {timeout} s (state {state})")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_one_worker_reaches_the_clean_state(
    snapshot: Path, postgres_template: PostgresTemplate, redis_url: str, reference: dict[str, Any]
) -> None:
    url = postgres_template.copy()
    asyncio.run(enqueue(redis_url, snapshot))
    worker = start_worker(url, redis_url)
    try:
        wait_for(url, lambda state, _done: state == "succeeded", timeout=120)
    finally:
        stop(worker)
    assert asyncio.run(final_state(url)) == reference


def test_two_workers_reading_a_part_each_give_the_same_result_as_one(
    snapshot: Path, postgres_template: PostgresTemplate, redis_url: str, reference: dict[str, Any]
) -> None:
    url = postgres_template.copy()
    asyncio.run(enqueue(redis_url, snapshot))
    workers = [start_worker(url, redis_url, parts=2), start_worker(url, redis_url, parts=2)]
    try:
        wait_for(url, lambda state, _done: state == "succeeded", timeout=120)
    finally:
        for worker in workers:
            stop(worker)
    assert asyncio.run(final_state(url)) == reference
    parts, chunk_workers = asyncio.run(_who_worked(url))
    assert [(part.part_no, part.state) for part in parts] == [(0, "done"), (1, "done")]
    assert sum(part.counts["customers"] for part in parts) == 300
    assert len(chunk_workers) >= 1


async def _who_worked(url: str) -> tuple[list[RunPart], set[str]]:
    engine = create_engine(url)
    try:
        async with session_scope(session_factory(engine)) as session:
            parts = list(await session.scalars(select(RunPart).order_by(RunPart.part_no)))
            return parts, {w for w in await session.scalars(select(RunChunk.worker)) if w}
    finally:
        await engine.dispose()


@pytest.mark.parametrize("round_", range(KILL_ROUNDS))
def test_a_worker_killed_at_a_random_point_then_restarted_reaches_the_clean_state(
    snapshot: Path, postgres_template: PostgresTemplate, redis_url: str, reference: dict[str, Any], round_: int
) -> None:
    rng = random.Random(round_)
    parts = 1 + round_ % 2  # every other round, the reading is split in two parts
    url = postgres_template.copy()
    asyncio.run(enqueue(redis_url, snapshot))
    first = start_worker(url, redis_url, parts=parts)
    # Kill during ingestion, or after a random number of chunks.
    chunks_total = reference["runs"][0][2]
    target = rng.randrange(0, chunks_total)
    if target == 0:
        wait_for(url, lambda state, _done: state == "ingesting", timeout=60)
        time.sleep(rng.random() * 0.5)
    else:
        wait_for(url, lambda _state, done: done >= target, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = start_worker(url, redis_url, parts=parts)
    try:
        wait_for(url, lambda state, _done: state == "succeeded", timeout=120)
    finally:
        stop(second)
    assert asyncio.run(final_state(url)) == reference


async def _hand_back_then_sweep(url: str, redis_url: str, snapshot: Path) -> tuple[int, str, list[Any], str]:
    engine = create_engine(url)
    factory = session_factory(engine)
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        async with session_scope(factory) as session:
            run, _ = await prepare_run(session, RunRequest(folder=snapshot, policy_dir=POLICY_DIR, parts=2))
            run.created_at = utcnow() - dt.timedelta(hours=1)  # queued long ago
            run_id = run.id
        settings = replace(Settings.from_env(), stale_after=dt.timedelta(minutes=5))
        context = {"settings": settings, "factory": factory, "redis": redis, "reading": {f"{run_id}/0"}}
        message = await ingest_part_job(context, run_id, 1)
        queued = [(job.function, job.args) for job in await redis.queued_jobs()]
        swept = await sweep_runs(context)
    finally:
        await redis.aclose()
        await engine.dispose()
    return run_id, message, queued, swept


def test_a_worker_reading_a_part_hands_another_part_back_to_the_queue(
    snapshot: Path, postgres_template: PostgresTemplate, redis_url: str
) -> None:
    """arq gives a worker as many jobs as it has room for; parts are there to spread the reading
    over workers, so a worker reads one at a time and leaves the next to a free worker. A part
    whose job waits so is alive: the sweeper queues only the part nobody has a job for."""
    run_id, message, queued, swept = asyncio.run(_hand_back_then_sweep(postgres_template.copy(), redis_url, snapshot))
    assert message == f"part {run_id}/1: handed back (this worker is reading part {run_id}/0)"
    assert queued == [("ingest_part", (run_id, 1))]
    assert swept == f"run {run_id}: part 0 re-queued"


def test_one_worker_reads_the_parts_of_a_run_one_after_the_other(
    snapshot: Path, postgres_template: PostgresTemplate, redis_url: str, reference: dict[str, Any]
) -> None:
    url = postgres_template.copy()
    asyncio.run(enqueue(redis_url, snapshot))
    worker = start_worker(url, redis_url, parts=3)
    try:
        wait_for(url, lambda state, _done: state == "succeeded", timeout=120)
    finally:
        stop(worker)
    assert asyncio.run(final_state(url)) == reference
    parts, _ = asyncio.run(_who_worked(url))
    spans = sorted((part.started_at, part.finished_at) for part in parts)
    assert len(spans) == 3
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))  # never two at once


# ── what goes out after a run: digests and the CRM write-back ───────────────────────────


async def _deliveries(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        async with session_scope(session_factory(engine)) as session:
            return {d.kind: d.state for d in await session.scalars(select(RunDelivery))}
    finally:
        await engine.dispose()


def test_after_a_run_on_two_workers_each_csm_gets_one_digest_and_the_crm_each_score_once(
    snapshot: Path, postgres_template: PostgresTemplate, redis_url: str
) -> None:
    url = postgres_template.copy()
    accounts = [json.loads(line) for line in (snapshot / "accounts.jsonl").read_text().splitlines()]
    csms = sorted({account["csm"] for account in accounts})
    asyncio.run(seed_users(url, *((email, "csm") for email in csms)))
    with smtp_server() as mailbox, serving(FakeHubSpot()) as hubspot:
        hubspot.companies = {account["crm_id"] for account in accounts if account.get("crm_id")}
        extra = {**mailbox.env(), "CSM_CRM_URL": hubspot.url, "CSM_CRM_TOKEN": hubspot.token}
        asyncio.run(enqueue(redis_url, snapshot))
        workers = [start_worker(url, redis_url, parts=2, **extra) for _ in range(2)]
        try:
            wait_for(url, lambda state, _done: state == "succeeded", timeout=120)
            deadline = time.monotonic() + 60
            while asyncio.run(_deliveries(url)) != {"digest": "done", "crm": "done"}:
                assert time.monotonic() < deadline, asyncio.run(_deliveries(url))
                time.sleep(0.1)
            # The same job again, as a sweeper that thought it lost would queue it: nothing more goes out.
            asyncio.run(_enqueue_again(redis_url, url))
            time.sleep(3)
        finally:
            for worker in workers:
                stop(worker)
    assert sorted(message["To"] for message in mailbox.messages) == csms
    pushed = [update["id"] for update in hubspot.updates]
    assert len(pushed) == len(set(pushed)) == len(hubspot.properties)
    assert set(pushed) == hubspot.companies  # every demo customer is scored


async def _enqueue_again(redis_url: str, url: str) -> None:
    engine = create_engine(url)
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        async with session_scope(session_factory(engine)) as session:
            run_id = await session.scalar(select(Run.id))
        for job in ("send_digests", "push_crm"):
            await redis.enqueue_job(job, run_id, _job_id=f"{job}:{run_id}:again")
    finally:
        await redis.aclose()
        await engine.dispose()


async def _sweep_finished_run(url: str, redis_url: str, snapshot: Path) -> tuple[int, str, list[Any]]:
    engine = create_engine(url)
    factory = session_factory(engine)
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        run, _ = await run_in_process(factory, RunRequest(folder=snapshot, policy_dir=POLICY_DIR))
        async with session_scope(factory) as session:  # closed an hour ago, and its worker died then
            finished = await session.get(Run, run.id)
            assert finished is not None
            finished.finished_at = utcnow() - dt.timedelta(hours=1)
        settings = replace(Settings.from_env(), stale_after=dt.timedelta(minutes=5))
        context = {"settings": settings, "factory": factory, "redis": redis}
        swept = await sweep_runs(context)
        queued = sorted((job.function, job.args) for job in await redis.queued_jobs())
    finally:
        await redis.aclose()
        await engine.dispose()
    return run.id, swept, queued


def test_the_sweeper_queues_the_deliveries_of_a_finished_run_that_never_started_them(
    snapshot: Path, postgres_template: PostgresTemplate, redis_url: str
) -> None:
    run_id, swept, queued = asyncio.run(_sweep_finished_run(postgres_template.copy(), redis_url, snapshot))
    assert swept == f"run {run_id}: digest queued; run {run_id}: crm queued"
    assert queued == [("push_crm", (run_id,)), ("send_digests", (run_id,))]
