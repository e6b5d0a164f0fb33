"""The engine's errors: what went wrong in a policy, and where.

Every problem found while loading or compiling a policy set is a `PolicyProblem` that names the
file, the line and column of the offending YAML node, the path inside the document
(`rules[3].severity`) and a plain message. Loading collects every problem it can before giving
up, so `PolicyError` carries a list.
"""

from __future__ import annotations

import msgspec


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with a policy file, located as precisely as we can."""

    file: str
    message: str
    path: str = ""
    line: int | None = None
    column: int | None = None

    @property
    def where(self) -> str:
        """file[:line[:column]]"""
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def __str__(self) -> str:
        subject = f"{self.path}: " if self.path else ""
        return f"{self.where}: {subject}{self.message}"


class EngineError(Exception):
    """Base class of everything the engine raises on purpose."""


class PolicyError(EngineError):
    """A policy set that cannot be used. `problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ExpressionError(EngineError):
    """An expression that is not allowed, does not type-check or names something unknown.

    `column` is 1-based inside the expression text; the loader adds the file position.
    """

    def __init__(self, message: str, column: int | None = None) -> None:
        self.message = message
        self.column = column
        super().__init__(message)


class SnapshotError(EngineError):
    """A snapshot that cannot be evaluated at all (not a bad row: those are reported and skipped)."""
