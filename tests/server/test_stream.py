"""Reading a snapshot while its daily series are written: one write at a time, in file order,
overlapping the reading; a reading that fails takes the write in flight down with it."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors import files
from connectors.files import WHOLE, Block, Part, ReadReport, SnapshotFolderReader
from engine import CompiledPolicies, Evaluator
from server.services import ingest
from server.services.ingest import Ingestion, PortalEntries, Series, stream_snapshot
from tests.snapshots import account, write_snapshot

AS_OF = dt.date(2026, 12, 4)


def snapshot(folder: Path, customers: int) -> Path:
    accounts = [account(f"acc-{number:03}") for number in range(customers)]
    usage = [
        {
            "account_id": row["id"],
            "product": product,
            "date": (AS_OF - dt.timedelta(days=days_ago)).isoformat(),
            "used": 1.5,
            "scans": days_ago,
            "failed_scans": 0,
        }
        for row in accounts
        for product in ("p", "q")
        for days_ago in (2, 1, 0)
    ]
    return write_snapshot(folder, AS_OF, {"accounts": accounts, "usage": usage})


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few lines, a hop to the reading thread per block, a write per finished series:
    a small snapshot then takes many turns of reading and writing."""
    monkeypatch.setattr(files, "BLOCK_BYTES", 300)
    monkeypatch.setattr(ingest, "BLOCKS_PER_STEP", 1)
    monkeypatch.setattr(ingest, "SERIES_PER_WRITE", 1)


def ingestion(policies: CompiledPolicies) -> Ingestion:
    return Ingestion(Evaluator(policies, AS_OF), PortalEntries(), AS_OF)


@pytest.mark.usefixtures("small_steps")
async def test_series_are_written_one_batch_at_a_time_in_file_order_while_reading_goes_on(
    default_policies: CompiledPolicies, tmp_path: Path
) -> None:
    reader = SnapshotFolderReader(snapshot(tmp_path / "s", 12))
    state = ingestion(default_policies)
    written: list[tuple[str, str]] = []
    writing = 0
    read_during_writes = 0

    async def write(batch: list[Series]) -> None:
        nonlocal writing, read_during_writes
        assert writing == 0, "two writes at once"
        writing += 1
        bytes_before = state.report.bytes_read
        await asyncio.sleep(0.01)
        read_during_writes += state.report.bytes_read > bytes_before
        written.extend((series.account_id, series.name) for series in batch)
        writing -= 1

    await stream_snapshot(reader, WHOLE, state, write)
    expected = [(f"acc-{number:03}", f"usage:{product}") for number in range(12) for product in ("p", "q")]
    assert written == expected
    assert read_during_writes > 0  # the reading went on while series were written


class FailingReader(SnapshotFolderReader):
    """Cannot read the next block once `broken` says so."""

    broken: list[int]

    def batches(self, report: ReadReport, part: Part = WHOLE) -> Iterator[Block]:
        for block in super().batches(report, part):
            # The reading thread may get here before the event loop has started the write just
            # handed over (a loaded machine): give it a moment, so that the block after it fails.
            deadline = time.monotonic() + 0.5
            while not self.broken and time.monotonic() < deadline:
                time.sleep(0.005)
            if self.broken:
                raise OSError("the disk went away")
            yield block


@pytest.mark.usefixtures("small_steps")
async def test_a_reading_that_fails_cancels_the_write_in_flight(
    default_policies: CompiledPolicies, tmp_path: Path
) -> None:
    reader = FailingReader(snapshot(tmp_path / "s", 12))
    started: list[int] = []
    reader.broken = started  # the first write is in flight when the next block fails
    finished: list[int] = []
    cancelled: list[int] = []

    async def write(batch: list[Any]) -> None:
        number = len(started)
        started.append(number)
        try:
            await asyncio.sleep(3600)  # still writing when the reading fails
        except asyncio.CancelledError:
            cancelled.append(number)
            raise
        finished.append(number)

    with pytest.raises(OSError, match="the disk went away"):
        await asyncio.wait_for(stream_snapshot(reader, WHOLE, ingestion(default_policies), write), timeout=30)
    assert started == cancelled == [0]
    assert not finished
