"""Engine runs on SQLite and PostgreSQL: idempotent, never losing a CSM's edit, precise about bad rows."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.demo import write_demo_snapshot
from connectors.files import Part
from engine.compiler import CompiledPolicies
from engine.snapshot import Sentiment
from server.db.base import utcnow
from server.db.models import Account, AccountRecord, ChiPoint, DailySeries, Run, RunPart, Task, TaskEvent, TaskState
from server.db.session import create_engine, session_factory, session_scope
from server.services.dry_run import evaluate_folder
from server.services.exports import export_tasks
from server.services.ingest import PortalEntries
from server.services.runs import (
    RunInProgress,
    RunRefused,
    RunRequest,
    apply_results,
    claim_part,
    enqueue_run,
    fail_run,
    finish_run,
    ingest,
    pending_chunks,
    prepare_run,
    process_chunk,
    run_in_process,
)
from server.services.tasks import TaskStatus, change_state
from server.settings import Settings
from server.web.access import CurrentUser, Role
from server.worker import process_chunk_job
from tests.conftest import POLICY_DIR
from tests.services import SqliteTemplate
from tests.snapshots import account, active_order, write_snapshot

AS_OF = dt.date(2026, 12, 4)


@pytest.fixture
async def factory(database_url: str) -> Any:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


def request(folder: Path, **options: Any) -> RunRequest:
    return RunRequest(folder=folder, policy_dir=POLICY_DIR, chunk_size=options.pop("chunk_size", 40), **options)


async def task_rows(factory: async_sessionmaker[AsyncSession]) -> dict[str, dict[str, Any]]:
    async with session_scope(factory) as session:
        tasks = await session.scalars(select(Task))
        return {
            task.id: {
                name: getattr(task, name)
                for name in (
                    "rule",
                    "account_id",
                    "key",
                    "severity",
                    "title",
                    "description",
                    "due_on",
                    "active",
                    "evidence",
                    "opened_at",
                    "updated_at",
                    "resolved_at",
                    "reopened_at",
                )
            }
            for task in tasks
        }


async def test_a_run_scores_and_opens_tasks_and_a_rerun_writes_nothing(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = tmp_path / "snapshot"
    write_demo_snapshot(folder, accounts=120, seed=3, as_of=AS_OF)
    run, already = await run_in_process(factory, request(folder))
    assert not already
    assert run.state == "succeeded"
    assert run.counts["customers"] == 120 and run.counts["scored"] == 120
    assert run.counts["opened"] > 100
    assert run.counts["chi_points"] == 120
    assert run.chunks_total == 3
    before = await task_rows(factory)
    assert len(before) == run.counts["opened"]
    async with session_scope(factory) as session:
        assert await session.scalar(select(func.count()).select_from(ChiPoint)) == 120
        assert await session.scalar(select(func.count()).select_from(DailySeries)) > 120
        scored = await session.scalar(select(func.count()).select_from(Account).where(Account.chi.is_not(None)))
        assert scored == 120

    again, already = await run_in_process(factory, request(folder))
    assert already and again.id == run.id  # same snapshot, same policies: nothing to do

    forced, already = await run_in_process(factory, request(folder, force=True))
    assert not already and forced.id != run.id
    assert {k: forced.counts[k] for k in ("opened", "updated", "resolved", "reopened")} == dict.fromkeys(
        ("opened", "updated", "resolved", "reopened"), 0
    )
    assert await task_rows(factory) == before  # not one task row written
    async with session_scope(factory) as session:
        assert await session.scalar(select(func.count()).select_from(ChiPoint)) == 240  # a point per run


async def test_csm_edits_survive_runs_even_during_one(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = tmp_path / "snapshot"
    write_demo_snapshot(folder, accounts=60, seed=4, as_of=AS_OF)
    await run_in_process(factory, request(folder))
    async with session_scope(factory) as session:
        task_ids = list(await session.scalars(select(Task.id).limit(5)))
        for number, task_id in enumerate(task_ids):
            session.add(
                TaskState(
                    task_id=task_id, state="in_progress", comment=f"called them ({number})", assignee="x@example.com"
                )
            )

    # A second run starts; halfway through (after ingestion, before the tasks are written) a CSM edits.
    later = tmp_path / "later"
    write_demo_snapshot(later, accounts=60, seed=4, as_of=AS_OF + dt.timedelta(days=1))
    async with session_scope(factory) as session:
        run, _ = await prepare_run(session, request(later))
    await ingest(factory, run.id)
    async with session_scope(factory) as session:
        edited = await session.get(TaskState, task_ids[0])
        assert edited is not None
        edited.state, edited.comment, edited.version = "finished", "done during the run", 2
    for chunk in await pending_chunks(factory, run.id):
        from server.services.runs import process_chunk

        await process_chunk(factory, run.id, chunk)
    async with session_scope(factory) as session:
        states = {state.task_id: state for state in await session.scalars(select(TaskState))}
    assert states[task_ids[0]].state == "finished"
    assert states[task_ids[0]].comment == "done during the run"
    for task_id in task_ids[1:]:
        assert states[task_id].state == "in_progress"
        assert states[task_id].assignee == "x@example.com"


def renewal_snapshot(folder: Path, as_of: dt.date, renewal_in_days: int) -> Path:
    rows = {
        "accounts": [account("acc-1"), account("acc-2")],
        "orders": [active_order("acc-1", as_of, renewal_in_days), active_order("acc-2", as_of, 400)],
    }
    return write_snapshot(folder, as_of, rows)


async def test_a_customer_missing_from_a_snapshot_keeps_its_tasks_and_records(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """A chunk reads its customers' tasks and records by the range of their ids: a customer
    between two of them that this snapshot does not have is left as it was."""
    customers = ("acc-1", "acc-2", "acc-3")
    rows = {
        "accounts": [account(customer) for customer in customers],
        "orders": [active_order(customer, AS_OF, 30) for customer in customers],
        "tickets": [ticket(f"t-{customer}", customer) for customer in customers],
    }
    await run_in_process(factory, request(write_snapshot(tmp_path / "a", AS_OF, rows)))
    before = {task_id: task for task_id, task in (await task_rows(factory)).items() if task["account_id"] == "acc-2"}
    assert before and all(task["active"] for task in before.values())
    tickets_before = await stored_records(factory, "tickets")
    later = {entity: [row for row in listed if "acc-2" not in json.dumps(row)] for entity, listed in rows.items()}
    run, _ = await run_in_process(factory, request(write_snapshot(tmp_path / "b", AS_OF + dt.timedelta(days=1), later)))
    assert run.chunks_total == 1 and run.counts["customers"] == 2
    after = await task_rows(factory)
    assert {task_id: after[task_id] for task_id in before} == before
    assert (await stored_records(factory, "tickets"))["acc-2"] == tickets_before["acc-2"]


async def test_a_task_that_stops_and_starts_firing_keeps_its_id_and_history(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await run_in_process(factory, request(renewal_snapshot(tmp_path / "a", AS_OF, 30)))
    tasks = await task_rows(factory)
    [renewal] = [task_id for task_id, task in tasks.items() if task["rule"] == "renewal-upcoming"]
    assert tasks[renewal]["severity"] == "High"
    assert tasks[renewal]["due_on"] == AS_OF + dt.timedelta(days=14)

    # The renewal moves out: the task is resolved, not deleted.
    await run_in_process(factory, request(renewal_snapshot(tmp_path / "b", AS_OF + dt.timedelta(days=1), 200)))
    resolved = (await task_rows(factory))[renewal]
    assert resolved["active"] is False and resolved["resolved_at"] is not None

    # It comes back: the same task, reopened.
    await run_in_process(factory, request(renewal_snapshot(tmp_path / "c", AS_OF + dt.timedelta(days=2), 70)))
    reopened = (await task_rows(factory))[renewal]
    assert reopened["active"] is True
    assert reopened["reopened_at"] is not None and reopened["resolved_at"] is None
    assert reopened["severity"] == "Low"
    assert reopened["opened_at"] == tasks[renewal]["opened_at"]
    async with session_scope(factory) as session:
        kinds = [
            e.kind
            for e in await session.scalars(select(TaskEvent).where(TaskEvent.task_id == renewal).order_by(TaskEvent.id))
        ]
    assert kinds == ["opened", "resolved", "reopened"]


async def test_due_dates_do_not_slide_while_a_task_keeps_firing(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await run_in_process(factory, request(renewal_snapshot(tmp_path / "a", AS_OF, 80)))
    due = {t["rule"]: t["due_on"] for t in (await task_rows(factory)).values() if t["account_id"] == "acc-1"}
    await run_in_process(factory, request(renewal_snapshot(tmp_path / "b", AS_OF + dt.timedelta(days=3), 77)))
    later = {t["rule"]: t for t in (await task_rows(factory)).values() if t["account_id"] == "acc-1"}
    assert later["renewal-upcoming"]["due_on"] == due["renewal-upcoming"]
    assert later["renewal-upcoming"]["description"].startswith("Renewal in 77 days")  # the text follows the facts


async def test_incomplete_data_resolves_nothing_for_that_customer(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await run_in_process(factory, request(renewal_snapshot(tmp_path / "a", AS_OF, 30)))
    open_before = {t["account_id"] for t in (await task_rows(factory)).values() if t["active"]}
    assert open_before == {"acc-1", "acc-2"}
    # Next day both customers' orders vanish from the snapshot, and one of acc-1's rows is unreadable.
    later = AS_OF + dt.timedelta(days=1)
    folder = write_snapshot(tmp_path / "b", later, {"accounts": [account("acc-1"), account("acc-2")]})
    with (folder / "usage.jsonl").open("a") as handle:
        handle.write(
            json.dumps(
                {"account_id": "acc-1", "product": "VM", "date": "not a date", "used": 1, "scans": 1, "failed_scans": 0}
            )
            + "\n"
        )
    run, _ = await run_in_process(factory, request(folder))
    assert run.counts["bad_rows"] == 1 and run.counts["incomplete_customers"] == 1
    assert run.counts["withheld"] > 0
    tasks = await task_rows(factory)
    acc1_renewal = [t for t in tasks.values() if t["account_id"] == "acc-1" and t["rule"] == "renewal-upcoming"]
    assert acc1_renewal[0]["active"] is True  # withheld: acc-1's data did not arrive whole
    acc2_open = {t["rule"] for t in tasks.values() if t["account_id"] == "acc-2" and t["active"]}
    assert "no-active-order" in acc2_open  # acc-2's complete data did move on


async def test_an_unattributable_bad_row_withholds_every_resolution(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await run_in_process(factory, request(renewal_snapshot(tmp_path / "a", AS_OF, 30)))
    folder = write_snapshot(
        tmp_path / "b", AS_OF + dt.timedelta(days=1), {"accounts": [account("acc-1"), account("acc-2")]}
    )
    with (folder / "orders.jsonl").open("a") as handle:
        handle.write('{"id": "ord-9", "account_id": \n')  # cut off: whose it was cannot be told
    run, _ = await run_in_process(factory, request(folder))
    assert run.counts["resolved"] == 0
    assert run.counts["incomplete_customers"] == 2


async def test_malformed_rows_are_reported_precisely_and_skipped(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    rows = {
        "accounts": [account("acc-1"), account("acc-2"), account("acc-1")],  # a duplicate id
        "orders": [active_order("acc-1", AS_OF, 30), active_order("acc-9", AS_OF, 30, "ord-x")],  # unknown account
        "usage": [
            {
                "account_id": "acc-1",
                "product": "VM",
                "date": "2026-12-01",
                "used": "many",
                "scans": 1,
                "failed_scans": 0,
            },
            {"account_id": "acc-1", "product": "VM", "date": "2026-12-24", "used": 1, "scans": 1, "failed_scans": 0},
            {"account_id": "acc-1", "product": "VM", "date": "2026-02-30", "used": 1, "scans": 1, "failed_scans": 0},
            {"account_id": "acc-2", "product": "VM", "date": "2026-12-01", "used": 3, "scans": 2, "failed_scans": 0},
        ],
    }
    folder = write_snapshot(tmp_path / "s", AS_OF, rows)
    with (folder / "tickets.jsonl").open("w") as handle:
        handle.write("{this is not json}\n\n")
    run, _ = await run_in_process(factory, request(folder))
    found = {(bad["file"], bad["line"], bad["field"]) for bad in run.bad_rows}
    assert found == {
        ("accounts.jsonl", 3, "id"),
        ("orders.jsonl", 2, "account_id"),
        ("usage.jsonl", 1, "used"),
        ("usage.jsonl", 2, "date"),
        ("usage.jsonl", 3, "date"),
        ("tickets.jsonl", 1, None),
    }
    messages = {(bad["file"], bad["line"]): bad["message"] for bad in run.bad_rows}
    assert "Expected `float`, got `str`" in messages[("usage.jsonl", 1)]
    assert "after the snapshot's as_of" in messages[("usage.jsonl", 2)]
    assert "unknown account 'acc-9'" in messages[("orders.jsonl", 2)]
    assert "not valid JSON" in messages[("tickets.jsonl", 1)]
    assert run.state == "succeeded"
    assert run.counts["customers"] == 2  # the good rows were all used
    async with session_scope(factory) as session:
        usage = await session.scalar(select(DailySeries).where(DailySeries.account_id == "acc-2"))
        assert usage is not None
        assert json.loads(usage.data) == {"start": "2026-12-01", "used": [3.0], "scans": [2], "failed_scans": [0]}


async def test_daily_series_are_kept_whole_from_a_usage_file_not_grouped_by_customer(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """DATA.md does not promise rows grouped by customer: every day of a series is kept anyway."""

    def used(account_id: str, days_ago: int, value: float) -> dict[str, Any]:
        day = (AS_OF - dt.timedelta(days=days_ago)).isoformat()
        return {"account_id": account_id, "product": "p", "date": day, "used": value, "scans": 1, "failed_scans": 0}

    rows = [used("acc-1", 2, 1.0), used("acc-2", 2, 5.0), used("acc-1", 1, 2.0), used("acc-2", 0, 6.0)]
    activity = [
        {"account_id": "acc-1", "date": AS_OF.isoformat(), "logins": 3, "active_users": 1},
        {"account_id": "acc-2", "date": AS_OF.isoformat(), "logins": 1, "active_users": 1},
        {"account_id": "acc-1", "date": (AS_OF - dt.timedelta(days=1)).isoformat(), "logins": 4, "active_users": 2},
    ]
    accounts = [account("acc-1"), account("acc-2")]
    folder = write_snapshot(tmp_path / "s", AS_OF, {"accounts": accounts, "usage": rows, "activity": activity})
    await run_in_process(factory, request(folder))
    async with session_scope(factory) as session:
        result = await session.execute(select(DailySeries.account_id, DailySeries.name, DailySeries.data))
        stored = {(account_id, name): json.loads(data) for account_id, name, data in result}
    assert stored["acc-1", "usage:p"]["used"] == [1.0, 2.0]
    assert stored["acc-2", "usage:p"]["used"] == [5.0, None, 6.0]
    assert stored["acc-1", "activity"] == {"start": "2026-12-03", "logins": [4, 3], "active_users": [2, 1]}


def ticket(ticket_id: str, account_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": ticket_id,
        "account_id": account_id,
        "opened_at": "2026-11-20T09:00:00Z",
        "priority": "normal",
        **extra,
    }


async def stored_records(factory: async_sessionmaker[AsyncSession], entity: str) -> dict[str, list[str]]:
    async with session_scope(factory) as session:
        rows = await session.execute(
            select(AccountRecord.account_id, AccountRecord.rows).where(AccountRecord.entity == entity)
        )
        return {account_id: [row["id"] for row in json.loads(text)] for account_id, text in rows}


async def test_raw_rows_are_kept_whole_even_from_a_file_not_grouped_by_customer(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("connectors.files.BLOCK_BYTES", 1)  # a block per line: acc-1 comes in three blocks
    tickets = [
        ticket("t1", "acc-1"),
        ticket("t2", "acc-2"),
        ticket("t3", "acc-1", subject="again"),
        ticket("t4", "acc-1"),
    ]
    folder = write_snapshot(
        tmp_path / "s1", AS_OF, {"accounts": [account("acc-1"), account("acc-2")], "tickets": tickets}
    )
    run, _ = await run_in_process(factory, request(folder))
    assert await stored_records(factory, "tickets") == {"acc-1": ["t1", "t3", "t4"], "acc-2": ["t2"]}
    assert run.counts["records_written"] == 2

    # The next snapshot: acc-2 has no tickets any more, acc-1 the same ones: one record changes.
    later = write_snapshot(
        tmp_path / "s2",
        AS_OF,
        {"accounts": [account("acc-1"), account("acc-2")], "tickets": [tickets[0], *tickets[2:]]},
    )
    run, _ = await run_in_process(factory, request(later))
    assert await stored_records(factory, "tickets") == {"acc-1": ["t1", "t3", "t4"], "acc-2": []}
    assert run.counts["records_written"] == 1
    again, _ = await run_in_process(factory, request(later, force=True))
    assert again.counts["records_written"] == 0


async def test_raw_rows_are_stored_as_the_file_has_them_without_blank_or_bad_lines(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = write_snapshot(tmp_path / "s", AS_OF, {"accounts": [account("acc-1"), account("acc-2")]})
    lines = [
        b'{"id": "t1", "account_id": "acc-1", "opened_at": "2026-11-20T09:00:00Z", "priority": "high"}\r\n',
        b"   \n",
        b'{"id": "t2", "account_id": "acc-1", "opened_at": "not a time"}\n',  # bad: left out, reported
        b'  {"id":"t3","account_id":"acc-1",\r"opened_at":"2026-11-21T09:00:00Z","priority":"low","crm_owner":"x"}\n',
        b'{"id": "t4", "account_id": "acc-2", "opened_at": "2026-11-22T09:00:00Z", "priority": "low"}\n',
        b'{"id": "t5", "account_id": "acc-1", "opened_at": "2026-11-23T09:00:00Z", "priority": "low"}',  # no newline
    ]
    (folder / "tickets.jsonl").write_bytes(b"".join(lines))
    run, _ = await run_in_process(factory, request(folder))
    assert [(bad["line"], bad["field"]) for bad in run.bad_rows] == [(3, "opened_at")]
    async with session_scope(factory) as session:
        result = await session.execute(
            select(AccountRecord.account_id, AccountRecord.rows).where(AccountRecord.entity == "tickets")
        )
        texts = dict(result.all())
    # Each good line as it was written (key order, spacing, unknown fields), stripped, in file order.
    assert texts["acc-1"] == "[" + ",".join(lines[i].decode().strip() for i in (0, 3, 5)) + "]"
    assert texts["acc-2"] == "[" + lines[4].decode().strip() + "]"
    assert [row["id"] for row in json.loads(texts["acc-1"])] == ["t1", "t3", "t5"]


async def test_a_chunk_refuses_a_snapshot_changed_since_the_run_read_it(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """Raw rows are read back from the files when a chunk writes them: other bytes are never stored."""
    tickets = [ticket("t1", "acc-1"), ticket("t2", "acc-1")]
    folder = write_snapshot(tmp_path / "s", AS_OF, {"accounts": [account("acc-1")], "tickets": tickets})
    async with session_scope(factory) as session:
        run, _ = await prepare_run(session, request(folder))
    await ingest(factory, run.id)
    with (folder / "tickets.jsonl").open("r+b") as handle:
        handle.write(b'{"id":"t9"')  # the same size, other bytes, a new modification time
    os.utime(folder / "tickets.jsonl", ns=(1, 1))
    # A worker's chunk job fails the run (no retry could help) and writes nothing.
    context = {"factory": factory, "settings": Settings.from_env(), "redis": None}
    message = await process_chunk_job(context, run.id, 0)
    assert "the snapshot changed since this run read it" in message
    async with session_scope(factory) as session:
        assert await session.scalar(select(func.count()).select_from(AccountRecord)) == 0
        assert await session.scalar(select(func.count()).select_from(Account)) == 0
        assert await session.scalar(select(func.count()).select_from(Task)) == 0
        failed = await session.get(Run, run.id)
        assert failed is not None and failed.state == "failed"
        assert failed.error is not None and "the snapshot changed since this run read it" in failed.error


async def test_strict_refuses_a_bad_snapshot_before_writing_anything(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = write_snapshot(tmp_path / "s", AS_OF, {"accounts": [account("acc-1"), {"id": "acc-2", "tier": "T9"}]})
    with pytest.raises(RunRefused, match=r"accounts.jsonl:2: .*tier"):
        await run_in_process(factory, request(folder, strict=True))
    async with session_scope(factory) as session:
        assert await session.scalar(select(func.count()).select_from(Run)) == 0
        assert await session.scalar(select(func.count()).select_from(Account)) == 0


async def test_a_missing_folder_is_refused_clearly(factory: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    with pytest.raises(RunRefused, match="not a folder"):
        await run_in_process(factory, request(tmp_path / "nowhere"))
    with pytest.raises(RunRefused, match="not a folder"):
        await run_in_process(factory, request(tmp_path / "nowhere", strict=True))
    with pytest.raises(RunRefused, match="not a folder"):
        await enqueue_run("redis://127.0.0.1:1/0", request(tmp_path / "nowhere"))


async def test_queueing_a_run_without_redis_is_refused_clearly(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path / "s", AS_OF, {"accounts": [account("acc-1")]})
    with pytest.raises(RunRefused, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0"):
        await enqueue_run("redis://127.0.0.1:1/0", request(folder))


async def test_one_process_at_a_time_reads_a_run(factory: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    """Two processes starting the same run (a double click, the cron and the console): one reads the
    snapshot, the other is told so and leaves the run alone; a silent claim is taken over."""
    folder = write_snapshot(
        tmp_path / "s", AS_OF, {"accounts": [account("acc-1")], "orders": [active_order("acc-1", AS_OF, 20)]}
    )
    async with session_scope(factory) as session:
        run, _ = await prepare_run(session, request(folder))
    assert await claim_part(factory, run.id, 0, "first")  # the first process
    assert not await claim_part(factory, run.id, 0, "second")
    with pytest.raises(RunInProgress, match=f"run {run.id} is being read by another process"):
        await run_in_process(factory, request(folder))
    async with session_scope(factory) as session:
        waiting = await session.get(Run, run.id)
        assert waiting is not None and waiting.state == "ingesting" and waiting.error is None
        part = await session.get(RunPart, (run.id, 0))
        assert part is not None and part.worker == "first"
        part.heartbeat_at = utcnow() - dt.timedelta(minutes=20)  # the first process died
    finished, already = await run_in_process(factory, request(folder))
    assert not already and finished.id == run.id and finished.state == "succeeded"


async def test_the_parts_of_a_failed_run_are_not_read(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """A part failed (a worker's disk, say): the run failed and says why; the other parts,
    still queued, are not read for nothing."""
    folder = write_snapshot(tmp_path / "s", AS_OF, {"accounts": [account("acc-1"), account("acc-2")]})
    async with session_scope(factory) as session:
        run, _ = await prepare_run(session, request(folder, parts=2))
    assert await claim_part(factory, run.id, 0, "first")
    await fail_run(factory, run.id, "OSError: no space left on device")
    assert not await claim_part(factory, run.id, 1, "second")
    async with session_scope(factory) as session:
        left = await session.get(RunPart, (run.id, 1))
        assert left is not None and (left.state, left.attempts) == ("pending", 0)


async def test_a_run_that_succeeds_after_a_failure_carries_no_error(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """A process gave up on the run (and said why) while another carried it to the end."""
    folder = write_snapshot(tmp_path / "s", AS_OF, {"accounts": [account("acc-1")]})
    async with session_scope(factory) as session:
        run, _ = await prepare_run(session, request(folder))
    await ingest(factory, run.id)
    await fail_run(factory, run.id, "RuntimeError: the worker's machine rebooted")
    for chunk_no in await pending_chunks(factory, run.id):
        assert await process_chunk(factory, run.id, chunk_no)
    finished = await finish_run(factory, run.id)
    assert finished.state == "succeeded" and finished.error is None


async def test_portal_sentiment_and_outcomes_are_inputs_of_the_next_run(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    from server.db.models import MeetingOutcome, SentimentEntry

    rows = {
        "accounts": [account("acc-1")],
        "orders": [active_order("acc-1", AS_OF, 300)],
        "meetings": [
            {"id": "m-1", "account_id": "acc-1", "held_on": (AS_OF - dt.timedelta(days=10)).isoformat(), "outcome": ""}
        ],
    }
    folder = write_snapshot(tmp_path / "s", AS_OF, rows)
    await run_in_process(factory, request(folder))
    open_rules = {t["rule"] for t in (await task_rows(factory)).values() if t["active"]}
    assert "meeting-outcome-missing" in open_rules
    async with session_scope(factory) as session:
        session.add(
            SentimentEntry(account_id="acc-1", recorded_on=AS_OF, value="negative", recorded_by="csm@example.com")
        )
        session.add(
            MeetingOutcome(
                meeting_id="m-1",
                account_id="acc-1",
                outcome="Agreed a plan",
                recorded_by="csm@example.com",
                recorded_at=utcnow(),
            )
        )
    run, _ = await run_in_process(factory, request(folder, force=True))
    assert run.counts["resolved"] == 1
    async with session_scope(factory) as session:
        customer = await session.get(Account, "acc-1")
        assert customer is not None and customer.sections["sentiment"] == 20.0


async def test_apply_results_is_idempotent(factory: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    """Applying a chunk twice (a worker presumed dead that was not) changes nothing the second time."""
    folder = write_snapshot(
        tmp_path / "s", AS_OF, {"accounts": [account("acc-1")], "orders": [active_order("acc-1", AS_OF, 20)]}
    )
    async with session_scope(factory) as session:
        run, _ = await prepare_run(session, request(folder))
    await ingest(factory, run.id)
    from msgspec import msgpack

    from server.db.models import RunFact
    from server.services.ingest import StagedAccount

    async with session_scope(factory) as session:
        run = await session.get(Run, run.id)
        fact = await session.scalar(select(RunFact))
        assert run is not None and fact is not None
        staged = [(fact.account_id, msgpack.decode(fact.data, type=StagedAccount))]
        first, _ = await apply_results(session, run, staged)
    before = await task_rows(factory)
    async with session_scope(factory) as session:
        run = await session.get(Run, run.id)
        assert run is not None
        second, _ = await apply_results(session, run, staged)
    assert first["opened"] > 0
    assert (second.get("opened", 0), second.get("updated", 0), second.get("resolved", 0)) == (0, 0, 0)
    assert await task_rows(factory) == before


def test_a_dry_run_reads_what_csms_recorded_in_the_portal(default_policies: CompiledPolicies, tmp_path: Path) -> None:
    """The console's dry-run scores customers as the next run will: with the portal's entries."""
    held_on = (AS_OF - dt.timedelta(days=10)).isoformat()
    rows = {
        "accounts": [account("acc-1")],
        "orders": [active_order("acc-1", AS_OF, 300)],
        "meetings": [{"id": "m-1", "account_id": "acc-1", "held_on": held_on, "outcome": ""}],
    }
    folder = write_snapshot(tmp_path / "s", AS_OF, rows)
    portal = PortalEntries(
        sentiment={"acc-1": [Sentiment(account_id="acc-1", recorded_on=AS_OF, value="negative")]},
        outcomes={"m-1": ("Agreed a plan", utcnow())},
    )
    (files_only,), _ = evaluate_folder([default_policies], folder)
    (with_portal,), _ = evaluate_folder([default_policies], folder, portal=portal)
    before, after = files_only.result("acc-1"), with_portal.result("acc-1")
    assert "meeting-outcome-missing" in {task.rule for task in before.tasks}
    assert "meeting-outcome-missing" not in {task.rule for task in after.tasks}
    assert before.sections["sentiment"] != after.sections["sentiment"] == 20.0


async def test_the_task_export_gives_each_state_as_of_the_day(
    factory: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = write_snapshot(
        tmp_path / "s", AS_OF, {"accounts": [account("acc-1")], "orders": [active_order("acc-1", AS_OF, 20)]}
    )
    await run_in_process(factory, request(folder))
    manager = CurrentUser(id=0, email="manager@example.com", name="", role=Role.MANAGER)
    async with session_scope(factory) as session:
        task_id = (await session.scalars(select(Task.id).where(Task.active.is_(True)))).first()
        assert task_id is not None
        await change_state(session, manager, task_id, TaskStatus.STARTED, today=AS_OF)
        until = AS_OF + dt.timedelta(days=2)
        await change_state(session, manager, task_id, TaskStatus.SNOOZED, today=AS_OF, snooze_until=until)

    async def exported_state(day: dt.date) -> str:
        async with session_scope(factory) as session:
            states = {row["task_id"]: row["state"] async for row in export_tasks(session, day)}
        return states[task_id]

    assert await exported_state(AS_OF) == "snoozed"
    assert await exported_state(AS_OF + dt.timedelta(days=2)) == "started"  # the snooze ran out


def _with_bad_rows(folder: Path, unattributed: bool) -> tuple[str, str]:
    """Bad rows of every kind appended to a demo snapshot, for customers of different parts.
    Returns the ids of two customers that parts 0 and 1 of three own."""
    owners = {number: Part(number, 3) for number in range(3)}
    ids = [json.loads(line)["id"] for line in (folder / "accounts.jsonl").read_text().splitlines()]
    first = next(i for i in ids if owners[0].owns(i))
    second = next(i for i in ids if owners[1].owns(i))
    orders = [json.loads(line) for line in (folder / "orders.jsonl").read_text().splitlines()]
    order = next(order for order in orders if order["account_id"] == first)

    def append(entity: str, *lines: str) -> None:
        with (folder / f"{entity}.jsonl").open("a") as handle:
            handle.writelines(line + "\n" for line in lines)

    usage = {"product": "VM", "date": "2026-12-01", "used": 1, "scans": 1, "failed_scans": 0}
    append("accounts", json.dumps(account(first)))  # a duplicate customer
    # The same order id for another customer, owned by another part: a duplicate all the same.
    append("orders", json.dumps({**order, "account_id": second}), json.dumps(active_order("acc-nobody", AS_OF, 9)))
    append(
        "usage",
        json.dumps({**usage, "account_id": first, "used": "many"}),
        json.dumps({**usage, "account_id": second, "date": "2026-12-24"}),
        json.dumps({**usage, "account_id": "acc-nobody"}),
        json.dumps({**usage, "id": second}),  # no account_id: whose it is, is read from "id"
        json.dumps({**usage, "account_id": ""}),
    )
    append("activity", json.dumps({"account_id": second, "date": "2026-12-02", "logins": -1, "active_users": 1}))
    if unattributed:
        append("tickets", '{"id": "t-cut", "account_id": ')
    return first, second


async def stored_state(factory: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    """Everything a run stores, but the times it was stored at."""
    async with session_scope(factory) as session:
        accounts = {
            a.id: (a.chi, a.band, a.sections, a.reasons, a.facts, a.raw, a.products, a.renewal_date)
            for a in await session.scalars(select(Account))
        }
        tasks = {
            t.id: (t.rule, t.account_id, t.key, t.severity, t.title, t.description, t.due_on, t.active, t.evidence)
            for t in await session.scalars(select(Task))
        }
        points = sorted((p.account_id, p.chi, p.band) for p in await session.scalars(select(ChiPoint)))
        series = {(s.account_id, s.name): s.data for s in await session.scalars(select(DailySeries))}
        records = {(r.account_id, r.entity): r.rows for r in await session.scalars(select(AccountRecord))}
        run = await session.scalar(select(Run))
        assert run is not None and run.state == "succeeded"
        summary = (run.counts, run.bad_rows, run.bad_by_reason, run.chunks_total)
    return {
        "accounts": accounts,
        "tasks": tasks,
        "points": points,
        "series": series,
        "records": records,
        "run": summary,
    }


@pytest.mark.parametrize("unattributed", [False, True])
async def test_a_run_read_in_parts_stores_what_a_run_read_whole_does(
    sqlite_template: SqliteTemplate, tmp_path: Path, unattributed: bool
) -> None:
    """Each part reads every file but checks, folds and reports only its own customers' rows;
    a duplicate order id across customers of two parts is found all the same."""
    folder = tmp_path / "snapshot"
    write_demo_snapshot(folder, accounts=90, seed=8, as_of=AS_OF)
    first, second = _with_bad_rows(folder, unattributed)
    states = []
    for parts in (1, 3):
        engine = create_engine(sqlite_template.copy(tmp_path))
        try:
            factory = session_factory(engine)
            run, _ = await run_in_process(factory, request(folder, parts=parts))
            assert run.parts_total == parts
            async with session_scope(factory) as session:
                read = list(await session.scalars(select(RunPart).where(RunPart.run_id == run.id)))
            assert [part.state for part in read] == ["done"] * parts
            assert sum(part.counts["customers"] for part in read) == 90
            states.append(await stored_state(factory))
        finally:
            await engine.dispose()
    whole, in_parts = states
    assert in_parts == whole
    counts, bad_rows, _, _ = whole["run"]
    found = {(bad["file"], bad["line"], bad["field"], bad["account_id"]) for bad in bad_rows}
    lines = {entity: len((folder / f"{entity}.jsonl").read_text().splitlines()) for entity in ("orders", "usage")}
    assert ("accounts.jsonl", 91, "id", first) in found
    assert ("orders.jsonl", lines["orders"] - 1, "id", second) in found
    assert ("orders.jsonl", lines["orders"], "account_id", "acc-nobody") in found
    assert ("usage.jsonl", lines["usage"] - 4, "used", first) in found
    assert ("usage.jsonl", lines["usage"] - 3, "date", second) in found
    assert ("usage.jsonl", lines["usage"] - 2, "account_id", "acc-nobody") in found
    missing = next(bad for bad in bad_rows if (bad["file"], bad["line"]) == ("usage.jsonl", lines["usage"] - 1))
    assert missing["account_id"] == second and "account_id" in missing["message"]
    assert ("usage.jsonl", lines["usage"], "account_id", "") in found
    assert counts["bad_rows"] == 9 + unattributed
    assert counts["incomplete_customers"] == (90 if unattributed else 2)
