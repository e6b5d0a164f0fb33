"""The six tabs of a customer: tasks, CHI breakdown, commercial, product usage, activity, retention.

Each function takes an `Account` the caller already fetched through the access filter
(`customers.get_account`), reads what the tab shows and returns plain data for both the page
and its JSON twin. The snapshot's small entities come from `account_record` (the raw rows, as
the snapshot had them), daily values from `daily_series`, CHI history from `chi_point`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import (
    Account,
    AccountRecord,
    ChiPoint,
    DailySeries,
    MeetingOutcome,
    PolicyVersion,
    SentimentEntry,
    Task,
)
from server.errors import InvalidInput
from server.services.catalog import Catalog, RuleView
from server.services.customers import DETAIL_TREND_DAYS, ProductUse, TrendPoint, product_uses
from server.services.tasks import TaskQuery, TaskView, list_tasks
from server.web.access import CurrentUser

TAB_LABELS = {
    "tasks": "Tasks",
    "chi": "CHI breakdown",
    "commercial": "Commercial",
    "usage": "Product usage",
    "activity": "Activity",
    "retention": "Retention signals",
}
SCANNER_STALE_DAYS = 7  # display only: the rules' own threshold lives in policies/facts.yaml
MAX_RANGE_DAYS = 800
RANGE_PRESETS = (30, 90, 180, 365)
DEFAULT_RANGE_DAYS = 90
TREND_WEEKS = 13


def _parse_day(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value[:10])
    except (TypeError, ValueError):
        return None


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


async def records(session: AsyncSession, account_id: str, entities: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The customer's raw rows of each entity (as the latest snapshot had them)."""
    found = {entity: [] for entity in entities}  # type: dict[str, list[dict[str, Any]]]
    for record in await session.scalars(
        select(AccountRecord).where(AccountRecord.account_id == account_id, AccountRecord.entity.in_(entities))
    ):
        rows = msgspec.json.decode(record.rows)
        found[record.entity] = [row for row in rows if isinstance(row, dict)]
    return found


@dataclass
class Series:
    name: str
    start: dt.date
    values: dict[str, list[float | None]]

    def days(self) -> list[dt.date]:
        first = next(iter(self.values.values()), [])
        return [self.start + dt.timedelta(days=offset) for offset in range(len(first))]

    def window(self, start: dt.date, end: dt.date) -> Series:
        first = max(0, (start - self.start).days)
        last = (end - self.start).days + 1
        if last <= first:
            return Series(self.name, start, {key: [] for key in self.values})
        return Series(
            self.name,
            self.start + dt.timedelta(days=first),
            {key: column[first:last] for key, column in self.values.items()},
        )

    @property
    def last_day(self) -> dt.date | None:
        first = next(iter(self.values.values()), [])
        return self.start + dt.timedelta(days=len(first) - 1) if first else None


async def load_series(session: AsyncSession, account_id: str, names: Iterable[str] | None = None) -> dict[str, Series]:
    statement = select(DailySeries).where(DailySeries.account_id == account_id)
    if names is not None:
        statement = statement.where(DailySeries.name.in_(list(names)))
    result = {}
    for row in await session.scalars(statement):
        data = msgspec.json.decode(row.data)
        start = dt.date.fromisoformat(data.pop("start"))
        result[row.name] = Series(row.name, start, data)
    return result


@dataclass
class DateRange:
    start: dt.date
    end: dt.date
    preset: int | None  # the number of days when a preset was chosen

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def parse_range(start: str, end: str, days: str, latest: dt.date) -> DateRange:
    """The chosen date range: `days` (a preset ending on the latest day of data) or `from`/`to`."""
    if start or end:
        first = _parse_day(start) if start else None
        last = _parse_day(end) if end else latest
        if start and first is None:
            raise InvalidInput(f"'from' must be a date (YYYY-MM-DD), not {start[:20]!r}", field="from")
        if end and last is None:
            raise InvalidInput(f"'to' must be a date (YYYY-MM-DD), not {end[:20]!r}", field="to")
        assert last is not None
        first = first or last - dt.timedelta(days=DEFAULT_RANGE_DAYS - 1)
        if first > last:
            raise InvalidInput("'from' must not be after 'to'", field="from")
        if (last - first).days + 1 > MAX_RANGE_DAYS:
            raise InvalidInput(f"a range may span at most {MAX_RANGE_DAYS} days", field="from")
        return DateRange(first, last, None)
    count = DEFAULT_RANGE_DAYS
    if days:
        try:
            count = int(days)
        except ValueError:
            raise InvalidInput(f"'days' must be a whole number, not {days[:20]!r}", field="days") from None
        if not 1 <= count <= MAX_RANGE_DAYS:
            raise InvalidInput(f"'days' must be between 1 and {MAX_RANGE_DAYS}", field="days")
    return DateRange(latest - dt.timedelta(days=count - 1), latest, count)


async def open_tasks_by_key(session: AsyncSession, account_id: str) -> dict[str, tuple[str, str]]:
    """The customer's active tasks by their key (e.g. a schedule's id), to flag the rows they are about."""
    rows = await session.execute(
        select(Task.key, Task.id, Task.severity).where(
            Task.account_id == account_id, Task.active.is_(True), Task.key != ""
        )
    )
    return {key: (task_id, severity) for key, task_id, severity in rows}


# ── tasks ───────────────────────────────────────────────────────────────────────────────


@dataclass
class TasksTab:
    active: list[TaskView]
    resolved: list[TaskView]


async def tasks_tab(
    session: AsyncSession, user: CurrentUser, account: Account, catalog: Catalog, today: dt.date
) -> TasksTab:
    query = TaskQuery(account_id=account.id, resolved=True, per_page=1000, sort="severity")
    page = await list_tasks(session, user, query, today, catalog.rule_names())
    return TasksTab(
        active=[task for task in page.items if task.active],
        resolved=sorted(
            (task for task in page.items if not task.active),
            key=lambda task: task.resolved_at or task.opened_at,
            reverse=True,
        ),
    )


# ── CHI ─────────────────────────────────────────────────────────────────────────────────


@dataclass
class SectionBreakdown:
    id: str
    name: str
    weight: float
    share: float  # of the CHI, 0..1
    score: float | None
    points_lost: float
    has_data: bool
    reasons: list[dict[str, Any]]
    parts: list[tuple[str, str, float]]


@dataclass
class HistoryPoint:
    as_of: dt.date
    run_id: int
    chi: int
    band: str
    policy_hash: str
    sections: dict[str, float]
    policy_changed: bool = False


@dataclass
class ChiTab:
    chi: int | None
    band: str | None
    sections: list[SectionBreakdown]
    history: list[HistoryPoint]
    policy_version_id: int | None
    policy_hash: str | None


async def chi_history(session: AsyncSession, account_id: str) -> list[HistoryPoint]:
    points: list[HistoryPoint] = []
    for point in await session.scalars(
        select(ChiPoint).where(ChiPoint.account_id == account_id).order_by(ChiPoint.as_of, ChiPoint.run_id)
    ):
        item = HistoryPoint(point.as_of, point.run_id, point.chi, point.band, point.policy_hash, dict(point.sections))
        if points and points[-1].as_of == point.as_of:
            item.policy_changed = points[-1].policy_changed
            points[-1] = item  # a forced re-run of the same day: the last one counts
            continue
        item.policy_changed = bool(points) and points[-1].policy_hash != point.policy_hash
        points.append(item)
    return points


async def version_of(session: AsyncSession, policy_hash: str | None) -> int | None:
    if not policy_hash:
        return None
    return await session.scalar(select(PolicyVersion.id).where(PolicyVersion.content_hash == policy_hash))


def header_trend(history: Sequence[HistoryPoint], today: dt.date) -> list[TrendPoint]:
    """The detail header's CHI trend from the history already read: what `customer_row` reads itself."""
    since = today - dt.timedelta(days=DETAIL_TREND_DAYS)
    return [TrendPoint(p.as_of, p.chi, p.band, p.policy_hash) for p in history if p.as_of >= since]


async def chi_tab(
    session: AsyncSession, account: Account, catalog: Catalog, history: list[HistoryPoint] | None = None
) -> ChiTab:
    """`history`: the customer's `chi_history` when the caller has read it already."""
    reasons = list(account.reasons or [])
    sections = []
    for section in catalog.sections:
        section_reasons = [reason for reason in reasons if reason.get("section") == section.id]
        score = account.sections.get(section.id)
        sections.append(
            SectionBreakdown(
                id=section.id,
                name=section.name,
                weight=section.weight,
                share=section.share,
                score=score,
                points_lost=float(account.points_lost.get(section.id) or 0.0),
                has_data=bool(account.coverage.get(section.id, score is not None)),
                reasons=section_reasons,
                parts=list(section.parts),
            )
        )
    return ChiTab(
        chi=account.chi,
        band=account.band,
        sections=sections,
        history=await chi_history(session, account.id) if history is None else history,
        policy_version_id=await version_of(session, account.policy_hash),
        policy_hash=account.policy_hash,
    )


# ── commercial ──────────────────────────────────────────────────────────────────────────


@dataclass
class Invoice:
    id: str
    number: str
    amount: float
    currency: str
    issued_on: dt.date | None
    due_on: dt.date | None
    paid_on: dt.date | None
    status: str
    overdue: bool
    days_overdue: int


@dataclass
class Order:
    id: str
    status: str
    start_date: dt.date | None
    end_date: dt.date | None
    acv: float | None
    products: list[dict[str, Any]]
    active: bool


@dataclass
class CommercialTab:
    acv: float
    currency: str
    renewal_date: dt.date | None
    days_to_renewal: int | None
    has_active_order: bool
    orders: list[Order]
    acv_history: list[tuple[dt.date, float]]  # (term start, ACV) of each order, oldest first
    invoices: list[Invoice]
    open_amount: float
    overdue_amount: float
    overdue_count: int
    success_program: str | None
    crm_id: str | None


async def commercial_tab(session: AsyncSession, account: Account, today: dt.date) -> CommercialTab:
    found = await records(session, account.id, ("orders", "invoices"))
    orders = []
    for row in found["orders"]:
        start, end = _parse_day(str(row.get("start_date"))), _parse_day(str(row.get("end_date")))
        status = str(row.get("status") or "")
        orders.append(
            Order(
                id=str(row.get("id")),
                status=status,
                start_date=start,
                end_date=end,
                acv=float(row["acv"]) if isinstance(row.get("acv"), int | float) else None,
                products=[p for p in row.get("products") or [] if isinstance(p, dict)],
                active=status == "active" and start is not None and end is not None and start <= today <= end,
            )
        )
    orders.sort(key=lambda order: order.start_date or dt.date.min, reverse=True)
    history = sorted(
        (o.start_date, o.acv) for o in orders if o.start_date and o.acv is not None and o.status != "cancelled"
    )
    invoices = []
    for row in found["invoices"]:
        due = _parse_day(str(row.get("due_on")))
        status = str(row.get("status") or "")
        overdue = status == "open" and due is not None and due < today
        invoices.append(
            Invoice(
                id=str(row.get("id")),
                number=str(row.get("number") or row.get("id")),
                amount=float(row.get("amount") or 0.0),
                currency=str(row.get("currency") or account.currency),
                issued_on=_parse_day(str(row.get("issued_on"))),
                due_on=due,
                paid_on=_parse_day(str(row.get("paid_on"))) if row.get("paid_on") else None,
                status=status,
                overdue=overdue,
                days_overdue=(today - due).days if overdue and due else 0,
            )
        )
    invoices.sort(key=lambda invoice: invoice.issued_on or dt.date.min, reverse=True)
    return CommercialTab(
        acv=account.acv,
        currency=account.currency,
        renewal_date=account.renewal_date,
        days_to_renewal=(account.renewal_date - today).days if account.renewal_date else None,
        has_active_order=account.has_active_order,
        orders=orders,
        acv_history=history,
        invoices=invoices,
        open_amount=sum(invoice.amount for invoice in invoices if invoice.status == "open"),
        overdue_amount=sum(invoice.amount for invoice in invoices if invoice.overdue),
        overdue_count=sum(1 for invoice in invoices if invoice.overdue),
        success_program=account.success_program,
        crm_id=account.crm_id,
    )


# ── product usage ───────────────────────────────────────────────────────────────────────


@dataclass
class ProductUsage:
    use: ProductUse
    days: list[dt.date]
    used: list[float | None]
    scans: list[float | None]
    failed: list[float | None]
    average_used: float | None
    peak_used: float | None
    utilisation: float | None  # average use in the range / capacity
    scans_total: int
    failed_total: int

    @property
    def failure_ratio(self) -> float | None:
        return self.failed_total / self.scans_total if self.scans_total else None


@dataclass
class Scanner:
    id: str
    name: str
    last_seen_at: dt.datetime | None
    days_since_seen: int | None
    stale: bool


@dataclass
class Schedule:
    id: str
    product: str
    enabled: bool
    interval_days: int | None
    last_run_at: dt.datetime | None
    days_since_run: int | None
    task_id: str | None  # the open "schedule lapsed" task, if any
    task_severity: str | None


@dataclass
class UsageTab:
    range: DateRange
    latest: dt.date
    earliest: dt.date
    products: list[ProductUsage]
    scanners: list[Scanner]
    schedules: list[Schedule]


def _numbers(values: Iterable[float | None]) -> list[float]:
    return [value for value in values if value is not None]


async def usage_tab(
    session: AsyncSession,
    account: Account,
    catalog: Catalog,
    today: dt.date,
    start: str = "",
    end: str = "",
    days: str = "",
    lapsed_tasks: dict[str, tuple[str, str]] | None = None,
) -> UsageTab:
    all_series = await load_series(session, account.id)
    usage = {name.split(":", 1)[1]: series for name, series in all_series.items() if name.startswith("usage:")}
    lasts = [series.last_day for series in usage.values() if series.last_day]
    latest = max(lasts) if lasts else (account.last_seen_as_of or today)
    earliest = min((series.start for series in usage.values()), default=latest)
    chosen = parse_range(start, end, days, latest)
    uses = {use.code: use for use in product_uses(account.facts or {}, catalog)}
    for code in usage:
        uses.setdefault(
            code,
            ProductUse(
                code,
                catalog.product_label(code),
                catalog.product_name(code),
                False,
                None,
                None,
                None,
                None,
                False,
                0,
                0,
            ),
        )
    products = []
    for code, use in uses.items():
        series = usage.get(code)
        window = series.window(chosen.start, chosen.end) if series else None
        used = window.values.get("used", []) if window else []
        scans = window.values.get("scans", []) if window else []
        failed = window.values.get("failed_scans", []) if window else []
        used_numbers = _numbers(used)
        average = sum(used_numbers) / len(used_numbers) if used_numbers else None
        products.append(
            ProductUsage(
                use=use,
                days=window.days() if window else [],
                used=used,
                scans=scans,
                failed=failed,
                average_used=average,
                peak_used=max(used_numbers) if used_numbers else None,
                utilisation=average / use.capacity if average is not None and use.capacity else None,
                scans_total=int(sum(_numbers(scans))),
                failed_total=int(sum(_numbers(failed))),
            )
        )
    found = await records(session, account.id, ("scanners", "schedules"))
    now = dt.datetime.combine(today, dt.time(23, 59), tzinfo=dt.UTC)
    scanners = []
    for row in found["scanners"]:
        seen = _parse_time(row.get("last_seen_at"))
        age = (now - seen).days if seen else None
        scanners.append(
            Scanner(
                str(row.get("id")),
                str(row.get("name") or row.get("id")),
                seen,
                age,
                age is None or age > SCANNER_STALE_DAYS,
            )
        )
    scanners.sort(key=lambda s: (not s.stale, -(s.days_since_seen or 10**6), s.name))
    lapsed = lapsed_tasks or {}
    schedules = []
    for row in found["schedules"]:
        last = _parse_time(row.get("last_run_at"))
        interval = row.get("interval_days")
        task = lapsed.get(str(row.get("id")))
        schedules.append(
            Schedule(
                id=str(row.get("id")),
                product=str(row.get("product") or ""),
                enabled=bool(row.get("enabled")),
                interval_days=int(interval) if isinstance(interval, int | float) else None,
                last_run_at=last,
                days_since_run=(now - last).days if last else None,
                task_id=task[0] if task else None,
                task_severity=task[1] if task else None,
            )
        )
    schedules.sort(key=lambda s: (s.task_id is None, s.product, s.id))
    return UsageTab(chosen, latest, earliest, products, scanners, schedules)


# ── activity ────────────────────────────────────────────────────────────────────────────


@dataclass
class Meeting:
    id: str
    held_on: dt.date | None
    kind: str | None
    outcome: str | None
    outcome_source: str  # "snapshot" | "portal" | ""
    recorded_by: str | None
    recorded_at: dt.datetime | None
    held: bool

    @property
    def outcome_missing(self) -> bool:
        return self.held and not (self.outcome or "").strip()


@dataclass
class Ticket:
    id: str
    subject: str | None
    priority: str
    opened_at: dt.datetime | None
    closed_at: dt.datetime | None

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass
class NpsResponse:
    responded_on: dt.date | None
    score: int | None
    comment: str | None

    @property
    def category(self) -> str:
        if self.score is None:
            return ""
        return "Promoter" if self.score >= 9 else "Passive" if self.score >= 7 else "Detractor"


@dataclass
class SentimentItem:
    recorded_on: dt.date | None
    value: str
    by: str | None
    note: str
    source: str  # "snapshot" | "portal"
    pending: bool = False  # recorded in the portal after the latest run: the next run reads it


@dataclass
class ActivityTab:
    range: DateRange
    days: list[dt.date]
    logins: list[float | None]
    active_users: list[float | None]
    logins_total: int
    last_login_on: dt.date | None
    days_since_login: int | None
    meetings: list[Meeting]
    tickets: list[Ticket]
    nps: list[NpsResponse]
    nps_mean: float | None
    sentiment: list[SentimentItem]
    latest_sentiment: str | None
    open_tickets: int = 0


async def activity_tab(
    session: AsyncSession, account: Account, today: dt.date, start: str = "", end: str = "", days: str = ""
) -> ActivityTab:
    series = (await load_series(session, account.id, ["activity"])).get("activity")
    latest = (series.last_day if series else None) or account.last_seen_as_of or today
    chosen = parse_range(start, end, days, latest)
    window = series.window(chosen.start, chosen.end) if series else None
    logins = window.values.get("logins", []) if window else []
    found = await records(session, account.id, ("meetings", "tickets", "nps", "sentiment"))
    outcomes = {
        outcome.meeting_id: outcome
        for outcome in await session.scalars(select(MeetingOutcome).where(MeetingOutcome.account_id == account.id))
    }
    meetings = []
    for row in found["meetings"]:
        held_on = _parse_day(str(row.get("held_on")))
        portal = outcomes.get(str(row.get("id")))
        snapshot_outcome = row.get("outcome") if isinstance(row.get("outcome"), str) else None
        use_portal = portal is not None and (
            not (snapshot_outcome or "").strip()
            or (account.last_seen_as_of is not None and portal.recorded_at.date() >= account.last_seen_as_of)
        )
        meetings.append(
            Meeting(
                id=str(row.get("id")),
                held_on=held_on,
                kind=row.get("kind") if isinstance(row.get("kind"), str) else None,
                outcome=portal.outcome if use_portal and portal else snapshot_outcome,
                outcome_source="portal" if use_portal else ("snapshot" if (snapshot_outcome or "").strip() else ""),
                recorded_by=portal.recorded_by if use_portal and portal else None,
                recorded_at=portal.recorded_at if use_portal and portal else None,
                held=held_on is not None and held_on <= today,
            )
        )
    meetings.sort(key=lambda m: m.held_on or dt.date.min, reverse=True)
    tickets = [
        Ticket(
            id=str(row.get("id")),
            subject=row.get("subject") if isinstance(row.get("subject"), str) else None,
            priority=str(row.get("priority") or "normal"),
            opened_at=_parse_time(row.get("opened_at")),
            closed_at=_parse_time(row.get("closed_at")),
        )
        for row in found["tickets"]
    ]
    tickets.sort(key=lambda t: (not t.open, -(t.opened_at.timestamp() if t.opened_at else 0)))
    nps = [
        NpsResponse(
            _parse_day(str(row.get("responded_on"))),
            int(row["score"]) if isinstance(row.get("score"), int | float) else None,
            row.get("comment") if isinstance(row.get("comment"), str) else None,
        )
        for row in found["nps"]
    ]
    nps.sort(key=lambda n: n.responded_on or dt.date.min, reverse=True)
    sentiment = [
        SentimentItem(
            _parse_day(str(row.get("recorded_on"))),
            str(row.get("value")),
            row.get("by") if isinstance(row.get("by"), str) else None,
            "",
            "snapshot",
        )
        for row in found["sentiment"]
    ]
    scored_at = account.updated_at if account.scored_run_id else None
    for entry in await session.scalars(
        select(SentimentEntry).where(SentimentEntry.account_id == account.id).order_by(SentimentEntry.id)
    ):
        pending = scored_at is None or entry.created_at > scored_at
        sentiment.append(
            SentimentItem(entry.recorded_on, entry.value, entry.recorded_by, entry.note, "portal", pending)
        )
    # Newest first, as the engine reads them: a portal entry wins its day, and of two on the same
    # day (or two snapshot rows) the one that came later.
    sentiment.reverse()
    sentiment.sort(key=lambda s: (s.recorded_on or dt.date.min, s.source == "portal"), reverse=True)
    facts = account.facts or {}
    login_on = facts.get("last_login_on")
    return ActivityTab(
        range=chosen,
        days=window.days() if window else [],
        logins=logins,
        active_users=window.values.get("active_users", []) if window else [],
        logins_total=int(sum(_numbers(logins))),
        last_login_on=_parse_day(login_on) if isinstance(login_on, str) else None,
        days_since_login=facts.get("days_since_login"),
        meetings=meetings,
        tickets=tickets,
        nps=nps,
        nps_mean=facts.get("nps_mean"),
        sentiment=sentiment,
        latest_sentiment=sentiment[0].value if sentiment else None,
        open_tickets=sum(1 for ticket in tickets if ticket.open),
    )


# ── retention signals ───────────────────────────────────────────────────────────────────

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORDS = frozenset({"and", "or", "not", "in", "is", "None", "True", "False", "if", "else", "true", "false", "none"})


def identifiers(expression: str) -> list[str]:
    """The names an expression refers to (strings and keywords left out), in order of appearance."""
    without_strings = re.sub(r"'[^']*'|\"[^\"]*\"", "", expression)
    names: list[str] = []
    for match in _IDENTIFIER.finditer(without_strings):
        name = match.group(0)
        following = without_strings[match.end() : match.end() + 1]
        if name not in _WORDS and following != "(" and name not in names:
            names.append(name)
    return names


@dataclass
class TrendSeries:
    label: str
    unit: str  # "pct" | "count" | "score"
    points: list[tuple[dt.date, float | None]]

    @property
    def current(self) -> float | None:
        values = [value for _, value in self.points if value is not None]
        return values[-1] if values else None

    @property
    def earlier(self) -> float | None:
        values = [value for _, value in self.points if value is not None]
        return values[0] if len(values) > 1 else None

    @property
    def delta(self) -> float | None:
        if self.current is None or self.earlier is None:
            return None
        return self.current - self.earlier


@dataclass
class Signal:
    rule: RuleView
    item: str | None  # the product / schedule / ... the rule looked at, or None for the customer
    firing: bool
    severity: str | None
    task_id: str | None
    values: list[tuple[str, Any]]
    thresholds: list[tuple[str, Any]]
    trend: TrendSeries | None = None


@dataclass
class RetentionTab:
    signals: list[Signal]
    trends: list[TrendSeries]
    categories: list[str]


def weekly(
    days: list[dt.date], values: list[float | None], end: dt.date, weeks: int, reduce: str = "sum"
) -> list[tuple[dt.date, float | None]]:
    """Values per 7-day window ending on `end` (oldest first): the sum or mean of the days with data."""
    buckets: list[list[float]] = [[] for _ in range(weeks)]
    for day, value in zip(days, values, strict=False):
        if value is None:
            continue
        index = (end - day).days // 7
        if 0 <= index < weeks:
            buckets[weeks - 1 - index].append(value)
    points: list[tuple[dt.date, float | None]] = []
    for number, bucket in enumerate(buckets):
        week_end = end - dt.timedelta(days=7 * (weeks - 1 - number))
        if not bucket:
            points.append((week_end, None))
        elif reduce == "mean":
            points.append((week_end, sum(bucket) / len(bucket)))
        else:
            points.append((week_end, sum(bucket)))
    return points


def _ratio(
    top: list[tuple[dt.date, float | None]], bottom: list[tuple[dt.date, float | None]]
) -> list[tuple[dt.date, float | None]]:
    return [(day, (a / b) if a is not None and b else None) for (day, a), (_, b) in zip(top, bottom, strict=True)]


def _is_churn_category(category: str) -> bool:
    return "churn" in category.lower()


async def retention_tab(
    session: AsyncSession,
    account: Account,
    catalog: Catalog,
    tasks: Sequence[TaskView],
    today: dt.date,
    history: list[HistoryPoint] | None = None,
) -> RetentionTab:
    """`history`: the customer's `chi_history` when the caller has read it already."""
    facts = account.facts or {}
    series = await load_series(session, account.id)
    lasts = [s.last_day for s in series.values() if s.last_day]
    end = max(lasts) if lasts else (account.last_seen_as_of or today)
    product_trends: dict[str, dict[str, TrendSeries]] = {}
    uses = {use.code: use for use in product_uses(facts, catalog)}
    for name, daily in series.items():
        if not name.startswith("usage:"):
            continue
        code = name.split(":", 1)[1]
        days = daily.days()
        label = catalog.product_label(code)
        scans = weekly(days, daily.values.get("scans", []), end, TREND_WEEKS)
        failed = weekly(days, daily.values.get("failed_scans", []), end, TREND_WEEKS)
        used = weekly(days, daily.values.get("used", []), end, TREND_WEEKS, reduce="mean")
        capacity = uses[code].capacity if code in uses else None
        trends = {"failure": TrendSeries(f"{label} failed-scan ratio", "pct", _ratio(failed, scans))}
        if capacity:
            trends["utilisation"] = TrendSeries(
                f"{label} utilisation", "pct", [(d, v / capacity if v is not None else None) for d, v in used]
            )
        trends["scans"] = TrendSeries(f"{label} scans per week", "count", scans)
        product_trends[code] = trends
    account_trends: list[TrendSeries] = []
    activity = series.get("activity")
    if activity:
        days = activity.days()
        account_trends.append(
            TrendSeries("Logins per week", "count", weekly(days, activity.values.get("logins", []), end, TREND_WEEKS))
        )
        account_trends.append(
            TrendSeries(
                "Active users (weekly mean)",
                "count",
                weekly(days, activity.values.get("active_users", []), end, TREND_WEEKS, reduce="mean"),
            )
        )
    if history is None:
        history = await chi_history(session, account.id)
    if history:
        account_trends.insert(0, TrendSeries("CHI", "score", [(p.as_of, float(p.chi)) for p in history[-26:]]))
    for trends in product_trends.values():
        account_trends.extend(trends.values())

    by_rule: dict[str, list[TaskView]] = {}
    for task in tasks:
        if task.active:
            by_rule.setdefault(task.rule, []).append(task)
    entity_rows: dict[str, list[dict[str, Any]]] = {}
    signals: list[Signal] = []
    for rule in catalog.rules:
        if not _is_churn_category(rule.category):
            continue
        names = [name for name in identifiers(rule.condition) if name not in rule.params]
        thresholds = list(rule.params.items())
        firing = {task.key: task for task in by_rule.get(rule.id, [])}
        if rule.for_each is None:
            fired = firing.get("")
            source = fired.evidence if fired else facts
            values = [(name, source.get(name, facts.get(name))) for name in names]
            signals.append(
                Signal(
                    rule,
                    None,
                    fired is not None,
                    fired.severity if fired else None,
                    fired.id if fired else None,
                    values,
                    thresholds,
                )
            )
            continue
        if rule.for_each == "products":
            items: list[tuple[str, dict[str, Any]]] = [
                (str(item.get("product")), item) for item in facts.get("products") or []
            ]
        else:
            if rule.for_each not in entity_rows:
                entity_rows.update(await records(session, account.id, (rule.for_each,)))
            items = [(str(row.get("id")), row) for row in entity_rows.get(rule.for_each, [])]
        shown = len(signals)
        for key, item in items:
            found = firing.get(key)
            source = found.evidence if found else item
            values = [(name, source.get(name, item.get(name, facts.get(name)))) for name in names]
            label = catalog.product_label(key) if rule.for_each == "products" else key
            trend = None
            if rule.for_each == "products" and key in product_trends:
                trends = product_trends[key]
                trend = trends["failure"] if any("fail" in name for name in names) else trends.get("utilisation")
            if (
                found is None
                and not any(value not in (None, 0, False, "") for _, value in values)
                and rule.for_each != "products"
            ):
                continue  # an item with nothing to say (e.g. a healthy schedule) stays out of the way
            signals.append(
                Signal(
                    rule,
                    label,
                    found is not None,
                    found.severity if found else None,
                    found.id if found else None,
                    values,
                    thresholds,
                    trend,
                )
            )
        if len(signals) == shown:
            signals.append(Signal(rule, None, False, None, None, [], thresholds))  # nothing fires: all clear
    signals.sort(key=lambda s: (not s.firing, {"High": 0, "Medium": 1, "Low": 2}.get(s.severity or "", 3)))
    categories = sorted({rule.category for rule in catalog.rules if _is_churn_category(rule.category)})
    return RetentionTab(signals, account_trends, categories)
