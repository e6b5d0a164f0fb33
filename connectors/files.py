"""The file connector: reads a snapshot folder (DATA.md) as a stream of checked rows.

Every line is decoded by msgspec straight into the engine's row structs (types, enums, dates
and timestamps checked on the way), then `engine.snapshot.RowChecker` catches what a row alone
cannot show (unknown customer, duplicate id, a second usage row for a day, impossible dates).
A bad row is reported with file, line and field and skipped; nothing else is held in memory,
so the reader's footprint does not grow with the number of usage rows.

Rows are delivered accounts first, then entity by entity in file order, which is what the
engine's streaming evaluator needs (and what "ties: last in file order" refers to).

A reader can deliver one `Part` of the customers, so that several workers share a run's
reading: each reads every file but checks, delivers and reports only its own customers' rows
(by a hash of the customer id). What needs every row — the set of customers, duplicate ids of
orders or tickets across customers — is still checked on every row by every part.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate, compress, groupby
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from engine.snapshot import FILE_ENTITIES, ROW_TYPES, BadRow, Manifest, RowChecker, field_of_error

MAX_LINE_BYTES = 1_000_000
KEPT_BAD_ROWS = 1000  # reported in full; beyond that only counted
ROUTED_ENTITIES = ("usage", "activity")  # nearly all rows: another part's are parsed only for their customer


class SnapshotFolderError(Exception):
    """The folder cannot be read at all (no manifest, wrong format...)."""


@dataclass
class ReadReport:
    """What reading a snapshot found: rows kept per file, and the bad rows."""

    rows_kept: Counter[str] = field(default_factory=Counter)
    bad_rows: list[BadRow] = field(default_factory=list)
    bad_row_count: int = 0
    bad_by_reason: Counter[str] = field(default_factory=Counter)
    bytes_read: int = 0
    incomplete_accounts: set[str] = field(default_factory=set)  # customers with a bad row
    unattributed: bool = False  # a bad row of no known customer: nobody's data is known complete

    def add_bad(self, bad: BadRow) -> None:
        if bad.account_id is None:
            self.unattributed = True
        else:
            self.incomplete_accounts.add(bad.account_id)
        self.bad_row_count += 1
        self.bad_by_reason[f"{bad.file}: {bad.field or 'line'}"] += 1
        if len(self.bad_rows) < KEPT_BAD_ROWS:
            self.bad_rows.append(bad)


def read_manifest(folder: Path) -> Manifest:
    path = folder / "manifest.json"
    if not folder.is_dir():
        raise SnapshotFolderError(f"{folder}: not a folder")
    if not path.is_file():
        raise SnapshotFolderError(f"{folder}: no manifest.json (is this a snapshot folder?)")
    try:
        return msgspec.json.decode(path.read_bytes(), type=Manifest)
    except msgspec.DecodeError as exc:
        raise SnapshotFolderError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class Part:
    """Customers `number` of `of` shares; rows of no known customer belong to part 0."""

    number: int = 0
    of: int = 1

    def owns(self, account_id: str | None) -> bool:
        if self.of == 1:
            return True
        if account_id is None:
            return self.number == 0
        return zlib.crc32(account_id.encode()) % self.of == self.number


WHOLE = Part()


class _AccountOnly(msgspec.Struct):
    account_id: str


_ACCOUNT_ONLY = msgspec.json.Decoder(_AccountOnly)


def _owner_of(line: bytes) -> str | None:
    """The customer a line names, if any (what a bad row is attributed to)."""
    try:
        return _ACCOUNT_ONLY.decode(line).account_id
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _account_of(line)


BLOCK_BYTES = 2 << 20  # lines are read, decoded and checked about this many bytes at a time


class Block(NamedTuple):
    """Good rows of one entity, in file order, with their lines and where each line starts."""

    entity: str
    rows: list[Any]
    lines: list[bytes]
    offsets: Sequence[int]  # byte offset of each line in the entity's file


def _blocks(path: Path) -> Iterator[tuple[Sequence[int], list[bytes], Sequence[int]]]:
    """Blocks of (line numbers, lines, byte offsets) of a JSON Lines file, blank lines left out."""
    number = 0
    position = 0
    with path.open("rb") as handle:
        while chunk := handle.readlines(BLOCK_BYTES):
            first = number + 1
            number += len(chunk)
            offsets = list(accumulate(map(len, chunk), initial=position))
            position = offsets.pop()
            # readlines() gives no empty line, so "blank" is "only white space" (cheaper than strip()).
            lines = [line for line in chunk if not line.isspace()]
            if len(lines) == len(chunk):
                yield range(first, number + 1), lines, offsets
            else:
                kept = [index for index, line in enumerate(chunk) if not line.isspace()]
                yield [first + index for index in kept], lines, [offsets[index] for index in kept]


def _decode_block(
    decoder: msgspec.json.Decoder[Any],
    file_name: str,
    numbers: Sequence[int],
    lines: list[bytes],
    offsets: Sequence[int],
    refuse: Callable[[BadRow], None],
) -> tuple[list[Any], Sequence[int], list[bytes], Sequence[int]]:
    """Decode every line; a bad one is reported and left out (with its number, from `numbers`)."""
    decode = decoder.decode
    try:
        rows = [decode(line) for line in lines]
        if max(map(len, lines), default=0) <= MAX_LINE_BYTES:
            return rows, numbers, lines, offsets
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    rows, kept_numbers, kept_lines, kept_offsets = [], [], [], []
    for number, line, offset in zip(numbers, lines, offsets, strict=True):
        row, bad = _decode(decoder, file_name, number, line)
        if bad is not None:
            refuse(bad)
            continue
        rows.append(row)
        kept_numbers.append(number)
        kept_lines.append(line)
        kept_offsets.append(offset)
    return rows, kept_numbers, kept_lines, kept_offsets


def _account_of(line: bytes) -> str | None:
    """Whose row a line is meant to be, if its JSON parses at all (to withhold only that customer's resolutions)."""
    try:
        loose = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return None
    if not isinstance(loose, dict):
        return None
    account = loose.get("account_id", loose.get("id"))
    return account if isinstance(account, str) else None


def _decode(decoder: msgspec.json.Decoder[Any], file_name: str, number: int, line: bytes) -> tuple[Any, BadRow | None]:
    if len(line) > MAX_LINE_BYTES:
        return None, BadRow(file=file_name, line=number, field=None, message="line longer than 1 MB", account_id=None)
    try:
        return decoder.decode(line), None
    except msgspec.ValidationError as exc:
        field_name, message = field_of_error(str(exc))
        return None, BadRow(
            file=file_name, line=number, field=field_name, message=message, account_id=_account_of(line)
        )
    except msgspec.DecodeError as exc:
        return None, BadRow(file=file_name, line=number, field=None, message=f"not valid JSON: {exc}", account_id=None)


def _routed(
    part: Part, numbers: Sequence[int], lines: list[bytes], offsets: Sequence[int], report: ReadReport
) -> tuple[Sequence[int], list[bytes], Sequence[int]]:
    """The lines of `part`'s customers (and, for part 0, those that name no customer)."""
    owners: list[str | None] | None = None
    if max(map(len, lines), default=0) <= MAX_LINE_BYTES:
        decode = _ACCOUNT_ONLY.decode
        with suppress(msgspec.ValidationError, msgspec.DecodeError):
            owners = [decode(line).account_id for line in lines]
    if owners is None:  # a bad line in the block: each line on its own
        owners = [None if len(line) > MAX_LINE_BYTES else _owner_of(line) for line in lines]
        if None in owners:
            report.unattributed = True  # a line naming no customer is a bad row (part 0 reports it)
    # Lines come in runs of one customer's rows (files are mostly grouped by customer): the work
    # per line is C's (groupby, list); Python's is per run.
    mine: list[bool] = []
    for owner, run in groupby(owners):
        mine += [part.owns(owner)] * len(list(run))
    return _kept(mine, numbers), _kept(mine, lines), _kept(mine, offsets)


def _kept(mine: list[bool], column: Sequence[Any]) -> list[Any]:
    return list(compress(column, mine))


def _refuse(report: ReadReport, part: Part, bad: BadRow) -> None:
    """Report a bad row if it is `part`'s; another part reports it, but a row of no known
    customer leaves every part's customers incomplete."""
    if part.owns(bad.account_id):
        report.add_bad(bad)
    elif bad.account_id is None:
        report.unattributed = True


class SnapshotFolderReader:
    """Streams the rows of a snapshot folder into a sink, checking each one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = read_manifest(folder)
        self.as_of = self.manifest.as_of

    def batches(self, report: ReadReport, part: Part = WHOLE) -> Iterator[Block]:
        """Blocks of good rows of `part`'s customers, accounts first; their bad rows go to `report`.

        Lines are read a block at a time; only a block with a bad line is decoded a second time,
        line by line, to tell exactly which line and field is wrong.
        """
        checker = RowChecker(self.as_of)
        for entity in FILE_ENTITIES:
            path = self.folder / f"{entity}.jsonl"
            if not path.is_file():
                continue  # DATA.md: a missing entity file means "no rows"
            row_type = ROW_TYPES[entity]
            decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(row_type)
            routed = part.of > 1 and entity in ROUTED_ENTITIES
            for numbers, lines, offsets in _blocks(path):
                report.bytes_read += sum(map(len, lines))
                if routed:
                    numbers, lines, offsets = _routed(part, numbers, lines, offsets, report)
                rows, numbers, lines, offsets = _decode_block(
                    decoder, path.name, numbers, lines, offsets, partial(_refuse, report, part)
                )
                bad = checker.check_batch(entity, rows)
                for index, field_name, message in bad:
                    row = rows[index]
                    account = row.id if entity == "accounts" else row.account_id
                    _refuse(
                        report,
                        part,
                        BadRow(
                            file=path.name, line=numbers[index], field=field_name, message=message, account_id=account
                        ),
                    )
                if bad:
                    refused = {index for index, _, _ in bad}
                    good = [index not in refused for index in range(len(rows))]
                    rows, lines, offsets = _kept(good, rows), _kept(good, lines), _kept(good, offsets)
                if part.of > 1 and not routed:
                    mine = [part.owns(row.id if entity == "accounts" else row.account_id) for row in rows]
                    rows, lines, offsets = _kept(mine, rows), _kept(mine, lines), _kept(mine, offsets)
                report.rows_kept[entity] += len(rows)
                if rows:
                    yield Block(entity, rows, lines, offsets)

    def total_bytes(self) -> int:
        return sum(
            (self.folder / f"{entity}.jsonl").stat().st_size
            for entity in FILE_ENTITIES
            if (self.folder / f"{entity}.jsonl").is_file()
        )
