"""Request and response bodies of the JSON API (msgspec Structs: fast, and documented in OpenAPI)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

Text60 = Annotated[str, Meta(min_length=1, max_length=60)]
Text120 = Annotated[str, Meta(min_length=1, max_length=120)]
Text2000 = Annotated[str, Meta(min_length=1, max_length=2000)]
Ids = Annotated[list[str], Meta(min_length=1, max_length=1000)]


def convert(value: Any, kind: type[Any]) -> Any:
    """A service's dataclass as the API's Struct of the same field names."""
    return msgspec.convert(msgspec.to_builtins(value), kind, strict=False)


# ── customers ───────────────────────────────────────────────────────────────────────────


class TagOut(Struct):
    id: int
    name: str
    colour: str


class TagSummaryOut(Struct):
    id: int
    name: str
    colour: str
    customers: int
    created_by: str | None


class ProductUseOut(Struct):
    code: str
    label: str
    name: str
    contracted: bool
    capacity: float | None
    used_latest: float | None
    utilisation: float | None
    usage_ratio: float | None
    active_90: bool
    scans_30: int
    failed_30: int


class ReasonOut(Struct):
    section: str
    text: str
    points: float
    part: str | None = None
    evidence: dict[str, Any] = msgspec.field(default_factory=dict)


class TrendPointOut(Struct):
    as_of: dt.date
    chi: int
    band: str
    policy_hash: str


class CustomerOut(Struct):
    id: str
    name: str
    tier: str
    tier_name: str
    csm: str
    region: str | None
    segment: str | None
    acv: float
    currency: str
    chi: int | None
    band: str | None
    band_colour: str
    reasons: list[ReasonOut]
    policy_segments: list[str]
    products: list[ProductUseOut]
    status: str
    overdue_invoices: int
    has_active_order: bool
    renewal_date: dt.date | None
    days_to_renewal: int | None
    renewal_soon: bool
    days_since_login: int | None
    tags: list[TagOut]
    source_tags: list[str]
    open_tasks: dict[str, int]
    trend: list[TrendPointOut]
    as_of: dt.date | None


class CustomerList(Struct):
    items: list[CustomerOut]
    total: int
    page: int
    per_page: int
    pages: int
    sort: str
    dir: str


class BandTotalOut(Struct):
    name: str
    colour: str
    count: int
    acv: dict[str, float]


class TotalsOut(Struct):
    customers: int
    acv: dict[str, float]
    bands: list[BandTotalOut]
    renewals: int
    renewals_acv: dict[str, float]
    renewal_days: int
    open_high: int
    open_tasks: int


# ── tasks ───────────────────────────────────────────────────────────────────────────────


class TaskOut(Struct):
    id: str
    rule: str
    rule_name: str
    account_id: str
    account_name: str
    csm: str
    key: str
    category: str
    severity: str
    title: str
    description: str
    due_on: dt.date
    active: bool
    state: str
    stored_state: str
    snoozed_until: dt.date | None
    comment: str
    version: int
    updated_by: str | None
    updated_at: dt.datetime | None
    allowed: list[str]
    overdue: bool
    evidence: dict[str, Any]
    thresholds: dict[str, Any]
    condition: str
    severity_case: str | None
    policy_hash: str
    policy_version_id: int | None
    opened_at: dt.datetime
    resolved_at: dt.datetime | None
    reopened_at: dt.datetime | None


class EventOut(Struct):
    at: dt.datetime
    actor: str
    kind: str
    from_value: str | None
    to_value: str | None
    text: str
    run_id: int | None = None


class TaskDetail(Struct):
    task: TaskOut
    history: list[EventOut]


class CountersOut(Struct):
    high: int
    medium: int
    low: int
    total: int
    snoozed: int
    overdue: int


class TaskList(Struct):
    items: list[TaskOut]
    total: int
    page: int
    per_page: int
    pages: int
    counters: CountersOut


class TransitionIn(Struct, forbid_unknown_fields=True):
    to: str
    snooze_until: dt.date | None = None
    version: int | None = None


class CommentIn(Struct, forbid_unknown_fields=True):
    text: Text2000
    version: int | None = None


class BulkIn(Struct, forbid_unknown_fields=True):
    task_ids: Annotated[list[str], Meta(min_length=1, max_length=500)]
    action: str
    snooze_until: dt.date | None = None
    comment: str = ""


class SkippedOut(Struct):
    task_id: str
    reason: str
    allowed: list[str]


class BulkOut(Struct):
    done: list[str]
    skipped: list[SkippedOut]


# ── tags, filters, preferences ──────────────────────────────────────────────────────────


class TagIn(Struct, forbid_unknown_fields=True):
    name: Text60
    colour: str | None = None


class TagPatch(Struct, forbid_unknown_fields=True):
    name: Text60 | None = None
    colour: str | None = None


class TagAssignIn(Struct, forbid_unknown_fields=True):
    account_ids: Ids
    tag_ids: Annotated[list[int], Meta(min_length=1, max_length=100)]


class ChangedOut(Struct):
    changed: int


class FilterIn(Struct, forbid_unknown_fields=True):
    name: Text120
    query: Annotated[str, Meta(max_length=2000)] = ""
    page: str = "overview"
    shared: bool = False


class FilterOut(Struct):
    id: int
    name: str
    page: str
    query: str
    owner: str
    shared: bool
    url: str


class ColumnsIn(Struct, forbid_unknown_fields=True):
    columns: Annotated[list[str], Meta(max_length=50)]


class ColumnsOut(Struct):
    columns: list[str]
    available: dict[str, str]


class OpenTabOut(Struct):
    id: str
    name: str
    tab: str
    chi: int | None
    band: str | None


class SentimentIn(Struct, forbid_unknown_fields=True):
    value: str
    note: Annotated[str, Meta(max_length=1000)] = ""


class SentimentOut(Struct):
    id: int
    account_id: str
    recorded_on: dt.date
    value: str
    note: str
    recorded_by: str


class OutcomeIn(Struct, forbid_unknown_fields=True):
    outcome: Text2000


class OutcomeOut(Struct):
    meeting_id: str
    account_id: str
    outcome: str
    recorded_by: str
    recorded_at: dt.datetime


# ── the customer's tabs ─────────────────────────────────────────────────────────────────


class TasksTabOut(Struct):
    active: list[TaskOut]
    resolved: list[TaskOut]


class SectionOut(Struct):
    id: str
    name: str
    weight: float
    share: float
    score: float | None
    points_lost: float
    has_data: bool
    reasons: list[ReasonOut]


class HistoryPointOut(Struct):
    as_of: dt.date
    run_id: int
    chi: int
    band: str
    policy_hash: str
    sections: dict[str, float]
    policy_changed: bool


class ChiTabOut(Struct):
    chi: int | None
    band: str | None
    sections: list[SectionOut]
    history: list[HistoryPointOut]
    policy_version_id: int | None
    policy_hash: str | None


class InvoiceOut(Struct):
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


class OrderOut(Struct):
    id: str
    status: str
    start_date: dt.date | None
    end_date: dt.date | None
    acv: float | None
    products: list[dict[str, Any]]
    active: bool


class AcvPointOut(Struct, array_like=True):
    start: dt.date
    acv: float


class CommercialTabOut(Struct):
    acv: float
    currency: str
    renewal_date: dt.date | None
    days_to_renewal: int | None
    has_active_order: bool
    orders: list[OrderOut]
    acv_history: list[AcvPointOut]
    invoices: list[InvoiceOut]
    open_amount: float
    overdue_amount: float
    overdue_count: int
    success_program: str | None
    crm_id: str | None


class RangeOut(Struct):
    start: dt.date
    end: dt.date
    preset: int | None


class ProductUsageOut(Struct):
    use: ProductUseOut
    days: list[dt.date]
    used: list[float | None]
    scans: list[float | None]
    failed: list[float | None]
    average_used: float | None
    peak_used: float | None
    utilisation: float | None
    scans_total: int
    failed_total: int


class ScannerOut(Struct):
    id: str
    name: str
    last_seen_at: dt.datetime | None
    days_since_seen: int | None
    stale: bool


class ScheduleOut(Struct):
    id: str
    product: str
    enabled: bool
    interval_days: int | None
    last_run_at: dt.datetime | None
    days_since_run: int | None
    task_id: str | None
    task_severity: str | None


class UsageTabOut(Struct):
    range: RangeOut
    latest: dt.date
    earliest: dt.date
    products: list[ProductUsageOut]
    scanners: list[ScannerOut]
    schedules: list[ScheduleOut]


class MeetingOut(Struct):
    id: str
    held_on: dt.date | None
    kind: str | None
    outcome: str | None
    outcome_source: str
    recorded_by: str | None
    recorded_at: dt.datetime | None
    held: bool


class TicketOut(Struct):
    id: str
    subject: str | None
    priority: str
    opened_at: dt.datetime | None
    closed_at: dt.datetime | None


class NpsOut(Struct):
    responded_on: dt.date | None
    score: int | None
    comment: str | None


class SentimentItemOut(Struct):
    recorded_on: dt.date | None
    value: str
    by: str | None
    note: str
    source: str
    pending: bool


class ActivityTabOut(Struct):
    range: RangeOut
    days: list[dt.date]
    logins: list[float | None]
    active_users: list[float | None]
    logins_total: int
    last_login_on: dt.date | None
    days_since_login: int | None
    meetings: list[MeetingOut]
    tickets: list[TicketOut]
    nps: list[NpsOut]
    nps_mean: float | None
    sentiment: list[SentimentItemOut]
    latest_sentiment: str | None
    open_tickets: int


class TrendOut(Struct):
    label: str
    unit: str
    points: list[tuple[dt.date, float | None]]


class SignalOut(Struct):
    rule: str
    rule_name: str
    category: str
    condition: str
    item: str | None
    firing: bool
    severity: str | None
    task_id: str | None
    values: dict[str, Any]
    thresholds: dict[str, Any]
    trend: TrendOut | None


class RetentionTabOut(Struct):
    signals: list[SignalOut]
    trends: list[TrendOut]


class CustomerDetailOut(Struct):
    customer: CustomerOut
    tabs: dict[str, str]


# ── the policies' vocabulary, for clients ───────────────────────────────────────────────


class CatalogOut(Struct):
    policy_hash: str
    version_id: int | None
    bands: list[dict[str, Any]]
    sections: list[dict[str, Any]]
    segments: list[dict[str, str]]
    rules: list[dict[str, Any]]
    categories: list[str]
    products: list[dict[str, str]]
    tiers: list[dict[str, str]]
