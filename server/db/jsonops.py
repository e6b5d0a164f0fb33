"""JSON operations the ORM does not spell the same way on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class json_array_contains(FunctionElement[bool]):  # named like the SQL function it stands for
    """`json_array_contains(column, value)`: the JSON array in `column` has the string `value`."""

    type = Boolean()
    inherit_cache = True
    name = "json_array_contains"


@compiles(json_array_contains, "sqlite")
def _sqlite_contains(element: json_array_contains, compiler: Any, **kw: Any) -> str:
    column, value = list(element.clauses)
    # Both parts are compiled SQL (a column and a bound parameter), never user text.
    return (
        f"EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) "  # noqa: S608
        f"WHERE json_each.value = {compiler.process(value, **kw)})"
    )


@compiles(json_array_contains, "postgresql")
def _postgres_contains(element: json_array_contains, compiler: Any, **kw: Any) -> str:
    column, value = list(element.clauses)
    return f"({compiler.process(column, **kw)} @> jsonb_build_array(CAST({compiler.process(value, **kw)} AS TEXT)))"


def contains(column: Any, value: str) -> ColumnElement[bool]:
    return json_array_contains(column, value)
