"""How hard to prune, chosen per history by cross-validation on the training rows only.

One fixed pruning is right for one sample size: three standard errors keep a large history's
real but small effects and drop a small history's. So each ``Pruning`` in ``GRID`` is tried on
``FOLDS`` folds of the training rows (at most ``CV_ROWS`` of them, so a million rows stay
fast), and the one whose rules rank the left-out fold best wins; when the figures are within
``MARGIN`` the fewer rules win. Folds come from the seed: the same history and seed give the
same choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from leadflow.learning.choose import STRICT, Candidate, Chosen, Pruning, candidates, prune
from leadflow.learning.features import Encoded
from leadflow.learning.fit import field_coefs
from leadflow.learning.levels import indicator
from leadflow.learning.metrics import auc

FOLDS = 4
CV_ROWS = 40_000
MARGIN = 0.0005  # AUC: closer than this, cross-validation cannot tell two prunings apart
GRID = tuple(Pruning(z, d) for z in (3.0, 2.0, 1.0, 0.0) for d in (1.0, 0.5))  # strict first


@dataclass(frozen=True)
class Trial:
    pruning: Pruning
    auc: float
    rules: float


def scores(chosen: Sequence[Chosen], rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """The rules' points per row, as the SQL the rules compile to adds them up."""
    total = np.zeros(len(rows), dtype=np.float64)
    for c in chosen:
        total += c.points * indicator(c.encoded, c.level)[rows]
    return total


def sample(
    fields: Sequence[Encoded], train: npt.NDArray[np.intp], y: npt.NDArray[np.bool_], seed: int
) -> tuple[list[Encoded], npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
    """The fields and outcomes of at most ``CV_ROWS`` training rows, and each one's fold."""
    rng = np.random.default_rng([seed, 19])
    rows = np.sort(rng.permutation(train)[:CV_ROWS]) if len(train) > CV_ROWS else train
    folds = rng.permutation(len(rows)) % FOLDS
    return [replace(f, codes=f.codes[rows]) for f in fields], y[rows], folds


def trials(
    fields: Sequence[Encoded],
    y: npt.NDArray[np.bool_],
    folds: npt.NDArray[np.intp],
    max_rules: int,
) -> list[Trial] | None:
    """Every pruning's mean held-out-fold AUC and rules; None when a fold lacks an outcome."""
    aucs = np.zeros((FOLDS, len(GRID)))
    counts = np.zeros((FOLDS, len(GRID)))
    for k in range(FOLDS):
        fit_rows = np.flatnonzero(folds != k)
        held = np.flatnonzero(folds == k)
        if len(set(y[fit_rows].tolist())) < 2 or len(set(y[held].tolist())) < 2:
            return None
        for j, chosen in enumerate(fold_rules(fields, y, fit_rows, max_rules)):
            aucs[k, j] = auc(scores(chosen, held), y[held])
            counts[k, j] = len(chosen)
    return [
        Trial(p, float(a), float(n))
        for p, a, n in zip(GRID, aucs.mean(axis=0), counts.mean(axis=0), strict=True)
    ]


def fold_rules(
    fields: Sequence[Encoded],
    y: npt.NDArray[np.bool_],
    rows: npt.NDArray[np.intp],
    max_rules: int,
) -> list[list[Chosen]]:
    """The rules each pruning of ``GRID`` chooses from ``rows``; candidates computed once
    per merging strength."""
    coefs = field_coefs(fields, rows, y)
    counts = [f.counts(rows) for f in fields]
    rate = float(y[rows].mean())
    found: dict[float, list[Candidate]] = {}
    out = []
    for pruning in GRID:
        if pruning.distinct not in found:
            found[pruning.distinct] = candidates(
                fields, coefs, counts, max_rules, rate * (1 - rate), pruning.distinct
            )
        out.append(prune(found[pruning.distinct], rows, y, pruning.z_min))
    return out


def best(found: Sequence[Trial]) -> Pruning:
    """The fewest rules among the prunings within ``MARGIN`` of the best AUC (strict first)."""
    top = max(t.auc for t in found)
    close = [t for t in found if t.auc >= top - MARGIN]
    return min(close, key=lambda t: (t.rules, -t.pruning.z_min, -t.pruning.distinct)).pruning


def tune(
    fields: Sequence[Encoded],
    train: npt.NDArray[np.intp],
    y: npt.NDArray[np.bool_],
    max_rules: int,
    seed: int,
) -> Pruning:
    """The pruning for this history: cross-validated on the training rows, else strict."""
    sub_fields, sub_y, folds = sample(fields, train, y, seed)
    found = trials(sub_fields, sub_y, folds, max_rules)
    return STRICT if found is None else best(found)
