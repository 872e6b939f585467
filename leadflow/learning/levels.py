"""Groups of similar weight become one level: one rule instead of one per group.

A field's groups are merged where the model gives them nearly the same coefficient: numeric
bins only with their neighbours (so a level is a range people can read), other groups in
order of weight (1-D clustering: neighbours in that order are the closest). The level with
the most rows is the field's baseline and gets no rule; every other level is a candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from leadflow.learning.features import Encoded

DISTINCT_Z = 1.0  # groups closer than one standard error of their gap are not told apart


@dataclass(frozen=True)
class Scale:
    """What decides that two weights differ: a tolerance in log-odds, and the outcome's
    variance p(1 - p), from which a group's standard error follows from its rows."""

    tol: float
    variance: float
    distinct: float = DISTINCT_Z


@dataclass(frozen=True)
class Level:
    """Groups of one field that share points; ``weight`` is their mean coefficient and
    ``share`` the fraction of training rows in them."""

    field: str
    groups: tuple[int, ...]
    weight: float
    share: float


def _apart(gap: float, rows_a: float, rows_b: float, scale: Scale) -> float:
    """A gap over what counts as a difference (>= 1: keep apart): the tolerance, or
    the gap's standard error, whichever is larger: small groups merge more readily."""
    error = np.sqrt(
        1 / (scale.variance * max(rows_a, 1.0)) + 1 / (scale.variance * max(rows_b, 1.0))
    )
    return gap / max(scale.tol, scale.distinct * float(error))


def _merge(
    order: Sequence[int],
    coefs: npt.NDArray[np.float64],
    counts: npt.NDArray[np.int64],
    scale: Scale,
) -> list[list[int]]:
    """Agglomerate neighbours (in ``order``) while the closest pair is not apart."""
    clusters = [[g] for g in order]
    weights = [float(counts[g]) for g in order]
    means = [float(coefs[g]) for g in order]
    while len(clusters) > 1:
        gaps = [
            _apart(abs(means[i + 1] - means[i]), weights[i], weights[i + 1], scale)
            for i in range(len(clusters) - 1)
        ]
        i = int(np.argmin(gaps))
        if gaps[i] >= 1.0:
            break
        total = weights[i] + weights[i + 1]
        mean = (means[i] * weights[i] + means[i + 1] * weights[i + 1]) / max(total, 1.0)
        clusters[i : i + 2] = [clusters[i] + clusters[i + 1]]
        weights[i : i + 2] = [total]
        means[i : i + 2] = [mean]
    return clusters


def field_levels(
    encoded: Encoded,
    coefs: npt.NDArray[np.float64],
    counts: npt.NDArray[np.int64],
    scale: Scale,
) -> list[Level]:
    """The field's levels, baseline (most rows) first."""
    groups = encoded.groups
    if encoded.encoding == "number":
        bins = [i for i, g in enumerate(groups) if g.kind == "bin"]
        clusters = _merge(bins, coefs, counts, scale)
        missing = [i for i, g in enumerate(groups) if g.kind == "missing"]
        clusters = _attach(clusters, missing, coefs, counts, scale)
    else:
        order = sorted(range(len(groups)), key=lambda g: (float(coefs[g]), g))
        clusters = _merge(order, coefs, counts, scale)
    total = max(float(counts.sum()), 1.0)
    levels = [
        Level(
            encoded.field, tuple(sorted(c)), _mean(c, coefs, counts), float(counts[c].sum()) / total
        )
        for c in clusters
    ]
    levels.sort(key=lambda lv: (-lv.share, lv.groups))
    return levels


def _attach(
    clusters: list[list[int]],
    extra: Sequence[int],
    coefs: npt.NDArray[np.float64],
    counts: npt.NDArray[np.int64],
    scale: Scale,
) -> list[list[int]]:
    """Each extra group (missing) joins the closest cluster it is not apart from, else
    stands alone."""
    for g in extra:
        gaps = [
            _apart(abs(_mean(c, coefs, counts) - coefs[g]), counts[c].sum(), counts[g], scale)
            for c in clusters
        ]
        if gaps and min(gaps) < 1.0:
            clusters[int(np.argmin(gaps))].append(g)
        else:
            clusters.append([g])
    return clusters


def _mean(
    cluster: Sequence[int], coefs: npt.NDArray[np.float64], counts: npt.NDArray[np.int64]
) -> float:
    weights = counts[list(cluster)].astype(np.float64)
    values = coefs[list(cluster)]
    if weights.sum() <= 0:
        return float(values.mean())
    return float((values * weights).sum() / weights.sum())


def importance(level: Level, baseline: Level) -> float:
    """How much a level's rule moves scores: weight gap times the spread of its indicator."""
    return abs(level.weight - baseline.weight) * float(np.sqrt(level.share * (1 - level.share)))


def indicator(encoded: Encoded, level: Level) -> npt.NDArray[np.bool_]:
    """Rows in the level: what its rule matches (``ruletext`` writes the same set)."""
    return np.isin(encoded.codes, np.array(level.groups, dtype=np.int32))
