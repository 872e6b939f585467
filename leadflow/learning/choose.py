"""From the full model's coefficients to at most ``max_rules`` rules that earn their place.

Levels are merged at a tolerance that grows until the candidates are few; the most important
are kept, refitted on their own indicators, and any whose points round to zero, whose z
value is below ``Pruning.z_min`` or whose field does not pass the joint field test (noise) is
dropped and the rest refitted again. How readily groups merge (``Pruning``) is chosen per
history by ``tune``, which keeps every rule the field test keeps (``z_min`` 0); ``STRICT``
(three standard errors) is the fallback when a history is too small to cross-validate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse, stats

from leadflow.learning.features import Encoded
from leadflow.learning.fit import Refit, refit
from leadflow.learning.levels import (
    DISTINCT_Z,
    Level,
    Scale,
    field_levels,
    importance,
    indicator,
)
from leadflow.learning.ruletext import fits, rule_text

POINTS_PER_LOGIT = 10 / math.log(2)  # 10 points double the odds
TOLERANCE = 0.1  # log-odds: groups closer than this share a rule
MAX_TOLERANCE = 1.0
Z_MIN = 3.0  # a rule's weight must be three standard errors from zero
REFITS = 4
Z_FIELD = 3.0  # a field takes part only when its rules together are this sure


@dataclass(frozen=True, order=True)
class Pruning:
    """How sure a rule must be to stay (``z_min`` standard errors from zero) and to stand
    apart from its neighbours (``distinct`` standard errors of their gap)."""

    z_min: float = Z_MIN
    distinct: float = DISTINCT_Z


STRICT = Pruning()


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
    distinct: float = DISTINCT_Z,
) -> list[Candidate]:
    """Non-baseline levels as rules, most important first, at the smallest tolerance that
    leaves at most twice ``max_rules`` of them."""
    tol = TOLERANCE
    while True:
        found = []
        for encoded, coef, count in zip(fields, coefs, counts, strict=True):
            levels = field_levels(encoded, coef, count, Scale(tol, variance, distinct))
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
    pruning: Pruning = STRICT,
) -> list[Chosen]:
    """The final rules with integer points, refitted on the training rows."""
    counts = [f.counts(train) for f in fields]
    rate = float(y[train].mean())
    kept = candidates(fields, coefs, counts, max_rules, rate * (1 - rate), pruning.distinct)
    return prune(kept, train, y, pruning.z_min)


def fields_earn(kept: Sequence[Candidate], result: Refit) -> npt.NDArray[np.bool_]:
    """Per rule: whether its field's rules together are ``Z_FIELD``-sure (a joint Wald test,
    so a U-shape spread over several weak rules counts, a noise field does not)."""
    columns: dict[str, list[int]] = {}
    for i, c in enumerate(kept):
        columns.setdefault(c.encoded.field, []).append(i)
    alpha = 2 * float(stats.norm.sf(Z_FIELD))
    ok = {
        field: result.wald(cols) >= float(stats.chi2.isf(alpha, len(cols)))
        for field, cols in columns.items()
    }
    return np.array([ok[c.encoded.field] for c in kept])


def prune(
    kept: Sequence[Candidate], train: npt.NDArray[np.intp], y: npt.NDArray[np.bool_], z_min: float
) -> list[Chosen]:
    """Refit and drop the rules that do not earn their place until all do: points not zero,
    ``z_min`` standard errors from zero, and a field of their own with one rule at
    fields sure as a whole (so a pure noise field stays out however low ``z_min`` is)."""
    target = y[train]
    kept = list(kept)
    for attempt in range(REFITS + 1):
        if not kept:
            return []
        result = refit(indicators(kept, train), target)
        points = np.round(result.coefs * POINTS_PER_LOGIT).astype(int)
        earns = (np.abs(result.z) >= z_min) & (points != 0)
        earns &= fields_earn(kept, result)
        if earns.all() or attempt == REFITS:
            return [
                Chosen(c.encoded, c.level, c.text, int(p))
                for c, p, ok in zip(kept, points, earns, strict=True)
                if ok
            ]
        kept = [c for c, ok in zip(kept, earns, strict=True) if ok]
    raise AssertionError("unreachable")
