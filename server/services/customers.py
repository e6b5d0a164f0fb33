"""The customer overview: filters, sort and paging, portfolio totals, rows, exports.

Every query goes through `CurrentUser.customer_filter()`: a CSM sees, counts, totals and
exports only the customers assigned to them, and an id of someone else's customer is a 404.
A filter is a `CustomerQuery`; it round-trips through the URL (`parse_customer_query` and
`CustomerQuery.to_params`), so a filtered, sorted page is a deep link.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.jsonops import contains
from server.db.models import Account, AccountTag, ChiPoint, Tag, Task, TaskState
from server.errors import InvalidInput, NotFound
from server.services.catalog import Catalog
from server.services.paging import Paging
from server.services.query_params import choices, contains_pattern, last_value, whole_number
from server.services.tags import TagRef, tag_ref
from server.services.tasks import open_counts_by_account, open_task_sql
from server.web.access import CurrentUser

# Columns of the overview table a user may choose and order (the customer name always comes first).
COLUMNS: dict[str, str] = {
    "chi": "CHI",
    "trend": "Trend",
    "tier": "Tier",
    "segments": "Segments",
    "tags": "Tags",
    "products": "Products & usage",
    "status": "Status",
    "acv": "ACV",
    "renewal": "Renewal",
    "tasks": "Open tasks",
    "csm": "CSM",
    "region": "Region",
    "last_login": "Last login",
}
DEFAULT_COLUMNS = ("chi", "trend", "tier", "tags", "products", "status", "acv", "renewal", "tasks", "csm")
SORTS: dict[str, str] = {
    "chi": "CHI",
    "name": "Customer",
    "tier": "Tier",
    "acv": "ACV",
    "renewal": "Renewal date",
    "csm": "CSM",
    "region": "Region",
}
COLUMN_SORT = {"chi": "chi", "tier": "tier", "acv": "acv", "renewal": "renewal", "csm": "csm", "region": "region"}
STATUSES = {"active": "Active order", "overdue": "Invoices overdue", "no_order": "No active order"}
PAGE_SIZES = (25, 50, 100, 200)
MODES = ("any", "all")
RENEWAL_CHOICES = (30, 60, 90, 180, 365)
RENEWAL_FLAG_DAYS = 90
TREND_DAYS = 182
DETAIL_TREND_DAYS = 3650
MAX_TEXT = 200


@dataclass
class CustomerQuery:
    q: str = ""
    tiers: list[str] = field(default_factory=list)
    bands: list[str] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    renewal_within: int | None = None
    products: list[str] = field(default_factory=list)
    product_mode: str = "any"
    tags: list[int] = field(default_factory=list)
    tag_mode: str = "any"
    csms: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    sort: str = "chi"
    descending: bool = False
    page: int = 1
    per_page: int = 50

    def to_params(self, **changes: Any) -> list[tuple[str, str]]:
        """The query string pairs of this filter (defaults left out), with `changes` applied."""
        query = replace(self, **changes) if changes else self
        pairs: list[tuple[str, str]] = []
        if query.q:
            pairs.append(("q", query.q))
        pairs += [("tier", value) for value in query.tiers]
        pairs += [("band", value) for value in query.bands]
        pairs += [("segment", value) for value in query.segments]
        if query.renewal_within is not None:
            pairs.append(("renewal", str(query.renewal_within)))
        pairs += [("product", value) for value in query.products]
        if query.products and query.product_mode != "any":
            pairs.append(("product_mode", query.product_mode))
        pairs += [("tag", str(value)) for value in query.tags]
        if query.tags and query.tag_mode != "any":
            pairs.append(("tag_mode", query.tag_mode))
        pairs += [("csm", value) for value in query.csms]
        pairs += [("status", value) for value in query.statuses]
        if query.sort != "chi" or query.descending:
            pairs.append(("sort", query.sort))
            pairs.append(("dir", "desc" if query.descending else "asc"))
        if query.per_page != 50:
            pairs.append(("per_page", str(query.per_page)))
        if query.page != 1:
            pairs.append(("page", str(query.page)))
        return pairs

    def url(self, path: str = "/", **changes: Any) -> str:
        params = self.to_params(**changes)
        return f"{path}?{urlencode(params)}" if params else path

    def filter_params(self) -> list[tuple[str, str]]:
        """The pairs that select customers (no sort, no paging): what a saved filter or an export keeps."""
        return [(k, v) for k, v in self.to_params(page=1) if k not in ("page",)]

    @property
    def filtered(self) -> bool:
        return bool(
            self.q
            or self.tiers
            or self.bands
            or self.segments
            or self.renewal_within is not None
            or self.products
            or self.tags
            or self.csms
            or self.statuses
        )

    def sort_link(self, key: str, path: str = "/") -> str:
        descending = not self.descending if self.sort == key else key in ("acv",)
        return self.url(path, sort=key, descending=descending, page=1)


def _clean_text(value: str, name: str) -> str:
    text = "".join(char for char in value.strip() if char.isprintable())
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"'{name}' may be at most {MAX_TEXT} characters long", field=name)
    return text


def parse_customer_query(params: Mapping[str, list[str]], catalog: Catalog) -> CustomerQuery:
    """A `CustomerQuery` from URL parameters; anything invalid is a 400 naming the parameter."""
    query = CustomerQuery()
    query.q = _clean_text(last_value(params, "q"), "q")
    query.tiers = choices(params.get("tier", []), catalog.tiers, "tier")
    query.bands = choices(params.get("band", []), [*(band.name for band in catalog.bands), "none"], "band")
    query.segments = choices(params.get("segment", []), [sid for sid, _ in catalog.segments], "segment")
    renewal = last_value(params, "renewal")
    query.renewal_within = whole_number(renewal, "renewal", 0, 3650) if renewal else None
    query.products = choices(params.get("product", []), catalog.products, "product")
    query.product_mode = choices([last_value(params, "product_mode") or "any"], MODES, "product_mode")[0]
    tags: list[int] = []
    for value in params.get("tag", []):
        if value != "":
            tag_id = whole_number(value, "tag", 1, 2**31 - 1)
            if tag_id not in tags:
                tags.append(tag_id)
    query.tags = tags
    query.tag_mode = choices([last_value(params, "tag_mode") or "any"], MODES, "tag_mode")[0]
    query.csms = [_clean_text(value, "csm") for value in params.get("csm", []) if value.strip()]
    query.statuses = choices(params.get("status", []), STATUSES, "status")
    query.sort = choices([last_value(params, "sort") or "chi"], SORTS, "sort")[0]
    direction = choices([last_value(params, "dir") or "asc"], ("asc", "desc"), "dir")[0]
    query.descending = direction == "desc"
    page = last_value(params, "page")
    query.page = whole_number(page, "page", 1, 100_000) if page else 1
    per_page = last_value(params, "per_page")
    query.per_page = whole_number(per_page, "per_page", 1, 200) if per_page else 50
    return query


# ── SQL ─────────────────────────────────────────────────────────────────────────────────


def _overdue_invoices() -> Any:
    return func.coalesce(Account.facts["overdue_invoices"].as_integer(), 0)


def _status_condition(status: str) -> ColumnElement[bool]:
    if status == "no_order":
        return Account.has_active_order.is_(False)
    if status == "overdue":
        return and_(Account.has_active_order.is_(True), _overdue_invoices() > 0)
    return and_(Account.has_active_order.is_(True), _overdue_invoices() == 0)


def customer_conditions(user: CurrentUser, query: CustomerQuery, today: dt.date) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [user.customer_filter()]
    if query.q:
        pattern = contains_pattern(query.q)
        conditions.append(
            or_(
                Account.name.ilike(pattern, escape="\\"),
                Account.id.ilike(pattern, escape="\\"),
                Account.crm_id.ilike(pattern, escape="\\"),
            )
        )
    if query.tiers:
        conditions.append(Account.tier.in_(query.tiers))
    if query.bands:
        named = [band for band in query.bands if band != "none"]
        options = [Account.band.in_(named)] if named else []
        if "none" in query.bands:
            options.append(Account.band.is_(None))
        conditions.append(or_(*options))
    if query.segments:
        conditions.append(or_(*(contains(Account.policy_segments, segment) for segment in query.segments)))
    if query.renewal_within is not None:
        conditions.append(
            and_(Account.renewal_date >= today, Account.renewal_date <= today + dt.timedelta(days=query.renewal_within))
        )
    if query.products:
        checks = [contains(Account.products, product) for product in query.products]
        conditions.append(and_(*checks) if query.product_mode == "all" else or_(*checks))
    if query.tags:
        if query.tag_mode == "all":
            conditions.extend(
                exists().where(AccountTag.account_id == Account.id, AccountTag.tag_id == tag_id)
                for tag_id in query.tags
            )
        else:
            conditions.append(exists().where(AccountTag.account_id == Account.id, AccountTag.tag_id.in_(query.tags)))
    if query.csms:
        conditions.append(Account.csm.in_(query.csms))
    if query.statuses:
        conditions.append(or_(*(_status_condition(status) for status in query.statuses)))
    return conditions


def _order(query: CustomerQuery) -> list[Any]:
    column: Any = {
        "chi": Account.chi,
        "name": func.lower(Account.name),
        "tier": Account.tier,
        "acv": Account.acv,
        "renewal": Account.renewal_date,
        "csm": Account.csm,
        "region": Account.region,
    }[query.sort]
    ordered = column.desc() if query.descending else column.asc()
    if query.sort in ("chi", "renewal", "region"):
        ordered = ordered.nulls_last()
    return [ordered, Account.id]


# ── totals ──────────────────────────────────────────────────────────────────────────────


@dataclass
class BandTotal:
    name: str
    colour: str
    count: int = 0
    acv: dict[str, float] = field(default_factory=dict)


@dataclass
class Totals:
    customers: int = 0
    acv: dict[str, float] = field(default_factory=dict)
    bands: list[BandTotal] = field(default_factory=list)
    renewals: int = 0
    renewals_acv: dict[str, float] = field(default_factory=dict)
    renewal_days: int = RENEWAL_FLAG_DAYS
    open_high: int = 0
    open_tasks: int = 0


async def portfolio_totals(
    session: AsyncSession, user: CurrentUser, query: CustomerQuery, catalog: Catalog, today: dt.date
) -> Totals:
    """Totals over the customers the filter selects (the whole portfolio without a filter)."""
    conditions = customer_conditions(user, query, today)
    totals = Totals(bands=[BandTotal(band.name, band.colour) for band in catalog.bands])
    by_band = {band.name: band for band in totals.bands}
    horizon = today + dt.timedelta(days=RENEWAL_FLAG_DAYS)
    renewing = and_(Account.renewal_date >= today, Account.renewal_date <= horizon)
    statement = (
        select(
            Account.band,
            Account.currency,
            func.count(),
            func.sum(Account.acv),
            func.count().filter(renewing),
            func.sum(Account.acv).filter(renewing),
        )
        .where(*conditions)
        .group_by(Account.band, Account.currency)
    )
    for band, currency, count, acv, renewals, renewals_acv in await session.execute(statement):
        totals.customers += count
        totals.acv[currency] = totals.acv.get(currency, 0.0) + (acv or 0.0)
        totals.renewals += renewals
        if renewals:
            totals.renewals_acv[currency] = totals.renewals_acv.get(currency, 0.0) + (renewals_acv or 0.0)
        bucket = by_band.get(band) if band else None
        if bucket is None:
            name = band or "Not scored"
            bucket = by_band[name] = BandTotal(name, catalog.band_colour(band))
            totals.bands.append(bucket)
        bucket.count += count
        bucket.acv[currency] = bucket.acv.get(currency, 0.0) + (acv or 0.0)
    # Open tasks of the selected customers: by an IN over the selection (the database then starts
    # from the customers, not from every task), or over every task when nothing is filtered.
    scope: list[ColumnElement[bool]] = []
    if query.filtered or not user.sees_every_customer:
        selected = select(Account.id).where(*conditions).correlate(None).scalar_subquery()
        scope.append(Task.account_id.in_(selected))
    task_statement = (
        select(func.count().filter(Task.severity == "High"), func.count())
        .select_from(Task)
        .outerjoin(TaskState, TaskState.task_id == Task.id)
        .where(open_task_sql(today), *scope)
    )
    high, total = (await session.execute(task_statement)).one()
    totals.open_high, totals.open_tasks = high or 0, total or 0
    totals.acv = dict(sorted(totals.acv.items(), key=lambda item: -item[1]))
    return totals


# ── rows ────────────────────────────────────────────────────────────────────────────────


@dataclass
class ProductUse:
    code: str
    label: str
    name: str
    contracted: bool
    capacity: float | None
    used_latest: float | None
    utilisation: float | None  # mean daily use over 30 days / capacity
    usage_ratio: float | None  # latest day / capacity
    active_90: bool
    scans_30: int
    failed_30: int


@dataclass
class TrendPoint:
    as_of: dt.date
    chi: int
    band: str
    policy_hash: str


@dataclass
class CustomerRow:
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
    reasons: list[dict[str, Any]]
    policy_segments: list[str]
    products: list[ProductUse]
    status: str
    overdue_invoices: int
    has_active_order: bool
    renewal_date: dt.date | None
    days_to_renewal: int | None
    renewal_soon: bool
    days_since_login: int | None
    tags: list[TagRef]
    source_tags: list[str]
    open_tasks: dict[str, int]
    trend: list[TrendPoint]
    as_of: dt.date | None


@dataclass
class CustomerPage(Paging):
    rows: list[CustomerRow]


def product_uses(facts: dict[str, Any], catalog: Catalog, contracted_only: bool = False) -> list[ProductUse]:
    uses = []
    for item in facts.get("products") or []:
        code = str(item.get("product"))
        if contracted_only and not item.get("contracted"):
            continue
        uses.append(
            ProductUse(
                code=code,
                label=catalog.product_label(code),
                name=catalog.product_name(code),
                contracted=bool(item.get("contracted")),
                capacity=item.get("capacity"),
                used_latest=item.get("last_used_30"),
                utilisation=item.get("utilisation"),
                usage_ratio=item.get("usage_ratio"),
                active_90=bool(item.get("active_90")),
                scans_30=int(item.get("scans_30") or 0),
                failed_30=int(item.get("failed_30") or 0),
            )
        )
    order = list(catalog.products)
    uses.sort(key=lambda use: (not use.contracted, order.index(use.code) if use.code in order else len(order)))
    return uses


def status_of(account: Account) -> str:
    if not account.has_active_order:
        return "no_order"
    if int(account.facts.get("overdue_invoices") or 0) > 0:
        return "overdue"
    return "active"


def to_row(
    account: Account,
    catalog: Catalog,
    today: dt.date,
    tags: list[TagRef] | None = None,
    open_tasks: dict[str, int] | None = None,
    trend: list[TrendPoint] | None = None,
) -> CustomerRow:
    days = (account.renewal_date - today).days if account.renewal_date else None
    facts = account.facts or {}
    login = facts.get("days_since_login")
    return CustomerRow(
        id=account.id,
        name=account.name,
        tier=account.tier,
        tier_name=catalog.tiers.get(account.tier, account.tier),
        csm=account.csm,
        region=account.region,
        segment=account.segment,
        acv=account.acv,
        currency=account.currency,
        chi=account.chi,
        band=account.band,
        band_colour=catalog.band_colour(account.band),
        reasons=list(account.reasons or []),
        policy_segments=list(account.policy_segments or []),
        products=product_uses(facts, catalog, contracted_only=True),
        status=status_of(account),
        overdue_invoices=int(facts.get("overdue_invoices") or 0),
        has_active_order=account.has_active_order,
        renewal_date=account.renewal_date,
        days_to_renewal=days,
        renewal_soon=days is not None and 0 <= days <= RENEWAL_FLAG_DAYS,
        days_since_login=int(login) if isinstance(login, int | float) else None,
        tags=tags or [],
        source_tags=[str(tag) for tag in account.source_tags or []],
        open_tasks=open_tasks or {},
        trend=trend or [],
        as_of=account.last_seen_as_of,
    )


async def tags_by_account(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, list[TagRef]]:
    if not account_ids:
        return {}
    rows = await session.execute(
        select(AccountTag.account_id, Tag)
        .join(Tag, Tag.id == AccountTag.tag_id)
        .where(AccountTag.account_id.in_(account_ids))
        .order_by(func.lower(Tag.name))
    )
    result: dict[str, list[TagRef]] = {}
    for account_id, tag in rows:
        result.setdefault(account_id, []).append(tag_ref(tag))
    return result


async def trends_by_account(
    session: AsyncSession, account_ids: Sequence[str], today: dt.date, days: int = TREND_DAYS
) -> dict[str, list[TrendPoint]]:
    if not account_ids:
        return {}
    rows = await session.execute(
        select(ChiPoint.account_id, ChiPoint.as_of, ChiPoint.chi, ChiPoint.band, ChiPoint.policy_hash)
        .where(ChiPoint.account_id.in_(account_ids), ChiPoint.as_of >= today - dt.timedelta(days=days))
        .order_by(ChiPoint.account_id, ChiPoint.as_of, ChiPoint.run_id)
    )
    result: dict[str, list[TrendPoint]] = {}
    for account_id, as_of, chi, band, policy_hash in rows:
        points = result.setdefault(account_id, [])
        if points and points[-1].as_of == as_of:
            points[-1] = TrendPoint(as_of, chi, band, policy_hash)  # a forced re-run of the same day: keep the last
        else:
            points.append(TrendPoint(as_of, chi, band, policy_hash))
    return result


async def list_customers(
    session: AsyncSession, user: CurrentUser, query: CustomerQuery, catalog: Catalog, today: dt.date
) -> CustomerPage:
    conditions = customer_conditions(user, query, today)
    total = await session.scalar(select(func.count()).select_from(Account).where(*conditions)) or 0
    page = min(query.page, max(1, -(-total // query.per_page)))
    accounts = list(
        await session.scalars(
            select(Account)
            .where(*conditions)
            .order_by(*_order(query))
            .limit(query.per_page)
            .offset((page - 1) * query.per_page)
        )
    )
    ids = [account.id for account in accounts]
    tags = await tags_by_account(session, ids)
    counts = await open_counts_by_account(session, ids, today)
    trends = await trends_by_account(session, ids, today)
    rows = [to_row(a, catalog, today, tags.get(a.id), counts.get(a.id), trends.get(a.id)) for a in accounts]
    return CustomerPage(rows=rows, total=total, page=page, per_page=query.per_page)


async def get_account(session: AsyncSession, user: CurrentUser, account_id: str) -> Account:
    """The customer, if this user may see it (else 404, the same answer as for an unknown id)."""
    account = await session.scalar(select(Account).where(Account.id == account_id, user.customer_filter()))
    if account is None:
        raise NotFound(f"no customer {account_id!r}")
    return account


async def customer_row(
    session: AsyncSession, account: Account, catalog: Catalog, today: dt.date, trend: list[TrendPoint] | None = None
) -> CustomerRow:
    """The row of a customer already fetched through the access filter (the detail page's header).

    `trend`: the CHI trend when the caller has read the CHI history anyway; else it is read here.
    """
    tags = await tags_by_account(session, [account.id])
    counts = await open_counts_by_account(session, [account.id], today)
    if trend is None:
        trend = (await trends_by_account(session, [account.id], today, days=DETAIL_TREND_DAYS)).get(account.id)
    return to_row(account, catalog, today, tags.get(account.id), counts.get(account.id), trend)


async def get_customer_row(
    session: AsyncSession, user: CurrentUser, account_id: str, catalog: Catalog, today: dt.date
) -> tuple[Account, CustomerRow]:
    account = await get_account(session, user, account_id)
    return account, await customer_row(session, account, catalog, today)


async def csm_choices(session: AsyncSession, user: CurrentUser) -> list[str]:
    """The CSMs whose customers this user sees (for the CSM filter)."""
    return list(
        await session.scalars(select(Account.csm).where(user.customer_filter()).distinct().order_by(Account.csm))
    )


async def count_customers(session: AsyncSession, user: CurrentUser, query: CustomerQuery, today: dt.date) -> int:
    conditions = customer_conditions(user, query, today)
    return await session.scalar(select(func.count()).select_from(Account).where(*conditions)) or 0


# ── exports ─────────────────────────────────────────────────────────────────────────────

EXPORT_FIELDS = (
    "account_id",
    "name",
    "tier",
    "csm",
    "chi",
    "band",
    "acv",
    "currency",
    "status",
    "renewal_date",
    "days_to_renewal",
    "segments",
    "products",
    "tags",
    "open_tasks",
    "reasons",
)
EXPORT_BATCH = 500


def export_record(row: CustomerRow) -> dict[str, Any]:
    return {
        "account_id": row.id,
        "name": row.name,
        "tier": row.tier,
        "csm": row.csm,
        "chi": row.chi,
        "band": row.band,
        "acv": row.acv,
        "currency": row.currency,
        "status": row.status,
        "renewal_date": row.renewal_date.isoformat() if row.renewal_date else None,
        "days_to_renewal": row.days_to_renewal,
        "segments": row.policy_segments,
        "products": [
            {"product": use.code, "capacity": use.capacity, "utilisation": use.utilisation} for use in row.products
        ],
        "tags": [tag.name for tag in row.tags],
        "open_tasks": row.open_tasks,
        "reasons": [reason.get("text", "") for reason in row.reasons],
    }


async def export_customers(
    session: AsyncSession, user: CurrentUser, query: CustomerQuery, catalog: Catalog, today: dt.date
) -> AsyncIterator[dict[str, Any]]:
    """Every customer the filter selects (no paging), in the filter's sort order, batch by batch."""
    conditions = customer_conditions(user, query, today)
    last_page = False
    offset = 0
    while not last_page:
        accounts = list(
            await session.scalars(
                select(Account).where(*conditions).order_by(*_order(query)).limit(EXPORT_BATCH).offset(offset)
            )
        )
        last_page = len(accounts) < EXPORT_BATCH
        offset += EXPORT_BATCH
        ids = [account.id for account in accounts]
        tags = await tags_by_account(session, ids)
        counts = await open_counts_by_account(session, ids, today)
        for account in accounts:
            yield export_record(to_row(account, catalog, today, tags.get(account.id), counts.get(account.id)))
        session.expunge_all()
