"""Ingestion: a snapshot folder streamed into the engine and into the customer data the portal shows.

Reading runs in a worker thread, a batch of rows at a time (`asyncio.to_thread`), so the event
loop of a web server or an arq worker stays responsive; the rows are folded into the engine's
accumulators as they pass. What the portal needs besides scores is kept too:

* small entities (orders, invoices, tickets...) as each customer's raw rows, unknown fields
  included, rewritten only where they changed;
* daily usage and activity as one series per customer (and product), merged with the history
  already stored, so the portal can chart more than one snapshot's window. Series are handed
  to the database as soon as the file moves on to another customer, so memory does not grow
  with the number of usage rows.

Portal entries are inputs too (DATA.md): sentiment recorded in the portal is read after the
snapshot's own sentiment rows (so on the same day it wins), and a meeting outcome recorded in
the portal replaces a blank snapshot outcome, or any snapshot outcome it is newer than.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.files import ReadReport, SnapshotFolderReader
from engine import Evaluator
from engine.results import AccountResult
from engine.snapshot import Account as AccountRow
from engine.snapshot import Meeting, Sentiment
from server.db.models import Account, AccountRecord, DailySeries, MeetingOutcome, SentimentEntry
from server.db.upsert import upsert

SMALL_ENTITIES = ("orders", "invoices", "scanners", "schedules", "tickets", "meetings", "nps", "sentiment")
SERIES_FIELDS = {"usage": ("used", "scans", "failed_scans"), "activity": ("logins", "active_users")}
HISTORY_DAYS = 400  # daily series are kept this far back from the latest as_of
ROWS_PER_BATCH = 50_000
SERIES_PER_WRITE = 2_000


@dataclass
class PortalEntries:
    sentiment: dict[str, list[Sentiment]] = field(default_factory=dict)
    outcomes: dict[str, tuple[str, dt.datetime]] = field(default_factory=dict)


async def load_portal_entries(session: AsyncSession) -> PortalEntries:
    entries = PortalEntries()
    for entry in await session.scalars(select(SentimentEntry).order_by(SentimentEntry.id)):
        # The value was checked when it was recorded; convert checks it again.
        row = msgspec.convert(
            {
                "account_id": entry.account_id,
                "recorded_on": entry.recorded_on,
                "value": entry.value,
                "by": entry.recorded_by,
            },
            Sentiment,
        )
        entries.sentiment.setdefault(entry.account_id, []).append(row)
    for outcome in await session.scalars(select(MeetingOutcome)):
        entries.outcomes[outcome.meeting_id] = (outcome.outcome, outcome.recorded_at)
    return entries


@dataclass
class Series:
    """One customer's daily values for one series, from the rows of this snapshot."""

    account_id: str
    name: str
    fields: tuple[str, ...]
    days: dict[dt.date, tuple[float, ...]] = field(default_factory=dict)


class StagedAccount(msgspec.Struct, kw_only=True):
    """What ingestion hands to the chunk jobs for one customer."""

    result: AccountResult
    facts: dict[str, Any] | None
    complete: bool


@dataclass
class Ingestion:
    """The thread-side state of one ingestion."""

    evaluator: Evaluator
    portal: PortalEntries
    as_of: dt.date
    report: ReadReport = field(default_factory=ReadReport)
    accounts: dict[str, tuple[AccountRow, bytes]] = field(default_factory=dict)
    records: dict[tuple[str, str], list[bytes]] = field(default_factory=lambda: defaultdict(list))
    current: dict[str, Series] = field(default_factory=dict)  # series being read, per entity
    finished: list[Series] = field(default_factory=list)

    def feed(self, entity: str, row: Any, line: bytes) -> None:
        if entity == "accounts":
            self.accounts[row.id] = (row, line)
            self.evaluator.add_account(row)
            return
        if entity == "meetings":
            row = self._with_portal_outcome(row)
        self.evaluator.add_row(entity, row)
        if entity in SMALL_ENTITIES:
            self.records[(row.account_id, entity)].append(line)
        else:
            self._add_to_series(entity, row)

    def _with_portal_outcome(self, row: Meeting) -> Meeting:
        entry = self.portal.outcomes.get(row.id)
        if entry is None:
            return row
        outcome, recorded_at = entry
        if row.outcome and row.outcome.strip() and recorded_at.date() < self.as_of:
            return row  # the snapshot's outcome is newer than the one recorded in the portal
        return msgspec.structs.replace(row, outcome=outcome)

    def _add_to_series(self, entity: str, row: Any) -> None:
        fields = SERIES_FIELDS[entity]
        name = f"usage:{row.product}" if entity == "usage" else "activity"
        series = self.current.get(entity)
        if series is None or series.account_id != row.account_id or series.name != name:
            if series is not None:
                self.finished.append(series)
            series = self.current[entity] = Series(row.account_id, name, fields)
        series.days[row.date] = tuple(getattr(row, name) for name in fields)

    def close(self) -> None:
        """The stream ended: flush open series and read the portal's sentiment after the snapshot's."""
        self.finished.extend(self.current.values())
        self.current.clear()
        for account_id, rows in self.portal.sentiment.items():
            if self.evaluator.knows(account_id):
                for row in rows:
                    self.evaluator.add_row("sentiment", row)

    def take_finished(self) -> list[Series]:
        finished, self.finished = self.finished, []
        return finished


def _advance(stream: Iterator[tuple[str, Any, bytes]], ingestion: Ingestion, count: int) -> bool:
    """Read up to `count` rows (in a worker thread). False when the stream is exhausted."""
    for _ in range(count):
        item = next(stream, None)
        if item is None:
            ingestion.close()
            return False
        ingestion.feed(*item)
    return True


def _merge_series(stored: str | None, series: Series, as_of: dt.date) -> tuple[dt.date, dt.date, str]:
    """This snapshot's days over the stored history, trimmed to HISTORY_DAYS, as the stored JSON."""
    days: dict[dt.date, list[Any]] = {}
    if stored:
        old = msgspec.json.decode(stored)
        start = dt.date.fromisoformat(old["start"])
        for offset in range(len(old[series.fields[0]])):
            values = [old[name][offset] for name in series.fields]
            if values[0] is not None:
                days[start + dt.timedelta(days=offset)] = values
    for day, new_values in series.days.items():
        days[day] = list(new_values)
    horizon = as_of - dt.timedelta(days=HISTORY_DAYS - 1)
    kept = sorted(day for day in days if day >= horizon) or sorted(days)
    first, last = kept[0], kept[-1]
    span = (last - first).days + 1
    data: dict[str, Any] = {"start": first.isoformat()}
    for index, name in enumerate(series.fields):
        column: list[Any] = [None] * span
        for day in kept:
            column[(day - first).days] = days[day][index]
        data[name] = column
    return first, last, msgspec.json.encode(data).decode()


async def write_series(session: AsyncSession, batch: list[Series], as_of: dt.date) -> int:
    keys = [(series.account_id, series.name) for series in batch]
    stored = {
        (row.account_id, row.name): row.data
        for row in await session.scalars(
            select(DailySeries).where(tuple_(DailySeries.account_id, DailySeries.name).in_(keys))
        )
    }
    rows = []
    for series in batch:
        previous = stored.get((series.account_id, series.name))
        first, last, data = _merge_series(previous, series, as_of)
        if data != previous:
            rows.append(
                {
                    "account_id": series.account_id,
                    "name": series.name,
                    "first_day": first,
                    "last_day": last,
                    "data": data,
                }
            )
    await upsert(session, DailySeries, rows, ("account_id", "name"), ("first_day", "last_day", "data"))
    return len(rows)


async def write_accounts(
    session: AsyncSession, accounts: dict[str, tuple[AccountRow, bytes]], run_id: int, as_of: dt.date
) -> None:
    rows = []
    for account, line in accounts.values():
        raw = msgspec.json.decode(line)
        rows.append(
            {
                "id": account.id,
                "name": account.name,
                "tier": account.tier,
                "csm": account.csm,
                "acv": account.acv,
                "currency": account.currency,
                "crm_id": account.crm_id,
                "success_program": account.success_program,
                "segment": account.segment,
                "region": account.region,
                "source_tags": account.tags or [],
                "raw": raw,
                "last_seen_run_id": run_id,
                "last_seen_as_of": as_of,
            }
        )
    columns = [name for name in rows[0] if name != "id"] if rows else []
    await upsert(session, Account, rows, ("id",), columns)


async def write_records(session: AsyncSession, ingestion: Ingestion, account_ids: list[str], run_id: int) -> int:
    """Each customer's small-entity rows; only those that changed are written."""
    keys = [(account_id, entity) for account_id in account_ids for entity in SMALL_ENTITIES]
    stored = {
        (record.account_id, record.entity): record.fingerprint
        for record in await session.scalars(
            select(AccountRecord).where(tuple_(AccountRecord.account_id, AccountRecord.entity).in_(keys))
        )
    }
    rows = []
    for key in keys:
        lines = ingestion.records.get(key, [])
        text = "[" + ",".join(line.decode().strip() for line in lines) + "]"
        fingerprint = hashlib.sha256(text.encode()).hexdigest()
        if stored.get(key) != fingerprint and (lines or key in stored):
            rows.append(
                {
                    "account_id": key[0],
                    "entity": key[1],
                    "rows": text,
                    "fingerprint": fingerprint,
                    "updated_run_id": run_id,
                }
            )
    await upsert(session, AccountRecord, rows, ("account_id", "entity"), ("rows", "fingerprint", "updated_run_id"))
    return len(rows)


async def stream_snapshot(
    reader: SnapshotFolderReader,
    ingestion: Ingestion,
    write: Any,
) -> None:
    """Read the whole snapshot, handing finished daily series to `write(batch)` as the file moves on."""
    stream = reader.rows(ingestion.report)
    more = True
    while more:
        more = await asyncio.to_thread(_advance, stream, ingestion, ROWS_PER_BATCH)
        if len(ingestion.finished) >= SERIES_PER_WRITE or not more:
            await write(ingestion.take_finished())


def stage_account(ingestion: Ingestion, account_id: str, complete: bool) -> StagedAccount:
    facts, result = ingestion.evaluator.evaluate(account_id)
    return StagedAccount(result=result, facts=facts, complete=complete)


def portal_facts(facts: dict[str, Any] | None) -> dict[str, Any]:
    """The facts worth showing in the portal (JSON builtins): scalars and collections, not raw row lists."""
    if facts is None:
        return {}
    shown = {name: value for name, value in facts.items() if name not in SMALL_ENTITIES}
    return msgspec.to_builtins(shown)  # type: ignore[no-any-return]
