"""What templates call to format numbers and dates and to draw the server-rendered SVG charts.

Passed to every portal template as `ui`. The charts are plain SVG (CHI dial, sparklines, usage
bars): no script, and only SVG presentation attributes (`stroke=`, `width=`...), which the
page's Content-Security-Policy allows where it forbids `style="..."`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.services import tasks
from server.services.catalog import slug as _slug

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}
DIAL_RADIUS = 15.5
DIAL_CIRCUMFERENCE = 2 * math.pi * DIAL_RADIUS


def money(amount: float | None, currency: str = "", compact: bool = False) -> str:
    if amount is None:
        return "–"
    symbol = SYMBOLS.get(currency)
    if compact and abs(amount) >= 1_000_000:
        text = f"{amount / 1_000_000:,.1f}M"
    elif compact and abs(amount) >= 10_000:
        text = f"{amount / 1_000:,.0f}k"
    else:
        text = f"{amount:,.0f}"
    return f"{symbol}{text}" if symbol else f"{text} {currency}".strip()


def number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def pct(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value * 100:.{digits}f}%"


def points(value: float | None) -> str:
    if value is None:
        return ""
    return f"−{value:.1f}" if value >= 0.05 else "−0"


def date(value: dt.date | dt.datetime | None, with_year: bool = True) -> str:
    if value is None:
        return "–"
    if isinstance(value, dt.datetime):
        value = value.date()
    return value.strftime("%d %b %Y" if with_year else "%d %b").lstrip("0")


def datetime(value: dt.datetime | None) -> str:
    if value is None:
        return "–"
    return value.strftime("%d %b %Y, %H:%M UTC").lstrip("0")


def days(count: int | None, suffix: str = "") -> str:
    if count is None:
        return "–"
    unit = "day" if abs(count) == 1 else "days"
    return f"{count} {unit}{suffix}"


def relative(day: dt.date | None, today: dt.date) -> str:
    if day is None:
        return "–"
    delta = (day - today).days
    if delta == 0:
        return "today"
    if delta == 1:
        return "tomorrow"
    if delta == -1:
        return "yesterday"
    return f"in {delta} days" if delta > 0 else f"{-delta} days ago"


def slug(text: str | None) -> str:
    return _slug(text or "none")


def label(name: str) -> str:
    """A fact or parameter name as words: `days_since_login` -> `days since login`."""
    return name.replace("_", " ")


def value(item: Any) -> str:
    """A fact value for people: ratios as percentages are the caller's job; this keeps it short."""
    if item is None:
        return "–"
    if isinstance(item, bool):
        return "yes" if item else "no"
    if isinstance(item, float):
        if item.is_integer():
            return f"{item:,.0f}"
        return f"{item:,.2f}" if abs(item) < 100 else f"{item:,.0f}"
    if isinstance(item, int):
        return f"{item:,}"
    if isinstance(item, list):
        return ", ".join(value(element) for element in item) or "–"
    return str(item)


def signal_value(name: str, item: Any) -> str:
    if isinstance(item, float) and ("ratio" in name or "utilisation" in name or "share" in name) and item <= 10:
        return pct(item, 1)
    return value(item)


# ── charts ──────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Dial:
    chi: int | None
    dash: str
    colour: str


def dial(chi: int | None, colour: str) -> Dial:
    """The CHI dial: a ring filled to the score (stroke-dasharray), in the band's colour."""
    if chi is None:
        return Dial(None, f"0 {DIAL_CIRCUMFERENCE:.2f}", colour)
    filled = max(0.0, min(100.0, float(chi))) / 100 * DIAL_CIRCUMFERENCE
    return Dial(chi, f"{filled:.2f} {DIAL_CIRCUMFERENCE:.2f}", colour)


@dataclass(frozen=True)
class Spark:
    width: int
    height: int
    line: str  # polyline points
    area: str  # closed polygon under the line
    last: tuple[float, float] | None
    markers: list[tuple[float, str]]  # x of a policy-version change, with its date
    first_value: float | None
    last_value: float | None
    count: int
    span: str

    @property
    def empty(self) -> bool:
        return self.count == 0


def spark(
    series: Sequence[Any],
    width: int = 96,
    height: int = 26,
    low: float = 0.0,
    high: float = 100.0,
    value_of: str = "chi",
) -> Spark:
    """A sparkline of `series` (objects with `as_of`, `chi` and `policy_hash`), fixed 0..100 scale.

    A dashed marker is drawn where the policy version changed between two points.
    """
    pad = 2.5
    items = [item for item in series if getattr(item, value_of, None) is not None]
    if not items:
        return Spark(width, height, "", "", None, [], None, None, 0, "")
    span = (high - low) or 1.0
    step = (width - 2 * pad) / max(1, len(items) - 1)
    coordinates = []
    for index, item in enumerate(items):
        x = pad + index * step if len(items) > 1 else width / 2
        y = pad + (height - 2 * pad) * (1 - (float(getattr(item, value_of)) - low) / span)
        coordinates.append((round(x, 1), round(min(height - pad, max(pad, y)), 1)))
    line = " ".join(f"{x},{y}" for x, y in coordinates)
    area = f"{coordinates[0][0]},{height} {line} {coordinates[-1][0]},{height}"
    markers = []
    for index in range(1, len(items)):
        if getattr(items[index], "policy_hash", None) != getattr(items[index - 1], "policy_hash", None):
            x = (coordinates[index][0] + coordinates[index - 1][0]) / 2
            markers.append((round(x, 1), date(items[index].as_of)))
    first, last = float(getattr(items[0], value_of)), float(getattr(items[-1], value_of))
    span_text = f"{date(items[0].as_of, False)} – {date(items[-1].as_of, False)}" if len(items) > 1 else ""
    return Spark(width, height, line, area, coordinates[-1], markers, first, last, len(items), span_text)


@dataclass(frozen=True)
class MiniTrend:
    width: int
    height: int
    line: str
    last: tuple[float, float] | None
    count: int


def mini_trend(values: Sequence[float | None], width: int = 120, height: int = 30) -> MiniTrend:
    """A sparkline of plain values scaled to their own range (gaps are skipped)."""
    pad = 3.0
    present = [(index, v) for index, v in enumerate(values) if v is not None]
    if not present:
        return MiniTrend(width, height, "", None, 0)
    numbers = [v for _, v in present]
    low, high = min(numbers), max(numbers)
    if math.isclose(low, high):
        low, high = low - 1, high + 1
    step = (width - 2 * pad) / max(1, len(values) - 1)
    coordinates = [
        (round(pad + index * step, 1), round(pad + (height - 2 * pad) * (1 - (v - low) / (high - low)), 1))
        for index, v in present
    ]
    return MiniTrend(width, height, " ".join(f"{x},{y}" for x, y in coordinates), coordinates[-1], len(present))


def bar_width(ratio: float | None, width: int = 56) -> float:
    if ratio is None:
        return 0.0
    return round(max(0.0, min(1.0, ratio)) * width, 1)


def epoch(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC).timestamp())


def plus_days(day: dt.date, count: int) -> str:
    return (day + dt.timedelta(days=count)).isoformat()


action_label = tasks.action_label


PALETTE_SERIES = ("#2456c9", "#0f766e", "#b26a00", "#6d28d9", "#be185d", "#5b6b7f", "#1f7a3f", "#b3261e")


def chi_chart(history: Sequence[Any], sections: Sequence[Any], bands: Sequence[Any]) -> dict[str, Any]:
    """The CHI tab's interactive chart (uPlot): CHI and each section's score per run."""
    return {
        "kind": "line",
        "title": "CHI and section scores per run",
        "x": [epoch(point.as_of) for point in history],
        "series": [
            {"label": "CHI", "values": [point.chi for point in history], "colour": "#14213d", "width": 2.5},
            *(
                {
                    "label": section.name,
                    "values": [_round(point.sections.get(section.id)) for point in history],
                    "colour": PALETTE_SERIES[index % len(PALETTE_SERIES)],
                    "width": 1.2,
                    "show": False,
                }
                for index, section in enumerate(sections)
            ),
        ],
        "y": {"min": 0, "max": 100},
        "thresholds": [
            {"value": band.min, "colour": band.colour, "label": band.name} for band in bands if band.min > 0
        ],
        "markers": [epoch(point.as_of) for point in history if getattr(point, "policy_changed", False)],
    }


def usage_chart(product: Any, capacity: float | None) -> dict[str, Any]:
    return {
        "kind": "line",
        "title": f"{product.use.label} daily use",
        "x": [epoch(day) for day in product.days],
        "series": [
            {
                "label": "In use",
                "values": list(product.used),
                "colour": "#2456c9",
                "width": 2,
                "fill": "rgba(36,86,201,0.08)",
            },
            *(
                [
                    {
                        "label": "Capacity",
                        "values": [capacity] * len(product.days),
                        "colour": "#b3261e",
                        "width": 1.2,
                        "dash": [5, 4],
                    }
                ]
                if capacity
                else []
            ),
            {"label": "Scans", "values": list(product.scans), "colour": "#0f766e", "width": 1, "show": False},
            {"label": "Failed scans", "values": list(product.failed), "colour": "#b26a00", "width": 1, "show": False},
        ],
    }


def activity_chart(
    days_list: Sequence[dt.date], logins: Sequence[float | None], users: Sequence[float | None]
) -> dict[str, Any]:
    return {
        "kind": "bars",
        "title": "Logins and active users per day",
        "x": [epoch(day) for day in days_list],
        "series": [
            {
                "label": "Logins",
                "values": list(logins),
                "colour": "#2456c9",
                "width": 1.5,
                "fill": "rgba(36,86,201,0.18)",
            },
            {"label": "Active users", "values": list(users), "colour": "#0f766e", "width": 1.5},
        ],
    }


def _round(value: Any) -> float | None:
    return round(float(value), 1) if isinstance(value, int | float) else None


def score_colour(catalog: Any, score: float | None) -> str:
    band = catalog.band_of(round(score)) if score is not None else None
    return str(band.colour) if band else "#5b6b7f"


def part_name(section: Any, part_id: str) -> str:
    return next((name for pid, name, _weight in section.parts if pid == part_id), part_id)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: float


def bars(items: Sequence[tuple[dt.date, float]], width: int = 360, height: int = 120) -> list[Bar]:
    """Vertical bars for (date, value) pairs, scaled to the largest value (for ACV history)."""
    if not items:
        return []
    top = max(value for _, value in items) or 1.0
    gap = 10.0
    usable = height - 22
    bar_w = min(56.0, (width - gap * (len(items) + 1)) / len(items))
    result = []
    for index, (day, value) in enumerate(items):
        h = max(2.0, usable * value / top)
        x = gap + index * (bar_w + gap)
        result.append(
            Bar(round(x, 1), round(usable - h + 4, 1), round(bar_w, 1), round(h, 1), day.strftime("%b %Y"), value)
        )
    return result
