"""The learned rules and their quality as plain-text tables for a terminal (no markup: the
rule text is data and goes out as written)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leadflow.learning.learn import Learned
    from leadflow.learning.metrics import Band, Quality


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _figure(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _band(band: Band) -> str:
    return f">= {band.low:+d}" if band.high is None else f"{band.low:+d} to <{band.high:+d}"


def calibration_lines(quality: Quality) -> list[str]:
    rows = [
        [_band(b), f"{b.rows:,}", f"{b.positives:,}", f"{b.rate:.1%}"] for b in quality.calibration
    ]
    return _table(["points", "rows", "positive", "rate"], rows, {1, 2, 3})


def render_report(learned: Learned) -> str:
    """What ``leadflow learn`` prints: the rules, then how they rank the held-out rows."""
    lines = [
        f"Learned from {learned.rows:,} rows ({learned.source}; {learned.target}), "
        f"seed {learned.seed}, {learned.holdout_rows:,} held out.",
    ]
    if learned.excluded:
        lines.append(f"Excluded fields: {', '.join(learned.excluded)}.")
    lines += ["", f"Rules ({len(learned.rules)}):"]
    rule_rows = [[f"{r.points:+d}", r.id, r.when] for r in learned.rules]
    lines += _table(["points", "id", "when"], rule_rows, {0}) if rule_rows else ["  (none)"]
    learned_q, current = learned.learned, learned.current
    lines += [
        "",
        f"Held-out rows: {learned_q.rows:,}, of which {learned_q.positives:,} positive.",
    ]
    quality_rows = [
        ["learned rules", _figure(learned_q.auc), _figure(learned_q.lift_top_decile, 2)],
        ["current rules", _figure(current.auc), _figure(current.lift_top_decile, 2)],
    ]
    for name, value in learned.reference.items():
        quality_rows.append([name.replace("_", " ") + " (reference)", _figure(value), ""])
    lines += _table(["scored by", "AUC", "lift top 10%"], quality_rows, {1, 2})
    lines += ["", "Calibration of the learned points (held out):", *calibration_lines(learned_q)]
    return "\n".join(lines) + "\n"
