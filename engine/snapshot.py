"""The snapshot the engine scores: typed rows of DATA.md, and the catalogue of their fields.

Rows are msgspec structs so that a connector decodes JSON Lines straight into them (dates and
timestamps parsed and checked by msgspec). `ENTITIES` tells the policy compiler, for each
entity, which fields expressions may read, with their types, and which date a window or a
"latest" is measured on. Timestamps are exposed to expressions as their UTC date (DATA.md:
"where a rule needs a day, a timestamp counts on its UTC date").

`order_lines` is not a file: it is every `{product, capacity}` of an order's `products`, seen
together with the order's own fields, so that policies can group capacity by product.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from engine.types import BOOL, DATE, NUMBER, TEXT, TEXT_LIST, Type

Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=10_000)]
Count = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
Amount = Annotated[float, msgspec.Meta(ge=-(10**15), le=10**15)]
NonNegative = Annotated[float, msgspec.Meta(ge=0, le=10**15)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]


class Row(msgspec.Struct, kw_only=True, gc=False):
    """Base of every snapshot row. Unknown fields are ignored (DATA.md keeps them in the raw payload).

    Rows hold no references to other objects, so the garbage collector need not track them
    (`gc=False`): millions of rows then cost no collection pauses.
    """

    entity: ClassVar[str]


class Account(Row, kw_only=True):
    entity: ClassVar[str] = "accounts"
    id: Id
    name: Text
    tier: Literal["T1", "T2", "T3", "T4"]
    csm: Text
    acv: NonNegative
    currency: Currency
    crm_id: Text | None = None
    success_program: Text | None = None
    segment: Text | None = None
    region: Text | None = None
    tags: list[Annotated[str, msgspec.Meta(max_length=100)]] | None = None


class OrderProduct(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    product: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    capacity: NonNegative


class Order(Row, kw_only=True):
    entity: ClassVar[str] = "orders"
    id: Id
    account_id: Id
    status: Literal["active", "pending", "expired", "cancelled"]
    start_date: dt.date
    end_date: dt.date
    acv: NonNegative
    products: list[OrderProduct]


class Invoice(Row, kw_only=True):
    entity: ClassVar[str] = "invoices"
    id: Id
    account_id: Id
    number: Text
    amount: Amount
    currency: Currency
    issued_on: dt.date
    due_on: dt.date
    paid_on: dt.date | None = None
    status: Literal["open", "paid", "void"]


class Usage(Row, kw_only=True):
    entity: ClassVar[str] = "usage"
    account_id: Id
    product: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    date: dt.date
    used: NonNegative
    scans: Count
    failed_scans: Count


class Activity(Row, kw_only=True):
    entity: ClassVar[str] = "activity"
    account_id: Id
    date: dt.date
    logins: Count
    active_users: Count


class Scanner(Row, kw_only=True):
    entity: ClassVar[str] = "scanners"
    id: Id
    account_id: Id
    name: Text
    last_seen_at: Timestamp | None = None


class Schedule(Row, kw_only=True):
    entity: ClassVar[str] = "schedules"
    id: Id
    account_id: Id
    product: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    enabled: bool
    interval_days: Annotated[int, msgspec.Meta(ge=1, le=3660)]
    last_run_at: Timestamp | None = None


class Ticket(Row, kw_only=True):
    entity: ClassVar[str] = "tickets"
    id: Id
    account_id: Id
    opened_at: Timestamp
    closed_at: Timestamp | None = None
    priority: Literal["low", "normal", "high", "urgent"]
    subject: Text | None = None


class Meeting(Row, kw_only=True):
    entity: ClassVar[str] = "meetings"
    id: Id
    account_id: Id
    held_on: dt.date
    kind: Text | None = None
    outcome: Text | None = None


class Nps(Row, kw_only=True):
    entity: ClassVar[str] = "nps"
    account_id: Id
    responded_on: dt.date
    score: Annotated[int, msgspec.Meta(ge=0, le=10)]
    comment: Text | None = None


class Sentiment(Row, kw_only=True):
    entity: ClassVar[str] = "sentiment"
    account_id: Id
    recorded_on: dt.date
    value: Literal["positive", "neutral", "negative"]
    by: Text | None = None


@dataclass(frozen=True)
class EntitySpec:
    """What the policy compiler knows about one entity."""

    name: str
    fields: dict[str, Type]
    date_field: str | None
    timestamps: frozenset[str] = frozenset()
    id_field: str | None = "id"
    # field name in the row -> attribute on the row object (order lines read the order's fields)
    attributes: dict[str, str] = field(default_factory=dict)


def _spec(
    row_type: type[Row],
    fields: dict[str, Type],
    date_field: str | None,
    timestamps: Iterable[str] = (),
    id_field: str | None = "id",
) -> EntitySpec:
    return EntitySpec(row_type.entity, fields, date_field, frozenset(timestamps), id_field)


OPTIONAL_TEXT = TEXT.optional()
OPTIONAL_DATE = DATE.optional()

ENTITIES: dict[str, EntitySpec] = {
    spec.name: spec
    for spec in (
        _spec(
            Order,
            {"id": TEXT, "status": TEXT, "start_date": DATE, "end_date": DATE, "acv": NUMBER},
            "start_date",
        ),
        EntitySpec(  # read from each order's `products` (see the compiler)
            "order_lines",
            {
                "order_id": TEXT,
                "status": TEXT,
                "start_date": DATE,
                "end_date": DATE,
                "product": TEXT,
                "capacity": NUMBER,
            },
            "start_date",
            id_field=None,
            attributes={"order_id": "id"},
        ),
        _spec(
            Invoice,
            {
                "id": TEXT,
                "number": TEXT,
                "amount": NUMBER,
                "currency": TEXT,
                "issued_on": DATE,
                "due_on": DATE,
                "paid_on": OPTIONAL_DATE,
                "status": TEXT,
            },
            "issued_on",
        ),
        _spec(
            Usage,
            {"product": TEXT, "date": DATE, "used": NUMBER, "scans": NUMBER, "failed_scans": NUMBER},
            "date",
            id_field=None,
        ),
        _spec(Activity, {"date": DATE, "logins": NUMBER, "active_users": NUMBER}, "date", id_field=None),
        _spec(Scanner, {"id": TEXT, "name": TEXT, "last_seen_at": OPTIONAL_DATE}, "last_seen_at", ["last_seen_at"]),
        _spec(
            Schedule,
            {
                "id": TEXT,
                "product": TEXT,
                "enabled": BOOL,
                "interval_days": NUMBER,
                "last_run_at": OPTIONAL_DATE,
            },
            "last_run_at",
            ["last_run_at"],
        ),
        _spec(
            Ticket,
            {
                "id": TEXT,
                "opened_at": DATE,
                "closed_at": OPTIONAL_DATE,
                "priority": TEXT,
                "subject": OPTIONAL_TEXT,
            },
            "opened_at",
            ["opened_at", "closed_at"],
        ),
        _spec(
            Meeting,
            {"id": TEXT, "held_on": DATE, "kind": OPTIONAL_TEXT, "outcome": OPTIONAL_TEXT},
            "held_on",
        ),
        _spec(Nps, {"responded_on": DATE, "score": NUMBER, "comment": OPTIONAL_TEXT}, "responded_on", id_field=None),
        _spec(Sentiment, {"recorded_on": DATE, "value": TEXT, "by": OPTIONAL_TEXT}, "recorded_on", id_field=None),
    )
}

# The fields of an account that expressions may read, by the names they are read under.
ACCOUNT_FIELDS: dict[str, Type] = {
    "account_id": TEXT,
    "account_name": TEXT,
    "tier": TEXT,
    "csm": TEXT,
    "acv": NUMBER,
    "currency": TEXT,
    "crm_id": OPTIONAL_TEXT,
    "success_program": OPTIONAL_TEXT,
    "segment": OPTIONAL_TEXT,
    "region": OPTIONAL_TEXT,
    "tags": TEXT_LIST,
}
ACCOUNT_ATTRIBUTES = {"account_id": "id", "account_name": "name"}

ROW_TYPES: dict[str, type[Row]] = {
    row_type.entity: row_type
    for row_type in (Account, Order, Invoice, Usage, Activity, Scanner, Schedule, Ticket, Meeting, Nps, Sentiment)
}
FILE_ENTITIES = tuple(ROW_TYPES)


class Manifest(msgspec.Struct, kw_only=True):
    format: Literal["csm-snapshot/1"]
    as_of: dt.date
    source: Text | None = None
    products: list[str] | None = None
    # A connector that could not fetch everything says so; then no task is resolved by the run.
    complete: bool = True


@dataclass
class Snapshot:
    """A whole snapshot in memory: the manifest and the rows of each entity in file order."""

    as_of: dt.date
    accounts: list[Account]
    rows: dict[str, list[Any]] = field(default_factory=dict)
    source: str | None = None

    def entity_rows(self) -> Iterator[tuple[str, Any]]:
        for entity in FILE_ENTITIES:
            if entity == "accounts":
                continue
            for row in self.rows.get(entity, ()):
                yield entity, row


class BadRow(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot row that was refused: where it is and what is wrong with it."""

    file: str
    line: int
    field: str | None
    message: str
    account_id: str | None = None  # whose row it was meant to be, when that can be told

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


def field_of_error(message: str) -> tuple[str | None, str]:
    """msgspec says "Expected `int`, got `str` - at `$.used`": (the row's field, the rest)."""
    text, sep, where = message.rpartition(" - at `$")
    if not sep:
        return None, message
    path = where.rstrip("`").lstrip(".")
    return (path.split(".")[0].split("[")[0] or None), text


# Dates that record something that happened: they cannot lie after the snapshot's as_of.
OBSERVED_DATES: dict[str, tuple[str, ...]] = {
    "usage": ("date",),
    "activity": ("date",),
    "nps": ("responded_on",),
    "sentiment": ("recorded_on",),
    "tickets": ("opened_at", "closed_at"),
    "scanners": ("last_seen_at",),
    "schedules": ("last_run_at",),
    "invoices": ("issued_on", "paid_on"),
}
# (entity, earlier field, later field): the later may not come before the earlier.
ORDERED_DATES = (
    ("orders", "start_date", "end_date"),
    ("invoices", "issued_on", "due_on"),
    ("tickets", "opened_at", "closed_at"),
)


def _day(value: dt.date | dt.datetime | None) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).date()
    return value


class RowChecker:
    """Checks decoded rows, in file order, against what a row alone cannot show.

    Unknown customers, duplicate ids, a second usage row for the same customer, product and day,
    dates after as_of for things that already happened, and dates in the wrong order. The first
    of two duplicates is kept. Memory per customer and product is a bit set of usage days, so
    checking 15 million usage rows costs megabytes, not gigabytes.
    """

    def __init__(self, as_of: dt.date) -> None:
        self.as_of = as_of
        self.accounts: set[str] = set()
        self._ids: dict[str, set[str]] = {}
        self._usage_days: dict[tuple[str, str], int] = {}

    def check(self, entity: str, row: Any) -> tuple[str | None, str] | None:
        """None if the row is good, else (field, message)."""
        if entity == "accounts":
            if row.id in self.accounts:
                return "id", f"duplicate account id {row.id!r} (the first one is kept)"
            self.accounts.add(row.id)
            return None
        if row.account_id not in self.accounts:
            return "account_id", f"unknown account {row.account_id!r} (not in accounts.jsonl)"
        for name in OBSERVED_DATES.get(entity, ()):
            day = _day(getattr(row, name))
            if day is not None and day > self.as_of:
                return name, f"{day.isoformat()} is after the snapshot's as_of {self.as_of.isoformat()}"
        for ordered_entity, earlier, later in ORDERED_DATES:
            if ordered_entity == entity:
                first, second = _day(getattr(row, earlier)), _day(getattr(row, later))
                if first is not None and second is not None and second < first:
                    return later, f"{second.isoformat()} is before {earlier} {first.isoformat()}"
        if entity == "usage":
            return self._check_usage_day(row)
        spec = ENTITIES[entity]
        if spec.id_field is not None:
            seen = self._ids.setdefault(entity, set())
            if row.id in seen:
                return "id", f"duplicate {entity} id {row.id!r} (the first one is kept)"
            seen.add(row.id)
        return None

    def check_batch(self, entity: str, rows: list[Any]) -> list[tuple[int, str | None, str]]:
        """`check` over many rows of one entity: (index, field, message) of the bad ones.

        Usage and activity (nearly all rows of a snapshot) take a fast path with the same rules.
        """
        if entity not in ("usage", "activity"):
            problems = []
            for index, row in enumerate(rows):
                problem = self.check(entity, row)
                if problem is not None:
                    problems.append((index, *problem))
            return problems
        # Rows come grouped by customer (and product): what the previous row looked up is
        # remembered, because with 100,000 customers each lookup in the big tables is a cache miss.
        accounts = self.accounts
        as_of_ordinal = self.as_of.toordinal()
        usage = entity == "usage"
        days_of = self._usage_days
        bad: list[tuple[int, str | None, str]] = []
        known = None  # the last account id found in `accounts`
        key: tuple[str, str] | None = None  # the (account, product) whose usage days are in `days`
        days = 0
        for index, row in enumerate(rows):
            account_id = row.account_id
            if account_id != known:
                if account_id not in accounts:
                    bad.append((index, "account_id", f"unknown account {account_id!r} (not in accounts.jsonl)"))
                    continue
                known = account_id
            offset = as_of_ordinal - row.date.toordinal()
            if offset < 0:
                bad.append(
                    (index, "date", f"{row.date.isoformat()} is after the snapshot's as_of {self.as_of.isoformat()}")
                )
                continue
            if usage:
                if key is None or key[0] != account_id or key[1] != row.product:
                    if key is not None:
                        days_of[key] = days
                    key = (account_id, row.product)
                    days = days_of.get(key, 0)
                bit = 1 << offset
                if days & bit:
                    bad.append((index, *self._second_usage_row(row)))
                    continue
                days |= bit
        if key is not None:
            days_of[key] = days
        return bad

    @staticmethod
    def _second_usage_row(row: Usage) -> tuple[str, str]:
        return (
            "date",
            f"a second usage row for {row.account_id} / {row.product} on {row.date.isoformat()}"
            " (the first one is kept)",
        )

    def _check_usage_day(self, row: Usage) -> tuple[str | None, str] | None:
        key = (row.account_id, row.product)
        bit = 1 << (self.as_of - row.date).days
        days = self._usage_days.get(key, 0)
        if days & bit:
            return self._second_usage_row(row)
        self._usage_days[key] = days | bit
        return None


def snapshot_from_rows(as_of: dt.date, rows: dict[str, list[dict[str, Any]]]) -> tuple[Snapshot, list[BadRow]]:
    """Build a snapshot from row dicts (as JSON would give them), refusing bad rows like a connector does."""
    checker = RowChecker(as_of)
    bad: list[BadRow] = []
    snapshot = Snapshot(as_of=as_of, accounts=[], rows={})
    for entity in FILE_ENTITIES:
        row_type = ROW_TYPES[entity]
        kept: list[Any] = []
        for line, raw in enumerate(rows.get(entity, ()), 1):
            try:
                row = msgspec.convert(raw, row_type, strict=False)
            except msgspec.ValidationError as exc:
                field_name, message = field_of_error(str(exc))
                bad.append(BadRow(file=f"{entity}.jsonl", line=line, field=field_name, message=message))
                continue
            problem = checker.check(entity, row)
            if problem is not None:
                bad.append(BadRow(file=f"{entity}.jsonl", line=line, field=problem[0], message=problem[1]))
                continue
            kept.append(row)
        if entity == "accounts":
            snapshot.accounts = kept
        else:
            snapshot.rows[entity] = kept
    return snapshot, bad
