"""The expression compiler: what it accepts, what it computes, and how it refuses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from simpleeval import EvalWithCompoundTypes

from engine import runtime
from engine.errors import ExpressionError
from engine.expressions import SET_SUFFIX, Name, compile_expression, narrowed_by
from engine.types import BOOL, DATE, NUMBER, TEXT, TEXT_LIST, Kind, Type

AS_OF = dt.date(2026, 12, 4)
SCOPE = {
    "as_of": Name(DATE, "AS_OF"),
    "logins": Name(NUMBER, "v_logins"),
    "capacity": Name(NUMBER, "v_capacity"),
    "tier": Name(TEXT, "v_tier"),
    "tags": Name(TEXT_LIST, "v_tags"),
    "active": Name(BOOL, "v_active"),
    "renewal": Name(DATE.optional(), "v_renewal"),
    "last_login": Name(NUMBER.optional(), "v_last_login"),
    "outcome": Name(TEXT.optional(), "v_outcome"),
}
VALUES: dict[str, Any] = {
    "logins": 12,
    "capacity": 40,
    "tier": "T2",
    "tags": ["emea", "strategic"],
    "active": True,
    "renewal": dt.date(2027, 1, 3),
    "last_login": None,
    "outcome": "  ",
}


def run(source: str, **overrides: Any) -> Any:
    compiled = compile_expression(source, SCOPE, allow_null=True)
    namespace = dict(runtime.GENERATED_GLOBALS, AS_OF=AS_OF)
    values = {**VALUES, **overrides}
    namespace.update({f"v_{name}": value for name, value in values.items()})
    # The compiler builds a set once for each list that `in` looks into (SET_SUFFIX).
    namespace.update({f"v_{name}{SET_SUFFIX}": frozenset(v) for name, v in values.items() if isinstance(v, list)})
    return eval(compiled.code, namespace)  # the compiled code of a checked expression, as the engine runs it


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("logins + capacity * 2", 92),
        ("logins / capacity", 0.3),
        ("logins // 5 + logins % 5", 4),
        ("-logins + +3", -9),
        ("capacity ** 2", 1600),
        ("0 <= logins <= 12", True),
        ("tier in ('T1', 'T2')", True),
        ("tier not in ('T1',)", True),
        ("'strategic' in tags", True),
        ("active and not logins > 100", True),
        ("100 if logins <= 7 else 0 if logins >= 60 else 100 * (60 - logins) / 53", 100 * 48 / 53),
        ("clamp(150)", 100),
        ("clamp(-5, 0, 10)", 0),
        ("min(3, logins, capacity)", 3),
        ("max(renewal, as_of) if renewal is not None else as_of", dt.date(2027, 1, 3)),
        ("round(2.5)", 3),
        ("round(2.345, 2)", 2.35),
        ("round(-2.5)", -2),
        ("abs(-3) + floor(2.7) + ceil(2.1)", 8),
        ("days_until(renewal)", 30),
        ("days_since(add_days(as_of, -7))", 7),
        ("is_blank(outcome)", True),
        ("coalesce(last_login, 99)", 99),
        ("last_login is None or last_login > 3", True),
        ("len(tags)", 2),
    ],
)
def test_computes_like_python(source: str, expected: Any) -> None:
    assert run(source) == pytest.approx(expected) if isinstance(expected, float) else run(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "logins + capacity * 2 - 7 / 3",
        "0 <= logins <= 12 and capacity > 10 or not active",
        "100 if logins <= 7 else 0 if logins >= 60 else 100 * (60 - logins) / 53",
        "min(3, logins, capacity) + max(1, 2) - abs(-4)",
        "tier in ('T1', 'T2') and 'emea' in tags",
        "(logins + 1) * (capacity - 1) % 7 // 2",
    ],
)
def test_matches_simpleeval(source: str) -> None:
    """simpleeval, the reference interpreter, gives the same value as the compiled code."""
    reference = EvalWithCompoundTypes(names=VALUES, functions={"min": min, "max": max, "abs": abs})
    assert run(source) == reference.eval(source)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("logns > 3", "unknown name 'logns' (did you mean 'logins'?)"),
        ("last_login > 3", "'last_login' may be null here"),
        ("tier > 3", "cannot compare text with number"),
        ("tier * 3", "'*' works on numbers, got text"),
        ("'a' + 'b'", "'+' works on numbers, got text"),
        ("logins", None),  # a number where a condition is needed: see test_condition_needs_bool
        ("logins.bit_length()", "attribute access"),
        ("tags[0]", "indexing"),
        ("[x for x in tags]", "comprehensions are not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("f'{logins}'", "f-strings are not allowed"),
        ("(x := 1)", "assignment (:=) is not allowed"),
        ("x = 1", "assignment is not allowed"),
        ("logins; capacity", "only one expression is allowed"),
        ("logins ** capacity", "'**' needs a constant exponent"),
        ("logins ** 100", "'**' needs a constant exponent"),
        ("logins << 3", "bitwise"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("__import__('os')", "unknown function '__import__'"),
        ("min(logins)", "min() takes 2 to 20 arguments"),
        ("days_since(logins)", "must be date"),
        ("last_login == None", "is None"),
        ("logins is 3", "only compare with None"),
        ("１２", "character U+FF11 is not allowed"),
        ("logins\u202e > 3", "character U+202E is not allowed"),
        ("1" + "+1" * 600, "at most 1000 are allowed"),
        ("-(" * 30 + "1" + ")" * 30, "nested too deeply"),
        ("abs(" * 30 + "1" + ")" * 30, "nested too deeply"),
        ("10**20 + 1", "'**' needs a constant exponent"),
        ("100000000000000000000", "number out of range"),
        ("'" + "a" * 300 + "'", "text constants may be at most 200"),
        ("tier in ('T1', 2)", "cannot look for text among number"),
        ("1 if active else 'x'", "same kind of value"),
        ("", "empty"),
        ("logins >", "syntax error"),
    ],
)
def test_refuses_with_a_clear_message(source: str, fragment: str | None) -> None:
    if fragment is None:
        return
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source, SCOPE, allow_null=True)
    assert fragment in caught.value.message


def test_condition_needs_bool() -> None:
    with pytest.raises(ExpressionError, match="must give true/false, but gives number"):
        compile_expression("logins", SCOPE, expect=Kind.BOOL)


def test_error_columns_point_into_the_expression() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("active and capacty > 3", SCOPE)
    assert caught.value.column == 12


def test_null_result_must_be_allowed() -> None:
    with pytest.raises(ExpressionError, match="may give null"):
        compile_expression("days_until(renewal)", SCOPE)
    assert compile_expression("days_until(renewal)", SCOPE, allow_null=True).type == Type(Kind.NUMBER, True)


def test_requires_makes_names_non_null() -> None:
    compiled = compile_expression("days_until(renewal) <= 30", SCOPE, nonnull=frozenset({"renewal"}))
    assert compiled.type == BOOL
    assert compiled.names == {"renewal"}


def test_narrowing_through_and_or_and_if() -> None:
    assert compile_expression("renewal is not None and days_until(renewal) < 3", SCOPE).type == BOOL
    assert compile_expression("renewal is None or days_until(renewal) < 3", SCOPE).type == BOOL
    assert compile_expression("days_until(renewal) if renewal is not None else 0", SCOPE).type == NUMBER
    assert compile_expression("0 if renewal is None else days_until(renewal)", SCOPE).type == NUMBER
    assert compile_expression("not (renewal is None) and days_until(renewal) > 0", SCOPE).type == BOOL
    assert narrowed_by("renewal is not None and last_login is not None") == {"renewal", "last_login"}
    with pytest.raises(ExpressionError, match="may be null"):
        compile_expression("renewal is not None or days_until(renewal) < 3", SCOPE)
