"""A history cell as a learning value: placeholders are missing, numbers stored as text are
numbers. Real exports are full of "Select", "N/A" and "-": taken as categories they would earn
rules of their own, so they are one missing group, whatever their case or spacing."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from leadflow.intake.values import BLANKS, InvalidValue, parse_bool, parse_float

PLACEHOLDERS = BLANKS | frozenset(
    {
        "select",
        "unknown",
        "n.a.",
        "nan",
        "?",
        "--",
        "---",
        "undefined",
        "not provided",
        "not specified",
        "unspecified",
        "(blank)",
        "(none)",
        "(not set)",
    }
)


def is_placeholder(text: str) -> bool:
    """Blank or a placeholder such as ``Select`` or `` N/A ``: a missing value."""
    return text.strip().casefold() in PLACEHOLDERS


def to_number(value: Any) -> float | None:
    """A number, also from text (``"1,200"``, ``" 50 "``); None for missing or not a number."""
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, int | float):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else number
    text = str(value).strip()
    if is_placeholder(text):
        return None
    try:
        return parse_float(text)
    except InvalidValue:
        return None


def to_bool(value: Any) -> bool | None:
    """True/False, also from ``1``/``0`` or yes/no words; None for missing or anything else."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return None if value not in (0, 1) else bool(value)
    text = str(value)
    return None if is_placeholder(text) else parse_bool(text, strict=False)


def to_text(value: Any) -> str | None:
    """The text as stored (rules compare exactly), or None when missing or a placeholder."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return None if is_placeholder(text) else text


# Fields the engine writes (the outcome leaks through them) or that depend on the clock.
ENGINE_FIELDS = frozenset(
    {
        "pipeline",
        "stage",
        "round",
        "recycle_count",
        "stuck",
        "fit_score",
        "engagement_score",
        "score",
        "grade",
        "days_in_stage",
        "days_since_created",
        "cadence_done",
        "owner",  # who works the lead (docs/team.md), not what the lead is
    }
)


def learnable(fields: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """Of ``names``, those a learned rule may use (with their kinds, in name order): fields
    of the catalog ``fields`` that people fill in, not the engine's, not datetimes."""
    return {
        name: fields[name]
        for name in sorted(set(names))
        if name in fields and name not in ENGINE_FIELDS and fields[name] != "datetime"
    }
