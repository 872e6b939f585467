"""The scikit-learn models: the regularized logistic regression the rules come from, its
refit on the rules themselves, and the naive Bayes it is compared with.

The first fit is on every one-hot group (the "plain logistic regression" a rule set is held
to); the refit is on the chosen rules' indicators, so each rule's points are the best given
the other rules, and its standard error says whether it earns its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import CategoricalNB

from leadflow.learning.features import Encoded, one_hot

C = 1.0  # scikit-learn's default strength: the same plain model the rules are judged against
MAX_ITER = 2000
NEWTON_STEPS = 50
NEWTON_TOL = 1e-9


def logistic(x: sparse.spmatrix, y: npt.NDArray[np.bool_]) -> LogisticRegression:
    model = LogisticRegression(C=C, max_iter=MAX_ITER, tol=1e-6)
    model.fit(x, y)
    return model


@dataclass(frozen=True)
class Refit:
    """Points in log-odds per rule (``coefs``), and their z values (coefficient / error)."""

    coefs: npt.NDArray[np.float64]
    z: npt.NDArray[np.float64]
    cov: npt.NDArray[np.float64]

    def wald(self, columns: Sequence[int]) -> float:
        """The joint Wald statistic of ``columns`` (chi-square with one degree each)."""
        b = self.coefs[list(columns)]
        block = self.cov[np.ix_(list(columns), list(columns))]
        try:
            return float(b @ np.linalg.solve(block, b))
        except np.linalg.LinAlgError:
            return 0.0


def refit(indicators: sparse.csc_matrix, y: npt.NDArray[np.bool_]) -> Refit:
    """The logistic regression on rule indicators (the objective scikit-learn's ``logistic``
    minimizes), by Newton's method: a few steps on a handful of columns, where L-BFGS takes
    dozens; Wald z values come from the same Hessian."""
    design = sparse.hstack(
        [sparse.csc_matrix(np.ones((indicators.shape[0], 1))), indicators], format="csc"
    )
    target = y.astype(np.float64)
    penalty = np.eye(design.shape[1]) / C
    penalty[0, 0] = 0.0  # the intercept is not penalized
    beta = np.zeros(design.shape[1])
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(design @ beta)
        gradient = design.T @ (p - target) + penalty @ beta
        info = (design.T @ sparse.diags(p * (1 - p)) @ design).toarray() + penalty
        step = _solve(info, gradient)
        beta = _damped(design, target, penalty, beta, step)
        if not np.all(np.isfinite(step)) or float(np.abs(step).max()) < NEWTON_TOL:
            break
    p = _sigmoid(design @ beta)
    info = (design.T @ sparse.diags(p * (1 - p)) @ design).toarray() + penalty
    try:
        cov = np.linalg.inv(info)[1:, 1:]
    except np.linalg.LinAlgError:
        cov = np.diag(np.full(len(beta) - 1, np.inf))
    errors = np.sqrt(np.clip(np.diag(cov), 1e-12, None))
    return Refit(coefs=beta[1:], z=beta[1:] / errors, cov=cov)


def _sigmoid(logit: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * logit)), dtype=np.float64)


def _solve(info: npt.NDArray[np.float64], gradient: npt.NDArray[np.float64]) -> Any:
    try:
        return np.linalg.solve(info, gradient)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(info, gradient, rcond=None)[0]


def _loss(
    design: sparse.csc_matrix,
    target: npt.NDArray[np.float64],
    penalty: npt.NDArray[np.float64],
    beta: npt.NDArray[np.float64],
) -> float:
    logit = design @ beta
    nll = np.logaddexp(0.0, logit) - target * logit
    return float(nll.sum() + 0.5 * beta @ penalty @ beta)


def _damped(
    design: sparse.csc_matrix,
    target: npt.NDArray[np.float64],
    penalty: npt.NDArray[np.float64],
    beta: npt.NDArray[np.float64],
    step: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """The Newton step, halved until the loss falls (it always does near the optimum)."""
    before = _loss(design, target, penalty, beta)
    scale = 1.0
    for _ in range(30):
        candidate = beta - scale * step
        if _loss(design, target, penalty, candidate) <= before:
            return candidate
        scale /= 2
    return beta


def field_coefs(
    fields: Sequence[Encoded], rows: npt.NDArray[np.intp], y: npt.NDArray[np.bool_]
) -> list[npt.NDArray[np.float64]]:
    """The plain model fitted on ``rows``: its coefficients, one array per field."""
    return per_field(fields, logistic(one_hot(fields)[rows], y[rows]))


def per_field(
    fields: Sequence[Encoded], model: LogisticRegression
) -> list[npt.NDArray[np.float64]]:
    coefs = np.asarray(model.coef_[0], dtype=np.float64)
    offsets = np.cumsum([0, *(len(f.groups) for f in fields)])
    return [coefs[offsets[i] : offsets[i + 1]] for i in range(len(fields))]


def naive_bayes_scores(
    fields: Sequence[Encoded],
    train: npt.NDArray[np.intp],
    test: npt.NDArray[np.intp],
    y: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """Odoo's approach on the same groups: categorical naive Bayes, P(positive) per test row."""
    codes = np.stack([f.codes for f in fields], axis=1)
    model = CategoricalNB(alpha=1.0, min_categories=[len(f.groups) for f in fields])
    model.fit(codes[train], y[train])
    return np.asarray(model.predict_log_proba(codes[test])[:, 1], dtype=np.float64)
