"""Dry-runs: evaluate a draft policy set beside the published one over one snapshot, write nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connectors.files import ReadReport, SnapshotFolderReader
from engine import Evaluator
from engine.compiler import CompiledPolicies
from engine.diff import DiffReport, PolicyDiff


def evaluate_folder(
    policy_sets: Sequence[CompiledPolicies],
    folder: Path,
) -> tuple[list[Evaluator], ReadReport]:
    """Stream one snapshot folder into one evaluator per policy set (one pass over the files)."""
    reader = SnapshotFolderReader(folder)
    evaluators = [Evaluator(policies, reader.as_of) for policies in policy_sets]

    def sink(entity: str, row: Any) -> None:
        if entity == "accounts":
            for evaluator in evaluators:
                evaluator.add_account(row)
        else:
            for evaluator in evaluators:
                evaluator.add_row(entity, row)

    report = reader.read(sink)
    return evaluators, report


def dry_run_folder(
    published: CompiledPolicies,
    draft: CompiledPolicies,
    folder: Path,
    examples: int = 5,
) -> tuple[DiffReport, ReadReport]:
    """What publishing `draft` would change for every customer of the snapshot in `folder`."""
    (before, after), report = evaluate_folder([published, draft], folder)
    diff = PolicyDiff(examples=examples)
    for old, new in zip(before.results(), after.results(), strict=True):
        diff.add(old, new)
    return diff.report(), report
