"""The `csm` command line: everything an operator scripts."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table

from connectors.files import SnapshotFolderError
from engine import PolicyError, load_policies, policy_files_in
from engine.compiler import CompiledPolicies
from engine.diff import DiffReport
from engine.policytests import run_policy_tests
from server.services.dry_run import dry_run_folder

DEFAULT_POLICY_DIR = Path("policies")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_problems(error: PolicyError) -> None:
    for problem in error.problems:
        where = problem.file
        if problem.line is not None:
            where += f":{problem.line}" + (f":{problem.column}" if problem.column is not None else "")
        subject = f"[bold]{problem.path}[/]: " if problem.path else ""
        err.print(f"[red]{where}[/]: {subject}{problem.message}", soft_wrap=True)
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
            examples = ", ".join(f"{e.account_id} ({e.chi_before}->{e.chi_after})" for e in report.band_examples[move])
            bands.add_row(move, f"{count:,}", examples)
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
        for example in report.error_examples:
            err.print(f"  {example}")


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
