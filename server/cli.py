"""The `csm` command line: everything an operator scripts."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import time
from pathlib import Path
from typing import IO

import click
import msgspec
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.demo import write_demo_snapshot
from connectors.files import SnapshotFolderError
from engine import PolicyError, load_policies, policy_files_in
from engine.compiler import CompiledPolicies
from engine.diff import DiffReport
from engine.policytests import run_policy_tests
from server.cli_users import register_user_commands
from server.db.migrate import upgrade
from server.db.models import Run, RunDelivery
from server.db.session import create_engine, session_factory, session_scope
from server.services.after_run import deliver, succeeded_run
from server.services.audit import CLI, record_as
from server.services.crm import CrmSetupError, create_properties
from server.services.demo_history import DEMO_PASSWORD, create_demo_users, run_demo_history, snapshot_folder
from server.services.dry_run import dry_run_folder
from server.services.exports import export_health, export_tasks
from server.services.runs import RunInProgress, RunRefused, RunRequest, enqueue_run, run_in_process
from server.settings import Settings

DEFAULT_POLICY_DIR = Path("policies")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_problems(error: PolicyError) -> None:
    for problem in error.problems:
        subject = f"[bold]{problem.path}[/]: " if problem.path else ""
        err.print(f"[red]{problem.where}[/]: {subject}{problem.message}", soft_wrap=True)
    count = len(error.problems)
    err.print(f"[red bold]{count} problem{'s' if count != 1 else ''}[/] found; nothing was changed.")


def _load(folder: Path) -> CompiledPolicies:
    try:
        return load_policies(folder)
    except PolicyError as exc:
        _print_problems(exc)
        sys.exit(1)


@click.group()
@click.version_option(package_name="csm-portal")
def main() -> None:
    """CSM Portal: explained customer health, policy-as-code task rules, a daily engine."""


@main.group()
def policy() -> None:
    """Validate and test policy folders."""


@policy.command("validate")
@click.argument("folder", type=click.Path(path_type=Path), default=DEFAULT_POLICY_DIR)
def policy_validate(folder: Path) -> None:
    """Check every file, schema, name, type and expression of a policy FOLDER; print every problem."""
    policies = _load(folder)
    out.print(
        f"[green]OK[/] {folder}: {len(policies.sections)} CHI sections, {len(policies.rules)} rules, "
        f"{len(policies.segments)} segments, {len(policies.account_fact_types)} account facts; "
        f"content hash {policies.content_hash[:12]}"
    )


@policy.command("test")
@click.argument("folder", type=click.Path(path_type=Path), default=DEFAULT_POLICY_DIR)
@click.option("--cases", "cases_dir", type=click.Path(path_type=Path), help="Test cases folder (default FOLDER/tests).")
def policy_test(folder: Path, cases_dir: Path | None) -> None:
    """Run the policy test cases (FOLDER/tests/*.yaml) against the policies of FOLDER."""
    policies = _load(folder)
    cases_dir = cases_dir or folder / "tests"
    try:
        outcomes = run_policy_tests(policies, policy_files_in(cases_dir))
    except PolicyError as exc:
        _print_problems(exc)
        sys.exit(1)
    failed = [outcome for outcome in outcomes if not outcome.passed]
    for outcome in failed:
        case = outcome.case
        err.print(f"[red]FAIL[/] {case.file}:{case.line} {case.name}")
        for failure in outcome.failures:
            err.print(f"     {failure}", soft_wrap=True)
    table = Table(show_header=False, box=None)
    table.add_row("cases", str(len(outcomes)))
    table.add_row("passed", f"[green]{len(outcomes) - len(failed)}[/]")
    table.add_row("failed", f"[red]{len(failed)}[/]" if failed else "0")
    out.print(table)
    if failed:
        sys.exit(1)


@policy.command("show-code")
@click.argument("folder", type=click.Path(path_type=Path), default=DEFAULT_POLICY_DIR)
def policy_show_code(folder: Path) -> None:
    """Print the Python the policies compile to (for the curious and for debugging)."""
    click.echo(_load(folder).source)


def _print_dry_run(report: DiffReport) -> None:
    out.print(f"[bold]{report.customers:,}[/] customers compared")
    out.print(
        f"CHI changes for {report.chi_changed:,} (mean change {report.chi_mean_delta:+.2f}); "
        f"tasks {report.tasks_before:,} -> {report.tasks_after:,}: "
        f"[green]+{report.appear:,} appear[/], [red]-{report.disappear:,} disappear[/], "
        f"{report.severity_changed:,} change severity"
    )
    histogram = Table(title="CHI change", show_edge=False)
    for label in report.chi_histogram:
        histogram.add_column(label, justify="right")
    histogram.add_row(*(f"{count:,}" for count in report.chi_histogram.values()))
    out.print(histogram)
    if report.band_moves:
        bands = Table(title="Band moves", show_edge=False)
        bands.add_column("move")
        bands.add_column("customers", justify="right")
        bands.add_column("for example")
        for move, count in report.band_moves.items():
            movers = ", ".join(f"{e.account_id} ({e.chi_before}->{e.chi_after})" for e in report.band_examples[move])
            bands.add_row(move, f"{count:,}", movers)
        out.print(bands)
    rules = Table(title="Tasks by rule", show_edge=False)
    rules.add_column("rule", no_wrap=True)
    for column in ("before", "after", "appear", "disappear", "severity"):
        rules.add_column(column, justify="right")
    rules.add_column("for example")
    for summary in report.rules:
        example = summary.examples[0] if summary.examples else None
        text = (
            f"{example.account_id} {example.change} {example.severity_before or ''}->{example.severity_after or ''}"
            if example
            else ""
        )
        rules.add_row(
            summary.rule,
            f"{summary.before:,}",
            f"{summary.after:,}",
            f"{summary.appear:,}",
            f"{summary.disappear:,}",
            f"{summary.severity:,}",
            text,
        )
    out.print(rules)
    if report.errors_after:
        err.print(f"[red]{report.errors_after:,} customers could not be fully evaluated by the draft[/]")
        for message in report.error_examples:
            err.print(f"  {message}")


@policy.command("dry-run")
@click.argument("draft", type=click.Path(path_type=Path))
@click.option("--snapshot", "snapshot_dir", type=click.Path(path_type=Path), required=True, help="Snapshot folder.")
@click.option("--published", type=click.Path(path_type=Path), default=DEFAULT_POLICY_DIR, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def policy_dry_run(draft: Path, snapshot_dir: Path, published: Path, as_json: bool) -> None:
    """Show what publishing the DRAFT policy folder would change for every customer of a snapshot."""
    current, proposed = _load(published), _load(draft)
    try:
        report, read = dry_run_folder(current, proposed, snapshot_dir)
    except SnapshotFolderError as exc:
        err.print(f"[red]{exc}[/]")
        sys.exit(1)
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(report)).decode())
        return
    if read.bad_row_count:
        err.print(f"[yellow]{read.bad_row_count:,} bad rows skipped[/] (first: {read.bad_rows[0]})")
    _print_dry_run(report)


# ── database, runs, exports ─────────────────────────────────────────────────────────────


def _settings() -> Settings:
    return Settings.from_env()


@main.command("init")
def init_command() -> None:
    """Create the database, or migrate it to the latest schema."""
    settings = _settings()
    asyncio.run(upgrade(settings.database_url))
    out.print(f"[green]database ready[/] at {settings.database_url}")


@main.command("demo-data")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--accounts", default=500, show_default=True, help="Number of customers.")
@click.option("--seed", default=1, show_default=True)
@click.option(
    "--as-of", "as_of", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Snapshot date (default: today)."
)
@click.option("--days", default=91, show_default=True, help="Days of daily usage and activity.")
def demo_data(out_dir: Path, accounts: int, seed: int, as_of: dt.datetime | None, days: int) -> None:
    """Write a deterministic, realistic demo snapshot folder to OUT_DIR."""
    day = as_of.date() if as_of else dt.datetime.now(dt.UTC).date()
    started = time.perf_counter()
    stats = write_demo_snapshot(out_dir, accounts=accounts, seed=seed, as_of=day, days=days)
    out.print(
        f"[green]wrote[/] {out_dir}: {stats.total_rows:,} rows, {stats.bytes_written / 1e6:,.1f} MB, "
        f"{stats.csms} CSMs, as of {day} in {time.perf_counter() - started:.1f} s"
    )


DELIVERY_NAMES = {"digest": "digests", "crm": "CRM write-back"}


def _delivery_line(kind: str, delivery: RunDelivery) -> str:
    """One line per delivery after a run: "digests: done (sent 12, failed 0)", or why it is off."""
    if delivery.state == "off":
        why = "no SMTP server configured (CSM_SMTP_HOST)" if kind == "digest" else "no CRM configured (CSM_CRM_URL)"
        return f"{DELIVERY_NAMES[kind]}: off, {why}"
    counts = ", ".join(f"{name.replace('_', ' ')} {value:,}" for name, value in sorted(delivery.counts.items()))
    line = f"{DELIVERY_NAMES[kind]}: {delivery.state}" + (f" ({counts})" if counts else "")
    return line + "".join(f"\n  {error}" for error in delivery.errors[:5])


def _print_deliveries(deliveries: dict[str, RunDelivery]) -> None:
    for kind, delivery in deliveries.items():
        out.print(_delivery_line(kind, delivery), markup=False, highlight=False)


def _run_table(run: Run) -> Table:
    table = Table(title=f"Run {run.id} ({run.state}) as of {run.as_of}, policies {run.policy_hash[:12]}")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for name in (
        "customers",
        "scored",
        "opened",
        "updated",
        "resolved",
        "reopened",
        "withheld",
        "chi_points",
        "bad_rows",
        "incomplete_customers",
        "customers_with_errors",
    ):
        table.add_row(name.replace("_", " "), f"{run.counts.get(name, 0):,}")
    for phase, seconds in run.timings.items():
        table.add_row(f"{phase.replace('_', ' ')} (s)", f"{seconds:,.2f}")
    return table


async def _run(
    request: RunRequest, settings: Settings, show_progress: bool
) -> tuple[Run, bool, dict[str, RunDelivery]]:
    engine = create_engine(settings.database_url)
    try:
        await upgrade(settings.database_url)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=err,
            disable=not show_progress,
        ) as bar:
            phases = {
                "read": bar.add_task("reading snapshot", total=None),
                "tasks": bar.add_task("scores and tasks", total=None),
            }

            def progress(phase: str, done: int, total: int) -> None:
                bar.update(phases[phase], completed=done, total=total)

            run, already_done = await run_in_process(session_factory(engine), request, progress)
        if already_done:
            return run, True, {}
        return run, False, await deliver(session_factory(engine), run.id, settings)
    finally:
        await engine.dispose()


@main.command("run")
@click.option("--snapshot", "snapshot_dir", type=click.Path(path_type=Path), default=None, help="Snapshot folder.")
@click.option("--strict", is_flag=True, help="Refuse the snapshot if any row is bad; nothing is written.")
@click.option("--force", is_flag=True, help="Run again even if this snapshot was already run with these policies.")
def run_command(snapshot_dir: Path | None, strict: bool, force: bool) -> None:
    """Run the engine once over a snapshot, in this process (no Redis needed)."""
    settings = _settings()
    folder = snapshot_dir or settings.snapshot_dir
    request = RunRequest(
        folder=folder,
        policy_dir=settings.policy_dir,
        trigger="cli",
        strict=strict,
        force=force,
        chunk_size=settings.chunk_size,
    )
    try:
        run, already, deliveries = asyncio.run(_run(request, settings, err.is_terminal))
    except RunRefused as exc:
        err.print(f"[red]run refused:[/] {exc}")
        sys.exit(1)
    except RunInProgress as exc:
        err.print(f"[yellow]not started here:[/] {exc}")
        sys.exit(1)
    except PolicyError as exc:
        _print_problems(exc)
        sys.exit(1)
    if already:
        out.print(f"run {run.id} already processed this snapshot with these policies (use --force to run again)")
    out.print(_run_table(run))
    _print_deliveries(deliveries)
    if run.bad_rows:
        err.print(f"[yellow]{run.counts.get('bad_rows', 0):,} bad rows skipped[/], for example:")
        for bad in run.bad_rows[:5]:
            err.print(f"  {bad['file']}:{bad['line']}: {bad.get('field') or ''} {bad['message']}")


@main.command("export")
@click.argument("what", type=click.Choice(["health", "tasks"]))
@click.option(
    "--out", "out_file", type=click.Path(path_type=Path), default=None, help="File (default: standard output)."
)
@click.option("--all", "include_inactive", is_flag=True, help="tasks: include resolved tasks.")
def export_command(what: str, out_file: Path | None, include_inactive: bool) -> None:
    """Export health scores or tasks as JSON Lines."""
    settings = _settings()

    async def export(handle: IO[bytes]) -> int:
        engine = create_engine(settings.database_url)
        try:
            async with session_scope(session_factory(engine)) as session:
                today = dt.datetime.now(settings.timezone).date()
                rows = export_health(session) if what == "health" else export_tasks(session, today, include_inactive)
                count = 0
                async for row in rows:
                    handle.write(msgspec.json.encode(row) + b"\n")
                    count += 1
            async with session_scope(session_factory(engine)) as session:
                await record_as(session, CLI, f"export.{what}", detail={"rows": count, "all": include_inactive})
            return count
        finally:
            await engine.dispose()

    if out_file is None:
        count = asyncio.run(export(sys.stdout.buffer))
    else:
        with out_file.open("wb") as handle:
            count = asyncio.run(export(handle))
    err.print(f"{count:,} {what} rows exported")


# ── users, the web server, the demo ─────────────────────────────────────────────────────


@main.group()
def users() -> None:
    """Create and manage users."""


register_user_commands(users)


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def serve_command(host: str, port: int) -> None:
    """Serve the portal and the admin console."""
    settings = _settings()
    asyncio.run(upgrade(settings.database_url))
    uvicorn.run("server.app:create_app", factory=True, host=host, port=port, log_level="info")


@main.command("demo")
@click.option("--accounts", default=600, show_default=True, help="Number of demo customers.")
@click.option("--weeks", default=8, show_default=True, help="Weeks of history before today (one run each).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--no-serve", is_flag=True, help="Prepare everything but do not start the server.")
def demo_command(accounts: int, weeks: int, host: str, port: int, no_serve: bool) -> None:
    """Set up a demo on this machine (SQLite, no Redis) and serve the portal.

    Demo customers are scored once a week for `--weeks` weeks up to today, the demo CSMs work on
    their tasks in between (so the dashboard has a history), and the demo users are created.
    """
    settings = _settings()
    today = dt.datetime.now(settings.timezone).date()
    root = Path("var/snapshots")

    async def prepare() -> tuple[Run, list[tuple[str, str]], dict[str, RunDelivery]]:
        await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            factory = session_factory(engine)
            with err.status(f"scoring {accounts} demo customers over {weeks + 1} weekly runs"):
                run = await run_demo_history(
                    factory,
                    root,
                    accounts=accounts,
                    as_of=today,
                    weeks=weeks,
                    policy_dir=settings.policy_dir,
                    chunk_size=settings.chunk_size,
                    work=True,
                )
            async with session_scope(factory) as session:
                credentials = await create_demo_users(session, snapshot_folder(root, accounts, today))
            # The demo CSMs exist now: today's run delivers as any run does (off without SMTP and CRM).
            return run, credentials, await deliver(factory, run.id, settings)
        finally:
            await engine.dispose()

    run, credentials, deliveries = asyncio.run(prepare())
    # The console's snapshot folder (CSM_SNAPSHOT_DIR, default var/snapshots/latest) is today's demo snapshot.
    link = root / "latest"
    if link.is_symlink() or not link.exists():
        link.unlink(missing_ok=True)
        link.symlink_to(snapshot_folder(root, accounts, today).name)
    scored, open_tasks = run.counts.get("customers", 0), run.counts.get("opened", 0)
    out.print(f"run {run.id}: {scored:,} customers scored; {open_tasks:,} tasks opened by today's run")
    _print_deliveries(deliveries)
    table = Table(title=f"Sign in at http://{host}:{port} with password {DEMO_PASSWORD!r}")
    table.add_column("email")
    table.add_column("role")
    for email, role in credentials:
        table.add_row(email, role)
    out.print(table)
    if not no_serve:
        uvicorn.run("server.app:create_app", factory=True, host=host, port=port, log_level="warning")


@main.command("worker")
def worker_command() -> None:
    """Run an arq worker (needs CSM_REDIS_URL): the weekday run, chunk jobs, the sweeper."""
    from arq.worker import run_worker

    from server.worker import WorkerSettings

    settings = _settings()
    if not settings.redis_url:
        err.print("[red]CSM_REDIS_URL is not set[/]: workers need Redis. Without it, use `csm run`.")
        sys.exit(1)
    asyncio.run(upgrade(settings.database_url))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_worker(WorkerSettings)  # type: ignore[arg-type]


@main.command("enqueue-run")
@click.option("--snapshot", "snapshot_dir", type=click.Path(path_type=Path), default=None)
@click.option("--force", is_flag=True)
def enqueue_run_command(snapshot_dir: Path | None, force: bool) -> None:
    """Queue a run for the workers (instead of running it in this process)."""
    settings = _settings()
    if not settings.redis_url:
        err.print("[red]CSM_REDIS_URL is not set[/]")
        sys.exit(1)
    redis_url = settings.redis_url

    request = RunRequest(
        folder=snapshot_dir or settings.snapshot_dir, policy_dir=settings.policy_dir, trigger="cli", force=force
    )
    try:
        job = asyncio.run(enqueue_run(redis_url, request))
    except RunRefused as exc:
        err.print(f"[red]run refused:[/] {exc}")
        sys.exit(1)
    out.print(f"queued job {job}")


@main.command("deliver")
@click.option("--run", "run_id", type=int, default=None, help="The run (default: the latest that succeeded).")
def deliver_command(run_id: int | None) -> None:
    """Send what goes out after a run, in this process: the CSMs' digests (each once a day) and the
    CRM write-back (only what changed). For a run whose deliveries failed or found no SMTP or CRM."""
    settings = _settings()

    async def work() -> tuple[int | None, dict[str, RunDelivery]]:
        engine = create_engine(settings.database_url)
        try:
            factory = session_factory(engine)
            async with session_scope(factory) as session:
                chosen = await succeeded_run(session, run_id)
            if chosen is None:
                return None, {}
            return chosen, await deliver(factory, chosen, settings)
        finally:
            await engine.dispose()

    chosen, deliveries = asyncio.run(work())
    if chosen is None:
        err.print(f"[red]no succeeded run{f' {run_id}' if run_id is not None else ''}[/]: nothing to deliver")
        sys.exit(1)
    out.print(f"run {chosen}")
    _print_deliveries(deliveries)


@main.command("crm-setup")
def crm_setup_command() -> None:
    """Create in the CRM (HubSpot) the three company properties the CHI write-back fills, with the
    names of CSM_CRM_PROPERTIES. Safe to run again: properties already there are left as they are."""
    settings = _settings()
    if settings.crm_url is None:
        err.print("[red]CSM_CRM_URL is not set[/]: no CRM to set up")
        sys.exit(1)
    try:
        outcomes = asyncio.run(create_properties(settings))
    except CrmSetupError as exc:
        err.print(f"[red]the CRM set-up failed[/]: {exc}")
        sys.exit(1)
    for name, outcome in outcomes:
        out.print(f"{name}: {outcome}")


if __name__ == "__main__":
    main()
