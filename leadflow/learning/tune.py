"""How readily groups merge, chosen per history by cross-validation on the training rows only.

Each ``Pruning`` in ``GRID`` is tried on ``FOLDS`` folds of the training rows (at most
``CV_ROWS`` of them, so a million rows stay fast), ``REPEATS`` times over when they are few.
Groups merge at half a standard error of their gap (the setting closest to the plain
logistic regression the rules are held to) unless merging at a whole one ranks the left-out
folds better by more than one standard error of the paired per-fold differences
(``SE_RULE``): on a few thousand rows a smaller gain is the luck of the split, and merging
on luck is how a noise field's luckiest range of bins becomes a rule.
Folds come from the seed: the same history and seed give the same choice.

No setting of ``GRID`` drops a rule for its z value: measured on synthetic histories of
2,000-20,000 rows, every threshold above zero (3, 2 or 1 standard errors, whether fixed or
chosen by cross-validation) ranked held-out rows worse than keeping each rule whose points
do not round to zero, because cross-validation on a few thousand rows cannot tell a
threshold that costs 0.01-0.03 AUC from one that costs nothing, and the plain logistic
regression the rules are held to keeps every weight. Noise fields stay out by the joint
field test of ``choose.fields_earn``, not by the threshold.
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
REPEATS = 3
REPEAT_ROWS = 10_000  # fewer training rows than this: folds of under 2,500, cross-validated 3x
CV_ROWS = 40_000
SE_RULE = 1.0  # standard errors by which more merging must rank better to be chosen
GRID = (Pruning(0.0, 0.5), Pruning(0.0, 1.0))  # the default first, then more merging


@dataclass(frozen=True)
class Trial:
    """A pruning's AUC on each left-out fold (every repeat) and its mean rules."""

    pruning: Pruning
    aucs: tuple[float, ...]
    rules: float

    @property
    def auc(self) -> float:
        return float(np.mean(self.aucs))


def scores(chosen: Sequence[Chosen], rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """The rules' points per row, as the SQL the rules compile to adds them up."""
    total = np.zeros(len(rows), dtype=np.float64)
    for c in chosen:
        total += c.points * indicator(c.encoded, c.level)[rows]
    return total


def sample(
    fields: Sequence[Encoded], train: npt.NDArray[np.intp], y: npt.NDArray[np.bool_], seed: int
) -> tuple[list[Encoded], npt.NDArray[np.bool_], npt.NDArray[np.intp]]:
    """The fields and outcomes of at most ``CV_ROWS`` training rows, and each one's fold in
    each repeat: ``REPEATS`` of them below ``REPEAT_ROWS`` training rows (folds of a few
    hundred rows are noisy), else one (larger folds are not, and big histories stay fast)."""
    rng = np.random.default_rng([seed, 19])
    rows = np.sort(rng.permutation(train)[:CV_ROWS]) if len(train) > CV_ROWS else train
    repeats = REPEATS if len(train) < REPEAT_ROWS else 1
    folds = np.stack([rng.permutation(len(rows)) % FOLDS for _ in range(repeats)])
    return [replace(f, codes=f.codes[rows]) for f in fields], y[rows], folds


def trials(
    fields: Sequence[Encoded],
    y: npt.NDArray[np.bool_],
    folds: npt.NDArray[np.intp],
    max_rules: int,
) -> list[Trial] | None:
    """Every pruning's mean held-out-fold AUC and rules over every repeat and fold; None when
    a fold lacks an outcome."""
    aucs = np.zeros((len(folds), FOLDS, len(GRID)))
    counts = np.zeros((len(folds), FOLDS, len(GRID)))
    for r, fold in enumerate(folds):
        for k in range(FOLDS):
            fit_rows = np.flatnonzero(fold != k)
            held = np.flatnonzero(fold == k)
            if len(set(y[fit_rows].tolist())) < 2 or len(set(y[held].tolist())) < 2:
                return None
            for j, chosen in enumerate(fold_rules(fields, y, fit_rows, max_rules)):
                aucs[r, k, j] = auc(scores(chosen, held), y[held])
                counts[r, k, j] = len(chosen)
    per_fold = aucs.reshape(-1, len(GRID))
    return [
        Trial(p, tuple(float(a) for a in per_fold[:, j]), float(counts[..., j].mean()))
        for j, p in enumerate(GRID)
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
    """The first pruning (the default), unless a later one ranks the left-out folds better
    by more than ``SE_RULE`` standard errors of the paired per-fold differences."""
    chosen = found[0]
    for trial in found[1:]:
        gain = np.array(trial.aucs) - np.array(chosen.aucs)
        error = float(gain.std(ddof=1)) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
        if float(gain.mean()) > SE_RULE * error:
            chosen = trial
    return chosen.pruning


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
