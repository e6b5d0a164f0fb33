"""What the overview's and the dashboard's filters share: reading URL parameters, the text search.

Anything invalid is an `InvalidInput` naming the parameter (a 400 for the API, a message on a page).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from server.errors import InvalidInput


def last_value(params: Mapping[str, list[str]], name: str) -> str:
    """The parameter's last non-empty value ("" when it has none)."""
    values = [value for value in params.get(name, []) if value != ""]
    return values[-1] if values else ""


def whole_number(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"'{name}' must be a whole number, not {value[:40]!r}", field=name) from None
    if not low <= number <= high:
        raise InvalidInput(f"'{name}' must be between {low} and {high}", field=name)
    return number


def choices(values: Sequence[str], allowed: Iterable[str], name: str, listed: int = 12) -> list[str]:
    """The chosen values in order, blanks and repeats left out; an unknown one is refused.

    The refusal names the first `listed` allowed values (a long list of rules would drown it).
    """
    allowed_list = list(allowed)
    chosen: list[str] = []
    for value in values:
        if value == "":
            continue
        if value not in allowed_list:
            expected = ", ".join(allowed_list[:listed])
            raise InvalidInput(f"unknown {name} {value[:60]!r}; expected one of {expected}", field=name)
        if value not in chosen:
            chosen.append(value)
    return chosen


def contains_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere; `%` and `_` in it are escaped with a backslash."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
