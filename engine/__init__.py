"""The CSM Portal engine: policies in, explained health scores and task firings out.

Pure and deterministic: no I/O beyond reading the policy files you point it at, no clock
(`as_of` is an argument), no database, web or queue imports.

    policies = load_policies(Path("policies"))
    results = evaluate(policies, snapshot, as_of)
"""

from __future__ import annotations

from pathlib import Path

from engine.compiler import CompiledPolicies, compile_policies
from engine.errors import EngineError, ExpressionError, PolicyError, Problem, SnapshotError
from engine.evaluate import Evaluator, evaluate
from engine.loader import PolicySet, policy_files_in, read_policy_files, read_policy_set
from engine.results import AccountResult, Firing, Issue, Reason


def load_policies(source: Path | dict[str, bytes]) -> CompiledPolicies:
    """Read, validate and compile a policy folder (or its files as name -> bytes).

    Raises `PolicyError` with every problem: schema problems and, as far as the set can be
    compiled around them, the names, types and expressions of the rest.
    """
    files = policy_files_in(source) if isinstance(source, Path) else source
    policy_set, problems = read_policy_set(files)
    if policy_set is None:
        raise PolicyError(problems)
    try:
        compiled = compile_policies(policy_set)
    except PolicyError as exc:
        raise PolicyError(sorted([*problems, *exc.problems], key=_position)) from None
    if problems:
        raise PolicyError(problems)
    return compiled


def _position(problem: Problem) -> tuple[str, int, int]:
    return (problem.file, problem.line or 0, problem.column or 0)


__all__ = [
    "AccountResult",
    "CompiledPolicies",
    "EngineError",
    "Evaluator",
    "ExpressionError",
    "Firing",
    "Issue",
    "PolicyError",
    "PolicySet",
    "Problem",
    "Reason",
    "SnapshotError",
    "compile_policies",
    "evaluate",
    "load_policies",
    "policy_files_in",
    "read_policy_files",
]
