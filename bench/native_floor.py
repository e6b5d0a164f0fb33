"""The floor of a native run: what the columnar design of docs/columnar-ingestion.md could reach at best.

Measured as a phase of `python -m bench.run` when DuckDB is installed (`pip install -e ".[bench]"`).
DuckDB's own multi-threaded JSON reader loads the usage and activity files typed, checks them
(unknown customer, repeated key, day after as_of), computes the default policies' aggregates of
those files, builds each daily series as JSON; the small files become each customer's raw-row
records; SQLite stores accounts, records and series as a run does. Nothing here runs in Python
per row. Left out, so the real design could only be slower: line numbers for bad-row reports
(the typed reader has none), the small files' folds, evaluating the customers, health, CHI
history, tasks and their reconciliation, and merging series with the days stored before.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import Any

SMALL_ENTITIES = ("orders", "invoices", "scanners", "schedules", "tickets", "meetings", "nps", "sentiment")

USAGE_COLUMNS = (
    "{account_id: 'VARCHAR', product: 'VARCHAR', date: 'DATE', used: 'DOUBLE', scans: 'BIGINT', failed_scans: 'BIGINT'}"
)
ACTIVITY_COLUMNS = "{account_id: 'VARCHAR', date: 'DATE', logins: 'BIGINT', active_users: 'BIGINT'}"

STORED_SCHEMA = (
    "CREATE TABLE account (id TEXT PRIMARY KEY, raw TEXT NOT NULL)",
    "CREATE TABLE account_record (account_id TEXT, entity TEXT, rows TEXT NOT NULL, fingerprint TEXT NOT NULL,"
    " PRIMARY KEY (account_id, entity))",
    "CREATE TABLE daily_series (account_id TEXT, name TEXT, first_day TEXT NOT NULL, last_day TEXT NOT NULL,"
    " data TEXT NOT NULL, PRIMARY KEY (account_id, name))",
)


def _lines(snapshot: Path, entity: str) -> str:
    """A file as raw lines, in file order: the small files are stored byte for byte."""
    return (
        f"(SELECT row_number() OVER () AS line_no, line FROM read_csv('{snapshot / f'{entity}.jsonl'}',"
        " columns = {'line': 'VARCHAR'}, delim = '\x01', quote = '', escape = '', header = false, auto_detect = false))"
    )


def phase_native(snapshot: Path, database_file: Path, as_of: dt.date) -> dict[str, Any]:
    import duckdb

    for suffix in ("", "-wal", "-shm"):
        Path(f"{database_file}{suffix}").unlink(missing_ok=True)
    steps: dict[str, float] = {}
    started = last = time.perf_counter()

    def step(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        steps[name] = now - last
        last = now

    day = f"DATE '{as_of.isoformat()}'"
    db = duckdb.connect(config={"threads": 2})
    db.execute(
        f"CREATE TABLE acc AS SELECT json_extract_string(line, '$.id') AS id, line FROM {_lines(snapshot, 'accounts')}"
    )
    db.execute(
        f"CREATE TABLE usage AS SELECT * FROM read_json('{snapshot / 'usage.jsonl'}',"
        f" format = 'newline_delimited', columns = {USAGE_COLUMNS})"
    )
    db.execute(
        f"CREATE TABLE activity AS SELECT * FROM read_json('{snapshot / 'activity.jsonl'}',"
        f" format = 'newline_delimited', columns = {ACTIVITY_COLUMNS})"
    )
    step("load")
    refused = 0
    for table, key in (("usage", "account_id, product, date"), ("activity", "account_id, date")):
        refused += db.execute(
            f"SELECT count(*) FROM {table} WHERE date > {day} OR account_id NOT IN (SELECT id FROM acc)"
        ).fetchone()[0]  # type: ignore[index]
        refused += db.execute(
            f"SELECT count(*) FROM (SELECT {key} FROM {table} GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]  # type: ignore[index]
    step("check")
    aggregates = db.execute(
        f"""SELECT account_id, product,
              fsum(used) FILTER (WHERE date > {day} - 30), fsum(scans) FILTER (WHERE date > {day} - 30),
              fsum(failed_scans) FILTER (WHERE date > {day} - 30), fsum(scans) FILTER (WHERE date > {day} - 7),
              fsum(failed_scans) FILTER (WHERE date > {day} - 7), arg_max(used, date) FILTER (WHERE date > {day} - 30),
              bool_or(used > 0 OR scans > 0) FILTER (WHERE date > {day} - 90)
            FROM usage GROUP BY account_id, product"""
    ).fetchall()
    aggregates += db.execute(
        "SELECT account_id, max(date) FILTER (WHERE logins > 0) FROM activity GROUP BY account_id"
    ).fetchall()
    step("aggregate")
    # The usual shape: one row per day without gaps, so a series is its columns in day order.
    series = db.execute(
        """SELECT account_id, 'usage:' || product, min(date)::VARCHAR, max(date)::VARCHAR,
             to_json({'start': min(date), 'used': list(used ORDER BY date), 'scans': list(scans ORDER BY date),
                      'failed_scans': list(failed_scans ORDER BY date)})::VARCHAR
           FROM usage GROUP BY account_id, product"""
    ).fetchall()
    series += db.execute(
        """SELECT account_id, 'activity', min(date)::VARCHAR, max(date)::VARCHAR,
             to_json({'start': min(date), 'logins': list(logins ORDER BY date),
                      'active_users': list(active_users ORDER BY date)})::VARCHAR
           FROM activity GROUP BY account_id"""
    ).fetchall()
    step("series")
    records: list[tuple[Any, ...]] = []
    for entity in SMALL_ENTITIES:
        records += db.execute(
            f"""SELECT account_id, '{entity}', '[' || rows || ']', sha256(rows) FROM (
                  SELECT json_extract_string(line, '$.account_id') AS account_id,
                    string_agg(line, ',' ORDER BY line_no) AS rows
                  FROM {_lines(snapshot, entity)} GROUP BY 1)"""
        ).fetchall()
    accounts = db.execute("SELECT id, line FROM acc").fetchall()
    db.close()
    step("records")
    store = sqlite3.connect(database_file, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
            store.execute(f"PRAGMA {pragma}")
        for statement in STORED_SCHEMA:
            store.execute(statement)
        store.execute("BEGIN")
        store.executemany("INSERT INTO account VALUES (?, ?)", accounts)
        store.executemany("INSERT INTO account_record VALUES (?, ?, ?, ?)", records)
        store.executemany("INSERT INTO daily_series VALUES (?, ?, ?, ?, ?)", series)
        store.execute("COMMIT")
    finally:
        store.close()
    step("store")
    seconds = time.perf_counter() - started
    megabytes = database_file.stat().st_size / 1e6
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database_file}{suffix}").unlink(missing_ok=True)
    return {
        "seconds": seconds,
        "steps": steps,
        "refused": refused,
        "aggregates": len(aggregates),
        "series": len(series),
        "records": len(records),
        "accounts": len(accounts),
        "megabytes": megabytes,
    }
