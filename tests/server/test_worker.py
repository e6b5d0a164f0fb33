"""arq workers on real Redis and PostgreSQL: one worker, two workers, and workers killed mid-run.

Every test compares the final state (tasks, CHI history, customer health) with a clean
in-process run over the same snapshot; only timestamps and run ids may differ.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from arq import create_pool
from arq.connections import RedisSettings
from redis.asyncio import Redis
from sqlalchemy import select

from connectors.demo import write_demo_snapshot
from server.db.models import Account, ChiPoint, Run, RunChunk, Task
from server.db.session import create_engine, session_factory, session_scope
from server.services.runs import RunRequest, run_in_process
from tests.conftest import POLICY_DIR, ROOT
from tests.services import REDIS_URL, PostgresTemplate, require

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


def worker_env(database_url: str, redis_url: str, burst: bool) -> dict[str, str]:
    return {
        **os.environ,
        "CSM_DATABASE_URL": database_url,
        "CSM_REDIS_URL": redis_url,
        "CSM_POLICY_DIR": str(POLICY_DIR),
        "CSM_CHUNK_SIZE": str(CHUNK_SIZE),
        "CSM_STALE_SECONDS": "2",
        "CSM_SWEEP_SECONDS": "1",
        "CSM_WORKER_BURST": "1" if burst else "0",
    }


def start_worker(database_url: str, redis_url: str, burst: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "worker"],
        cwd=ROOT,
        env=worker_env(database_url, redis_url, burst),
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


def test_two_workers_give_the_same_result_as_one(
    snapshot: Path, postgres_template: PostgresTemplate, redis_url: str, reference: dict[str, Any]
) -> None:
    url = postgres_template.copy()
    asyncio.run(enqueue(redis_url, snapshot))
    workers = [start_worker(url, redis_url), start_worker(url, redis_url)]
    try:
        wait_for(url, lambda state, _done: state == "succeeded", timeout=120)
    finally:
        for worker in workers:
            stop(worker)
    assert asyncio.run(final_state(url)) == reference
    chunk_workers = asyncio.run(_chunk_workers(url))
    assert len(chunk_workers) >= 1


async def _chunk_workers(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with session_scope(session_factory(engine)) as session:
            return {w for w in await session.scalars(select(RunChunk.worker)) if w}
    finally:
        await engine.dispose()


@pytest.mark.parametrize("round_", range(KILL_ROUNDS))
def test_a_worker_killed_at_a_random_point_then_restarted_reaches_the_clean_state(
    snapshot: Path, postgres_template: PostgresTemplate, redis_url: str, reference: dict[str, Any], round_: int
) -> None:
    rng = random.Random(round_)
    url = postgres_template.copy()
    asyncio.run(enqueue(redis_url, snapshot))
    first = start_worker(url, redis_url)
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
    second = start_worker(url, redis_url)
    try:
        wait_for(url, lambda state, _done: state == "succeeded", timeout=120)
    finally:
        stop(second)
    assert asyncio.run(final_state(url)) == reference
