"""Random but valid snapshots (DATA.md), rich in the boundary values of DEFAULT_POLICIES.md.

``random_snapshot(rng, as_of, accounts)`` returns ``{entity: [row, ...]}`` in the shape of the
JSON Lines files of a snapshot folder. It is deterministic for a given ``random.Random`` state.
About seven accounts in ten are "edgy": most of their features are drawn from the boundary
cases of the spec (days since login 7/8/59/60, renewal 0/30/31/60/61/90/91 days away, window
edges as_of-6/-7/-29/-30/-89/-90, exact failure ratios, ...); the rest are ordinary customers.

Rows are valid: unique ids, every ``account_id`` names an account, at most one usage row per
(account, product, date), no usage/activity/nps/sentiment date and no ticket ``opened_at``,
scanner ``last_seen_at`` or schedule ``last_run_at`` after ``as_of`` (neither its UTC date nor
its local date), ``closed_at >= opened_at``, ``end_date >= start_date``. Meetings may be in the
future. Every entity list except ``accounts`` is shuffled, so file order is random too.
"""

from __future__ import annotations

import datetime
import random
from typing import Any

Row = dict[str, Any]

PRODUCTS = ("VM", "PC", "WAS")
TIERS = ("T1", "T2", "T3", "T4")
CADENCE_DAYS = {"T1": 30, "T2": 60, "T3": 90, "T4": 180}

ORDINARY_CAPACITIES = (10, 20, 50, 100, 250, 1000)
EDGE_CAPACITIES = (0, 1, 3, 10, 15, 20, 50, 100, 250)

# (scans, failed) over the last 7 days: exact 0.10 / 0.25 / 0.5 / 0.2 ratios and just below/above.
FAILURE_PAIRS = (
    (10, 1), (100, 10), (100, 9), (1000, 99), (20, 2), (30, 3),
    (4, 1), (100, 25), (100, 24), (1000, 249), (8, 2),
    (2, 1), (100, 50), (100, 49), (1000, 499), (6, 3),
    (5, 1), (100, 20), (100, 19), (100, 21),
    (1, 1), (10, 0), (0, 0), (3, 3),
)  # fmt: skip

# (scans, failed) over the last 30 days around 5*F/S == 1 (scanning base exactly 0).
SCANNING_PAIRS = ((50, 10), (50, 9), (50, 11), (100, 20), (10, 2), (200, 39), (40, 1))

# NPS score groups whose mean is exactly 7 or 9, or just below.
NPS_GROUPS = (
    [7], [6, 8], [5, 9], [10, 4], [9], [8, 10], [10, 10, 7],
    [6, 7], [8, 9], [9, 9, 8], [7, 7, 6], [10], [0], [3, 10, 8],
)  # fmt: skip

RECORDED_OUTCOMES = ("Agreed next steps", "QBR done", " ok ")
MISSING = object()  # marker: leave the optional key out of the row
MISSING_OUTCOMES = (None, "", "   ", "\t \n", MISSING)

# minutes east of UTC; several put the local date on another day than the UTC date
OFFSETS_MINUTES = (60, 120, 180, 330, 540, 600, -300, -420, -600)


def random_snapshot(rng: random.Random, as_of: datetime.date, accounts: int) -> dict[str, list[dict]]:
    """A valid snapshot of `accounts` customers, mixing many boundary cases at random."""
    factory = _Factory(rng, as_of)
    for number in range(1, accounts + 1):
        factory.add_account(number)
    for entity, rows in factory.snapshot.items():
        if entity != "accounts":
            rng.shuffle(rows)
    return factory.snapshot


class _Factory:
    def __init__(self, rng: random.Random, as_of: datetime.date) -> None:
        self.rng = rng
        self.as_of = as_of
        self.snapshot: dict[str, list[Row]] = {
            entity: []
            for entity in (
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
        }

    # ------------------------------------------------------------------ small helpers

    def day(self, days_ago: int) -> datetime.date:
        return self.as_of - datetime.timedelta(days=days_ago)

    def iso(self, days_ago: int) -> str:
        return self.day(days_ago).isoformat()

    def timestamp(self, utc_day: datetime.date) -> str:
        """An ISO-8601 timestamp whose UTC date is `utc_day`, often crossing midnight in its offset."""
        rng = self.rng
        if rng.random() < 0.5:
            # late or early in the UTC day, with an offset that moves the local date
            if rng.random() < 0.5:
                seconds = rng.randint(22 * 3600, 24 * 3600 - 1)
                minutes = rng.choice((120, 180, 330, 540, 600))
            else:
                seconds = rng.randint(0, 2 * 3600 - 1)
                minutes = rng.choice((-300, -420, -600))
        else:
            seconds = rng.randint(0, 24 * 3600 - 1)
            minutes = rng.choice((0, 0, *OFFSETS_MINUTES))
        moment = datetime.datetime.combine(utc_day, datetime.time(), tzinfo=datetime.UTC)
        return self.format_moment(moment + datetime.timedelta(seconds=seconds), minutes)

    def format_moment(self, moment: datetime.datetime, minutes: int) -> str:
        """Write an aware UTC moment with an offset of `minutes`, never on a local date after as_of."""
        local = moment.astimezone(datetime.timezone(datetime.timedelta(minutes=minutes)))
        if local.date() > self.as_of:
            local = moment.astimezone(datetime.UTC)
        text = local.isoformat(timespec="seconds")
        if text.endswith("+00:00") and self.rng.random() < 0.7:
            text = text[: -len("+00:00")] + "Z"
        return text

    def split(self, total: int, parts: int) -> list[int]:
        """`total` cut into `parts` non-negative integers at random."""
        cuts = sorted(self.rng.randint(0, total) for _ in range(parts - 1))
        bounds = [0, *cuts, total]
        return [bounds[i + 1] - bounds[i] for i in range(parts)]

    def put(self, row: Row, key: str, value: Any) -> None:
        """Set an optional field, or leave it out when `value` is MISSING."""
        if value is not MISSING:
            row[key] = value

    # ------------------------------------------------------------------ one customer

    def add_account(self, number: int) -> None:
        rng = self.rng
        account_id = f"acc-{number:06d}"
        tier = rng.choice(TIERS)
        currency = rng.choice(("EUR", "USD"))
        edgy = rng.random() < 0.7
        account: Row = {
            "id": account_id,
            "name": f"Customer {number}",
            "tier": tier,
            "csm": f"csm{rng.randint(0, 9)}@example.com",
            "acv": rng.choice((25000, 60000, 120000, 400000, 99999.5)),
            "currency": currency,
        }
        if rng.random() < 0.8:
            account["crm_id"] = str(900000 + number)
        if rng.random() < 0.5:
            account["tags"] = rng.sample(["emea", "amer", "apac", "strategic"], rng.randint(0, 2))
        self.snapshot["accounts"].append(account)

        capacities = self.add_orders(account_id, edgy)
        self.add_usage(account_id, capacities, edgy)
        self.add_activity(account_id, edgy)
        self.add_meetings(account_id, tier, edgy)
        self.add_tickets(account_id, edgy)
        self.add_sentiment(account_id, edgy)
        self.add_nps(account_id, edgy)
        self.add_invoices(account_id, currency, edgy)
        self.add_scanners(account_id, edgy)
        self.add_schedules(account_id, edgy)

    # ------------------------------------------------------------------ orders

    def order(self, account_id: str, n: int, status: str, start: int, end: int, products: list[Row]) -> Row:
        """An order starting `start` days ago and ending `end` days ago (negative: in the future)."""
        assert end <= start
        row: Row = {
            "id": f"ord-{account_id[4:]}-{n}",
            "account_id": account_id,
            "status": status,
            "start_date": self.iso(start),
            "end_date": self.iso(end),
            "acv": self.rng.choice((10000, 30000, 120000)),
            "products": products,
        }
        self.snapshot["orders"].append(row)
        return row

    def products(self, edgy: bool) -> list[Row]:
        choices = EDGE_CAPACITIES if edgy else ORDINARY_CAPACITIES
        codes = self.rng.sample(PRODUCTS, self.rng.randint(1, 3))
        return [{"product": code, "capacity": self.rng.choice(choices)} for code in codes]

    def add_orders(self, account_id: str, edgy: bool) -> dict[str, int]:
        """Orders; returns the contracted products (active orders, capacities summed)."""
        rng = self.rng
        orders: list[Row] = []

        def add(n: int, status: str, start: int, end: int, products: list[Row]) -> None:
            orders.append(self.order(account_id, n, status, start, end, products))

        scenario = "ordinary"
        if edgy:
            scenario = rng.choice(
                ("renewal", "renewal", "renewal", "none", "past", "inactive_status", "future_start",
                 "multi", "multi", "cap_zero", "starts_today", "ordinary")
            )  # fmt: skip
        if scenario == "ordinary":
            add(0, "active", rng.randint(30, 700), -rng.randint(92, 700), self.products(False))
        elif scenario == "renewal":
            end = -rng.choice((0, 30, 31, 60, 61, 90, 91))
            add(0, "active", rng.randint(0, 400), end, self.products(edgy))
        elif scenario == "past":  # status active but already ended: not an active order
            end = rng.choice((1, 2, 30, 200))
            add(0, "active", end + rng.randint(0, 365), end, self.products(edgy))
        elif scenario == "inactive_status":
            status = rng.choice(("pending", "expired", "cancelled"))
            add(0, status, rng.randint(0, 300), -rng.randint(0, 300), self.products(edgy))
        elif scenario == "future_start":
            start = -rng.choice((1, 10))
            add(0, "active", start, start - 365, self.products(edgy))
        elif scenario == "multi":  # capacities summed per product, renewal = earliest end
            for n in range(rng.randint(2, 3)):
                end = -rng.choice((0, 30, 31, 60, 61, 90, 91, 200, 400))
                add(n, "active", rng.randint(0, 400), end, self.products(edgy))
        elif scenario == "cap_zero":
            items = [{"product": code, "capacity": 0} for code in rng.sample(PRODUCTS, rng.randint(1, 2))]
            add(0, "active", rng.randint(0, 400), -rng.randint(0, 400), items)
            if rng.random() < 0.5:
                add(1, "active", 10, -300, self.products(edgy))
        elif scenario == "starts_today":
            add(0, "active", 0, -rng.choice((0, 365)), self.products(edgy))
        if rng.random() < 0.3:  # a decoy that is never active
            status = rng.choice(("pending", "expired", "cancelled", "active"))
            end = rng.randint(1, 100) if status == "active" else -rng.randint(0, 100)
            add(9, status, end + rng.randint(0, 300), end, self.products(edgy))

        capacities: dict[str, int] = {}
        for order in orders:
            start = datetime.date.fromisoformat(order["start_date"])
            end_date = datetime.date.fromisoformat(order["end_date"])
            if order["status"] == "active" and start <= self.as_of <= end_date:
                for item in order["products"]:
                    capacities[item["product"]] = capacities.get(item["product"], 0) + item["capacity"]
        return capacities

    # ------------------------------------------------------------------ usage

    def add_usage(self, account_id: str, capacities: dict[str, int], edgy: bool) -> None:
        rng = self.rng
        for product in PRODUCTS:
            if product in capacities:
                capacity: int | None = capacities[product]
            elif rng.random() < (0.3 if edgy else 0.1):
                capacity = None  # used but not covered by an active order
            else:
                continue
            scale = capacity if capacity else rng.choice((10, 20, 50))
            by_day = self.usage_days(scale, capacity, edgy)
            for days_ago in sorted(by_day):
                used, scans, failed = by_day[days_ago]
                assert days_ago >= 0
                assert 0 <= failed <= scans
                assert used >= 0
                self.snapshot["usage"].append(
                    {
                        "account_id": account_id,
                        "product": product,
                        "date": self.iso(days_ago),
                        "used": used,
                        "scans": scans,
                        "failed_scans": failed,
                    }
                )

    def usage_days(self, scale: int, capacity: int | None, edgy: bool) -> dict[int, list[int]]:
        """Per days-ago: [used, scans, failed]. A base pattern, then boundary overlays."""
        rng = self.rng
        days = self.base_usage(scale, edgy)
        if not edgy:
            return days
        scenario = rng.choice(
            ("last_row", "last_row", "utilisation", "utilisation", "failures", "failures", "scanning",
             "window_edges", "inactive_edge", "plain")
        )  # fmt: skip
        if scenario == "last_row":
            self.overlay_last_row(days, scale)
        elif scenario == "utilisation":
            self.overlay_utilisation(days, scale)
        elif scenario == "failures":
            self.overlay_failures(days, scale)
        elif scenario == "scanning":
            self.overlay_scanning(days)
        elif scenario == "window_edges":
            days = self.window_edges(scale)
        elif scenario == "inactive_edge":
            days = self.inactive_edge(scale)
        if scenario != "failures" and rng.random() < 0.25:
            self.overlay_failures(days, scale, only_existing=True)
        return days

    def base_usage(self, scale: int, edgy: bool) -> dict[int, list[int]]:
        rng = self.rng
        kind = rng.choice(("daily", "daily", "daily", "sparse", "zeros", "none", "old"))
        if not edgy:
            kind = rng.choice(("daily", "daily", "daily", "sparse"))
        days: dict[int, list[int]] = {}
        if edgy:
            level = rng.choice((0.05, 0.1, 0.2, 0.29, 0.3, 0.31, 0.5, 0.6, 0.8, 0.9, 1.0, 1.1))
            failure_rate = rng.choice((0, 0, 0.02, 0.05, 0.15, 0.3, 0.6))
        else:
            level = rng.choice((0.2, 0.4, 0.5, 0.6, 0.7, 0.8))
            failure_rate = rng.choice((0, 0, 0, 0.01, 0.03))

        def one_day() -> list[int]:
            used = max(0, round(scale * level * rng.uniform(0.85, 1.15)))
            scans = rng.randint(0, 20)
            failed = min(scans, round(scans * failure_rate * rng.uniform(0.5, 1.5)))
            return [used, scans, failed]

        if kind == "daily":
            for days_ago in range(rng.choice((7, 30, 31, 60, 90, 91, 120))):
                if rng.random() > 0.12:
                    days[days_ago] = one_day()
        elif kind == "sparse":
            for days_ago in rng.sample(range(121), rng.randint(3, 15)):
                days[days_ago] = one_day()
        elif kind == "zeros":
            for days_ago in range(rng.choice((30, 90, 120))):
                days[days_ago] = [0, 0, 0]
        elif kind == "old":
            for days_ago in range(90, 150):
                days[days_ago] = one_day()
        return days

    def overlay_last_row(self, days: dict[int, list[int]], scale: int) -> None:
        """Make the most recent row (rule 3) sit at a window edge with a value at 0.9*capacity or capacity."""
        rng = self.rng
        latest = rng.choice((0, 1, 6, 7, 29, 29, 30))
        for days_ago in [d for d in days if d < latest]:
            del days[days_ago]
        exact = scale * 9 % 10 == 0
        near = [scale * 9 // 10, scale * 9 // 10 - 1] if exact else [scale * 9 // 10 + 1, scale * 9 // 10]
        values = [scale, scale, scale - 1, scale + 1, 2 * scale, *near, *near]
        if rng.random() < 0.25:
            # a high row before a low most-recent one: only the most recent counts
            days[latest + rng.randint(1, 5)] = [2 * scale, rng.randint(0, 5), 0]
            values = [0, scale // 2]
        row = days.get(latest, [0, rng.randint(0, 10), 0])
        row[0] = max(0, rng.choice(values))
        days[latest] = row

    def overlay_utilisation(self, days: dict[int, list[int]], scale: int) -> None:
        """Make the 30-day `used` sum hit u = 0.30 or 0.60 exactly, or just below or above."""
        rng = self.rng
        u30, u60 = 9 * scale, 18 * scale  # 30-day sums giving u = 0.30 and u = 0.60
        target = rng.choice((u30, u30, u30 - 1, u30 + 1, u60, u60 - 1, 0))
        for days_ago in range(30):
            if days_ago in days:
                days[days_ago][0] = 0
        slots = rng.sample(range(30), rng.choice((1, 2, 5, 30)))
        for days_ago, part in zip(slots, self.split(max(0, target), len(slots)), strict=True):
            days.setdefault(days_ago, [0, 0, 0])[0] = part
        if rng.random() < 0.3:  # heavy use just outside the window
            days[30] = [5 * scale, rng.randint(0, 5), 0]

    def overlay_failures(self, days: dict[int, list[int]], scale: int, only_existing: bool = False) -> None:
        """Make the 7-day scans/failed sums hit 0.10, 0.25 or 0.5 exactly, or just below."""
        rng = self.rng
        scans, failed = rng.choice(FAILURE_PAIRS)
        slots = [d for d in range(7) if d in days]
        if not slots:
            if only_existing:
                return
            slots = rng.sample(range(7), rng.randint(1, 3))
            for days_ago in slots:
                days[days_ago] = [rng.choice((0, scale // 2)), 0, 0]
        for days_ago in slots:
            days[days_ago][1] = 0
            days[days_ago][2] = 0
        chosen = rng.sample(slots, rng.randint(1, len(slots)))
        left = failed
        for days_ago, part in zip(chosen, self.split(scans, len(chosen)), strict=True):
            days[days_ago][1] = part
            days[days_ago][2] = min(left, part)
            left -= days[days_ago][2]
        if rng.random() < 0.3:  # many failures just outside the 7-day window
            row = days.setdefault(7, [0, 0, 0])
            row[1] = 40
            row[2] = 40

    def overlay_scanning(self, days: dict[int, list[int]]) -> None:
        """Make the 30-day scans/failed sums sit at 5*F/S == 1, partly outside the 7-day window."""
        rng = self.rng
        scans, failed = rng.choice(SCANNING_PAIRS)
        for days_ago in range(30):
            if days_ago in days:
                days[days_ago][1] = 0
                days[days_ago][2] = 0
        slots = rng.sample(range(30), rng.randint(1, 4))
        left = failed
        for days_ago, part in zip(slots, self.split(scans, len(slots)), strict=True):
            row = days.setdefault(days_ago, [0, 0, 0])
            row[1] = part
            row[2] = min(left, part)
            left -= row[2]
        if rng.random() < 0.4:  # scans just outside the 30-day window
            days[30] = [0, 50, 50]

    def window_edges(self, scale: int) -> dict[int, list[int]]:
        """Rows only on the edges of the 7-, 30- and 90-day windows."""
        rng = self.rng
        days: dict[int, list[int]] = {}
        for days_ago in rng.sample((0, 6, 7, 29, 30, 89, 90, 91), rng.randint(1, 5)):
            scans = rng.choice((0, 5, 10))
            days[days_ago] = [rng.choice((0, scale, scale // 3)), scans, rng.choice((0, scans // 5, scans))]
        return days

    def inactive_edge(self, scale: int) -> dict[int, list[int]]:
        """Zero rows except one active row at 89, 90 or 91 days ago (rule 7 vs rule 8)."""
        rng = self.rng
        days: dict[int, list[int]] = {}
        if rng.random() < 0.6:
            for days_ago in range(rng.choice((30, 89, 95))):
                days[days_ago] = [0, 0, 0]
        edge = rng.choice((88, 89, 89, 90, 90, 91))
        days[edge] = rng.choice(([scale, 0, 0], [0, 3, 0], [0, 3, 3], [1, 0, 0]))
        return days

    # ------------------------------------------------------------------ activity

    def add_activity(self, account_id: str, edgy: bool) -> None:
        rng = self.rng
        if edgy:
            last = rng.choice((0, 6, 7, 7, 8, 8, 30, 59, 59, 60, 60, 61, None, None))
        else:
            last = rng.choice((0, 0, 1, 2, 3, 5, 10, 20, 40, 90, None))
        logins: dict[int, int] = {}
        if last is not None:
            logins[last] = rng.randint(1, 30)
            for days_ago in rng.sample(range(last), min(last, rng.randint(0, 5))):
                logins[days_ago] = 0  # more recent days without a login
            older = range(last + 1, last + 60)
        else:
            older = range(90)
            if rng.random() < 0.5:
                older = range(0)
        for days_ago in rng.sample(older, min(len(older), rng.randint(0, 20))):
            logins[days_ago] = 0 if last is None else rng.choice((0, rng.randint(1, 30)))
        for days_ago in sorted(logins):
            count = logins[days_ago]
            self.snapshot["activity"].append(
                {
                    "account_id": account_id,
                    "date": self.iso(days_ago),
                    "logins": count,
                    "active_users": rng.randint(1, count) if count else 0,
                }
            )

    # ------------------------------------------------------------------ meetings

    def add_meetings(self, account_id: str, tier: str, edgy: bool) -> None:
        rng = self.rng
        cadence = CADENCE_DAYS[tier]
        meetings: list[tuple[int, Any]] = []  # (days ago, outcome)
        if edgy:
            if rng.random() < 0.5:
                edges = (0, cadence, cadence, cadence + 1, 2 * cadence, 2 * cadence + 1, 3 * cadence - 1)
                latest = rng.choice((*edges, 3 * cadence, 3 * cadence + 1))
                meetings.append((latest, rng.choice(RECORDED_OUTCOMES + MISSING_OUTCOMES)))
                for _ in range(rng.randint(0, 2)):
                    meetings.append((latest + rng.randint(1, 200), rng.choice(RECORDED_OUTCOMES)))
            if rng.random() < 0.4:
                for days_ago in rng.sample((1, 2, 14, 15, 29, 30), rng.randint(1, 4)):
                    outcome = rng.choice(MISSING_OUTCOMES + MISSING_OUTCOMES + RECORDED_OUTCOMES)
                    meetings.append((days_ago, outcome))
            if rng.random() < 0.3:
                for _ in range(rng.randint(1, 2)):
                    meetings.append((-rng.choice((1, 7, 30)), rng.choice((None, MISSING))))
        elif rng.random() < 0.85:
            for _ in range(rng.randint(1, 4)):
                meetings.append((rng.randint(0, 2 * cadence), rng.choice((*RECORDED_OUTCOMES, None))))
        for n, (days_ago, outcome) in enumerate(meetings):
            row: Row = {
                "id": f"mt-{account_id[4:]}-{n}",
                "account_id": account_id,
                "held_on": self.iso(days_ago),
            }
            self.put(row, "kind", rng.choice(("1:1", "QBR", MISSING)))
            self.put(row, "outcome", outcome)
            self.snapshot["meetings"].append(row)

    # ------------------------------------------------------------------ tickets

    def add_tickets(self, account_id: str, edgy: bool) -> None:
        rng = self.rng
        count = rng.choice((0, 1, 2, 3, 4, 5, 8)) if edgy else rng.choice((0, 0, 1, 2, 3))
        end_of_as_of = datetime.datetime.combine(self.as_of, datetime.time(23, 59, 59), tzinfo=datetime.UTC)
        for n in range(count):
            opened_day = self.day(rng.randint(0, 200))
            opened = datetime.datetime.combine(opened_day, datetime.time(), tzinfo=datetime.UTC)
            opened += datetime.timedelta(seconds=rng.randint(0, 24 * 3600 - 1))
            row: Row = {
                "id": f"tk-{account_id[4:]}-{n}",
                "account_id": account_id,
                "opened_at": self.format_moment(opened, rng.choice((0, *OFFSETS_MINUTES))),
            }
            if rng.random() < 0.5:
                self.put(row, "closed_at", rng.choice((None, MISSING)))
            else:
                closed = min(end_of_as_of, opened + datetime.timedelta(minutes=rng.randint(0, 60 * 24 * 40)))
                row["closed_at"] = self.format_moment(closed, rng.choice((0, *OFFSETS_MINUTES)))
            row["priority"] = rng.choice(("low", "normal", "high", "urgent"))
            self.put(row, "subject", rng.choice(("Scanner offline", "Login issue", MISSING)))
            self.snapshot["tickets"].append(row)

    # ------------------------------------------------------------------ sentiment

    def add_sentiment(self, account_id: str, edgy: bool) -> None:
        rng = self.rng
        values = ("positive", "neutral", "negative")
        entries: list[tuple[int, str]] = []
        mode = rng.choice(("none", "single", "tie_latest", "tie_latest", "tie_older", "many"))
        if not edgy:
            mode = rng.choice(("none", "single", "many"))
        if mode == "single":
            entries.append((rng.randint(0, 200), rng.choice(values)))
        elif mode == "tie_latest":
            latest = rng.choice((0, 1, 5))
            for value in rng.sample(values, rng.randint(2, 3)):
                entries.append((latest, value))
            for _ in range(rng.randint(0, 2)):
                entries.append((latest + rng.randint(1, 60), rng.choice(values)))
        elif mode == "tie_older":
            entries.append((rng.randint(0, 3), rng.choice(values)))
            older = rng.randint(10, 40)
            entries.extend((older, value) for value in rng.sample(values, 2))
        elif mode == "many":
            entries.extend((rng.randint(0, 300), rng.choice(values)) for _ in range(rng.randint(2, 5)))
        for days_ago, value in entries:
            row: Row = {"account_id": account_id, "recorded_on": self.iso(days_ago), "value": value}
            self.put(row, "by", rng.choice(("csm0@example.com", MISSING)))
            self.snapshot["sentiment"].append(row)

    # ------------------------------------------------------------------ nps

    def add_nps(self, account_id: str, edgy: bool) -> None:
        rng = self.rng
        responses: list[tuple[int, int]] = []
        if edgy and rng.random() < 0.7:
            for score in rng.choice(NPS_GROUPS):
                responses.append((rng.choice((0, 100, 363, 364, 364)), score))
            if rng.random() < 0.5:  # outside the 365-day window: must not count
                responses.append((rng.choice((365, 365, 400)), rng.choice((0, 10))))
        elif rng.random() < 0.6:
            responses.extend((rng.randint(0, 500), rng.randint(0, 10)) for _ in range(rng.randint(1, 3)))
        for days_ago, score in responses:
            row: Row = {"account_id": account_id, "responded_on": self.iso(days_ago), "score": score}
            self.put(row, "comment", rng.choice(("Great support", MISSING)))
            self.snapshot["nps"].append(row)

    # ------------------------------------------------------------------ invoices

    def add_invoices(self, account_id: str, currency: str, edgy: bool) -> None:
        rng = self.rng
        invoices: list[tuple[int, str]] = []  # (days since due_on, status)
        if edgy:
            for _ in range(rng.randint(0, 3)):
                age = rng.choice((0, 1, 30, 31, 60, 61, 200, -5))
                invoices.append((age, rng.choice(("open", "open", "open", "paid", "void"))))
        else:
            for _ in range(rng.randint(0, 3)):
                invoices.append((rng.randint(-20, 300), rng.choice(("paid", "paid", "paid", "open"))))
        for n, (age, status) in enumerate(invoices):
            due = self.day(age)
            row: Row = {
                "id": f"inv-{account_id[4:]}-{n}",
                "account_id": account_id,
                "number": f"N{account_id[4:]}{n}",
                "amount": rng.choice((1500, 30000.0, 12345.67)),
                "currency": currency,
                "issued_on": (due - datetime.timedelta(days=30)).isoformat(),
                "due_on": due.isoformat(),
            }
            if status == "paid":
                paid = min(self.as_of, due + datetime.timedelta(days=rng.randint(-5, 5)))
                row["paid_on"] = paid.isoformat()
            else:
                self.put(row, "paid_on", rng.choice((None, MISSING)))
            row["status"] = status
            self.snapshot["invoices"].append(row)

    # ------------------------------------------------------------------ scanners and schedules

    def add_scanners(self, account_id: str, edgy: bool) -> None:
        rng = self.rng
        count = rng.choice((0, 1, 2, 3, 4)) if edgy else rng.choice((0, 1, 2))
        for n in range(count):
            if edgy:
                seen: Any = rng.choice((0, 6, 7, 7, 8, 8, 9, 30, None, MISSING))
            else:
                seen = rng.choice((0, 0, 1, 2, 3, None))
            row: Row = {"id": f"scn-{account_id[4:]}-{n}", "account_id": account_id, "name": f"appliance-{n}"}
            self.put(row, "last_seen_at", self.timestamp(self.day(seen)) if isinstance(seen, int) else seen)
            self.snapshot["scanners"].append(row)

    def add_schedules(self, account_id: str, edgy: bool) -> None:
        rng = self.rng
        count = rng.choice((0, 1, 2, 3)) if edgy else rng.choice((0, 1))
        for n in range(count):
            interval = rng.choice((1, 7, 14, 30))
            if edgy:
                last: Any = rng.choice((2 * interval, 2 * interval, 2 * interval + 1, 2 * interval + 1,
                                        2 * interval - 1, 0, None, MISSING))  # fmt: skip
            else:
                last = rng.randint(0, interval)
            row: Row = {
                "id": f"sch-{account_id[4:]}-{n}",
                "account_id": account_id,
                "product": rng.choice(PRODUCTS),
                "enabled": rng.random() < 0.8,
                "interval_days": interval,
            }
            self.put(row, "last_run_at", self.timestamp(self.day(last)) if isinstance(last, int) else last)
            self.snapshot["schedules"].append(row)
