"""Rounding rules of the report, so JSON, console and HTML show the same figures."""

from __future__ import annotations

from typing import Any


def ratio(part: float, whole: float | None) -> float | None:
    """``part / whole``, or None when the whole is zero or unknown (no division by zero)."""
    if not whole:
        return None
    return part / whole


def round_rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def round_days(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def round_hours(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def money(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def percent(value: float | None, digits: int = 0) -> str:
    """0.375 -> '38%' for people; n/a when there is nothing to divide."""
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def is_text(value: Any) -> bool:
    """Words align left in tables, figures (numbers, percentages, n/a) right."""
    if value is None or isinstance(value, int | float):
        return False
    text = str(value)
    return not (text.endswith("%") or text == "n/a" or text[:1].isdigit())
