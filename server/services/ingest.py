"""Ingestion: a snapshot folder streamed into the engine and into the customer data the portal shows.

Reading runs in a worker thread, a batch of rows at a time (`asyncio.to_thread`), so the event
loop of a web server or an arq worker stays responsive; the rows are folded into the engine's
accumulators as they pass. What the portal needs besides scores is kept too:

* small entities (orders, invoices, tickets...) as each customer's raw rows, unknown fields
  included: ingestion notes where they lie in the files, and the chunk jobs read them back and
  rewrite a customer's record only where it changed;
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
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
from sqlalchemy import false, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.files import Block, Part, ReadReport, SnapshotFolderError, SnapshotFolderReader
from engine import Evaluator
from engine.results import AccountResult
from engine.snapshot import Account as AccountRow
from engine.snapshot import Meeting, Sentiment
from server.db.models import AccountRecord, DailySeries, MeetingOutcome, SentimentEntry
from server.db.upsert import upsert

SMALL_ENTITIES = ("orders", "invoices", "scanners", "schedules", "tickets", "meetings", "nps", "sentiment")
SERIES_FIELDS = {"usage": ("used", "scans", "failed_scans"), "activity": ("logins", "active_users")}
# What tells one series of an entity from the next: the customer, and the product for usage.
SERIES_KEYS = {"usage": attrgetter("account_id", "product"), "activity": attrgetter("account_id")}
DAY_OF = attrgetter("date")
HISTORY_DAYS = 400  # daily series are kept this far back from the latest as_of
BLOCKS_PER_STEP = 3  # blocks of rows read per hop to the worker thread
SERIES_PER_WRITE = 2_000


@dataclass
class PortalEntries:
    """What CSMs recorded in the portal, which the engine reads beside the snapshot."""

    sentiment: dict[str, list[Sentiment]] = field(default_factory=dict)
    outcomes: dict[str, tuple[str, dt.datetime]] = field(default_factory=dict)

    def with_outcomes(self, meetings: list[Meeting], as_of: dt.date) -> list[Meeting]:
        """The meetings with the outcomes recorded in the portal, unless the snapshot's is newer."""
        return [self._with_outcome(meeting, as_of) for meeting in meetings] if self.outcomes else meetings

    def _with_outcome(self, row: Meeting, as_of: dt.date) -> Meeting:
        entry = self.outcomes.get(row.id)
        if entry is None:
            return row
        outcome, recorded_at = entry
        if row.outcome and row.outcome.strip() and recorded_at.date() < as_of:
            return row  # the snapshot's outcome is newer than the one recorded in the portal
        return msgspec.structs.replace(row, outcome=outcome)

    def add_sentiment(self, evaluator: Evaluator) -> None:
        """Fold the recorded sentiment in after the snapshot's (the latest entry wins)."""
        for account_id, rows in self.sentiment.items():
            if evaluator.knows(account_id):
                evaluator.add_rows("sentiment", rows)


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
    """One customer's rows of one daily series, as read from this snapshot."""

    account_id: str
    name: str
    fields: tuple[str, ...]
    rows: list[Any] = field(default_factory=list)


class StagedAccount(msgspec.Struct, kw_only=True):
    """What ingestion hands to the chunk jobs for one customer: its line of accounts.jsonl, where
    its small-entity rows lie in the snapshot's files, its result and the facts the portal shows
    (not the raw rows the engine listed, which the chunks do not need)."""

    line: bytes
    records: dict[str, list[int]]  # entity: byte ranges in its file (start, end, start, end...)
    result: AccountResult
    facts: dict[str, Any]
    complete: bool


@dataclass
class RawRecords:
    """Where each customer's small-entity rows lie in the snapshot's files.

    Byte ranges, not the lines: holding the 2.9 million lines of a 100,000-customer snapshot
    until they are stored cost a quarter of a run's memory. A customer's rows usually follow
    each other in a file, so its ranges merge into one. The chunk jobs read them back
    (`record_texts`) when they write the customer's records.
    """

    spans: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # start, end, start, end...

    def add(self, block: Block) -> None:
        entity = block.entity
        spans = self.spans
        for row, line, offset in zip(block.rows, block.lines, block.offsets, strict=True):
            key = (row.account_id, entity)
            span = spans.get(key)
            if span is None:
                spans[key] = [offset, offset + len(line)]
            elif span[-1] == offset:
                span[-1] = offset + len(line)
            else:
                span += (offset, offset + len(line))

    def of(self, account_id: str) -> dict[str, list[int]]:
        spans = self.spans
        return {entity: spans[account_id, entity] for entity in SMALL_ENTITIES if (account_id, entity) in spans}


def record_texts(folder: Path, staged: Iterable[tuple[str, StagedAccount]]) -> dict[tuple[str, str], str]:
    """The rows of each (customer, entity) that has any, as one JSON array text in file order,
    read back from the snapshot's files (the caller checks they did not change since)."""
    files: dict[str, BinaryIO] = {}
    try:
        texts = {}
        for account_id, item in staged:
            for entity, span in item.records.items():
                if entity not in files:
                    files[entity] = (folder / f"{entity}.jsonl").open("rb")
                handle = files[entity]
                data = b""
                for start, end in zip(span[::2], span[1::2], strict=True):
                    handle.seek(start)
                    piece = handle.read(end - start)
                    if len(piece) != end - start:
                        raise SnapshotFolderError(f"{folder / entity}.jsonl: shorter than when it was read")
                    data += piece
                texts[account_id, entity] = lines_as_json_array(data).decode()
        return texts
    finally:
        for handle in files.values():
            handle.close()


def lines_as_json_array(lines: bytes) -> bytes:
    """JSON Lines (each line one good row) as one JSON array, each line stripped."""
    stripped = (line.strip() for line in lines.split(b"\n"))
    return b"[" + b",".join(line for line in stripped if line) + b"]"


@dataclass
class Ingestion:
    """The thread-side state of one ingestion."""

    evaluator: Evaluator
    portal: PortalEntries
    as_of: dt.date
    report: ReadReport = field(default_factory=ReadReport)
    records: RawRecords = field(default_factory=RawRecords)
    accounts: dict[str, tuple[AccountRow, bytes]] = field(default_factory=dict)
    current: dict[str, Series] = field(default_factory=dict)  # series being read, per entity
    finished: list[Series] = field(default_factory=list)

    def feed(self, block: Block) -> None:
        """Take one block of good rows of one entity (see SnapshotFolderReader.batches)."""
        entity, rows = block.entity, block.rows
        if entity == "accounts":
            for row, line in zip(rows, block.lines, strict=True):
                self.accounts[row.id] = (row, line)
                self.evaluator.add_account(row)
            return
        if entity == "meetings":
            rows = self.portal.with_outcomes(rows, self.as_of)
        self.evaluator.add_rows(entity, rows)
        if entity in SMALL_ENTITIES:
            self.records.add(block)
        else:
            self._add_to_series(entity, rows)

    def _add_to_series(self, entity: str, rows: list[Any]) -> None:
        fields = SERIES_FIELDS[entity]
        series = self.current.get(entity)
        # Rows come in runs of one series (files are grouped by customer and product): the
        # work per row is C's (groupby, list), Python's is per run.
        usage = entity == "usage"
        for key, run in groupby(rows, SERIES_KEYS[entity]):
            account_id, name = (key[0], "usage:" + key[1]) if usage else (key, "activity")
            if series is None or series.account_id != account_id or series.name != name:
                if series is not None:
                    self.finished.append(series)
                series = self.current[entity] = Series(account_id, name, fields)
            series.rows += run

    def close(self) -> None:
        """The stream ended: flush open series and read the portal's sentiment after the snapshot's."""
        self.finished.extend(self.current.values())
        self.current.clear()
        self.portal.add_sentiment(self.evaluator)

    def take_finished(self) -> list[Series]:
        finished, self.finished = self.finished, []
        return finished


def _advance(stream: Iterator[Block], ingestion: Ingestion, blocks: int) -> bool:
    """Read up to `blocks` blocks of rows (in a worker thread). False when the stream is exhausted."""
    for _ in range(blocks):
        item = next(stream, None)
        if item is None:
            ingestion.close()
            return False
        ingestion.feed(item)
    return True


def merge_series(stored: str | None, series: Series, as_of: dt.date) -> tuple[dt.date, dt.date, str]:
    """This snapshot's days over the stored history, trimmed to HISTORY_DAYS, as the stored JSON."""
    rows = series.rows
    ordinals = list(map(dt.date.toordinal, map(DAY_OF, rows)))
    horizon = as_of.toordinal() - HISTORY_DAYS + 1
    first = ordinals[0]
    if first >= horizon and ordinals == list(range(first, first + len(ordinals))):
        first, columns = _merged_consecutive(stored, series, first, horizon)
    else:
        first, columns = _merged_day_by_day(stored, series, ordinals, horizon)
    data = {"start": dt.date.fromordinal(first).isoformat(), **dict(zip(series.fields, columns, strict=True))}
    last = first + len(columns[0]) - 1
    return dt.date.fromordinal(first), dt.date.fromordinal(last), msgspec.json.encode(data).decode()


def _merged_consecutive(stored: str | None, series: Series, first: int, horizon: int) -> tuple[int, list[list[Any]]]:
    """The usual case, a column at a time (list operations in C, not a step per day): this
    snapshot's rows are consecutive days in order, all inside the history window."""
    new = [list(map(attrgetter(name), series.rows)) for name in series.fields]
    if not stored:
        return first, new
    old = msgspec.json.decode(stored)
    start = dt.date.fromisoformat(old["start"]).toordinal()
    old_columns = [old[name] for name in series.fields]
    # Stored days before the window go; so do the blank days that then lead.
    first_column = old_columns[0]
    keep_from = next(
        (index for index in range(max(horizon - start, 0), len(first_column)) if first_column[index] is not None), None
    )
    if keep_from is None:
        return first, new
    start += keep_from
    old_end = start + len(old_columns[0]) - keep_from - 1
    last = max(old_end, first + len(new[0]) - 1)
    begin = min(start, first)
    columns = []
    for old_column, new_column in zip(old_columns, new, strict=True):
        column = [None] * (last - begin + 1)
        column[start - begin : old_end - begin + 1] = old_column[keep_from:]
        column[first - begin : first - begin + len(new_column)] = new_column  # the snapshot wins
        columns.append(column)
    return begin, columns


def _merged_day_by_day(
    stored: str | None, series: Series, ordinals: list[int], horizon: int
) -> tuple[int, list[list[Any]]]:
    """Any other shape: gaps, days out of order or repeated (the last one wins), days before the window."""
    fields = series.fields
    days: dict[int, Any] = dict(zip(ordinals, map(attrgetter(*fields), series.rows), strict=True))
    if stored:
        old = msgspec.json.decode(stored)
        start = dt.date.fromisoformat(old["start"]).toordinal()
        for offset, old_values in enumerate(zip(*(old[name] for name in fields), strict=True)):
            if old_values[0] is not None:
                days.setdefault(start + offset, old_values)
    kept = [day for day in days if day >= horizon] or list(days)
    first, last = min(kept), max(kept)
    # Day by day (a gap is a row of nulls), then turned into one column per field.
    gap = (None,) * len(fields)
    by_day = [days.get(day, gap) for day in range(first, last + 1)]
    return first, [list(column) for column in zip(*by_day, strict=True)]


async def write_series(session: AsyncSession, batch: list[Series], as_of: dt.date) -> int:
    # A file not grouped by customer gives several pieces of one series: they are one row of the
    # upsert, their rows in file order (two rows of the upsert for one key would keep only the last).
    pieces: dict[tuple[str, str], Series] = {}
    for series in batch:
        key = (series.account_id, series.name)
        if key in pieces:
            pieces[key] = Series(series.account_id, series.name, series.fields, pieces[key].rows + series.rows)
        else:
            pieces[key] = series
    batch = list(pieces.values())
    keys = set(pieces)
    # By customer, not by (customer, name) pairs: PostgreSQL refuses IN lists of thousands of tuples.
    stored = {
        (row.account_id, row.name): row.data
        for row in await session.scalars(
            select(DailySeries).where(DailySeries.account_id.in_({account_id for account_id, _ in keys}))
        )
        if (row.account_id, row.name) in keys
    }
    rows = []
    for series in batch:
        previous = stored.get((series.account_id, series.name))
        first, last, data = merge_series(previous, series, as_of)
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


def account_columns(line: bytes, run_id: int, as_of: dt.date) -> dict[str, Any]:
    """The account table's columns that come from the customer's line of accounts.jsonl."""
    account = msgspec.json.decode(line, type=AccountRow)
    return {
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
        "raw": msgspec.json.decode(line),
        "last_seen_run_id": run_id,
        "last_seen_as_of": as_of,
    }


def spanning(column: Any, account_ids: Sequence[str]) -> Any:
    """`column` between the least and the greatest of `account_ids`: a chunk's
    customers are a range of the sorted ids, and a range reads the index on any database,
    whatever its statistics know. A list of a thousand ids made PostgreSQL scan the whole table
    once per chunk while its statistics were behind (a first big run, autovacuum off or late).
    The rows of other customers in the range are left out by the caller."""
    return column.between(min(account_ids), max(account_ids)) if account_ids else false()


async def write_records(
    session: AsyncSession, folder: Path, staged: Sequence[tuple[str, StagedAccount]], run_id: int
) -> int:
    """Each customer's small-entity rows; only those that changed are written."""
    account_ids = [account_id for account_id, _ in staged]
    keys = [(account_id, entity) for account_id in account_ids for entity in SMALL_ENTITIES]
    chunk = set(account_ids)
    stored = {
        (account_id, entity): fingerprint
        for account_id, entity, fingerprint in await session.execute(
            select(AccountRecord.account_id, AccountRecord.entity, AccountRecord.fingerprint).where(
                spanning(AccountRecord.account_id, account_ids)
            )
        )
        if account_id in chunk
    }
    texts = record_texts(folder, staged)
    rows = []
    for key in keys:
        text = texts.get(key, "[]")
        fingerprint = hashlib.sha256(text.encode()).hexdigest()
        if stored.get(key) != fingerprint and (key in texts or key in stored):
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
    part: Part,
    ingestion: Ingestion,
    write: Callable[[list[Series]], Coroutine[Any, Any, None]],
) -> None:
    """Read `part`'s customers in the snapshot, handing finished daily series to `write(batch)`
    as the file moves on.

    A batch is written while the next rows are read: the database works (SQLite in its own
    thread, PostgreSQL in its own process) while Python reads, instead of in turn. One write at
    a time, in order, so a series split over two batches is merged in file order.
    """
    stream = reader.batches(ingestion.report, part)
    writing: asyncio.Task[None] | None = None
    more = True
    try:
        while more:
            more = await asyncio.to_thread(_advance, stream, ingestion, BLOCKS_PER_STEP)
            if len(ingestion.finished) >= SERIES_PER_WRITE or not more:
                batch = ingestion.take_finished()
                if writing is not None:
                    await writing
                writing = asyncio.create_task(write(batch))
    except BaseException:
        if writing is not None:  # the reading failed: the write in flight is not wanted
            writing.cancel()
            with suppress(asyncio.CancelledError):
                await writing
        raise
    if writing is not None:
        await writing


def stage_account(ingestion: Ingestion, account_id: str, complete: bool) -> StagedAccount:
    facts, result = ingestion.evaluator.evaluate(account_id)
    return StagedAccount(
        line=ingestion.accounts[account_id][1],
        records=ingestion.records.of(account_id),
        result=result,
        facts=portal_facts(facts),
        complete=complete,
    )


def portal_facts(facts: dict[str, Any] | None) -> dict[str, Any]:
    """The facts worth showing in the portal (JSON builtins): scalars and collections, not raw row lists."""
    if facts is None:
        return {}
    shown = {name: value for name, value in facts.items() if name not in SMALL_ENTITIES}
    return msgspec.to_builtins(shown)  # type: ignore[no-any-return]
