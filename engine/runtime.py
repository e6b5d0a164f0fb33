"""The helper functions compiled policies call, and nothing else.

The generated code of a policy set runs with exactly these names as its globals (plus the
policy's own constants): no builtins beyond `min`, `max`, `abs`, `len`, `sum`, no modules.
Every helper takes and returns plain values.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from typing import Any

# Binary floating point puts exact halves such as 74.5 at 74.49999999999999 now and then; half up
# is meant on the real value, so a difference below this tolerance counts as the half itself.
ROUNDING_TOLERANCE = 1e-9
MISSING_TEXT = "—"


def round_half_up(value: float, digits: int = 0) -> float:
    if digits == 0:
        return float(math.floor(value + 0.5 + ROUNDING_TOLERANCE))
    scale = 10.0**digits
    return math.floor(value * scale + 0.5 + ROUNDING_TOLERANCE) / scale


def round_score(value: float) -> int:
    """The CHI's rounding: half up, to a whole number."""
    return math.floor(value + 0.5 + ROUNDING_TOLERANCE)


def days_since(as_of: dt.date, day: dt.date | None) -> int | None:
    return None if day is None else (as_of - day).days


def days_until(as_of: dt.date, day: dt.date | None) -> int | None:
    return None if day is None else (day - as_of).days


def add_days(day: dt.date, days: float) -> dt.date:
    if days != int(days):
        raise ValueError(f"add_days() needs a whole number of days, got {days}")
    return day + dt.timedelta(days=int(days))


def is_blank(text: str | None) -> bool:
    return text is None or not text.strip()


def coalesce(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def power(base: float, exponent: float) -> float:
    result: float = float(base) ** exponent
    return result


INTEGER_LIMIT = 2**63


def bounded(value: Any) -> Any:
    """A fact's value, with integers past 64 bits turned into floats (which overflow instead of growing)."""
    if type(value) is int and not -INTEGER_LIMIT < value < INTEGER_LIMIT:
        return float(value)
    return value


def describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def task_id(rule: str, account_id: str, key: str) -> str:
    """The deterministic id of the task a rule opens for a customer and key."""
    digest = hashlib.sha256(f"{rule}\x1f{account_id}\x1f{key}".encode()).hexdigest()
    return digest[:32]


# ── text formatting of template fields ─────────────────────────────────────────────────


def fmt_number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def fmt(value: Any) -> str:
    if value is None:
        return MISSING_TEXT
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return fmt_number(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return ", ".join(fmt(item) for item in value)
    return str(value)


def fmt_money(value: float | None) -> str:
    if value is None:
        return MISSING_TEXT
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def fmt_pct(value: float | None) -> str:
    if value is None:
        return MISSING_TEXT
    return f"{round_score(value * 100)}%"


def fmt_round(value: float | None, digits: int) -> str:
    if value is None:
        return MISSING_TEXT
    return fmt_number(round_half_up(value, digits))


def fmt_count(value: float | None, singular: str, plural: str) -> str:
    if value is None:
        return MISSING_TEXT
    return f"{fmt_number(value)} {singular if value == 1 else plural}"


def fmt_or(value: Any, fallback: str) -> str:
    return fallback if value is None else fmt(value)


def utc_day(moment: dt.datetime | None) -> dt.date | None:
    return None if moment is None else moment.astimezone(dt.UTC).date()


# The globals of generated code. Builtins are cut off explicitly (`__builtins__` empty).
GENERATED_GLOBALS: dict[str, Any] = {
    "__builtins__": {},
    "min": min,
    "max": max,
    "abs": abs,
    "len": len,
    "sum": sum,
    "sorted": sorted,
    "Exception": Exception,
    "_floor": math.floor,
    "_ceil": math.ceil,
    "_clamp": clamp,
    "_round_half_up": round_half_up,
    "_round_score": round_score,
    "_days_since": days_since,
    "_days_until": days_until,
    "_add_days": add_days,
    "_is_blank": is_blank,
    "_coalesce": coalesce,
    "_mean": mean,
    "_power": power,
    "_bounded": bounded,
    "frozenset": frozenset,
    "_fmt": fmt,
    "_fmt_number": fmt_number,
    "_fmt_money": fmt_money,
    "_fmt_pct": fmt_pct,
    "_fmt_round": fmt_round,
    "_fmt_count": fmt_count,
    "_fmt_or": fmt_or,
    "_utc_day": utc_day,
    "_task_id": task_id,
    "_timedelta": dt.timedelta,
}
