"""The end-to-end run benchmark's phases work on a small snapshot (what they measure, not how fast).

`python -m bench.run` is only run by hand (it takes minutes); this keeps its phases from rotting:
each one runs on a demo snapshot of a few customers and its figures are checked for sense.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.native_floor import SMALL_ENTITIES, phase_native
from bench.run import AS_OF, peak_rss_mb, peak_rss_of, phase_decode, phase_fold, phase_run, phase_store
from connectors.demo import write_demo_snapshot


def test_the_run_benchmark_phases_measure_a_small_snapshot(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    stats = write_demo_snapshot(snapshot, accounts=40, seed=3, as_of=AS_OF, days=14)
    database_file = tmp_path / "run.db"
    database = f"sqlite+aiosqlite:///{database_file}"

    decode = phase_decode(snapshot)
    assert decode["rows"] == stats.total_rows
    assert phase_fold(snapshot)["seconds"] > 0

    run = phase_run(snapshot, database, force=False)
    assert run["counts"]["customers"] == 40
    assert run["counts"]["opened"] > 0
    assert set(run["timings"]) >= {"read", "evaluate_and_stage", "write_customers"}

    rerun = phase_run(snapshot, database, force=True)
    assert [rerun["counts"].get(name, 0) for name in ("opened", "updated", "resolved", "reopened")] == [0, 0, 0, 0]

    store = phase_store(database_file)
    assert store["megabytes"] > 0
    assert not list(tmp_path.glob("run-copy.db*"))  # the copy is measured, then removed


def test_a_worker_process_peak_memory_is_read_from_proc() -> None:
    assert 0.5 * peak_rss_mb() <= peak_rss_of(os.getpid()) <= 2 * peak_rss_mb()
    assert peak_rss_of(2**31 - 1) == 0.0  # no such process


def test_the_native_floor_stores_what_a_run_stores_of_the_files(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    write_demo_snapshot(snapshot, accounts=40, seed=3, as_of=AS_OF, days=14)
    native = phase_native(snapshot, tmp_path / "native.db", AS_OF)

    assert native["accounts"] == 40
    assert native["refused"] == 0  # the demo's rows are all good

    def rows(entity: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (snapshot / f"{entity}.jsonl").read_text().splitlines()]

    usage_series = {(row["account_id"], row["product"]) for row in rows("usage")}
    assert native["series"] == len(usage_series) + len({row["account_id"] for row in rows("activity")})
    records = {(row["account_id"], entity) for entity in SMALL_ENTITIES for row in rows(entity)}
    assert native["records"] == len(records) > 0
    assert set(native["steps"]) == {"load", "check", "aggregate", "series", "records", "store"}
    assert native["megabytes"] > 0
    assert not list(tmp_path.glob("native.db*"))  # measured, then removed
