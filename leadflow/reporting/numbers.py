"""Rounding rules of the report's figures, applied once when ``build_report`` makes them."""

from __future__ import annotations


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
