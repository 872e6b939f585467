"""From the full model's coefficients to at most ``max_rules`` rules that earn their place.

Levels are merged at a tolerance that grows until the candidates are few; the most important
are kept, refitted on their own indicators, and any whose points round to zero or whose
z value is small (noise) is dropped and the rest refitted again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

from leadflow.learning.features import Encoded
from leadflow.learning.fit import refit
from leadflow.learning.levels import Level, Scale, field_levels, importance, indicator
from leadflow.learning.ruletext import fits, rule_text

POINTS_PER_LOGIT = 10 / math.log(2)  # 10 points double the odds
TOLERANCE = 0.1  # log-odds: groups closer than this share a rule
MAX_TOLERANCE = 1.0
Z_MIN = 3.0  # a rule's weight must be three standard errors from zero
REFITS = 4


@dataclass(frozen=True)
class Candidate:
    encoded: Encoded
    level: Level
    text: str
    importance: float


@dataclass(frozen=True)
class Chosen:
    encoded: Encoded
    level: Level
    text: str
    points: int


def candidates(
    fields: Sequence[Encoded],
    coefs: Sequence[npt.NDArray[np.float64]],
    counts: Sequence[npt.NDArray[np.int64]],
    max_rules: int,
    variance: float,
) -> list[Candidate]:
    """Non-baseline levels as rules, most important first, at the smallest tolerance that
    leaves at most twice ``max_rules`` of them."""
    tol = TOLERANCE
    while True:
        found = []
        for encoded, coef, count in zip(fields, coefs, counts, strict=True):
            levels = field_levels(encoded, coef, count, Scale(tol, variance))
            for level in levels[1:]:
                text = rule_text(encoded, level)
                if text is not None and fits(text):
                    found.append(Candidate(encoded, level, text, importance(level, levels[0])))
        if len(found) <= 2 * max_rules or tol >= MAX_TOLERANCE:
            break
        tol *= 1.5
    found.sort(key=lambda c: (-c.importance, c.text))
    return found[:max_rules]


def indicators(chosen: Sequence[Candidate], rows: npt.NDArray[np.intp]) -> sparse.csc_matrix:
    columns = [indicator(c.encoded, c.level)[rows] for c in chosen]
    return sparse.csc_matrix(np.stack(columns, axis=1).astype(np.float64))


def choose(
    fields: Sequence[Encoded],
    coefs: Sequence[npt.NDArray[np.float64]],
    train: npt.NDArray[np.intp],
    y: npt.NDArray[np.bool_],
    max_rules: int,
) -> list[Chosen]:
    """The final rules with integer points, refitted on the training rows."""
    counts = [f.counts(train) for f in fields]
    target = y[train]
    rate = float(target.mean())
    kept = candidates(fields, coefs, counts, max_rules, rate * (1 - rate))
    for attempt in range(REFITS + 1):
        if not kept:
            return []
        result = refit(indicators(kept, train), target)
        points = np.round(result.coefs * POINTS_PER_LOGIT).astype(int)
        earns = (np.abs(result.z) >= Z_MIN) & (points != 0)
        if earns.all() or attempt == REFITS:
            return [
                Chosen(c.encoded, c.level, c.text, int(p))
                for c, p, ok in zip(kept, points, earns, strict=True)
                if ok
            ]
        kept = [c for c, ok in zip(kept, earns, strict=True) if ok]
    raise AssertionError("unreachable")
