"""Text templates of reasons and tasks: `"Last login {days_since_login|count:day} ago"`.

A template is literal text with fields `{name}`, `{name|filter}` or `{name|filter:argument}`;
`{{` and `}}` stand for braces. Names are checked against the scope like expression names, and
filters against the table below, when the policy loads. Templates are compiled into string
concatenations, so rendering is as cheap as hand-written formatting and can do nothing else.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from engine.errors import ExpressionError
from engine.expressions import Name
from engine.types import Kind

MAX_FILTER_ARGUMENT = 80
_FIELD = re.compile(r"(?<!\{)\{\s*([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Filter:
    kinds: tuple[Kind, ...] | None  # None: any kind
    argument: str  # "none", "optional", "required"
    help: str


FILTERS: dict[str, Filter] = {
    "money": Filter((Kind.NUMBER,), "none", "1234567.5 -> 1,234,567.50; whole numbers without decimals"),
    "pct": Filter((Kind.NUMBER,), "none", "a ratio as a percentage: 0.283 -> 28%"),
    "round": Filter((Kind.NUMBER,), "required", "round half up to N decimals: {x|round:1}"),
    "count": Filter(
        (Kind.NUMBER,),
        "required",
        "number and noun, pluralised: {n|count:day} -> 1 day, 3 days; {n|count:child,children}",
    ),
    "or": Filter(None, "required", "text to show when the value is missing: {last_run_at|or:never}"),
    "product_name": Filter((Kind.TEXT,), "none", "a product code as its catalogue name"),
    "product_label": Filter((Kind.TEXT,), "none", "a product code as its short catalogue label"),
}


@dataclass(frozen=True)
class CompiledTemplate:
    source: str
    code: str
    names: frozenset[str]


def _emit_field(name: str, entry: Name, filter_name: str | None, argument: str | None, column: int) -> str:
    if filter_name is None:
        # Cheaper than the general formatter where the type is known and never missing.
        if not entry.type.nullable and entry.type.kind == Kind.TEXT:
            return entry.code
        if not entry.type.nullable and entry.type.kind == Kind.DATE:
            return f"{entry.code}.isoformat()"
        if not entry.type.nullable and entry.type.kind == Kind.NUMBER:
            return f"_fmt_number({entry.code})"
        return f"_fmt({entry.code})"
    spec = FILTERS.get(filter_name)
    if spec is None:
        hint = difflib.get_close_matches(filter_name, list(FILTERS), n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ExpressionError(f"unknown filter '{filter_name}'{suggestion}", column)
    if spec.kinds is not None and entry.type.kind not in spec.kinds:
        raise ExpressionError(
            f"filter '{filter_name}' needs {spec.kinds[0]}, but '{name}' is {entry.type.kind}", column
        )
    if spec.argument == "none" and argument is not None:
        raise ExpressionError(f"filter '{filter_name}' takes no argument", column)
    if spec.argument == "required" and not argument:
        raise ExpressionError(f"filter '{filter_name}' needs an argument: {spec.help}", column)
    if argument is not None and len(argument) > MAX_FILTER_ARGUMENT:
        raise ExpressionError(f"filter argument longer than {MAX_FILTER_ARGUMENT} characters", column)
    value = entry.code
    if filter_name == "money":
        return f"_fmt_money({value})"
    if filter_name == "pct":
        return f"_fmt_pct({value})"
    if filter_name == "round":
        assert argument is not None
        if not argument.isdigit() or int(argument) > 6:
            raise ExpressionError("round needs a number of decimals from 0 to 6", column)
        return f"_fmt_round({value}, {int(argument)})"
    if filter_name == "count":
        assert argument is not None
        singular, _, plural = argument.partition(",")
        return f"_fmt_count({value}, {singular.strip()!r}, {(plural.strip() or singular.strip() + 's')!r})"
    if filter_name == "or":
        return f"_fmt_or({value}, {argument!r})"
    mapping = "PRODUCT_NAMES" if filter_name == "product_name" else "PRODUCT_LABELS"
    return f"_fmt({mapping}.get({value}, {value}))"


def template_names(source: str) -> set[str]:
    """The names a template's fields mention (without checking anything)."""
    return {match.group(1) for match in _FIELD.finditer(source)}


def compile_template(source: str, scope: Mapping[str, Name]) -> CompiledTemplate:
    parts: list[str] = []
    names: set[str] = set()
    literal = ""
    index = 0
    while index < len(source):
        char = source[index]
        if (char == "{" and source.startswith("{{", index)) or (char == "}" and source.startswith("}}", index)):
            literal += char
            index += 2
            continue
        if char == "}":
            raise ExpressionError("single '}' in template (write '}}' for a brace)", index + 1)
        if char != "{":
            literal += char
            index += 1
            continue
        end = source.find("}", index)
        if end < 0:
            raise ExpressionError("unclosed '{' in template", index + 1)
        body = source[index + 1 : end]
        name, _, filter_text = body.partition("|")
        name = name.strip()
        filter_name, _, argument = filter_text.partition(":")
        entry = scope.get(name)
        if entry is None:
            hint = difflib.get_close_matches(name, list(scope), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ExpressionError(f"unknown name '{name}' in template{suggestion}", index + 1)
        names.add(name)
        if literal:
            parts.append(repr(literal))
            literal = ""
        parts.append(
            _emit_field(
                name,
                entry,
                filter_name.strip() or None if filter_text else None,
                argument.strip() if filter_text and ":" in filter_text else None,
                index + 1,
            )
        )
        index = end + 1
    if literal or not parts:
        parts.append(repr(literal))
    return CompiledTemplate(source, " + ".join(parts), frozenset(names))
