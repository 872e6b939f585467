"""How well scores rank outcomes: AUC, lift in the top decile, and a calibration table.

AUC says how often a positive outranks a negative; lift says how much richer the top tenth
is than the whole; the table says what each band of points actually converts at, which is
what people set grades from. Ties count fairly: a tie straddling the top-decile cut counts
at its own rate, never by row order.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

BANDS = 5


@dataclass(frozen=True)
class Band:
    """Rows scoring ``low <= points < high`` (no upper end for the last band)."""

    low: int
    high: int | None
    rows: int
    positives: int
    rate: float


@dataclass(frozen=True)
class Quality:
    rows: int
    positives: int
    auc: float
    lift_top_decile: float
    calibration: list[Band]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("auc", "lift_top_decile"):
            out[key] = None if math.isnan(out[key]) else round(out[key], 4)
        for band in out["calibration"]:
            band["rate"] = round(band["rate"], 4)
        return out


def auc(scores: npt.NDArray[np.float64], outcome: npt.NDArray[np.bool_]) -> float:
    """ROC AUC; NaN when only one outcome occurs (nothing to rank)."""
    if outcome.all() or not outcome.any():
        return math.nan
    return float(roc_auc_score(outcome, scores))


def lift_top_decile(scores: npt.NDArray[np.float64], outcome: npt.NDArray[np.bool_]) -> float:
    """Positive rate of the best-scored 10% over the overall rate; ties at the cut at their rate."""
    n = len(scores)
    if n == 0 or not outcome.any():
        return math.nan
    take = max(1, math.ceil(n / 10))
    cut = float(np.sort(scores)[n - take])
    above = scores > cut
    tied = scores == cut
    expected = outcome[above].sum() + (take - above.sum()) * outcome[tied].mean()
    return float((expected / take) / outcome.mean())


def calibration(scores: npt.NDArray[np.float64], outcome: npt.NDArray[np.bool_]) -> list[Band]:
    """Up to ``BANDS`` bands of about equal size, on whole points."""
    if len(scores) == 0:
        return []
    quantiles = np.quantile(scores, np.linspace(0, 1, BANDS + 1)[:-1])
    edges = sorted({math.floor(float(q)) for q in quantiles})
    # a band no row falls in is merged into the band below (small or tied histories)
    uppers = [*edges[1:], math.inf]
    edges = [
        e for i, e in enumerate(edges) if i == 0 or ((scores >= e) & (scores < uppers[i])).any()
    ]
    bands = []
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else None
        inside = (scores >= low) & (scores < high) if high is not None else scores >= low
        rows = int(inside.sum())
        positives = int(outcome[inside].sum())
        bands.append(Band(low, high, rows, positives, positives / rows if rows else 0.0))
    return bands


def quality(scores: npt.NDArray[np.float64], outcome: npt.NDArray[np.bool_]) -> Quality:
    return Quality(
        rows=len(scores),
        positives=int(outcome.sum()),
        auc=auc(scores, outcome),
        lift_top_decile=lift_top_decile(scores, outcome),
        calibration=calibration(scores, outcome),
    )
