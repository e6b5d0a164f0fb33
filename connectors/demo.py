"""Deterministic, realistic demo snapshots (the folder format of DATA.md).

`write_demo_snapshot(out_dir, accounts=N, seed=S, as_of=D)` writes `manifest.json` and one JSON Lines
file per entity. The same arguments always give byte-identical files, and account `i` is the same
whatever `N` is: every account draws from its own `random.Random(f"{seed}:{i}")`, the shared noise
tables depend on `seed` and `days` only, and the CSM of account `i` is chosen among the three CSMs of
its block of `ACCOUNTS_PER_CSM_BLOCK` accounts (so about N/200 CSMs, at least 3). The files are
written account by account, so the first K accounts of a 3K snapshot are byte-for-byte the K snapshot.

The model
---------
Each account gets a *tier* (`TIER_WEIGHTS`), an ACV by tier (`ACV_RANGE`), a region and currency, a
segment and success program consistent with the tier, and a health *profile* (`PROFILE_WEIGHTS`):

- `healthy` (~71%): usage around 45-100% of capacity with gradual growth (some over 90% of capacity),
  daily logins, scanners reporting, schedules running, meetings within the tier's cadence, mostly
  positive sentiment and promoter/passive NPS, invoices paid (a few slightly late).
- `at_risk` (~20%): low or falling utilisation, login gaps, overdue meetings, neutral/negative
  sentiment, passive/detractor NPS, some overdue invoices, an inactive scanner or lapsed schedule,
  failure spikes, open high-priority tickets; a mix of these, not all at once.
- `churning` (~9%): usage and logins declining to near zero over the last weeks (many with no login
  for more than 60 days), no recent meeting, negative sentiment, detractor NPS, invoices overdue for
  more than 60 days, inactive scanners, lapsed schedules, failed scans, more often no active order.

Contracts: a main subscription of 1-3 products (`PRODUCT_MIX`, capacities by tier in
`CAPACITY_RANGE`) whose renewal falls 0-18 months ahead, often a previous (expired) term, sometimes
an active add-on, a pending renewal/upsell or a cancelled add-on; about 3% of accounts have no active
order (expired or cancelled). Invoices are monthly or quarterly over the last year, net 30.

Daily series (`days` days up to `as_of`): a usage row per product of the contract and per day
(`used`, `scans`, `failed_scans`) and an activity row per day (`logins`, `active_users`). Each value
is level x weekday factor x holiday factor (late December) x the account's trend x noise; noise
comes from shared tables indexed at a per-series random offset, which keeps generation fast.
`failed_scans` uses a small base failure rate with occasional spikes on one product.

Looking back (`world_as_of` later than `as_of`): the world is drawn as of `world_as_of` and seen
on `as_of`. Trends, churn declines and meetings are placed in the world's time (usage and meetings
draw from their own random streams, so they match whatever the as_of), and contracts, invoices,
tickets, scanners, schedules, NPS and sentiment are cut back to what had happened by `as_of`:
later rows are left out, invoices paid since are open, tickets closed since are open, and scanners
and schedules still reporting since were reporting that day.

Usage and activity lines are formatted with f-strings (all values are generated, safe ASCII); the
other entities are encoded by msgspec, account by account. Each file buffers about FLUSH_BYTES before
a write, so memory stays flat whatever the number of accounts. `manifest.json` is written last.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import pathlib
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

import msgspec

from engine.snapshot import FILE_ENTITIES

__all__ = ["SNAPSHOT_FORMAT", "DemoStats", "write_demo_snapshot"]

SNAPSHOT_FORMAT = "csm-snapshot/1"
PRODUCTS = ("VM", "PC", "WAS")

# --- Portfolio mix ---------------------------------------------------------------------------------

TIER_WEIGHTS = {"T1": 8, "T2": 22, "T3": 35, "T4": 35}
ACV_RANGE = {"T1": (200_000, 900_000), "T2": (60_000, 250_000), "T3": (20_000, 80_000), "T4": (5_000, 25_000)}
PROFILE_WEIGHTS = {"healthy": 69, "at_risk": 22, "churning": 9}
REGION_WEIGHTS = {"EMEA": 45, "NA": 35, "APAC": 20}
CURRENCY_WEIGHTS = {"EMEA": {"EUR": 70, "GBP": 30}, "NA": {"USD": 100}, "APAC": {"USD": 85, "GBP": 15}}
SEGMENT_WEIGHTS = {
    "T1": {"Enterprise": 100},
    "T2": {"Enterprise": 70, "Mid-Market": 30},
    "T3": {"Mid-Market": 70, "SMB": 30},
    "T4": {"SMB": 80, "Mid-Market": 20},
}
SUCCESS_PROGRAM_WEIGHTS = {
    "T1": {"Premier": 100},
    "T2": {"Premier": 40, "Standard": 60},
    "T3": {"Standard": 100},
    "T4": {"Digital": 80, "Standard": 20},
}
CADENCE_DAYS = {"T1": 30, "T2": 60, "T3": 90, "T4": 180}  # the default policies' meeting cadence
ACCOUNTS_PER_CSM_BLOCK = 600  # accounts i // 600 share three CSMs: ~200 accounts per CSM
CSMS_PER_BLOCK = 3
MISSING_CRM_ID_SHARE = 0.01

# Tag -> probability by profile (healthy, at_risk, churning); "strategic" depends on the tier.
TAG_ODDS = {
    "reference": (0.10, 0.02, 0.0),
    "expansion": (0.12, 0.03, 0.0),
    "at-risk-watch": (0.01, 0.30, 0.55),
    "renewal-risk": (0.0, 0.10, 0.35),
    "beta-program": (0.04, 0.03, 0.01),
    "partner-managed": (0.05, 0.05, 0.05),
    "public-sector": (0.06, 0.06, 0.06),
}
STRATEGIC_ODDS = {"T1": 0.6, "T2": 0.15, "T3": 0.0, "T4": 0.0}
REGION_TAG_ODDS = 0.6  # EMEA accounts tagged "emea", APAC "apac" (NA accounts get no region tag)

# --- Contracts -------------------------------------------------------------------------------------

PRODUCT_MIX = {
    ("VM",): 33, ("VM", "PC"): 25, ("VM", "WAS"): 12, ("VM", "PC", "WAS"): 15,
    ("PC",): 5, ("WAS",): 6, ("PC", "WAS"): 4,
}  # fmt: skip
CAPACITY_RANGE = {
    "VM": {"T1": (5_000, 40_000), "T2": (1_000, 8_000), "T3": (250, 2_000), "T4": (50, 500)},
    "PC": {"T1": (2_000, 20_000), "T2": (500, 4_000), "T3": (100, 1_000), "T4": (25, 250)},
    "WAS": {"T1": (50, 400), "T2": (15, 120), "T3": (5, 40), "T4": (1, 10)},
}
TERM_YEARS_WEIGHTS = {1: 70, 2: 18, 3: 12}
RENEWAL_HORIZON_DAYS = 540  # renewals of active orders fall within the coming 18 months
NO_ACTIVE_ORDER_ODDS = {"healthy": 0.01, "at_risk": 0.03, "churning": 0.20}
PREVIOUS_TERM_ODDS = 0.6
ADDON_ODDS = 0.18
PENDING_ODDS = 0.05
CANCELLED_ADDON_ODDS = 0.03

# --- Invoices --------------------------------------------------------------------------------------

BILLING_MONTHS_WEIGHTS = {  # invoice period in months
    "T1": {3: 70, 1: 30},
    "T2": {3: 70, 1: 30},
    "T3": {1: 60, 3: 40},
    "T4": {1: 60, 3: 40},
}
INVOICE_HISTORY_MONTHS = 12
NET_TERMS_DAYS = 30
# Chance that recent past-due invoices are still open, and how far back (days overdue) that reaches.
OVERDUE_ODDS = {"healthy": 0.05, "at_risk": 0.40, "churning": 0.65}
OVERDUE_REACH_DAYS = {"healthy": (1, 20), "at_risk": (10, 50), "churning": (75, 160)}
DISPUTED_INVOICE_ODDS = 0.02  # one old invoice left open (90-200 days overdue), any profile
VOID_INVOICE_ODDS = 0.015

# --- Daily series ----------------------------------------------------------------------------------

UTILISATION_RANGE = {"healthy": (0.35, 0.88), "at_risk": (0.08, 0.40), "churning": (0.20, 0.60)}
NEAR_CAPACITY_ODDS = 0.10  # healthy accounts running at 88-108% of capacity
SHELFWARE_ODDS = {"healthy": 0.02, "at_risk": 0.12, "churning": 0.10}  # a product never used
GROWTH_RANGE = (0.0, 0.15)  # healthy: usage grows by this share over the window
DECLINE_RANGE = (0.0, 0.30)  # at_risk: usage was higher by this share at the start of the window
CHURN_DECLINE_START_AGO = (20, 60)  # churning: the decline starts this many days before as_of ...
CHURN_DECLINE_END_AGO = (0, 10)  # ... and reaches the floor this many days before as_of
CHURN_FLOOR = (0.0, 0.04)
CHURN_LAST_LOGIN_AGO = (14, 95)
AT_RISK_LOGIN_GAP_ODDS = 0.45
AT_RISK_LAST_LOGIN_AGO = (4, 35)
LOGINS_PER_DAY = {"T1": (25, 90), "T2": (8, 35), "T3": (3, 14), "T4": (1, 6)}
ACTIVE_USER_RATIO = (0.3, 0.8)
SCANS_PER_SQRT_CAPACITY = {"VM": (0.3, 0.7), "PC": (0.2, 0.5), "WAS": (0.6, 1.2)}
BASE_FAILURE_RATE = (0.0, 0.025)
FAILURE_SPIKE_ODDS = {"healthy": 0.06, "at_risk": 0.30, "churning": 0.55}
FAILURE_SPIKE_RATE = (0.12, 0.85)
FAILURE_SPIKE_DAYS = (3, 12)
RECENT_SPIKE_SHARE = 0.7  # the rest of the spikes happened earlier in the window and are over
# Monday..Sunday factors; licences in use barely move, scans and logins drop at the weekend.
WEEKDAY_FACTOR = {
    "used": (1.0, 1.0, 1.0, 1.0, 0.99, 0.93, 0.91),
    "scans": (1.0, 1.05, 1.05, 1.0, 0.9, 0.35, 0.25),
    "logins": (1.0, 1.05, 1.05, 1.0, 0.85, 0.12, 0.08),
}
HOLIDAY_DAYS = {(12, d) for d in range(22, 32)} | {(1, 1), (1, 2)}
HOLIDAY_FACTOR = {"used": 0.85, "scans": 0.45, "logins": 0.25}
NOISE_TABLE_SIZE = 4096
NOISE_SIGMA = {"used": 0.05, "scans": 0.25, "logins": 0.30}

# --- Scanners, schedules, tickets, meetings, NPS, sentiment ----------------------------------------

SCANNERS_PER_TIER = {"T1": (3, 6), "T2": (2, 5), "T3": (1, 3), "T4": (1, 2)}
INACTIVE_SCANNER_ODDS = {"healthy": 0.06, "at_risk": 0.35, "churning": 0.75}
SCANNER_SITES = {
    "EMEA": ("fra", "lon", "ams", "muc", "par", "zrh", "mad", "waw"),
    "NA": ("nyc", "chi", "dal", "sfo", "tor", "atl"),
    "APAC": ("sin", "syd", "tok", "bom", "hkg"),
}
SCHEDULE_INTERVALS = {"VM": {1: 40, 7: 60}, "PC": {7: 60, 30: 40}, "WAS": {7: 50, 30: 50}}
SCHEDULE_DISABLED_ODDS = 0.08
LAPSED_SCHEDULE_ODDS = {"healthy": 0.03, "at_risk": 0.20, "churning": 0.70}
TICKETS_PER_YEAR = {"T1": (3, 12), "T2": (1, 8), "T3": (0, 5), "T4": (0, 3)}
PRIORITY_WEIGHTS = {"low": 25, "normal": 50, "high": 18, "urgent": 7}
RESOLUTION_HOURS = {"low": (24, 800), "normal": (12, 400), "high": (4, 120), "urgent": (1, 48)}
ESCALATION_ODDS = {"healthy": 0.04, "at_risk": 0.30, "churning": 0.50}  # open high/urgent tickets
TICKET_SUBJECTS = (
    "Scanner appliance offline", "Authenticated scan failing on Windows hosts", "Licence count mismatch",
    "Report export times out", "SSO login loop", "API rate limit questions", "False positive on OpenSSL CVE",
    "WAS crawl does not reach login form", "Agent not reporting after upgrade", "Compliance check errors",
    "Dashboard widgets load slowly", "Request for additional user seats", "Scan schedule did not start",
    "Remediation ticket sync with ServiceNow", "Question about asset tagging", "Cloud connector permissions",
)  # fmt: skip
LAST_MEETING_AGO = {  # in cadences: (share, low, high); the rest of the share has no meeting at all
    "healthy": ((0.85, 0.0, 1.0), (0.15, 1.0, 2.0)),
    "at_risk": ((0.25, 0.0, 1.0), (0.55, 1.0, 2.5), (0.20, 2.5, 3.5)),
    "churning": ((0.70, 2.05, 4.0),),
}
MISSING_RECENT_OUTCOME_ODDS = {"healthy": 0.20, "at_risk": 0.40, "churning": 0.60}
MISSING_OLD_OUTCOME_ODDS = 0.04
BLANK_SHARE_OF_MISSING = 0.2  # a missing outcome is sometimes "" or white space (still not recorded)
FUTURE_MEETING_ODDS = {"healthy": 0.40, "at_risk": 0.30, "churning": 0.05}
MEETING_HISTORY_DAYS = 730
MEETING_OUTCOMES = (
    "Reviewed scan coverage; agreed to onboard two more business units.",
    "QBR done: roadmap walkthrough, renewal on track.",
    "Agreed next steps on patch SLAs.",
    "Discussed failed authenticated scans; support case opened.",
    "Customer asked for WAS pricing; sent proposal.",
    "Executive sponsor changed; intro meeting planned.",
    "Trained the new SOC analysts on dashboards.",
    "Budget freeze announced; renewal scope under review.",
    "Walked through licence usage against capacity.",
    "Customer unhappy with false positives; escalation agreed.",
)
NPS_RESPONSES_PER_TIER = {"T1": (1, 5), "T2": (0, 3), "T3": (0, 2), "T4": (0, 1)}
NPS_HISTORY_DAYS = 540
NPS_CATEGORY_WEIGHTS = {  # promoter (9-10), passive (7-8), detractor (0-6)
    "healthy": {"promoter": 60, "passive": 30, "detractor": 10},
    "at_risk": {"promoter": 20, "passive": 45, "detractor": 35},
    "churning": {"promoter": 5, "passive": 20, "detractor": 75},
}
NPS_SCORES = {"promoter": (9, 10), "passive": (7, 8), "detractor": (0, 6)}
NPS_COMMENT_ODDS = 0.4
NPS_COMMENTS = {
    "promoter": ("Great coverage and support.", "The dashboards save us hours every week.", "Solid product."),
    "passive": ("Does the job, reporting could be better.", "Good, but the agent rollout was painful."),
    "detractor": ("Too many false positives.", "Support is slow to respond.", "Too expensive for our use."),
}
SENTIMENT_ENTRIES = (0, 4)
NO_SENTIMENT_ODDS = 0.10
SENTIMENT_HISTORY_DAYS = 180
SENTIMENT_WEIGHTS = {
    "healthy": {"positive": 55, "neutral": 38, "negative": 7},
    "at_risk": {"positive": 10, "neutral": 50, "negative": 40},
    "churning": {"positive": 0, "neutral": 20, "negative": 80},
}
SENTIMENT_BY_CSM_ODDS = 0.9

# --- Names -----------------------------------------------------------------------------------------

# fmt: off
CSM_FIRST_NAMES = (
    "ana", "ben", "carla", "david", "elena", "felix", "greta", "hugo", "ines", "jonas", "katrin", "lukas",
    "maria", "noah", "olivia", "paul", "quinn", "rosa", "sven", "tara", "uma", "victor", "wendy", "xavier",
    "yara", "zoe", "amir", "bianca", "chen", "dana", "emil", "fatima",
)
# 32 first and 40 last names: gcd(32 + 1, 40) == 1 makes `_csm_email` a bijection on 1,280 CSMs.
CSM_LAST_NAMES = (
    "keller", "meyer", "schmidt", "novak", "rossi", "garcia", "smith", "jones", "brown", "taylor", "martin",
    "dubois", "jansen", "nielsen", "kowalski", "silva", "costa", "murphy", "walsh", "berg", "lindqvist",
    "horvat", "popescu", "papadopoulos", "tanaka", "kim", "nguyen", "patel", "singh", "cohen", "weber",
    "fischer", "wagner", "becker", "hoffmann", "schulz", "koch", "richter", "wolf", "klein",
)
CSM_EMAIL_DOMAIN = "demo.csm"
COMPANY_PREFIXES = (
    "Northwind", "Bluepeak", "Silverline", "Ironbridge", "Redwood", "Brightwater", "Granite", "Evergreen",
    "Lakeside", "Summit", "Harbor", "Crestview", "Oakridge", "Stonegate", "Clearwater", "Westfield",
    "Eastgate", "Highland", "Riverbend", "Pinecrest", "Goldleaf", "Blue Harbor", "Nordlicht", "Alpenglow",
    "Coastline", "Sunridge", "Maple", "Falcon", "Orion", "Vantage", "Keystone", "Meridian", "Polaris",
    "Cobalt", "Aurora", "Juniper", "Sterling", "Horizon", "Bridgeport", "Windmill",
)
COMPANY_SECTORS = (
    "Logistics", "Pharma", "Energy", "Insurance", "Retail", "Foods", "Robotics", "Capital", "Telecom",
    "Health", "Analytics", "Systems", "Motors", "Textiles", "Media", "Aerospace", "Chemicals", "Banking",
    "Software", "Utilities", "Freight", "Hospitality", "Engineering", "Semiconductors",
)
COMPANY_SUFFIXES = {
    "EMEA": ("GmbH", "AG", "Ltd", "S.A.", "B.V.", "SE", "plc", "S.p.A.", "AB", "Oy", "A/S"),
    "NA": ("Inc.", "LLC", "Corp.", "Co.", "Group"),
    "APAC": ("Pte Ltd", "Pty Ltd", "K.K.", "Ltd", "Sdn Bhd"),
}
# fmt: on

# --- Output ----------------------------------------------------------------------------------------

FLUSH_BYTES = 4 << 20  # encoded rows buffered per file before a write

K = TypeVar("K")


class DemoStats(msgspec.Struct, frozen=True, kw_only=True):
    """What `write_demo_snapshot` wrote: rows per entity file, CSMs and bytes (manifest included)."""

    accounts: int
    orders: int
    invoices: int
    usage: int
    activity: int
    scanners: int
    schedules: int
    tickets: int
    meetings: int
    nps: int
    sentiment: int
    csms: int
    bytes_written: int

    @property
    def total_rows(self) -> int:
        return sum(getattr(self, name) for name in FILE_ENTITIES)

    @property
    def row_counts(self) -> dict[str, int]:
        """Row counts by entity file name (without `.jsonl`)."""
        return {name: getattr(self, name) for name in FILE_ENTITIES}


# --- Public entry point ----------------------------------------------------------------------------


def write_demo_snapshot(
    out_dir: pathlib.Path,
    *,
    accounts: int,
    seed: int,
    as_of: dt.date,
    days: int = 91,
    world_as_of: dt.date | None = None,
) -> DemoStats:
    """Write a demo snapshot of `accounts` customers into `out_dir` (created if missing).

    Daily usage and activity cover the `days` days up to and including `as_of`. Every entity file is
    (re)written, even when empty; `manifest.json` is written last.

    `world_as_of` (default: `as_of`) makes the snapshot a look back at the same world: the customers
    are those of the `world_as_of` snapshot, and their usage and login trends, churn declines and
    meetings are where they stood `world_as_of - as_of` days earlier. Weekly snapshots made this way
    give a CHI history that moves the way the customers do.
    """
    if isinstance(as_of, dt.datetime) or not isinstance(as_of, dt.date):
        raise TypeError("as_of must be a datetime.date")
    if accounts < 0:
        raise ValueError("accounts must be >= 0")
    if days < 1:
        raise ValueError("days must be >= 1")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # an interrupted run leaves no manifest behind
    shift = (world_as_of - as_of).days if world_as_of is not None else 0
    if shift < 0:
        raise ValueError("world_as_of must not be before as_of")
    ctx = _Context.build(seed, as_of, days, shift)
    sinks = {name: _Sink(out_dir / f"{name}.jsonl") for name in FILE_ENTITIES}
    try:
        for index in range(accounts):
            _write_account(index, seed, ctx, sinks)
    finally:
        for sink in sinks.values():
            sink.close()
    manifest = {
        "format": SNAPSHOT_FORMAT,
        "as_of": as_of.isoformat(),
        "source": "demo",
        "products": list(PRODUCTS),
    }
    manifest_bytes = msgspec.json.encode(manifest) + b"\n"
    (out_dir / "manifest.json").write_bytes(manifest_bytes)
    counts = {name: sink.rows for name, sink in sinks.items()}
    return DemoStats(
        **counts,
        csms=_csm_count(accounts),
        bytes_written=sum(sink.bytes for sink in sinks.values()) + len(manifest_bytes),
    )


# --- Output buffering ------------------------------------------------------------------------------


class _Sink:
    """One entity file: rows are encoded as they come and written in chunks of about FLUSH_BYTES."""

    _encoder = msgspec.json.Encoder()

    def __init__(self, path: pathlib.Path) -> None:
        self._file: BinaryIO = path.open("wb")
        self._buffer = bytearray()
        self.rows = 0
        self.bytes = 0

    def add_text(self, text: str, rows: int) -> None:
        """Add `rows` ready-made JSON lines (ASCII, each ending in a newline)."""
        self._append(text.encode("ascii"), rows)

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self._append(self._encoder.encode_lines(rows), len(rows))

    def close(self) -> None:
        self._flush()
        self._file.close()

    def _append(self, data: bytes, rows: int) -> None:
        self._buffer += data
        self.rows += rows
        if len(self._buffer) >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        self._file.write(self._buffer)
        self.bytes += len(self._buffer)
        self._buffer.clear()


# --- Shared context: the window, seasonality and noise tables --------------------------------------


@dataclass(slots=True)
class _Context:
    as_of: dt.date
    days: int
    first_day: dt.date
    date_strs: list[str]  # the window's days, oldest first
    season: dict[str, list[float]]  # "used" / "scans" / "logins" -> factor per window day
    noise: dict[str, list[float]]  # multiplicative noise tables, doubled so any slice fits
    uniform: list[float]  # uniform [0, 1) table for stochastic rounding, doubled
    table_size: int
    shift: int  # days between this snapshot's as_of and the world's (see write_demo_snapshot)

    @classmethod
    def build(cls, seed: int, as_of: dt.date, days: int, shift: int = 0) -> _Context:
        first_day = as_of - dt.timedelta(days=days - 1)
        dates = [first_day + dt.timedelta(days=d) for d in range(days)]
        season = {kind: [_season_factor(kind, day) for day in dates] for kind in WEEKDAY_FACTOR}
        rng = random.Random(f"{seed}:noise")  # noqa: S311 (demo data, not cryptography)
        size = max(NOISE_TABLE_SIZE, days)
        noise = {}
        for kind, sigma in NOISE_SIGMA.items():
            table = [min(1.0 + 4 * sigma, max(0.0, rng.gauss(1.0, sigma))) for _ in range(size)]
            noise[kind] = table + table
        uniform = [rng.random() for _ in range(size)]
        date_strs = [d.isoformat() for d in dates]
        return cls(as_of, days, first_day, date_strs, season, noise, uniform + uniform, size, shift)

    @property
    def world_as_of(self) -> dt.date:
        """The day the world is generated for: contracts, invoices, tickets and the like are drawn
        as of this day, then cut back to what had happened by `as_of` (see `_as_seen`)."""
        return self.as_of + dt.timedelta(days=self.shift)

    def noise_slice(self, kind: str, rng: random.Random, start: int) -> list[float]:
        offset = rng.randrange(self.table_size)
        return self.noise[kind][offset + start : offset + self.days]

    def uniform_slice(self, rng: random.Random, start: int) -> list[float]:
        offset = rng.randrange(self.table_size)
        return self.uniform[offset + start : offset + self.days]


def _season_factor(kind: str, day: dt.date) -> float:
    factor = WEEKDAY_FACTOR[kind][day.weekday()]
    if (day.month, day.day) in HOLIDAY_DAYS:
        factor *= HOLIDAY_FACTOR[kind]
    return factor


# --- Small helpers ---------------------------------------------------------------------------------


def _pick(rng: random.Random, weights: Mapping[K, float]) -> K:
    """One key of `weights`, drawn with the given relative weights."""
    return rng.choices(tuple(weights), tuple(weights.values()))[0]


def _between(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(*bounds)


def _int_between(rng: random.Random, bounds: tuple[int, int]) -> int:
    return rng.randint(*bounds)


def _days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


def _timestamp(day: dt.date, rng: random.Random, hours: tuple[int, int] = (6, 18)) -> str:
    """An ISO-8601 UTC timestamp on `day`, at a random time within `hours` (end exclusive)."""
    seconds = rng.randrange(hours[0] * 3600, hours[1] * 3600)
    return f"{day.isoformat()}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"


def _nice(value: float) -> int:
    """Round a capacity the way contracts are written (250, 1,500, 12,000 ...)."""
    step = 500 if value >= 5_000 else 50 if value >= 500 else 5 if value >= 50 else 1
    return max(step, round(value / step) * step)


def _add_months(day: dt.date, months: int) -> dt.date:
    month0 = day.month - 1 + months
    return dt.date(day.year + month0 // 12, month0 % 12 + 1, min(day.day, 28))


def _csm_count(accounts: int) -> int:
    if accounts <= 0:
        return 0
    blocks = (accounts - 1) // ACCOUNTS_PER_CSM_BLOCK + 1
    return blocks * CSMS_PER_BLOCK


def _csm_email(index: int) -> str:
    """A unique, plausible email for CSM number `index` (first.last@demo.csm)."""
    n_first, n_last = len(CSM_FIRST_NAMES), len(CSM_LAST_NAMES)
    quotient, first = divmod(index, n_first)
    last = (quotient + index) % n_last  # a bijection while index < n_first * n_last
    cycle = index // (n_first * n_last)
    suffix = str(cycle + 1) if cycle else ""
    return f"{CSM_FIRST_NAMES[first]}.{CSM_LAST_NAMES[last]}{suffix}@{CSM_EMAIL_DOMAIN}"


# --- One account -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Account:
    index: int
    id: str
    rng: random.Random
    tier: str
    profile: str
    region: str
    currency: str
    csm: str
    acv: int
    customer_since: dt.date = dt.date.min
    has_active_order: bool = True
    contract: dict[str, int] = field(default_factory=dict)  # product -> capacity of the usage series
    main_start: dt.date = dt.date.min
    main_end: dt.date = dt.date.min
    usage_trend: list[float] = field(default_factory=list)


def _write_account(index: int, seed: int, ctx: _Context, sinks: dict[str, _Sink]) -> None:
    rng = random.Random(f"{seed}:{index}")  # noqa: S311 (demo data, not cryptography)
    account = _new_account(index, rng)
    seen = _as_seen if ctx.shift else _as_drawn
    sinks["accounts"].add([_account_row(account)])
    sinks["orders"].add(seen("orders", _orders(account, ctx), ctx.as_of))
    sinks["invoices"].add(seen("invoices", _invoices(account, ctx), ctx.as_of))
    # Usage and meetings draw from streams of their own: how many draws the invoices took depends on
    # as_of, and a look back (see write_demo_snapshot) must see the same usage trends and meetings.
    account.rng = random.Random(f"{seed}:{index}:usage")  # noqa: S311
    account.usage_trend = _usage_trend(account, ctx)
    text, rows = _usage_lines(account, ctx)
    sinks["usage"].add_text(text, rows)
    text, rows = _activity_lines(account, ctx)
    sinks["activity"].add_text(text, rows)
    sinks["scanners"].add(seen("scanners", _scanners(account, ctx), ctx.as_of))
    sinks["schedules"].add(seen("schedules", _schedules(account, ctx), ctx.as_of))
    sinks["tickets"].add(seen("tickets", _tickets(account, ctx), ctx.as_of))
    account.rng = random.Random(f"{seed}:{index}:meetings")  # noqa: S311
    sinks["meetings"].add(_meetings(account, ctx))
    sinks["nps"].add(seen("nps", _nps(account, ctx), ctx.as_of))
    sinks["sentiment"].add(seen("sentiment", _sentiment(account, ctx), ctx.as_of))


def _as_drawn(entity: str, rows: list[dict[str, Any]], day: dt.date) -> list[dict[str, Any]]:
    return rows


def _as_seen(entity: str, rows: list[dict[str, Any]], day: dt.date) -> list[dict[str, Any]]:
    """`rows`, drawn as of the world's day, as they stood on the earlier `day`: what had not
    happened yet is left out, and what changed since is as it was (unpaid, open, still running)."""
    on = day.isoformat()
    seen: list[dict[str, Any]] = []
    for row in rows:
        if entity == "orders":
            if row["start_date"] > on and row["status"] != "pending":
                continue  # signed since (a pending order was already known)
            if row["status"] == "expired" and row["end_date"] >= on:
                row["status"] = "active"
        elif entity == "invoices":
            if row["issued_on"] > on:
                continue
            if row["paid_on"] and row["paid_on"] > on:
                row["status"], row["paid_on"] = "open", None
        elif entity == "tickets":
            if row["opened_at"][:10] > on:
                continue
            if row["closed_at"] and row["closed_at"][:10] > on:
                row["closed_at"] = None
        elif entity in ("scanners", "schedules"):
            field = "last_seen_at" if entity == "scanners" else "last_run_at"
            if row[field] and row[field][:10] > on:  # it was still reporting: seen that day
                row[field] = on + row[field][10:]
        elif row["responded_on" if entity == "nps" else "recorded_on"] > on:
            continue  # nps and sentiment given since
        seen.append(row)
    return seen


def _new_account(index: int, rng: random.Random) -> _Account:
    tier = _pick(rng, TIER_WEIGHTS)
    region = _pick(rng, REGION_WEIGHTS)
    block = index // ACCOUNTS_PER_CSM_BLOCK
    csm = _csm_email(block * CSMS_PER_BLOCK + rng.randrange(CSMS_PER_BLOCK))
    low, high = ACV_RANGE[tier]
    acv = int(round(low + (high - low) * rng.random() ** 1.6, -2))  # skewed towards the low end
    return _Account(
        index=index,
        id=f"acc-{index:07d}",
        rng=rng,
        tier=tier,
        profile=_pick(rng, PROFILE_WEIGHTS),
        region=region,
        currency=_pick(rng, CURRENCY_WEIGHTS[region]),
        csm=csm,
        acv=acv,
    )


def _account_row(a: _Account) -> dict[str, Any]:
    rng = a.rng
    suffix = rng.choice(COMPANY_SUFFIXES[a.region])
    name = f"{rng.choice(COMPANY_PREFIXES)} {rng.choice(COMPANY_SECTORS)} {suffix}"
    crm_id: str | None = str(8_100_000_000 + a.index * 17 + rng.randrange(17))  # a HubSpot-like company id
    if rng.random() < MISSING_CRM_ID_SHARE:
        crm_id = None
    return {
        "id": a.id,
        "name": name,
        "tier": a.tier,
        "csm": a.csm,
        "acv": a.acv,
        "currency": a.currency,
        "crm_id": crm_id,
        "success_program": _pick(rng, SUCCESS_PROGRAM_WEIGHTS[a.tier]),
        "segment": _pick(rng, SEGMENT_WEIGHTS[a.tier]),
        "region": a.region,
        "tags": _tags(a),
    }


def _tags(a: _Account) -> list[str]:
    rng = a.rng
    column = ("healthy", "at_risk", "churning").index(a.profile)
    tags = []
    if rng.random() < STRATEGIC_ODDS[a.tier]:
        tags.append("strategic")
    tags.extend(tag for tag, odds in TAG_ODDS.items() if rng.random() < odds[column])
    if a.region != "NA" and rng.random() < REGION_TAG_ODDS:
        tags.append(a.region.lower())
    return tags


# --- Orders ----------------------------------------------------------------------------------------


def _capacities(a: _Account, products: Sequence[str], scale: float = 1.0) -> list[dict[str, Any]]:
    return [{"product": p, "capacity": _nice(_between(a.rng, CAPACITY_RANGE[p][a.tier]) * scale)} for p in products]


def _order(
    a: _Account, n: int, status: str, start: dt.date, end: dt.date, acv: float, items: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": f"ord-{a.index:07d}-{n}",
        "account_id": a.id,
        "status": status,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "acv": int(round(acv, -2)),
        "products": items,
    }


def _orders(a: _Account, ctx: _Context) -> list[dict[str, Any]]:
    """The main subscription, its previous term, add-ons, pending and cancelled orders."""
    rng, as_of = a.rng, ctx.world_as_of
    rows: list[dict[str, Any]] = []

    def add(status: str, start: dt.date, end: dt.date, acv: float, items: list[dict[str, Any]]) -> None:
        rows.append(_order(a, len(rows) + 1, status, start, end, acv, items))

    products = _pick(rng, PRODUCT_MIX)
    term_days = 365 * _pick(rng, TERM_YEARS_WEIGHTS)
    addon_acv = a.acv * _between(rng, (0.10, 0.25)) if rng.random() < ADDON_ODDS else 0.0
    main_items = _capacities(a, products)
    a.has_active_order = rng.random() >= NO_ACTIVE_ORDER_ODDS[a.profile]
    if a.has_active_order:
        end = as_of + _days(rng.randrange(min(term_days, RENEWAL_HORIZON_DAYS)))
        status = "active"
    else:  # expired a few weeks or months ago, or cancelled mid-term
        status = "expired" if rng.random() < 0.7 else "cancelled"
        end = as_of + _days(-rng.randint(1, 120) if status == "expired" else rng.randint(10, 200))
        addon_acv = 0.0
    start = end - _days(term_days - 1)
    a.main_start, a.main_end, a.customer_since = start, end, start
    a.contract = {item["product"]: item["capacity"] for item in main_items}
    add(status, start, end, a.acv - addon_acv, main_items)

    if rng.random() < PREVIOUS_TERM_ODDS:
        a.customer_since = start - _days(365)
        acv = a.acv * _between(rng, (0.8, 1.0))
        add("expired", a.customer_since, start - _days(1), acv, _capacities(a, products, 0.85))
    if addon_acv:
        add("active", *_addon_term(a, ctx, addon_acv))
    if rng.random() < PENDING_ODDS or (not a.has_active_order and rng.random() < 0.3):
        pending_start = max(end, as_of) + _days(1 if a.has_active_order else rng.randint(0, 30))
        acv = a.acv * _between(rng, (0.9, 1.2))
        add("pending", pending_start, pending_start + _days(364), acv, _capacities(a, products))
    if rng.random() < CANCELLED_ADDON_ODDS:
        cancelled_start = max(a.customer_since, as_of - _days(rng.randint(30, 300)))
        cancelled_end = cancelled_start + _days(rng.randint(30, 364))
        items = _capacities(a, [rng.choice(PRODUCTS)], 0.2)
        add("cancelled", cancelled_start, cancelled_end, a.acv * 0.1, items)
    return rows


def _addon_term(a: _Account, ctx: _Context, acv: float) -> tuple[dt.date, dt.date, float, list[dict[str, Any]]]:
    """An active add-on: a product not yet contracted, or more capacity of one that is."""
    rng = a.rng
    missing = [p for p in PRODUCTS if p not in a.contract]
    product = rng.choice(missing) if missing and rng.random() < 0.6 else rng.choice(list(a.contract))
    items = _capacities(a, [product], 1.0 if product in missing else 0.3)
    start = max(a.main_start, ctx.world_as_of - _days(rng.randint(1, 300)))
    end = a.main_end if rng.random() < 0.7 else start + _days(364)  # co-termed with the main order, or not
    a.contract[product] = a.contract.get(product, 0) + items[0]["capacity"]
    return start, max(end, ctx.world_as_of), acv, items


# --- Invoices --------------------------------------------------------------------------------------


def _invoices(a: _Account, ctx: _Context) -> list[dict[str, Any]]:
    """Monthly or quarterly invoices over the last year; paid, recently open, or overdue by profile."""
    rng, as_of = a.rng, ctx.world_as_of
    months = _pick(rng, BILLING_MONTHS_WEIGHTS[a.tier])
    amount = round(a.acv * months / 12, 2)
    overdue_reach = 0  # past-due invoices up to this many days overdue are still open
    if rng.random() < OVERDUE_ODDS[a.profile]:
        overdue_reach = _int_between(rng, OVERDUE_REACH_DAYS[a.profile])
    disputed = rng.random() < DISPUTED_INVOICE_ODDS
    last_billed = min(as_of, a.main_end) if a.has_active_order else min(as_of - _days(30), a.main_end)
    issue_dates = []
    period = 0
    while True:
        issued = _add_months(a.customer_since, period * months)
        if issued > last_billed:
            break
        issue_dates.append(issued)
        period += 1
    horizon = as_of - _days(INVOICE_HISTORY_MONTHS * 31)
    issue_dates = [d for d in issue_dates if d >= horizon]
    rows = []
    for j, issued in enumerate(issue_dates):
        due = issued + _days(NET_TERMS_DAYS)
        overdue_days = (as_of - due).days
        status, paid_on = "paid", None
        if rng.random() < VOID_INVOICE_ODDS:
            status = "void"
        elif overdue_days <= 0:  # not yet due: some are paid early
            status = "open"
            early = issued + _days(rng.randint(3, 29))
            if rng.random() < 0.4 and early <= as_of:
                status, paid_on = "paid", early
        elif overdue_days <= overdue_reach:
            status = "open"
        elif disputed and 90 <= overdue_days <= 200:
            status, disputed = "open", False
        else:
            paid_on = min(as_of, max(issued + _days(1), due + _days(rng.randint(-20, 12))))
        rows.append({
            "id": f"inv-{a.index:07d}-{j:03d}",
            "account_id": a.id,
            "number": f"INV-{issued.year}{issued.month:02d}-{a.index:07d}",
            "amount": amount,
            "currency": a.currency,
            "issued_on": issued.isoformat(),
            "due_on": due.isoformat(),
            "paid_on": paid_on.isoformat() if paid_on else None,
            "status": status,
        })  # fmt: skip
    return rows


# --- Daily series ----------------------------------------------------------------------------------


def _usage_trend(a: _Account, ctx: _Context) -> list[float]:
    """The account's multiplier per window day (1.0 at the world's as_of for healthy and at-risk accounts)."""
    rng, n, shift = a.rng, ctx.days, ctx.shift
    span = max(1, n - 1)
    if a.profile == "healthy":
        growth = _between(rng, GROWTH_RANGE)
        return [max(0.2, 1.0 - growth * (n - 1 - d + shift) / span) for d in range(n)]
    if a.profile == "at_risk":
        decline = _between(rng, DECLINE_RANGE)
        return [1.0 + decline * (n - 1 - d + shift) / span for d in range(n)]
    return _decline_curve(rng, n, _int_between(rng, CHURN_DECLINE_START_AGO), _between(rng, CHURN_FLOOR), shift)


def _decline_curve(rng: random.Random, n: int, start_ago: int, floor: float, shift: int) -> list[float]:
    """1.0 until `start_ago` days before the world's as_of, then linearly down to `floor`, then flat."""
    end_ago = min(start_ago - 1, _int_between(rng, CHURN_DECLINE_END_AGO))
    width = start_ago - end_ago
    curve = []
    for d in range(n):
        ago = n - 1 - d + shift
        if ago >= start_ago:
            curve.append(1.0)
        elif ago <= end_ago:
            curve.append(floor)
        else:
            curve.append(floor + (1.0 - floor) * (ago - end_ago) / width)
    return curve


def _first_series_day(a: _Account, ctx: _Context) -> int:
    """Index of the first window day the customer existed (new customers start mid-window)."""
    return min(ctx.days - 1, max(0, (a.customer_since - ctx.first_day).days))


def _usage_lines(a: _Account, ctx: _Context) -> tuple[str, int]:
    """One usage row per contract product and window day, as JSON lines."""
    rng = a.rng
    start = _first_series_day(a, ctx)
    dates = ctx.date_strs[start:]
    trend = a.usage_trend[start:]
    used_factor = [s * t for s, t in zip(ctx.season["used"][start:], trend, strict=True)]
    scan_factor = [s * t for s, t in zip(ctx.season["scans"][start:], trend, strict=True)]
    near_capacity = a.profile == "healthy" and rng.random() < NEAR_CAPACITY_ODDS
    products = [p for p in PRODUCTS if p in a.contract]
    shelfware = None
    if len(products) > 1 and rng.random() < SHELFWARE_ODDS[a.profile]:
        shelfware = rng.choice(products[1:])
    spike_product = rng.choice(products) if rng.random() < FAILURE_SPIKE_ODDS[a.profile] else None
    parts: list[str] = []
    for product in products:
        capacity = a.contract[product]
        if product == shelfware:
            utilisation, scan_level = 0.0, 0.0
        else:
            low, high = (0.88, 1.08) if near_capacity else UTILISATION_RANGE[a.profile]
            utilisation = _between(rng, (low, high))
            scan_level = math.sqrt(capacity) * _between(rng, SCANS_PER_SQRT_CAPACITY[product])
        level = capacity * utilisation
        rates = _failure_rates(rng, len(dates), spike_product == product)
        noise, jitter = ctx.noise_slice("used", rng, start), ctx.uniform_slice(rng, start)
        used = [int(level * f * z + u) for f, z, u in zip(used_factor, noise, jitter, strict=True)]
        noise, jitter = ctx.noise_slice("scans", rng, start), ctx.uniform_slice(rng, start)
        scans = [int(scan_level * f * z + u) for f, z, u in zip(scan_factor, noise, jitter, strict=True)]
        jitter = ctx.uniform_slice(rng, start)
        failed = [int(s * r + u) for s, r, u in zip(scans, rates, jitter, strict=True)]
        prefix = f'{{"account_id":"{a.id}","product":"{product}","date":"'
        parts.extend(
            f'{prefix}{d}","used":{x},"scans":{s},"failed_scans":{y}}}\n'
            for d, x, s, y in zip(dates, used, scans, failed, strict=True)
        )
    return "".join(parts), len(parts)


def _failure_rates(rng: random.Random, n: int, spike: bool) -> list[float]:
    """Failure rate per day: a small base rate, and optionally a spike (usually in the last days)."""
    rates = [_between(rng, BASE_FAILURE_RATE)] * n
    if spike:
        length = min(n, _int_between(rng, FAILURE_SPIKE_DAYS))
        end = n if rng.random() < RECENT_SPIKE_SHARE else rng.randint(length, n)
        rate = _between(rng, FAILURE_SPIKE_RATE)
        rates[end - length : end] = [rate] * length
    return rates


def _login_trend(a: _Account, ctx: _Context) -> tuple[list[float], int | None]:
    """Logins follow usage, except that churning and some at-risk accounts stop logging in.

    Returns the trend per window day and, for those that stop, the index of the last login day
    (negative when it lies before the window).
    """
    rng, n = a.rng, ctx.days
    if a.profile == "churning":
        last_login_ago = _int_between(rng, CHURN_LAST_LOGIN_AGO)
        start_ago = last_login_ago + _int_between(rng, (5, 30))
        trend = _decline_curve(rng, n, start_ago, 0.15, ctx.shift)
    elif a.profile == "at_risk" and rng.random() < AT_RISK_LOGIN_GAP_ODDS:
        last_login_ago = _int_between(rng, AT_RISK_LAST_LOGIN_AGO)
        trend = [0.6] * n
    else:
        return a.usage_trend, None
    last_login_ago -= ctx.shift  # the logins had not stopped yet this far back
    if last_login_ago < 0:
        return trend, None
    last = n - 1 - last_login_ago
    return [t if d <= last else 0.0 for d, t in enumerate(trend)], last


def _activity_lines(a: _Account, ctx: _Context) -> tuple[str, int]:
    """One activity row per window day (logins, active users), as JSON lines."""
    rng = a.rng
    start = _first_series_day(a, ctx)
    trend, last_login = _login_trend(a, ctx)
    level = _between(rng, LOGINS_PER_DAY[a.tier]) * (0.6 if a.profile != "healthy" else 1.0)
    ratio = _between(rng, ACTIVE_USER_RATIO)
    factor = [s * t for s, t in zip(ctx.season["logins"][start:], trend[start:], strict=True)]
    noise, jitter = ctx.noise_slice("logins", rng, start), ctx.uniform_slice(rng, start)
    logins = [int(level * f * z + u) for f, z, u in zip(factor, noise, jitter, strict=True)]
    if last_login is not None and last_login >= start:
        logins[last_login - start] = max(1, logins[last_login - start])  # the last login did happen
    jitter = ctx.uniform_slice(rng, start)
    users = [(int(x * ratio + u) or 1) if x else 0 for x, u in zip(logins, jitter, strict=True)]
    prefix = f'{{"account_id":"{a.id}","date":"'
    lines = [
        f'{prefix}{d}","logins":{x},"active_users":{y}}}\n'
        for d, x, y in zip(ctx.date_strs[start:], logins, users, strict=True)
    ]
    return "".join(lines), len(lines)


# --- Scanners and schedules ------------------------------------------------------------------------


def _scanners(a: _Account, ctx: _Context) -> list[dict[str, Any]]:
    rng, as_of = a.rng, ctx.world_as_of
    count = _int_between(rng, SCANNERS_PER_TIER[a.tier])
    inactive = 0
    if rng.random() < INACTIVE_SCANNER_ODDS[a.profile]:
        inactive = rng.randint(math.ceil(count / 2), count) if a.profile == "churning" else 1
    sites = SCANNER_SITES[a.region]
    rows = []
    for k in range(count):
        if k < inactive:
            seen = None if rng.random() < 0.1 else _timestamp(as_of - _days(rng.randint(8, 90)), rng)
        else:
            ago = rng.randint(0, 2)
            seen = _timestamp(as_of - _days(ago), rng, (0, 6) if ago == 0 else (0, 24))
        rows.append({
            "id": f"scn-{a.index:07d}-{k}",
            "account_id": a.id,
            "name": f"{rng.choice(sites)}-scanner-{k + 1:02d}",
            "last_seen_at": seen,
        })  # fmt: skip
    rng.shuffle(rows)
    return rows


def _schedules(a: _Account, ctx: _Context) -> list[dict[str, Any]]:
    rng, as_of = a.rng, ctx.world_as_of
    rows: list[dict[str, Any]] = []
    for product in (p for p in PRODUCTS if p in a.contract):
        for _ in range(2 if a.tier in ("T1", "T2") and rng.random() < 0.4 else 1):
            interval = _pick(rng, SCHEDULE_INTERVALS[product])
            enabled = rng.random() >= SCHEDULE_DISABLED_ODDS
            if rng.random() < LAPSED_SCHEDULE_ODDS[a.profile]:
                ago = None if rng.random() < 0.15 else 2 * interval + rng.randint(1, 60)
            else:
                ago = rng.randint(0, interval)
            last_run = None
            if ago is not None:
                last_run = _timestamp(as_of - _days(ago), rng, (0, 6) if ago == 0 else (0, 24))
            rows.append({
                "id": f"sch-{a.index:07d}-{len(rows)}",
                "account_id": a.id,
                "product": product,
                "enabled": enabled,
                "interval_days": interval,
                "last_run_at": last_run,
            })  # fmt: skip
    return rows


# --- Tickets, meetings, NPS, sentiment -------------------------------------------------------------


def _tickets(a: _Account, ctx: _Context) -> list[dict[str, Any]]:
    rng, as_of = a.rng, ctx.world_as_of
    opened_ago = sorted((rng.randrange(365) for _ in range(_int_between(rng, TICKETS_PER_YEAR[a.tier]))),
                        reverse=True)  # fmt: skip
    specs = [(ago, _pick(rng, PRIORITY_WEIGHTS)) for ago in opened_ago]
    if rng.random() < ESCALATION_ODDS[a.profile]:
        specs += [(rng.randrange(30), rng.choice(("high", "urgent"))) for _ in range(rng.randint(1, 2))]
    rows = []
    for j, (ago, priority) in enumerate(specs):
        opened_day = as_of - _days(ago)
        opened = dt.datetime.fromisoformat(_timestamp(opened_day, rng, (0, 6) if ago == 0 else (6, 20)))
        closed: str | None = None
        escalation = j >= len(opened_ago)
        if not escalation and (ago > 14 or rng.random() < 0.4) and rng.random() > 0.04:
            closed_at = opened + dt.timedelta(hours=_between(rng, RESOLUTION_HOURS[priority]))
            if closed_at.date() <= as_of:
                closed = closed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append({
            "id": f"tkt-{a.index:07d}-{j:02d}",
            "account_id": a.id,
            "opened_at": opened.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "closed_at": closed,
            "priority": priority,
            "subject": None if rng.random() < 0.05 else rng.choice(TICKET_SUBJECTS),
        })  # fmt: skip
    return rows


def _last_meeting_ago(a: _Account) -> int | None:
    """Days since the latest meeting held, by profile in units of the tier's cadence; None = never."""
    rng, cadence = a.rng, CADENCE_DAYS[a.tier]
    draw = rng.random()
    for share, low, high in LAST_MEETING_AGO[a.profile]:
        if draw < share:
            return int(cadence * _between(rng, (low, high)))
        draw -= share
    return None


def _meetings(a: _Account, ctx: _Context) -> list[dict[str, Any]]:
    rng, as_of = a.rng, ctx.as_of
    cadence = CADENCE_DAYS[a.tier]
    held_ago = []
    ago = _last_meeting_ago(a)
    while ago is not None and ago <= MEETING_HISTORY_DAYS:
        held_ago.append(ago)
        ago += max(7, int(cadence * _between(rng, (0.7, 1.2))))
    held_ago.reverse()
    rows = []
    for j, ago in enumerate(held_ago):
        kind = "QBR" if a.tier in ("T1", "T2") and (len(held_ago) - j) % 3 == 0 else "1:1"
        outcome = _outcome(a, ago)  # drawn for every meeting, so every look back draws alike
        if ago >= ctx.shift:  # held by this snapshot's as_of
            rows.append(_meeting_row(a, j, as_of - _days(ago - ctx.shift), kind, outcome))
    if rng.random() < FUTURE_MEETING_ODDS[a.profile]:
        held_on = as_of + _days(rng.randint(1, 28))  # scheduled, not held yet
        rows.append(_meeting_row(a, len(rows), held_on, rng.choice(("1:1", "QBR")), None))
    return rows


def _meeting_row(a: _Account, j: int, held_on: dt.date, kind: str, outcome: str | None) -> dict[str, Any]:
    return {"id": f"mtg-{a.index:07d}-{j:02d}", "account_id": a.id, "held_on": held_on.isoformat(),
            "kind": kind, "outcome": outcome}  # fmt: skip


def _outcome(a: _Account, ago: int) -> str | None:
    rng = a.rng
    if ago < 2:
        missing = rng.random() < 0.5
    elif ago < 30:
        missing = rng.random() < MISSING_RECENT_OUTCOME_ODDS[a.profile]
    else:
        missing = rng.random() < MISSING_OLD_OUTCOME_ODDS
    if missing:
        return rng.choice(("", "   ")) if rng.random() < BLANK_SHARE_OF_MISSING else None
    return rng.choice(MEETING_OUTCOMES)


def _nps(a: _Account, ctx: _Context) -> list[dict[str, Any]]:
    rng, as_of = a.rng, ctx.world_as_of
    count = _int_between(rng, NPS_RESPONSES_PER_TIER[a.tier])
    rows = []
    for ago in sorted((rng.randrange(NPS_HISTORY_DAYS) for _ in range(count)), reverse=True):
        category = _pick(rng, NPS_CATEGORY_WEIGHTS[a.profile])
        rows.append({
            "account_id": a.id,
            "responded_on": (as_of - _days(ago)).isoformat(),
            "score": _int_between(rng, NPS_SCORES[category]),
            "comment": rng.choice(NPS_COMMENTS[category]) if rng.random() < NPS_COMMENT_ODDS else None,
        })  # fmt: skip
    return rows


def _sentiment(a: _Account, ctx: _Context) -> list[dict[str, Any]]:
    rng, as_of = a.rng, ctx.world_as_of
    if rng.random() < NO_SENTIMENT_ODDS:
        return []
    count = max(1, _int_between(rng, SENTIMENT_ENTRIES))
    agos = sorted((rng.randrange(SENTIMENT_HISTORY_DAYS) for _ in range(count)), reverse=True)
    rows = []
    for k, ago in enumerate(agos):
        # The latest entry reflects the profile; older ones drift towards neutral.
        latest = k == count - 1
        value = _pick(rng, SENTIMENT_WEIGHTS[a.profile]) if latest or rng.random() < 0.6 else "neutral"
        rows.append({
            "account_id": a.id,
            "recorded_on": (as_of - _days(ago)).isoformat(),
            "value": value,
            "by": a.csm if rng.random() < SENTIMENT_BY_CSM_ODDS else None,
        })  # fmt: skip
    return rows


# --- Command line (python -m connectors.demo) ------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Write a demo snapshot and print its stats as JSON (the `csm` CLI wraps the same function)."""
    parser = argparse.ArgumentParser(prog="python -m connectors.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 12, 4))
    parser.add_argument("--days", type=int, default=91)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    stats = write_demo_snapshot(args.out_dir, accounts=args.accounts, seed=args.seed, as_of=args.as_of, days=args.days)
    report = {**msgspec.to_builtins(stats), "seconds": round(time.perf_counter() - started, 2)}
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
