"""The demo snapshot generator: deterministic, valid against the snapshot schemas and DATA.md's
validity rules, and realistic enough to exercise every default policy."""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import pathlib
import statistics
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from connectors.demo import DemoStats, write_demo_snapshot
from engine.snapshot import FILE_ENTITIES
from schemas import SCHEMA_DIR, load_schema

AS_OF = dt.date(2026, 12, 4)
SEED = 42
ROOT = pathlib.Path(__file__).resolve().parents[2]
ID_ENTITIES = ("accounts", "orders", "invoices", "scanners", "schedules", "tickets", "meetings")

Rows = dict[str, list[dict[str, Any]]]


def load(folder: pathlib.Path) -> tuple[dict[str, Any], Rows]:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    rows: Rows = {}
    for entity in FILE_ENTITIES:
        path = folder / f"{entity}.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        rows[entity] = [json.loads(line) for line in lines if line.strip()]
    return manifest, rows


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def utc_day(timestamp: str) -> dt.date:
    return dt.datetime.fromisoformat(timestamp).astimezone(dt.UTC).date()


@pytest.fixture(scope="module")
def snapshot(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[pathlib.Path, DemoStats, dict[str, Any], Rows]:
    folder = tmp_path_factory.mktemp("demo200")
    stats = write_demo_snapshot(folder, accounts=200, seed=SEED, as_of=AS_OF)
    manifest, rows = load(folder)
    return folder, stats, manifest, rows


# --- Determinism ---------------------------------------------------------------------------------


def file_bytes(folder: pathlib.Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_same_arguments_give_byte_identical_files(tmp_path: pathlib.Path) -> None:
    write_demo_snapshot(tmp_path / "a", accounts=60, seed=SEED, as_of=AS_OF)
    write_demo_snapshot(tmp_path / "b", accounts=60, seed=SEED, as_of=AS_OF)
    write_demo_snapshot(tmp_path / "c", accounts=60, seed=SEED + 1, as_of=AS_OF)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    assert file_bytes(tmp_path / "a")["usage.jsonl"] != file_bytes(tmp_path / "c")["usage.jsonl"]


def test_output_does_not_depend_on_the_process_hash_seed(tmp_path: pathlib.Path) -> None:
    write_demo_snapshot(tmp_path / "here", accounts=30, seed=SEED, as_of=AS_OF)
    command = [sys.executable, "-m", "connectors.demo", str(tmp_path / "there"), "--accounts", "30",
               "--seed", str(SEED), "--as-of", AS_OF.isoformat()]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    assert file_bytes(tmp_path / "here") == file_bytes(tmp_path / "there")


def test_first_accounts_do_not_depend_on_how_many_are_generated(tmp_path: pathlib.Path) -> None:
    k = 40
    write_demo_snapshot(tmp_path / "small", accounts=k, seed=SEED, as_of=AS_OF)
    write_demo_snapshot(tmp_path / "large", accounts=3 * k, seed=SEED, as_of=AS_OF)
    small, large = file_bytes(tmp_path / "small"), file_bytes(tmp_path / "large")
    assert small["manifest.json"] == large["manifest.json"]
    for entity in FILE_ENTITIES:
        name = f"{entity}.jsonl"
        assert small[name], name
        assert large[name].startswith(small[name]), name
        assert len(large[name]) > len(small[name]), name


# --- Schemas -------------------------------------------------------------------------------------

SCHEMA_NAMES = ("manifest", *FILE_ENTITIES)


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = load_schema(f"snapshot/{name}.schema.json")
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def schema_errors(manifest: dict[str, Any], rows: Rows) -> list[str]:
    errors = [f"manifest: {e.message}" for e in validator("manifest").iter_errors(manifest)]
    for entity in FILE_ENTITIES:
        check = validator(entity)
        for line, row in enumerate(rows[entity], start=1):
            errors += [f"{entity}.jsonl:{line}: {e.message}" for e in check.iter_errors(row)]
    return errors


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_well_formed(name: str) -> None:
    schema = load_schema(f"snapshot/{name}.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://csm-portal.dev/schemas/snapshot/{name}.schema.json"
    assert schema["title"]
    assert schema["additionalProperties"] is True
    assert "additional properties are allowed" in schema["description"].lower()
    assert set(schema["required"]) <= set(schema["properties"])
    for field, spec in schema["properties"].items():
        assert spec.get("description"), field
        if spec.get("format") == "date":
            assert spec["pattern"] == r"^\d{4}-\d{2}-\d{2}$", field
        if spec.get("format") == "date-time":
            assert "Z|[+-]" in spec["pattern"], field
        if field not in schema["required"] and "type" in spec:
            assert "null" in spec["type"], f"optional field {field} must be nullable"


def test_schema_files_are_exactly_the_snapshot_entities() -> None:
    names = sorted(path.name for path in (SCHEMA_DIR / "snapshot").glob("*.schema.json"))
    assert names == sorted(f"{name}.schema.json" for name in SCHEMA_NAMES)


def test_schemas_reject_bad_rows() -> None:
    good_usage = {"account_id": "a", "product": "VM", "date": "2026-12-01", "used": 1, "scans": 2,
                  "failed_scans": 0}  # fmt: skip
    assert not list(validator("usage").iter_errors(good_usage))
    bad_usage = [
        {**good_usage, "date": "2026-02-30"},
        {**good_usage, "date": "2026-12-01T00:00:00Z"},
        {**good_usage, "used": -1},
        {**good_usage, "scans": 1.5},
        {k: v for k, v in good_usage.items() if k != "failed_scans"},
    ]
    for row in bad_usage:
        assert list(validator("usage").iter_errors(row)), row
    assert not list(validator("usage").iter_errors({**good_usage, "extra": "kept"}))
    ticket = {"id": "t", "account_id": "a", "opened_at": "2026-12-01T08:15:00Z", "priority": "high"}
    assert not list(validator("tickets").iter_errors(ticket))
    assert not list(validator("tickets").iter_errors({**ticket, "opened_at": "2026-12-01T08:15:00+01:00"}))
    for bad in ("2026-12-01T08:15:00", "2026-12-01", "2026-12-01 08:15:00Z"):
        assert list(validator("tickets").iter_errors({**ticket, "opened_at": bad})), bad
    assert list(validator("tickets").iter_errors({**ticket, "priority": "critical"}))
    order = {"id": "o", "account_id": "a", "status": "active", "start_date": "2026-01-01",
             "end_date": "2026-12-31", "acv": 10, "products": [{"product": "VM", "capacity": 5}]}  # fmt: skip
    assert not list(validator("orders").iter_errors(order))
    assert list(validator("orders").iter_errors({**order, "products": [{"product": "VM", "capacity": 5, "x": 1}]}))
    assert list(validator("orders").iter_errors({**order, "status": "paused"}))
    account = {"id": "a", "name": "A", "tier": "T2", "csm": "x@y.z", "acv": 1, "currency": "EUR"}
    assert not list(validator("accounts").iter_errors({**account, "tags": None, "crm_id": None}))
    assert list(validator("accounts").iter_errors({**account, "currency": "eur"}))
    assert list(validator("accounts").iter_errors({**account, "tier": "T5"}))
    assert list(validator("nps").iter_errors({"account_id": "a", "responded_on": "2026-01-01", "score": 11}))
    assert list(validator("sentiment").iter_errors({"account_id": "a", "recorded_on": "2026-01-01", "value": "meh"}))
    assert list(validator("manifest").iter_errors({"format": "csm-snapshot/2", "as_of": "2026-12-04", "source": "x"}))


def test_every_demo_row_validates(snapshot: tuple) -> None:
    _, _, manifest, rows = snapshot
    errors = schema_errors(manifest, rows)
    assert not errors, errors[:10]


def test_example_snapshot_validates(example_snapshot: pathlib.Path) -> None:
    manifest, rows = load(example_snapshot)
    errors = schema_errors(manifest, rows)
    assert not errors, errors[:10]


# --- DATA.md validity rules ----------------------------------------------------------------------


def validity_problems(manifest: dict[str, Any], rows: Rows) -> list[str]:
    """Every breach of DATA.md's validity rules (and a few obvious consistency rules) in `rows`."""
    as_of = day(manifest["as_of"])
    problems: list[str] = []
    for entity in ID_ENTITIES:
        counts = collections.Counter(row["id"] for row in rows[entity])
        problems += [f"{entity}: duplicate id {i}" for i, n in counts.items() if n > 1]
    account_ids = {row["id"] for row in rows["accounts"]}
    for entity in FILE_ENTITIES[1:]:
        problems += [f"{entity}: unknown account {r['account_id']}" for r in rows[entity]
                     if r["account_id"] not in account_ids]  # fmt: skip
    usage_keys = collections.Counter((r["account_id"], r["product"], r["date"]) for r in rows["usage"])
    problems += [f"usage: repeated row {key}" for key, n in usage_keys.items() if n > 1]
    activity_keys = collections.Counter((r["account_id"], r["date"]) for r in rows["activity"])
    problems += [f"activity: repeated row {key}" for key, n in activity_keys.items() if n > 1]
    not_after_as_of = [("usage", "date", day), ("activity", "date", day), ("nps", "responded_on", day),
                       ("sentiment", "recorded_on", day), ("tickets", "opened_at", utc_day),
                       ("tickets", "closed_at", utc_day), ("scanners", "last_seen_at", utc_day),
                       ("schedules", "last_run_at", utc_day), ("invoices", "issued_on", day),
                       ("invoices", "paid_on", day)]  # fmt: skip
    for entity, field, parse in not_after_as_of:
        problems += [f"{entity}: {field} {r[field]} after as_of" for r in rows[entity]
                     if r.get(field) and parse(r[field]) > as_of]  # fmt: skip
    for r in rows["tickets"]:
        if r["closed_at"] and dt.datetime.fromisoformat(r["closed_at"]) < dt.datetime.fromisoformat(r["opened_at"]):
            problems.append(f"tickets: {r['id']} closed before it was opened")
    for r in rows["orders"]:
        if day(r["end_date"]) < day(r["start_date"]):
            problems.append(f"orders: {r['id']} ends before it starts")
    for r in rows["invoices"]:
        if day(r["due_on"]) < day(r["issued_on"]) or (r["paid_on"] and day(r["paid_on"]) < day(r["issued_on"])):
            problems.append(f"invoices: {r['id']} due or paid before it was issued")
        if (r["status"] == "paid") != bool(r["paid_on"]):
            problems.append(f"invoices: {r['id']} status {r['status']} with paid_on {r['paid_on']}")
    problems += [f"usage: more failed scans than scans {r}" for r in rows["usage"] if r["failed_scans"] > r["scans"]]
    problems += [f"activity: more users than logins {r}" for r in rows["activity"] if r["active_users"] > r["logins"]]
    return problems


def test_demo_snapshot_obeys_the_validity_rules(snapshot: tuple) -> None:
    _, _, manifest, rows = snapshot
    problems = validity_problems(manifest, rows)
    assert not problems, problems[:10]


@pytest.mark.parametrize("days", [1, 14, 400])
def test_other_window_lengths_are_valid(tmp_path: pathlib.Path, days: int) -> None:
    stats = write_demo_snapshot(tmp_path, accounts=25, seed=SEED, as_of=AS_OF, days=days)
    manifest, rows = load(tmp_path)
    assert not validity_problems(manifest, rows)
    assert not schema_errors(manifest, rows)
    assert stats.activity == len(rows["activity"]) <= 25 * days
    first_day = AS_OF - dt.timedelta(days=days - 1)
    assert min(day(r["date"]) for r in rows["usage"]) >= first_day


def test_stats_match_the_files(snapshot: tuple) -> None:
    folder, stats, manifest, rows = snapshot
    assert manifest == {"format": "csm-snapshot/1", "as_of": "2026-12-04", "source": "demo",
                        "products": ["VM", "PC", "WAS"]}  # fmt: skip
    assert stats.row_counts == {entity: len(rows[entity]) for entity in FILE_ENTITIES}
    assert stats.total_rows == sum(len(r) for r in rows.values())
    assert stats.bytes_written == sum(path.stat().st_size for path in folder.iterdir())
    assert stats.csms == len({r["csm"] for r in rows["accounts"]}) == 3
    assert stats.accounts == 200


def test_zero_accounts_writes_empty_files(tmp_path: pathlib.Path) -> None:
    stats = write_demo_snapshot(tmp_path / "new" / "folder", accounts=0, seed=1, as_of=AS_OF)
    assert stats.total_rows == 0
    assert stats.csms == 0
    assert sorted(p.name for p in (tmp_path / "new" / "folder").iterdir()) == sorted(
        ["manifest.json", *(f"{e}.jsonl" for e in FILE_ENTITIES)]
    )


def test_bad_arguments_are_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(TypeError):
        write_demo_snapshot(tmp_path, accounts=1, seed=1, as_of=dt.datetime(2026, 12, 4, tzinfo=dt.UTC))
    with pytest.raises(ValueError, match="accounts"):
        write_demo_snapshot(tmp_path, accounts=-1, seed=1, as_of=AS_OF)
    with pytest.raises(ValueError, match="days"):
        write_demo_snapshot(tmp_path, accounts=1, seed=1, as_of=AS_OF, days=0)


# --- Looking back at the same world -------------------------------------------------------------

LOOK_BACK_DAYS = 28


def test_a_look_back_from_the_same_day_is_the_plain_snapshot(tmp_path: pathlib.Path) -> None:
    write_demo_snapshot(tmp_path / "plain", accounts=40, seed=SEED, as_of=AS_OF)
    write_demo_snapshot(tmp_path / "seen", accounts=40, seed=SEED, as_of=AS_OF, world_as_of=AS_OF)
    assert file_bytes(tmp_path / "plain") == file_bytes(tmp_path / "seen")
    with pytest.raises(ValueError, match="world_as_of"):
        write_demo_snapshot(tmp_path, accounts=1, seed=SEED, as_of=AS_OF, world_as_of=AS_OF - dt.timedelta(days=1))


def test_a_look_back_shows_the_same_customers_before_they_changed(tmp_path: pathlib.Path, snapshot: tuple) -> None:
    """Four weeks earlier: same accounts, only the meetings held by then, churners still active."""
    _, _, _, world = snapshot
    earlier_day = AS_OF - dt.timedelta(days=LOOK_BACK_DAYS)
    write_demo_snapshot(tmp_path, accounts=200, seed=SEED, as_of=earlier_day, world_as_of=AS_OF)
    manifest, earlier = load(tmp_path)
    assert manifest["as_of"] == earlier_day.isoformat()
    assert not validity_problems(manifest, earlier)
    assert not schema_errors(manifest, earlier)
    assert [a["id"] for a in earlier["accounts"]] == [a["id"] for a in world["accounts"]]

    def held(rows: Rows, until: dt.date) -> set[tuple[str, str]]:
        return {(m["account_id"], m["held_on"]) for m in rows["meetings"] if day(m["held_on"]) <= until}

    # A meeting held by then is one the world remembers, on the same day; later ones had not happened.
    assert held(earlier, earlier_day) == held(world, earlier_day)
    assert held(world, AS_OF) - held(world, earlier_day), "some meetings were held in the last four weeks"

    # Contracts and invoices are the same world's: renewals fall on the same days, nothing issued
    # since is there, and an invoice paid in the last four weeks (or not yet) was still unpaid.
    def by_id(rows: Rows, entity: str) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in rows[entity]}

    orders_now, orders_then = by_id(world, "orders"), by_id(earlier, "orders")
    assert set(orders_then) <= set(orders_now)
    assert all(orders_then[i]["end_date"] == orders_now[i]["end_date"] for i in orders_then)
    invoices_now, invoices_then = by_id(world, "invoices"), by_id(earlier, "invoices")
    assert set(invoices_then) == {i for i, r in invoices_now.items() if day(r["issued_on"]) <= earlier_day}
    unpaid_then = [i for i in invoices_then if (invoices_now[i]["paid_on"] or "9999") > earlier_day.isoformat()]
    assert len(unpaid_then) >= 20
    assert all(invoices_then[i]["status"] in ("open", "void") for i in unpaid_then)
    assert all(invoices_then[i]["paid_on"] is None for i in unpaid_then)

    def last_login(rows: Rows) -> dict[str, dt.date]:
        latest: dict[str, dt.date] = {}
        for r in rows["activity"]:
            if r["logins"] > 0:
                latest[r["account_id"]] = max(latest.get(r["account_id"], dt.date.min), day(r["date"]))
        return latest

    # The accounts fading out now were still using the product four weeks ago.
    fading = fading_accounts(world, AS_OF)
    assert len(fading) >= 8
    last_week_now = daily_usage(world, AS_OF - dt.timedelta(days=6), AS_OF)
    last_week_then = daily_usage(earlier, earlier_day - dt.timedelta(days=6), earlier_day)
    assert sum(last_week_then[a] > 3 * last_week_now.get(a, 0) for a in fading) >= 0.8 * len(fading)
    # Logins that stopped in the last four weeks (no login for two weeks now) had not stopped yet.
    world_logins, earlier_logins = last_login(world), last_login(earlier)
    quiet_now = {a for a in world_logins if world_logins[a] < AS_OF - dt.timedelta(days=14)}
    quiet_then = {a for a in earlier_logins if earlier_logins[a] < earlier_day - dt.timedelta(days=14)}
    stopped_lately = [a for a in quiet_now if world_logins[a] > earlier_day]
    assert len(stopped_lately) >= 3
    assert sum(a not in quiet_then for a in stopped_lately) >= 0.8 * len(stopped_lately)
    assert len(quiet_then) < len(quiet_now)


# --- A realistic mix -----------------------------------------------------------------------------


def per_account(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        grouped[row["account_id"]].append(row)
    return grouped


def active_orders(rows: Rows) -> dict[str, list[dict[str, Any]]]:
    return per_account([o for o in rows["orders"] if o["status"] == "active"
                        and day(o["start_date"]) <= AS_OF <= day(o["end_date"])])  # fmt: skip


def test_accounts_look_like_a_real_portfolio(snapshot: tuple) -> None:
    _, _, _, rows = snapshot
    accounts = rows["accounts"]
    tiers = collections.Counter(a["tier"] for a in accounts)
    assert set(tiers) == {"T1", "T2", "T3", "T4"}
    assert tiers["T1"] < tiers["T2"] < tiers["T3"] + tiers["T4"]
    assert 0.02 <= tiers["T1"] / len(accounts) <= 0.15
    acv_range = {
        "T1": (200_000, 900_000),
        "T2": (60_000, 250_000),
        "T3": (20_000, 80_000),
        "T4": (5_000, 25_000),
    }
    segments = {
        "T1": {"Enterprise"},
        "T2": {"Enterprise", "Mid-Market"},
        "T3": {"Mid-Market", "SMB"},
        "T4": {"SMB", "Mid-Market"},
    }
    for a in accounts:
        low, high = acv_range[a["tier"]]
        assert low <= a["acv"] <= high, a
        assert a["segment"] in segments[a["tier"]], a
        assert a["crm_id"] is None or a["crm_id"].isdigit()
        assert a["csm"].endswith("@demo.csm")
        assert "." in a["csm"].split("@")[0]
        assert len(a["name"].split()) >= 3
    assert {a["currency"] for a in accounts} == {"EUR", "USD", "GBP"}
    assert {a["region"] for a in accounts} == {"EMEA", "NA", "APAC"}
    tags = collections.Counter(t for a in accounts for t in a["tags"])
    assert {"strategic", "reference", "at-risk-watch", "expansion", "emea"} <= set(tags)
    assert len({a["name"] for a in accounts}) > 0.9 * len(accounts)


def test_commercial_mix(snapshot: tuple) -> None:
    _, _, _, rows = snapshot
    active = active_orders(rows)
    accounts = [a["id"] for a in rows["accounts"]]
    no_active = [a for a in accounts if a not in active]
    assert 1 <= len(no_active) <= 0.08 * len(accounts)
    renewal_in = {a: min((day(o["end_date"]) - AS_OF).days for o in orders) for a, orders in active.items()}
    assert sum(d <= 30 for d in renewal_in.values()) >= 3
    assert sum(30 < d <= 90 for d in renewal_in.values()) >= 5
    assert max(renewal_in.values()) > 365
    assert max(renewal_in.values()) <= 540
    statuses = collections.Counter(o["status"] for o in rows["orders"])
    assert {"active", "expired", "pending", "cancelled"} <= set(statuses)
    product_counts = collections.Counter(len(o["products"]) for o in rows["orders"])
    assert set(product_counts) == {1, 2, 3}
    overdue = [(AS_OF - day(i["due_on"])).days for i in rows["invoices"]
               if i["status"] == "open" and day(i["due_on"]) < AS_OF]  # fmt: skip
    assert any(d > 60 for d in overdue)
    assert any(d <= 30 for d in overdue)
    statuses = collections.Counter(i["status"] for i in rows["invoices"])
    assert statuses["paid"] > 0.8 * len(rows["invoices"])
    assert statuses["open"] > 0


def test_usage_and_activity_patterns(snapshot: tuple) -> None:
    _, _, _, rows = snapshot
    active = active_orders(rows)
    capacity: dict[tuple[str, str], float] = collections.Counter()
    for account, orders in active.items():
        for o in orders:
            for item in o["products"]:
                capacity[(account, item["product"])] += item["capacity"]
    usage_series = {(r["account_id"], r["product"]) for r in rows["usage"]}
    assert set(capacity) <= usage_series, "every contracted product has a usage series"
    # Weekly seasonality: weekend scans and logins are well below weekday ones.
    weekend = [r["scans"] for r in rows["usage"] if day(r["date"]).weekday() >= 5]
    weekday = [r["scans"] for r in rows["usage"] if day(r["date"]).weekday() < 5]
    assert statistics.mean(weekend) < 0.5 * statistics.mean(weekday)
    # Utilisation spread: some products near or over capacity, some barely used.
    last30 = AS_OF - dt.timedelta(days=29)
    used: dict[tuple[str, str], int] = collections.Counter()
    for r in rows["usage"]:
        if day(r["date"]) >= last30:
            used[(r["account_id"], r["product"])] += r["used"]
    utilisation = [used[key] / 30 / cap for key, cap in capacity.items() if cap]
    assert any(u >= 0.85 for u in utilisation)
    assert any(u < 0.30 for u in utilisation)
    # Failure spikes: some products fail on >= 10% of their scans over the last 7 days.
    last7 = AS_OF - dt.timedelta(days=6)
    scans: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0])
    for r in rows["usage"]:
        if day(r["date"]) >= last7:
            scans[(r["account_id"], r["product"])][0] += r["scans"]
            scans[(r["account_id"], r["product"])][1] += r["failed_scans"]
    ratios = [f / s for s, f in scans.values() if s]
    assert sum(ratio >= 0.10 for ratio in ratios) >= 5
    assert statistics.median(ratios) < 0.05
    # Logins: most accounts logged in last week, some not at all for over 60 days.
    last_login: dict[str, dt.date] = {}
    for r in rows["activity"]:
        if r["logins"] > 0:
            last_login[r["account_id"]] = max(last_login.get(r["account_id"], dt.date.min), day(r["date"]))
    accounts = [a["id"] for a in rows["accounts"]]
    days_since = {a: (AS_OF - last_login[a]).days if a in last_login else None for a in accounts}
    assert sum(d is not None and d <= 7 for d in days_since.values()) > 0.7 * len(accounts)
    assert sum(d is None or d >= 60 for d in days_since.values()) >= 3


def daily_usage(rows: Rows, first: dt.date, last: dt.date) -> dict[str, float]:
    """Each account's mean daily `used` (all products) from `first` to `last`, both included."""
    totals: dict[str, float] = collections.Counter()
    for r in rows["usage"]:
        if first <= day(r["date"]) <= last:
            totals[r["account_id"]] += r["used"]
    days = (last - first).days + 1
    return {account: total / days for account, total in totals.items()}


def fading_accounts(rows: Rows, as_of: dt.date) -> list[str]:
    """Accounts whose usage in the last week is under a tenth of the window's first two weeks'."""
    first = as_of - dt.timedelta(days=90)
    early = daily_usage(rows, first, first + dt.timedelta(days=13))
    late = daily_usage(rows, as_of - dt.timedelta(days=6), as_of)
    return [a for a, used in early.items() if used > 0 and late.get(a, 0) < 0.1 * used]


def test_declining_accounts_fade_out(snapshot: tuple) -> None:
    """Churning accounts (about 9%): their decline reaches its floor 0-10 days before as_of."""
    _, _, _, rows = snapshot
    fading = fading_accounts(rows, AS_OF)
    assert 0.04 * len(rows["accounts"]) <= len(fading) <= 0.2 * len(rows["accounts"])


def test_engagement_signals_mix(snapshot: tuple) -> None:
    _, _, _, rows = snapshot

    def since(timestamp: str | None) -> int:
        return 10_000 if timestamp is None else (AS_OF - utc_day(timestamp)).days

    scanners_inactive = [s for s in rows["scanners"] if since(s["last_seen_at"]) > 7]
    assert 0 < len(scanners_inactive) < 0.4 * len(rows["scanners"])
    assert any(s["last_seen_at"] is None for s in rows["scanners"])
    assert all(1 <= len(v) <= 6 for v in per_account(rows["scanners"]).values())
    lapsed = [s for s in rows["schedules"] if s["enabled"] and since(s["last_run_at"]) > 2 * s["interval_days"]]
    assert 0 < len(lapsed) < 0.4 * len(rows["schedules"])
    assert {s["interval_days"] for s in rows["schedules"]} == {1, 7, 30}
    priorities = collections.Counter(t["priority"] for t in rows["tickets"])
    assert set(priorities) == {"low", "normal", "high", "urgent"}
    assert any(t["closed_at"] is None for t in rows["tickets"])
    assert any(t["subject"] for t in rows["tickets"])
    meetings = rows["meetings"]
    assert {m["kind"] for m in meetings} == {"1:1", "QBR"}
    assert any(day(m["held_on"]) > AS_OF for m in meetings)
    assert all(m["outcome"] is None for m in meetings if day(m["held_on"]) > AS_OF)
    recent_missing = [m for m in meetings if 2 <= (AS_OF - day(m["held_on"])).days <= 29
                      and not (m["outcome"] or "").strip()]  # fmt: skip
    assert recent_missing
    scores = [r["score"] for r in rows["nps"]]
    assert {"promoter", "passive", "detractor"} == {
        "promoter" if s >= 9 else "passive" if s >= 7 else "detractor" for s in scores
    }
    assert {s["value"] for s in rows["sentiment"]} == {"positive", "neutral", "negative"}


def test_holiday_dip(tmp_path: pathlib.Path) -> None:
    as_of = dt.date(2027, 1, 20)
    write_demo_snapshot(tmp_path, accounts=40, seed=SEED, as_of=as_of, days=60)
    _, rows = load(tmp_path)
    holiday, normal = [], []
    for r in rows["activity"]:
        d = day(r["date"])
        if d.weekday() < 5:
            in_holiday = (d.month, d.day) >= (12, 24) or (d.month, d.day) <= (1, 1)
            (holiday if in_holiday else normal).append(r["logins"])
    assert statistics.mean(holiday) < 0.5 * statistics.mean(normal)


def test_health_mix_under_the_default_policies(snapshot: tuple) -> None:
    """Scored by the independent reference implementation: a believable spread of bands and tasks."""
    reference = pytest.importorskip("tests.engine.reference")
    folder, _, _, rows = snapshot
    data, as_of = reference.load_snapshot_folder(str(folder))
    results = reference.reference_evaluate(data, as_of)
    bands = collections.Counter(r["band"] for r in results.values())
    share = {band: n / len(results) for band, n in bands.items()}
    assert 0.55 <= share.get("Happy", 0) <= 0.85, share
    assert 0.10 <= share.get("At-Risk", 0) <= 0.35, share
    assert 0.04 <= share.get("Critical", 0) <= 0.20, share
    csm_of = {a["id"]: a["csm"] for a in rows["accounts"]}
    rules_per_csm: dict[str, set[str]] = collections.defaultdict(set)
    for account, result in results.items():
        rules_per_csm[csm_of[account]].update(rule for rule, _key in result["tasks"])
    assert set().union(*rules_per_csm.values()) >= {
        "renewal-upcoming", "overdue-invoices", "high-license-usage", "inactive-scanners", "failed-scans",
        "schedule-lapsed", "inactive-product", "low-utilisation", "meeting-follow-up-gap", "no-active-order",
        "chi-status-review", "meeting-outcome-missing",
    }  # fmt: skip
    assert all(len(rules) >= 9 for rules in rules_per_csm.values()), rules_per_csm
