"""An independent, plain reference implementation of the default policies.

It implements /work/shared/spec/DEFAULT_POLICIES.md over the snapshot format of
/work/shared/spec/DATA.md, by hand, with exact rational arithmetic (``Fraction``).
It exists only to be compared against the policy-driven engine in a differential
test, so it deliberately shares nothing with ``engine/``, ``policies/`` or ``schemas/``
and favours being obviously right over being fast.

Bad-input handling is limited to what the example snapshot needs: a repeated usage row
(same account, product and date) is a bad row and is skipped (the first one in file
order is kept); a repeated ``id`` in an entity with ids is skipped the same way; rows
whose ``account_id`` names no account are ignored.
"""

from __future__ import annotations

import datetime
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

Row = dict[str, Any]
Tasks = dict[tuple[str, str], str]

CADENCE_DAYS = {"T1": 30, "T2": 60, "T3": 90, "T4": 180}

SECTION_WEIGHTS = {
    "engagement": 50,
    "one_to_one": 10,
    "support": 10,
    "sentiment": 10,
    "feedback": 10,
    "commercial": 10,
}

ENTITIES = (
    "accounts",
    "orders",
    "invoices",
    "usage",
    "activity",
    "scanners",
    "schedules",
    "tickets",
    "meetings",
    "nps",
    "sentiment",
)

ENTITIES_WITH_ID = ("orders", "invoices", "scanners", "schedules", "tickets", "meetings")


# --------------------------------------------------------------------------- helpers


def to_fraction(value: Any) -> Fraction:
    """A JSON number as the exact rational its decimal text denotes."""
    if isinstance(value, bool):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(repr(value))
    if isinstance(value, str):
        return Fraction(value)
    raise TypeError(f"not a number: {value!r}")


def parse_date(text: str) -> datetime.date:
    """Dates are `YYYY-MM-DD`."""
    return datetime.date.fromisoformat(text)


def utc_date(timestamp: str) -> datetime.date:
    """Where a rule needs a day, a timestamp counts on its UTC date."""
    moment = datetime.datetime.fromisoformat(timestamp)
    if moment.tzinfo is None:
        # DATA.md requires an offset; a timestamp without one is read as UTC.
        return moment.date()
    return moment.astimezone(datetime.UTC).date()


def days_since(as_of: datetime.date, day: datetime.date) -> int:
    """`days_since(d) = (as_of - d).days`."""
    return (as_of - day).days


def in_last_days(as_of: datetime.date, day: datetime.date, n: int) -> bool:
    """The last N days is the window `as_of - N + 1 <= date <= as_of`."""
    return as_of - datetime.timedelta(days=n - 1) <= day <= as_of


def clamp(x: Fraction) -> Fraction:
    """`clamp(x) = min(100, max(0, x))`."""
    return min(Fraction(100), max(Fraction(0), x))


def round_half_up(x: Fraction) -> int:
    """round half up: `floor(x + 0.5)`."""
    return math.floor(x + Fraction(1, 2))


# --------------------------------------------------------------------------- one customer's rows


class Customer:
    """One account and its rows, with the derived terms of DATA.md."""

    def __init__(self, account: Row, rows: dict[str, list[Row]], as_of: datetime.date) -> None:
        self.account = account
        self.rows = rows
        self.as_of = as_of

    @property
    def tier(self) -> str:
        return str(self.account["tier"])

    @property
    def cadence(self) -> int:
        """Cadence by tier: T1 30, T2 60, T3 90, T4 180 days."""
        return CADENCE_DAYS[self.tier]

    # ---- orders

    def active_orders(self) -> list[Row]:
        """active order: `status == "active"` and `start_date <= as_of <= end_date`."""
        return [
            order
            for order in self.rows["orders"]
            if order.get("status") == "active"
            and parse_date(order["start_date"]) <= self.as_of <= parse_date(order["end_date"])
        ]

    def contracted_products(self) -> dict[str, Fraction]:
        """contracted products: the products of the active orders, capacities summed per product."""
        capacities: dict[str, Fraction] = {}
        for order in self.active_orders():
            for item in order.get("products") or []:
                product = item["product"]
                capacities[product] = capacities.get(product, Fraction(0)) + to_fraction(item["capacity"])
        return capacities

    def renewal_date(self) -> datetime.date | None:
        """renewal date: the earliest `end_date` among active orders."""
        ends = [parse_date(order["end_date"]) for order in self.active_orders()]
        return min(ends) if ends else None

    # ---- invoices

    def overdue_invoice_ages(self) -> list[int]:
        """overdue invoice: `status == "open"` and `due_on < as_of`; its age is `days_since(due_on)`."""
        ages = []
        for invoice in self.rows["invoices"]:
            due_on = parse_date(invoice["due_on"])
            if invoice.get("status") == "open" and due_on < self.as_of:
                ages.append(days_since(self.as_of, due_on))
        return ages

    # ---- activity

    def last_login(self) -> datetime.date | None:
        """last login: the latest `activity` date with `logins > 0`."""
        days = [parse_date(row["date"]) for row in self.rows["activity"] if to_fraction(row["logins"]) > 0]
        return max(days) if days else None

    # ---- usage

    def usage_in_last_days(self, n: int, product: str | None = None) -> list[Row]:
        """The account's usage rows in the last N days (optionally of one product)."""
        return [
            row
            for row in self.rows["usage"]
            if in_last_days(self.as_of, parse_date(row["date"]), n) and (product is None or row["product"] == product)
        ]

    def products_in_usage(self) -> list[str]:
        """Every product that appears in the account's usage rows, in first-seen order."""
        products: list[str] = []
        for row in self.rows["usage"]:
            if row["product"] not in products:
                products.append(row["product"])
        return products

    def utilisation(self, product: str) -> Fraction | None:
        """`u = (sum of used over the last 30 days) / 30 / capacity`; None when the capacity is 0."""
        capacity = self.contracted_products()[product]
        if capacity == 0:
            return None
        used = sum((to_fraction(row["used"]) for row in self.usage_in_last_days(30, product)), Fraction(0))
        return used / 30 / capacity

    def is_inactive_product(self, product: str) -> bool:
        """no row of `used > 0` or `scans > 0` in the last 90 days."""
        return not any(
            to_fraction(row["used"]) > 0 or to_fraction(row["scans"]) > 0
            for row in self.usage_in_last_days(90, product)
        )

    # ---- scanners, schedules, tickets

    def inactive_scanners(self) -> list[Row]:
        """inactive scanner: `last_seen_at` is null or `days_since(last_seen_at) > 7`."""
        inactive = []
        for scanner in self.rows["scanners"]:
            seen = scanner.get("last_seen_at")
            if seen is None or days_since(self.as_of, utc_date(seen)) > 7:
                inactive.append(scanner)
        return inactive

    def lapsed_schedules(self) -> list[Row]:
        """lapsed schedule: `enabled` and (`last_run_at` null or `days_since(last_run_at) > 2 * interval`)."""
        lapsed = []
        for schedule in self.rows["schedules"]:
            if schedule.get("enabled") is not True:
                continue
            last_run = schedule.get("last_run_at")
            limit = 2 * to_fraction(schedule["interval_days"])
            if last_run is None or days_since(self.as_of, utc_date(last_run)) > limit:
                lapsed.append(schedule)
        return lapsed

    def open_tickets(self) -> list[Row]:
        """open ticket: `closed_at` is null."""
        return [ticket for ticket in self.rows["tickets"] if ticket.get("closed_at") is None]

    # ---- meetings, sentiment, nps

    def days_since_latest_meeting(self) -> int | None:
        """`m` = days since the latest meeting with `held_on <= as_of` (None: no meeting held)."""
        held = [parse_date(m["held_on"]) for m in self.rows["meetings"]]
        held = [day for day in held if day <= self.as_of]
        return days_since(self.as_of, max(held)) if held else None

    def latest_sentiment(self) -> str | None:
        """latest sentiment: the row with the greatest `recorded_on` (ties: the last in file order)."""
        latest: Row | None = None
        for row in self.rows["sentiment"]:
            if latest is None or parse_date(row["recorded_on"]) >= parse_date(latest["recorded_on"]):
                latest = row
        return None if latest is None else str(latest["value"])

    def nps_scores_last_365_days(self) -> list[Fraction]:
        """NPS score of responses in the last 365 days."""
        return [
            to_fraction(row["score"])
            for row in self.rows["nps"]
            if in_last_days(self.as_of, parse_date(row["responded_on"]), 365)
        ]


def outcome_missing(meeting: Row) -> bool:
    """`outcome?` (text; null, empty or only white space = not recorded)."""
    outcome = meeting.get("outcome")
    return outcome is None or (isinstance(outcome, str) and outcome.strip() == "")


# --------------------------------------------------------------------------- CHI sections


def login_part(c: Customer) -> Fraction:
    """`login`: 100 if `d <= 7`; 0 if no login or `d >= 60`; else `100*(60-d)/53`."""
    last = c.last_login()
    if last is None:
        return Fraction(0)
    d = days_since(c.as_of, last)
    if d <= 7:
        return Fraction(100)
    if d >= 60:
        return Fraction(0)
    return Fraction(100 * (60 - d), 53)


def utilisation_part(c: Customer) -> Fraction:
    """`utilisation`: mean over contracted products of `min(100, 100*u/0.6)`; 0 when there is none."""
    products = c.contracted_products()
    if not products:
        return Fraction(0)
    total = Fraction(0)
    for product in products:
        u = c.utilisation(product)
        if u is not None:  # a capacity of 0 scores that product 0
            total += min(Fraction(100), 100 * u / Fraction("0.6"))
    return total / len(products)


def scanning_part(c: Customer) -> Fraction:
    """`scanning`: `base = 0` if `S == 0`, else `100*(1 - min(1, 5*F/S))`; `max(0, base - 20*inactive)`."""
    rows = c.usage_in_last_days(30)
    scans = sum((to_fraction(row["scans"]) for row in rows), Fraction(0))
    failed = sum((to_fraction(row["failed_scans"]) for row in rows), Fraction(0))
    base = Fraction(0) if scans == 0 else 100 * (1 - min(Fraction(1), 5 * failed / scans))
    return max(Fraction(0), base - 20 * len(c.inactive_scanners()))


def section_engagement(c: Customer) -> Fraction:
    """Platform & Product Engagement: `0.4*login + 0.4*utilisation + 0.2*scanning`."""
    return Fraction("0.4") * login_part(c) + Fraction("0.4") * utilisation_part(c) + Fraction("0.2") * scanning_part(c)


def section_one_to_one(c: Customer) -> Fraction:
    """1:1: 100 if `m <= cadence`; 0 if none or `m >= 3*cadence`; else `100*(3*cadence - m)/(2*cadence)`."""
    m = c.days_since_latest_meeting()
    cadence = c.cadence
    if m is None:
        return Fraction(0)
    if m <= cadence:
        return Fraction(100)
    if m >= 3 * cadence:
        return Fraction(0)
    return Fraction(100 * (3 * cadence - m), 2 * cadence)


def section_support(c: Customer) -> Fraction:
    """Support Tickets: `clamp(100 - 25*open_high - 10*open_other)`."""
    open_high = 0
    open_other = 0
    for ticket in c.open_tickets():
        if ticket.get("priority") in ("high", "urgent"):
            open_high += 1
        else:
            open_other += 1
    return clamp(Fraction(100 - 25 * open_high - 10 * open_other))


def section_sentiment(c: Customer) -> Fraction:
    """CSM Sentiment: latest sentiment: positive 100, neutral 60, negative 20, none 50."""
    value = c.latest_sentiment()
    scores = {"positive": 100, "neutral": 60, "negative": 20, None: 50}
    return Fraction(scores[value])


def section_feedback(c: Customer) -> Fraction:
    """Customer Feedback: mean NPS (last 365 days): none 50; >= 9: 100; >= 7: 70; else 20."""
    scores = c.nps_scores_last_365_days()
    if not scores:
        return Fraction(50)
    mean = sum(scores, Fraction(0)) / len(scores)
    if mean >= 9:
        return Fraction(100)
    if mean >= 7:
        return Fraction(70)
    return Fraction(20)


def section_commercial(c: Customer) -> Fraction:
    """Commercial: 100; -50 if no active order; -50 if an invoice > 60 days overdue, else -30 if any."""
    score = Fraction(100)
    if not c.active_orders():
        score -= 50
    ages = c.overdue_invoice_ages()
    if any(age > 60 for age in ages):
        score -= 50
    elif ages:
        score -= 30
    return clamp(score)


SECTIONS = {
    "engagement": section_engagement,
    "one_to_one": section_one_to_one,
    "support": section_support,
    "sentiment": section_sentiment,
    "feedback": section_feedback,
    "commercial": section_commercial,
}


def chi_of(sections: dict[str, Fraction]) -> int:
    """`CHI = round_half_up(sum(weight*score) / sum(weight))`."""
    weighted = sum((SECTION_WEIGHTS[name] * score for name, score in sections.items()), Fraction(0))
    return round_half_up(weighted / sum(SECTION_WEIGHTS.values()))


def band_of(chi: int) -> str:
    """Bands: `>= 75` Happy, `50..74` At-Risk, `< 50` Critical."""
    if chi >= 75:
        return "Happy"
    if chi >= 50:
        return "At-Risk"
    return "Critical"


# --------------------------------------------------------------------------- task rules


def rule_renewal_upcoming(c: Customer, band: str) -> Tasks:
    """1 renewal-upcoming: `0 <= days until renewal date <= 90`; High `<= 30`, Medium `<= 60`, else Low."""
    renewal = c.renewal_date()
    if renewal is None:
        return {}
    days = (renewal - c.as_of).days
    if not 0 <= days <= 90:
        return {}
    severity = "High" if days <= 30 else "Medium" if days <= 60 else "Low"
    return {("renewal-upcoming", ""): severity}


def rule_overdue_invoices(c: Customer, band: str) -> Tasks:
    """2 overdue-invoices: any overdue invoice; High if the oldest is `> 60` days overdue, Medium `> 30`."""
    ages = c.overdue_invoice_ages()
    if not ages:
        return {}
    oldest = max(ages)
    severity = "High" if oldest > 60 else "Medium" if oldest > 30 else "Low"
    return {("overdue-invoices", ""): severity}


def rule_high_license_usage(c: Customer, band: str) -> Tasks:
    """3 high-license-usage: latest row in last 30 days has `used >= 0.9 * capacity`; High if `>= capacity`"""
    tasks: Tasks = {}
    for product, capacity in c.contracted_products().items():
        if capacity == 0:
            continue  # rules 3 and 8 skip a product whose summed capacity is 0
        rows = c.usage_in_last_days(30, product)
        if not rows:
            continue
        latest = max(rows, key=lambda row: parse_date(row["date"]))
        used = to_fraction(latest["used"])
        if used >= Fraction("0.9") * capacity:
            tasks[("high-license-usage", product)] = "High" if used >= capacity else "Medium"
    return tasks


def rule_inactive_scanners(c: Customer, band: str) -> Tasks:
    """4 inactive-scanners: any inactive scanner; High if at least half of them are inactive, else Medium."""
    inactive = len(c.inactive_scanners())
    if inactive == 0:
        return {}
    total = len(c.rows["scanners"])
    severity = "High" if 2 * inactive >= total else "Medium"
    return {("inactive-scanners", ""): severity}


def rule_failed_scans(c: Customer, band: str) -> Tasks:
    """5 failed-scans: 7-day `failed > 0`, `scans > 0`, `failed/scans >= 0.10`; High >= 0.5, Medium >= 0.25"""
    tasks: Tasks = {}
    for product in c.products_in_usage():
        rows = c.usage_in_last_days(7, product)
        scans = sum((to_fraction(row["scans"]) for row in rows), Fraction(0))
        failed = sum((to_fraction(row["failed_scans"]) for row in rows), Fraction(0))
        if failed > 0 and scans > 0 and failed / scans >= Fraction("0.10"):
            ratio = failed / scans
            if ratio >= Fraction("0.5"):
                severity = "High"
            elif ratio >= Fraction("0.25"):
                severity = "Medium"
            else:
                severity = "Low"
            tasks[("failed-scans", product)] = severity
    return tasks


def rule_schedule_lapsed(c: Customer, band: str) -> Tasks:
    """6 schedule-lapsed: a lapsed schedule; High for T1, else Medium."""
    severity = "High" if c.tier == "T1" else "Medium"
    return {("schedule-lapsed", str(schedule["id"])): severity for schedule in c.lapsed_schedules()}


def rule_inactive_product(c: Customer, band: str) -> Tasks:
    """7 inactive-product: contracted product, no row of `used > 0` or `scans > 0` in 90 days; High T1/T2."""
    severity = "High" if c.tier in ("T1", "T2") else "Medium"
    return {
        ("inactive-product", product): severity for product in c.contracted_products() if c.is_inactive_product(product)
    }


def rule_low_utilisation(c: Customer, band: str) -> Tasks:
    """8 low-utilisation: a contracted product, not inactive (rule 7), whose 30-day `u` is `< 0.30`; Low."""
    tasks: Tasks = {}
    for product in c.contracted_products():
        u = c.utilisation(product)
        if u is None or c.is_inactive_product(product):
            continue
        if u < Fraction("0.30"):
            tasks[("low-utilisation", product)] = "Low"
    return tasks


def rule_meeting_follow_up_gap(c: Customer, band: str) -> Tasks:
    """9 meeting-follow-up-gap: `m > cadence` or no meeting held yet; High if `> 2*cadence` or none."""
    m = c.days_since_latest_meeting()
    if m is None or m > 2 * c.cadence:
        return {("meeting-follow-up-gap", ""): "High"}
    if m > c.cadence:
        return {("meeting-follow-up-gap", ""): "Medium"}
    return {}


def rule_no_active_order(c: Customer, band: str) -> Tasks:
    """10 no-active-order: no active order; High."""
    return {} if c.active_orders() else {("no-active-order", ""): "High"}


def rule_chi_status_review(c: Customer, band: str) -> Tasks:
    """11 chi-status-review: band Critical, or At-Risk for a T1 customer; High if Critical, else Medium."""
    if band == "Critical":
        return {("chi-status-review", ""): "High"}
    if band == "At-Risk" and c.tier == "T1":
        return {("chi-status-review", ""): "Medium"}
    return {}


def rule_meeting_outcome_missing(c: Customer, band: str) -> Tasks:
    """12 meeting-outcome-missing: `2 <= days_since(held_on) <= 29`, no outcome; Medium if `> 14`, else Low"""
    tasks: Tasks = {}
    for meeting in c.rows["meetings"]:
        age = days_since(c.as_of, parse_date(meeting["held_on"]))
        if 2 <= age <= 29 and outcome_missing(meeting):
            tasks[("meeting-outcome-missing", str(meeting["id"]))] = "Medium" if age > 14 else "Low"
    return tasks


RULES = (
    rule_renewal_upcoming,
    rule_overdue_invoices,
    rule_high_license_usage,
    rule_inactive_scanners,
    rule_failed_scans,
    rule_schedule_lapsed,
    rule_inactive_product,
    rule_low_utilisation,
    rule_meeting_follow_up_gap,
    rule_no_active_order,
    rule_chi_status_review,
    rule_meeting_outcome_missing,
)


# --------------------------------------------------------------------------- entry point


def _group_rows(snapshot: dict[str, list[Row]], account_ids: set[str]) -> dict[str, dict[str, list[Row]]]:
    """Each account's rows per entity, in file order, without repeated usage rows or repeated ids."""
    grouped: dict[str, dict[str, list[Row]]] = {
        account_id: {entity: [] for entity in ENTITIES if entity != "accounts"} for account_id in account_ids
    }
    for entity in ENTITIES:
        if entity == "accounts":
            continue
        seen: set[Any] = set()
        for row in snapshot.get(entity) or []:
            if entity == "usage":
                identity: Any = (row["account_id"], row["product"], row["date"])
            elif entity in ENTITIES_WITH_ID:
                identity = row["id"]
            else:
                identity = None
            if identity is not None:
                if identity in seen:
                    continue  # a repeat is a bad row: skipped, the first one is kept
                seen.add(identity)
            if row.get("account_id") in grouped:
                grouped[row["account_id"]][entity].append(row)
    return grouped


def reference_evaluate(snapshot: dict[str, list[dict]], as_of: datetime.date) -> dict[str, dict]:
    """Score every account and run the twelve rules, exactly as DEFAULT_POLICIES.md says."""
    accounts: list[Row] = []
    account_ids: set[str] = set()
    for account in snapshot.get("accounts") or []:
        if account["id"] not in account_ids:
            account_ids.add(account["id"])
            accounts.append(account)
    grouped = _group_rows(snapshot, account_ids)

    results: dict[str, dict] = {}
    for account in accounts:
        customer = Customer(account, grouped[account["id"]], as_of)
        sections = {name: section(customer) for name, section in SECTIONS.items()}
        chi = chi_of(sections)
        band = band_of(chi)
        tasks: Tasks = {}
        for rule in RULES:
            tasks.update(rule(customer, band))
        results[account["id"]] = {"chi": chi, "band": band, "sections": sections, "tasks": tasks}
    return results


def load_snapshot_folder(folder: str) -> tuple[dict[str, list[dict]], datetime.date]:
    """Read a snapshot folder (manifest.json + one JSON Lines file per entity) and its `as_of`."""
    root = Path(folder)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    snapshot: dict[str, list[dict]] = {}
    for entity in ENTITIES:
        path = root / f"{entity}.jsonl"
        rows: list[dict] = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rows.append(json.loads(line))
        snapshot[entity] = rows
    return snapshot, parse_date(manifest["as_of"])
