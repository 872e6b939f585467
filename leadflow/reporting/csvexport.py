"""CSV export that a spreadsheet can open safely.

Lead data (emails, company names) comes from web forms and imports, so a text cell starting
with ``= + - @`` (or a tab / carriage return, which some spreadsheets skip before reading a
formula) is prefixed with ``'``: the spreadsheet then shows it as text instead of running it.
Numbers are written as numbers; a negative number is data, not a formula.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """A cell value safe to hand to a spreadsheet."""
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping | list | tuple):
        value = json.dumps(value, default=str, ensure_ascii=False)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def export_csv(rows: Iterable[Mapping[str, Any]], path: Path) -> None:
    """Write ``rows`` with a header of every key, in order of first appearance."""
    materialised = list(rows)
    header: dict[str, None] = {}
    for row in materialised:
        header.update(dict.fromkeys(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([neutralise(key) for key in header])
        for row in materialised:
            writer.writerow([neutralise(row.get(key)) for key in header])
