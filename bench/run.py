"""End-to-end run benchmark: a big snapshot through the whole engine run, against merely decoding it.

    .venv/bin/python -m bench.run                    # 100,000 customers, 91 days (about 1.6 GB)
    .venv/bin/python -m bench.run --accounts 10000   # a quicker look

Each measured phase runs in its own process, so its peak memory (max RSS) is its own:

1. decode: every line of every file decoded by msgspec into the engine's row structs, nothing else;
   then fold: decoded, checked, folded and every customer evaluated, nothing stored (the floor of a run);
2. run: `csm run` on a fresh SQLite database (read, check, fold, evaluate, store customer data,
   stage, scores and tasks);
3. re-run: the same snapshot and policies again (`--force`): must write zero task rows;
   then store: what the run stored, copied by SQLite alone into an empty database with the
   same schema (`INSERT ... SELECT`, no Python per row): the floor of storing it;
   then native (when DuckDB is installed, as by scripts/setup): the floor of a columnar design
   (bench/native_floor.py);
4. workers (when PostgreSQL and Redis answer): the run on PostgreSQL with 1 and with 2 arq workers,
   the reading split into one part per worker (`--workers-only 2,4` measures only these, for
   snapshots too big for the rest).

Figures go to a table and to bench/out/run.json. The snapshot is generated once into bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
AS_OF = dt.date(2026, 12, 4)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_of(pid: int) -> float:
    """A running process's peak memory in MB (Linux: VmHWM), 0 where it cannot be read."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0.0)


# ── phases (each run in a child process: `python -m bench.run --phase NAME ...`) ────────


def phase_decode(snapshot: Path) -> dict[str, Any]:
    import msgspec

    from engine.snapshot import FILE_ENTITIES, ROW_TYPES

    started = time.perf_counter()
    rows = 0
    for entity in FILE_ENTITIES:
        decoder = msgspec.json.Decoder(ROW_TYPES[entity])
        with (snapshot / f"{entity}.jsonl").open("rb", buffering=1 << 20) as handle:
            for line in handle:
                decoder.decode(line)
                rows += 1
    return {"seconds": time.perf_counter() - started, "rows": rows, "peak_mb": peak_rss_mb()}


def phase_fold(snapshot: Path) -> dict[str, Any]:
    """The engine's part alone, nothing kept for the portal and nothing stored: the floor of a run."""
    import gc

    from connectors.files import ReadReport, SnapshotFolderReader
    from engine import Evaluator, load_policies

    started = time.perf_counter()
    reader = SnapshotFolderReader(snapshot)
    evaluator = Evaluator(load_policies(ROOT / "policies"), reader.as_of)
    gc.disable()  # as the run does while it reads
    for entity, rows, _lines, _offsets in reader.batches(ReadReport()):
        if entity == "accounts":
            for account in rows:
                evaluator.add_account(account)
        else:
            evaluator.add_rows(entity, rows)
    read = time.perf_counter() - started
    for _result in evaluator.results():
        pass
    return {"seconds": time.perf_counter() - started, "read_seconds": read, "peak_mb": peak_rss_mb()}


def phase_run(snapshot: Path, database: str, force: bool) -> dict[str, Any]:
    from server.db.migrate import upgrade
    from server.db.session import create_engine, session_factory
    from server.services.runs import RunRequest, run_in_process

    async def main() -> dict[str, Any]:
        await upgrade(database)
        engine = create_engine(database)
        try:
            started = time.perf_counter()
            run, _ = await run_in_process(
                session_factory(engine),
                RunRequest(folder=snapshot, policy_dir=ROOT / "policies", force=force, chunk_size=1000),
            )
            seconds = time.perf_counter() - started
        finally:
            await engine.dispose()
        return {"seconds": seconds, "counts": run.counts, "timings": run.timings, "peak_mb": peak_rss_mb()}

    return asyncio.run(main())


def phase_store(database_file: Path) -> dict[str, Any]:
    """SQLite alone writing what the run stored (its tables copied into an empty database)."""
    import sqlite3

    copy = database_file.with_name(database_file.stem + "-copy.db")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    target = sqlite3.connect(copy, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=OFF"):
            target.execute(f"PRAGMA {pragma}")
        target.execute("ATTACH DATABASE ? AS stored", (str(database_file),))
        schema = target.execute(
            "SELECT type, name, sql FROM stored.sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        for _type, _name, sql in schema:
            target.execute(sql)
        started = time.perf_counter()
        for kind, name, _sql in schema:
            if kind == "table":
                target.execute("BEGIN")
                target.execute(f'INSERT INTO main."{name}" SELECT * FROM stored."{name}"')
                target.execute("COMMIT")
        seconds = time.perf_counter() - started
        target.execute("DETACH DATABASE stored")
        megabytes = copy.stat().st_size / 1e6
    finally:
        target.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    return {"seconds": seconds, "megabytes": megabytes, "peak_mb": peak_rss_mb()}


def duckdb_installed() -> bool:
    return importlib.util.find_spec("duckdb") is not None


def child(phase: str, **options: str) -> dict[str, Any]:
    arguments = [sys.executable, "-m", "bench.run", "--phase", phase]
    for name, value in options.items():
        arguments += [f"--{name.replace('_', '-')}", value]
    result = subprocess.run(arguments, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ── workers on PostgreSQL ──────────────────────────────────────────────────────────────


def workers_phase(snapshot: Path, workers: int, parts: int | None = None) -> dict[str, Any] | None:
    from tests.services import POSTGRES_URL, REDIS_URL, PostgresTemplate, reachable

    if not (reachable(POSTGRES_URL) and reachable(REDIS_URL)):
        return None
    from arq import create_pool
    from arq.connections import RedisSettings
    from redis.asyncio import Redis
    from sqlalchemy import select

    from server.db.models import Run
    from server.db.session import create_engine, session_factory, session_scope

    template = PostgresTemplate()
    url = template.copy()
    redis_url = REDIS_URL.rsplit("/", 1)[0] + "/12"

    async def enqueue() -> None:
        client = Redis.from_url(redis_url)
        await client.flushdb()
        await client.aclose()
        pool = await create_pool(RedisSettings.from_dsn(redis_url))
        await pool.enqueue_job("start_run", "bench", False, str(snapshot), _job_id=f"bench:{time.time_ns()}")
        await pool.aclose()

    async def state() -> Run | None:
        engine = create_engine(url)
        try:
            async with session_scope(session_factory(engine)) as session:
                return await session.scalar(select(Run).order_by(Run.id.desc()).limit(1))
        finally:
            await engine.dispose()

    environment = {
        **os.environ,
        "CSM_DATABASE_URL": url,
        "CSM_REDIS_URL": redis_url,
        "CSM_POLICY_DIR": str(ROOT / "policies"),
        "CSM_CHUNK_SIZE": "1000",
        "CSM_INGEST_PARTS": str(parts or workers),  # by default one part of the reading per worker
    }
    try:
        asyncio.run(enqueue())
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "server.cli", "worker"],
                cwd=ROOT,
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        try:
            while True:
                run = asyncio.run(state())
                if run is not None and run.state in ("succeeded", "failed"):
                    break
                time.sleep(0.5)
            seconds = time.perf_counter() - started
            peaks = [peak_rss_of(process.pid) for process in processes]
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=60)
        return {
            "workers": workers,
            "parts": parts or workers,
            "seconds": seconds,
            "state": run.state,
            "error": run.error,
            "timings": run.timings,
            "peak_mb": max(peaks),
        }
    finally:
        template.close()


# ── the table ──────────────────────────────────────────────────────────────────────────


def worker_row(result: dict[str, Any]) -> tuple[str, ...]:
    note = result["state"] if result["state"] == "succeeded" else f"{result['state']}: {result['error']}"
    timings = ", ".join(f"{phase.replace('_', ' ')} {seconds:.0f} s" for phase, seconds in result["timings"].items())
    return (
        f"PostgreSQL, {result['workers']} worker(s), {result['parts']} part(s)",
        f"{result['seconds']:.1f}",
        "",
        f"{result['peak_mb']:,.0f} MB",
        f"{note}; {timings}",
    )


def print_workers(console: Any, accounts: int, size: int, results: list[dict[str, Any] | None]) -> None:
    from rich.table import Table

    table = Table(title=f"Engine run on PostgreSQL workers: {accounts:,} customers, {size / 1e9:.2f} GB")
    for column in ("measure", "seconds", "rows/s", "peak memory per worker", "note"):
        table.add_column(column, justify="left" if column in ("measure", "note") else "right")
    for result in results:
        if result is None:
            raise SystemExit("PostgreSQL or Redis does not answer")
        table.add_row(*worker_row(result))
    console.print(table)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"workers-{accounts}.json").write_text(json.dumps(results, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=91)
    parser.add_argument("--skip-workers", action="store_true", help="Do not measure the PostgreSQL workers.")
    parser.add_argument(
        "--workers-only",
        metavar="N,N",
        help="Measure only the PostgreSQL workers, with these numbers of workers (for big snapshots).",
    )
    parser.add_argument("--parts", type=int, help="Parts of the reading (default: one per worker).")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--force", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "decode":
        print(json.dumps(phase_decode(Path(args.snapshot))))
        return
    if args.phase == "fold":
        print(json.dumps(phase_fold(Path(args.snapshot))))
        return
    if args.phase == "store":
        print(json.dumps(phase_store(Path(args.database))))
        return
    if args.phase == "run":
        print(json.dumps(phase_run(Path(args.snapshot), args.database, args.force == "yes")))
        return
    if args.phase == "native":
        from bench.native_floor import phase_native

        print(json.dumps({**phase_native(Path(args.snapshot), Path(args.database), AS_OF), "peak_mb": peak_rss_mb()}))
        return

    from rich.console import Console
    from rich.table import Table

    from connectors.demo import write_demo_snapshot

    console = Console(width=150)
    snapshot = OUT / f"snapshot-{args.accounts}-{args.days}"
    if not (snapshot / "manifest.json").is_file():
        started = time.perf_counter()
        stats = write_demo_snapshot(snapshot, accounts=args.accounts, seed=1, as_of=AS_OF, days=args.days)
        seconds = time.perf_counter() - started
        console.print(f"generated {stats.total_rows:,} rows, {stats.bytes_written / 1e9:.2f} GB in {seconds:.0f} s")
    size = sum(path.stat().st_size for path in snapshot.glob("*.jsonl"))
    if args.workers_only:
        counts = [int(number) for number in args.workers_only.split(",")]
        results = [workers_phase(snapshot, count, args.parts) for count in counts]
        print_workers(console, args.accounts, size, results)
        return
    database_file = OUT / f"run-{args.accounts}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database_file}{suffix}").unlink(missing_ok=True)
    database = f"sqlite+aiosqlite:///{database_file}"

    decode = child("decode", snapshot=str(snapshot))
    fold = child("fold", snapshot=str(snapshot))
    run = child("run", snapshot=str(snapshot), database=database, force="no")
    rerun = child("run", snapshot=str(snapshot), database=database, force="yes")
    store = child("store", database=str(database_file))
    native = child("native", snapshot=str(snapshot), database=str(OUT / "native.db")) if duckdb_installed() else None
    workers = [] if args.skip_workers else [w for w in (workers_phase(snapshot, 1), workers_phase(snapshot, 2)) if w]

    ratio = run["seconds"] / decode["seconds"]
    task_writes = sum(rerun["counts"].get(k, 0) for k in ("opened", "updated", "resolved", "reopened"))
    table = Table(
        title=f"Engine run: {args.accounts:,} customers, {args.days} days, {decode['rows']:,} rows, {size / 1e9:.2f} GB"
    )
    for column in ("measure", "seconds", "rows/s", "peak memory", "note"):
        table.add_column(column, justify="left" if column in ("measure", "note") else "right")
    table.add_row(
        "decode only (msgspec, typed rows)",
        f"{decode['seconds']:.1f}",
        f"{decode['rows'] / decode['seconds']:,.0f}",
        f"{decode['peak_mb']:,.0f} MB",
        "the baseline",
    )
    table.add_row(
        "read, check, fold, evaluate only",
        f"{fold['seconds']:.1f}",
        f"{decode['rows'] / fold['seconds']:,.0f}",
        f"{fold['peak_mb']:,.0f} MB",
        f"{fold['seconds'] / decode['seconds']:.1f}x decode: the engine alone, nothing stored",
    )
    table.add_row(
        "run end to end, SQLite",
        f"{run['seconds']:.1f}",
        f"{decode['rows'] / run['seconds']:,.0f}",
        f"{run['peak_mb']:,.0f} MB",
        f"{ratio:.1f}x decode (target <= 3x: {'met' if ratio <= 3 else 'NOT met'})",
    )
    for phase, seconds in run["timings"].items():
        table.add_row(f"  {phase.replace('_', ' ')}", f"{seconds:.1f}", "", "", "")
    table.add_row(
        "SQLite alone storing what the run stored",
        f"{store['seconds']:.1f}",
        "",
        "",
        f"{store['seconds'] / decode['seconds']:.1f}x decode: {store['megabytes']:,.0f} MB written, no Python per row",
    )
    if native:
        table.add_row(
            "native floor (bench/native_floor.py)",
            f"{native['seconds']:.1f}",
            f"{decode['rows'] / native['seconds']:,.0f}",
            f"{native['peak_mb']:,.0f} MB",
            f"{native['seconds'] / decode['seconds']:.1f}x decode: DuckDB reading, no customer evaluated yet",
        )
        for step, seconds in native["steps"].items():
            table.add_row(f"  {step}", f"{seconds:.1f}", "", "", "")
    else:
        table.add_row("native floor", "", "", "", 'not measured: pip install -e ".[bench]" (DuckDB)')
    table.add_row(
        "re-run, nothing changed",
        f"{rerun['seconds']:.1f}",
        "",
        f"{rerun['peak_mb']:,.0f} MB",
        f"{task_writes} task rows written (target 0)",
    )
    for result in workers:
        table.add_row(*worker_row(result))
    console.print(table)
    console.print(
        f"opened {run['counts'].get('opened', 0):,} tasks; CPython {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "run.json").write_text(
        json.dumps(
            {
                "accounts": args.accounts,
                "bytes": size,
                "decode": decode,
                "fold": fold,
                "run": run,
                "rerun": rerun,
                "store": store,
                "native": native,
                "workers": workers,
                "ratio": ratio,
            },
            indent=2,
            default=str,
        )
    )
    if task_writes:
        sys.exit(1)


if __name__ == "__main__":
    main()
