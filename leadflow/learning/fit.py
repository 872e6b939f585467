"""The scikit-learn models: the regularized logistic regression the rules come from, its
refit on the rules themselves, and the naive Bayes it is compared with.

The first fit is on every one-hot group (the "plain logistic regression" a rule set is held
to); the refit is on the chosen rules' indicators, so each rule's points are the best given
the other rules, and its standard error says whether it earns its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import CategoricalNB

from leadflow.learning.features import Encoded

C = 1.0  # scikit-learn's default strength: the same plain model the rules are judged against
MAX_ITER = 2000


def logistic(x: sparse.spmatrix, y: npt.NDArray[np.bool_]) -> LogisticRegression:
    model = LogisticRegression(C=C, max_iter=MAX_ITER, tol=1e-6)
    model.fit(x, y)
    return model


@dataclass(frozen=True)
class Refit:
    """Points in log-odds per rule (``coefs``), and their z values (coefficient / error)."""

    coefs: npt.NDArray[np.float64]
    z: npt.NDArray[np.float64]


def refit(indicators: sparse.csc_matrix, y: npt.NDArray[np.bool_]) -> Refit:
    """The logistic regression on rule indicators, with Wald z values from its Hessian."""
    model = logistic(indicators, y)
    coefs = np.asarray(model.coef_[0], dtype=np.float64)
    p = model.predict_proba(indicators)[:, 1]
    weights = p * (1 - p)
    design = sparse.hstack(
        [sparse.csc_matrix(np.ones((indicators.shape[0], 1))), indicators], format="csc"
    )
    info = (design.T @ sparse.diags(weights) @ design).toarray()
    penalty = np.eye(info.shape[0]) / C
    penalty[0, 0] = 0.0  # the intercept is not penalized
    try:
        cov = np.linalg.inv(info + penalty)
        errors = np.sqrt(np.clip(np.diag(cov)[1:], 1e-12, None))
    except np.linalg.LinAlgError:
        errors = np.full(len(coefs), np.inf)
    return Refit(coefs=coefs, z=coefs / errors)


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
