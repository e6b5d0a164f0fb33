"""Engine benchmark: the compiled default policies against the same policies written by hand.

    .venv/bin/python -m bench.engine [--accounts 20000] [--repeats 5] [--seed 7]

Builds a synthetic snapshot once (connectors.demo), folds it with the compiled policies into one
facts dict per customer, then

* checks, on every customer, that the compiled `decide(facts)` and `bench.handwritten.decide_by_hand`
  give the same AccountResult (floats to a 1e-9 tolerance, everything else exactly); exits 1 if not;
* times both over all customers, interleaved (compiled, hand, compiled, hand, ...), gc disabled,
  and reports the median customers/s, the min-max and the ratio compiled / hand;
* times the whole pipeline from rows (`engine.evaluate`: fold + finalize + decide) and the policy
  load + compile.

Prints a table and writes the figures to bench/out/engine.json. The target (the issue): the compiled
policies run at least half as fast as the hand-written function.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from bench.handwritten import decide_by_hand
from connectors.demo import write_demo_snapshot
from engine import evaluate, load_policies
from engine.compiler import CompiledPolicies, compile_policies
from engine.evaluate import Evaluator
from engine.loader import policy_files_in, read_policy_files
from engine.snapshot import FILE_ENTITIES, Snapshot, snapshot_from_rows

ROOT = Path(__file__).resolve().parents[1]
POLICY_DIR = ROOT / "policies"
OUT_FILE = ROOT / "bench" / "out" / "engine.json"
AS_OF = dt.date(2026, 12, 4)
TOLERANCE = 1e-9
TARGET_RATIO = 0.5


# ── synthetic data ──────────────────────────────────────────────────────────────────────


def demo_rows(accounts: int, seed: int, as_of: dt.date) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The demo snapshot's rows as dicts, entity by entity (accounts first), as its JSONL files hold them."""
    decoder = msgspec.json.Decoder()
    with tempfile.TemporaryDirectory(prefix="csm-bench-") as folder:
        write_demo_snapshot(Path(folder), accounts=accounts, seed=seed, as_of=as_of)
        for entity in FILE_ENTITIES:
            path = Path(folder) / f"{entity}.jsonl"
            with path.open("rb") as lines:
                rows = [decoder.decode(line) for line in lines if line.strip()]
            path.unlink()  # keep the disk footprint to one file at a time
            yield entity, rows


def load_snapshot(entities: Iterator[tuple[str, list[dict[str, Any]]]], as_of: dt.date) -> Snapshot:
    """An engine Snapshot from row dicts, one entity at a time (so only one entity's dicts are in memory)."""
    snapshot = Snapshot(as_of=as_of, accounts=[], rows={})
    account_rows: list[dict[str, Any]] = []
    bad_rows = []
    for entity, rows in entities:
        if entity == "accounts":
            account_rows = rows
            converted, bad = snapshot_from_rows(as_of, {"accounts": rows})
            snapshot.accounts = converted.accounts
        else:
            converted, bad = snapshot_from_rows(as_of, {"accounts": account_rows, entity: rows})
            snapshot.rows[entity] = converted.rows[entity]
        bad_rows.extend(bad)
    if bad_rows:
        raise SystemExit(f"the synthetic snapshot has {len(bad_rows)} bad rows, e.g. {bad_rows[0]}")
    return snapshot


@dataclass
class Facts:
    records: list[dict[str, Any]]
    fold_seconds: float
    finalize_seconds: float


def build_facts(policies: CompiledPolicies, snapshot: Snapshot, as_of: dt.date) -> Facts:
    """Fold every row with the compiled policies (`bind(as_of)`: new_state, folds) and finalize each customer."""
    evaluator = Evaluator(policies, as_of)
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        for account in snapshot.accounts:
            evaluator.add_account(account)
        for entity, row in snapshot.entity_rows():
            evaluator.add_row(entity, row)
        folded = time.perf_counter()
        records = [evaluator.facts(account.id) for account in snapshot.accounts]
        finished = time.perf_counter()
    finally:
        gc.enable()
    return Facts(records, folded - started, finished - folded)


# ── equivalence ─────────────────────────────────────────────────────────────────────────


@dataclass
class Equivalence:
    checked: int = 0
    mismatches: int = 0
    bit_identical: int = 0  # records whose results are equal without any tolerance
    max_float_difference: float = 0.0
    first_mismatch: dict[str, Any] | None = None
    examples: list[str] = field(default_factory=list)  # account ids of the first mismatches

    @property
    def ok(self) -> bool:
        return self.checked > 0 and self.mismatches == 0


def differences(compiled: Any, hand: Any, path: str, found: list[tuple[str, Any, Any]], floats: list[float]) -> None:
    """Where two `msgspec.to_builtins` trees differ: floats to TOLERANCE (relative above 1), else exactly."""
    if isinstance(compiled, bool) or isinstance(hand, bool):
        if type(compiled) is not type(hand) or compiled != hand:
            found.append((path, compiled, hand))
    elif isinstance(compiled, int | float) and isinstance(hand, int | float):
        if isinstance(compiled, float) or isinstance(hand, float):
            difference = abs(compiled - hand)
            if not difference <= TOLERANCE * max(1.0, abs(compiled), abs(hand)):
                found.append((path, compiled, hand))
            elif difference:
                floats.append(difference)
        elif compiled != hand:
            found.append((path, compiled, hand))
    elif isinstance(compiled, dict) and isinstance(hand, dict):
        if list(compiled) != list(hand):
            found.append((f"{path} (keys)", list(compiled), list(hand)))
        for key in compiled:
            if key in hand:
                differences(compiled[key], hand[key], f"{path}.{key}", found, floats)
    elif isinstance(compiled, list) and isinstance(hand, list):
        if len(compiled) != len(hand):
            found.append((f"{path} (length)", len(compiled), len(hand)))
        for index, (left, right) in enumerate(zip(compiled, hand, strict=False)):
            differences(left, right, f"{path}[{index}]", found, floats)
    elif type(compiled) is not type(hand) or compiled != hand:
        found.append((path, compiled, hand))


def check_equivalence(
    decide: Callable[[dict[str, Any]], Any], records: list[dict[str, Any]], as_of: dt.date, policy_hash: str
) -> Equivalence:
    result = Equivalence()
    for facts in records:
        compiled = msgspec.to_builtins(decide(facts))
        hand = msgspec.to_builtins(decide_by_hand(facts, as_of, policy_hash))
        result.checked += 1
        if compiled == hand:
            result.bit_identical += 1
            continue
        found: list[tuple[str, Any, Any]] = []
        floats: list[float] = []
        differences(compiled, hand, "result", found, floats)
        if floats:
            result.max_float_difference = max(result.max_float_difference, *floats)
        if not found:
            continue
        result.mismatches += 1
        if len(result.examples) < 10:
            result.examples.append(facts["account_id"])
        if result.first_mismatch is None:
            result.first_mismatch = {
                "account_id": facts["account_id"],
                "differences": [{"path": p, "compiled": c, "hand": h} for p, c, h in found],
                "facts": msgspec.to_builtins(facts),
                "compiled": compiled,
                "hand": hand,
            }
    return result


# ── timing ──────────────────────────────────────────────────────────────────────────────


@dataclass
class Series:
    """Seconds per repeat for `count` items."""

    count: int
    seconds: list[float] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [self.count / s for s in self.seconds]

    def summary(self) -> dict[str, Any]:
        rates = self.rates
        return {
            "items": self.count,
            "seconds": self.seconds,
            "per_second_median": statistics.median(rates),
            "per_second_min": min(rates),
            "per_second_max": max(rates),
            "microseconds_per_item_median": 1e6 * statistics.median(self.seconds) / self.count,
        }


def time_decide(
    decide: Callable[[dict[str, Any]], Any],
    records: list[dict[str, Any]],
    as_of: dt.date,
    policy_hash: str,
    repeats: int,
) -> tuple[Series, Series]:
    """Both implementations over all records, interleaved, with the garbage collector off."""
    compiled, hand = Series(len(records)), Series(len(records))
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            for facts in records:
                decide(facts)
            compiled.seconds.append(time.perf_counter() - started)
        finally:
            gc.enable()
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            for facts in records:
                decide_by_hand(facts, as_of, policy_hash)
            hand.seconds.append(time.perf_counter() - started)
        finally:
            gc.enable()
    return compiled, hand


def time_pipeline(policies: CompiledPolicies, snapshot: Snapshot, as_of: dt.date, repeats: int) -> Series:
    """`engine.evaluate` over the in-memory snapshot: fold every row, finalize and decide every customer."""
    series = Series(len(snapshot.accounts))
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            results = evaluate(policies, snapshot, as_of)
            series.seconds.append(time.perf_counter() - started)
        finally:
            gc.enable()
        assert len(results) == len(snapshot.accounts)
        del results
    return series


def time_load(repeats: int) -> dict[str, Any]:
    """Reading + validating the policy files, and compiling them, in milliseconds (median of `repeats`)."""
    read_ms, compile_ms, total_ms = [], [], []
    for _ in range(max(repeats, 3)):
        started = time.perf_counter()
        policy_set = read_policy_files(policy_files_in(POLICY_DIR))
        read = time.perf_counter()
        compile_policies(policy_set)
        done = time.perf_counter()
        read_ms.append(1000 * (read - started))
        compile_ms.append(1000 * (done - read))
        total_ms.append(1000 * (done - started))
    return {
        "read_validate_ms_median": statistics.median(read_ms),
        "compile_ms_median": statistics.median(compile_ms),
        "load_compile_ms_median": statistics.median(total_ms),
        "load_compile_ms_min": min(total_ms),
        "load_compile_ms_max": max(total_ms),
    }


# ── report ──────────────────────────────────────────────────────────────────────────────


def rate(value: float) -> str:
    return f"{value:,.0f}"


def span(series: Series) -> str:
    return f"{rate(min(series.rates))} - {rate(max(series.rates))}"


def print_report(console: Console, figures: dict[str, Any], compiled: Series, hand: Series, pipeline: Series) -> None:
    data, eq, load = figures["data"], figures["equivalence"], figures["load"]
    ratio = figures["ratio"]
    table = Table(
        title=f"Engine benchmark: {data['accounts']:,} customers, as_of {figures['as_of']}", title_justify="left"
    )
    table.add_column("measure")
    table.add_column("median", justify="right")
    table.add_column("min - max", justify="right")
    table.add_column("note")
    table.add_row(
        "decide, compiled policies", f"{rate(statistics.median(compiled.rates))} /s", span(compiled),
        f"{figures['decide_compiled']['microseconds_per_item_median']:.2f} µs per customer",
    )  # fmt: skip
    table.add_row(
        "decide, hand-written", f"{rate(statistics.median(hand.rates))} /s", span(hand),
        f"{figures['decide_hand']['microseconds_per_item_median']:.2f} µs per customer",
    )  # fmt: skip
    target = "met" if ratio["median"] >= TARGET_RATIO else "NOT MET"
    table.add_row(
        "ratio compiled / hand", f"{ratio['median']:.3f}", f"{ratio['min']:.3f} - {ratio['max']:.3f}",
        f"target >= {TARGET_RATIO}: {target}",
    )  # fmt: skip
    table.add_row(
        "pipeline (evaluate) customers", f"{rate(statistics.median(pipeline.rates))} /s", span(pipeline),
        "fold + finalize + decide, from rows in memory",
    )  # fmt: skip
    rows_per_s = [data["rows"] / s for s in pipeline.seconds]
    usage_per_s = [data["row_counts"]["usage"] / s for s in pipeline.seconds]
    table.add_row(
        "pipeline (evaluate) rows", f"{rate(statistics.median(rows_per_s))} /s",
        f"{rate(min(rows_per_s))} - {rate(max(rows_per_s))}", f"{data['rows']:,} rows of all entities",
    )  # fmt: skip
    table.add_row(
        "pipeline (evaluate) usage rows", f"{rate(statistics.median(usage_per_s))} /s",
        f"{rate(min(usage_per_s))} - {rate(max(usage_per_s))}", f"{data['row_counts']['usage']:,} usage rows",
    )  # fmt: skip
    table.add_row(
        "  of which fold (Evaluator, 1 run)", f"{rate(data['rows'] / figures['fold_seconds'])} rows/s", "",
        f"{figures['fold_seconds']:.2f} s",
    )  # fmt: skip
    table.add_row(
        "  of which finalize (1 run)", f"{rate(data['accounts'] / figures['finalize_seconds'])} /s", "",
        f"{figures['finalize_seconds']:.2f} s",
    )  # fmt: skip
    table.add_row(
        "policy load + compile", f"{load['load_compile_ms_median']:.1f} ms",
        f"{load['load_compile_ms_min']:.1f} - {load['load_compile_ms_max']:.1f} ms",
        f"read+validate {load['read_validate_ms_median']:.1f} ms, compile {load['compile_ms_median']:.1f} ms",
    )  # fmt: skip
    verdict = "equal" if eq["mismatches"] == 0 else f"{eq['mismatches']:,} MISMATCHES"
    table.add_row(
        "equivalence compiled = hand", verdict, f"{eq['checked']:,} checked",
        f"{eq['bit_identical']:,} bit-identical; max float diff {eq['max_float_difference']:.1e}",
    )  # fmt: skip
    console.print(table)
    console.print(
        f"data: {data['rows']:,} rows ({', '.join(f'{k} {v:,}' for k, v in data['row_counts'].items())}); "
        f"{data['firings']:,} tasks, {data['reasons']:,} reasons; generated + loaded in {data['setup_seconds']:.1f} s"
    )
    env = figures["environment"]
    console.print(
        f"{env['python']} on {env['machine']}, {env['cpus']} CPUs; repeats {figures['repeats']}, "
        f"seed {figures['seed']}; single process; wall time (perf_counter), gc disabled in timed loops"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=20_000, help="synthetic customers (default 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic snapshot (default 7)")
    parser.add_argument("--out", type=Path, default=OUT_FILE, help=f"JSON figures (default {OUT_FILE})")
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.repeats < 1:
        parser.error("--accounts and --repeats must be at least 1")
    console = Console(width=150, highlight=False)

    setup_started = time.perf_counter()
    console.print(f"generating {args.accounts:,} synthetic customers (seed {args.seed}) ...")
    snapshot = load_snapshot(demo_rows(args.accounts, args.seed, AS_OF), AS_OF)
    setup_seconds = time.perf_counter() - setup_started
    policies = load_policies(POLICY_DIR)
    bound = policies.bind(AS_OF)
    facts = build_facts(policies, snapshot, AS_OF)
    records = facts.records

    console.print(f"checking compiled = hand-written on {len(records):,} customers ...")
    eq = check_equivalence(bound.decide, records, AS_OF, policies.content_hash)
    if not eq.ok:
        console.print(f"[bold red]{eq.mismatches:,} of {eq.checked:,} customers differ[/] (first: {eq.examples})")
        first = eq.first_mismatch
        if first is not None:
            console.print(f"first mismatch, account {first['account_id']}:")
            for item in first["differences"][:20]:
                console.print(f"  {item['path']}: compiled {item['compiled']!r} | hand {item['hand']!r}")
            console.print("facts:", first["facts"])

    console.print(f"timing decide, {args.repeats} repeats ...")
    compiled, hand = time_decide(bound.decide, records, AS_OF, policies.content_hash, args.repeats)
    console.print(f"timing the pipeline, {args.repeats} repeats ...")
    pipeline = time_pipeline(policies, snapshot, AS_OF, args.repeats)
    load = time_load(args.repeats)

    results = [bound.decide(f) for f in records]
    row_counts = {entity: len(rows) for entity, rows in snapshot.rows.items()}
    ratios = [h / c for c, h in zip(compiled.seconds, hand.seconds, strict=True)]
    compiled_median = statistics.median(compiled.rates)
    hand_median = statistics.median(hand.rates)
    figures: dict[str, Any] = {
        "benchmark": "engine",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "as_of": AS_OF.isoformat(),
        "seed": args.seed,
        "repeats": args.repeats,
        "policy_hash": policies.content_hash,
        "environment": {
            "python": f"CPython {platform.python_version()}",
            "machine": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "data": {
            "generator": "connectors.demo.write_demo_snapshot",
            "accounts": len(snapshot.accounts),
            "rows": sum(row_counts.values()),
            "row_counts": row_counts,
            "firings": sum(len(r.tasks) for r in results),
            "reasons": sum(len(r.reasons) for r in results),
            "setup_seconds": setup_seconds,
        },
        "equivalence": {
            "checked": eq.checked,
            "mismatches": eq.mismatches,
            "bit_identical": eq.bit_identical,
            "max_float_difference": eq.max_float_difference,
            "tolerance": TOLERANCE,
            "mismatched_accounts": eq.examples,
            "first_mismatch": eq.first_mismatch,
        },
        "decide_compiled": compiled.summary(),
        "decide_hand": hand.summary(),
        "ratio": {
            "median": compiled_median / hand_median,
            "min": min(ratios),
            "max": max(ratios),
            "per_repeat": ratios,
            "target": TARGET_RATIO,
            "target_met": compiled_median / hand_median >= TARGET_RATIO,
        },
        "pipeline": pipeline.summary()
        | {
            "rows_per_second_median": statistics.median(sum(row_counts.values()) / s for s in pipeline.seconds),
            "usage_rows_per_second_median": statistics.median(row_counts.get("usage", 0) / s for s in pipeline.seconds),
        },
        "fold_seconds": facts.fold_seconds,
        "finalize_seconds": facts.finalize_seconds,
        "load": load,
    }
    del results
    print_report(console, figures, compiled, hand, pipeline)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(figures), indent=2) + b"\n")
    console.print(f"figures written to {args.out}")
    if not eq.ok:
        console.print(f"[bold red]FAILED: {eq.mismatches:,} customers differ between compiled and hand-written[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
