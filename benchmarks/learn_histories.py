"""Synthetic closed-lead histories, each from one known generating model, for learning.

Three structurally different models, so that the learner is tuned to no single one:

- ``firmographic`` (``bench_learn.synthetic_history``): categories with known effects, a
  banded company size, ~25% positives.
- ``numeric``: numbers carry the signal (a U-shaped timeline, a threshold on web visits, a
  monotone budget), a true/false field and declared attributes, ~7% positives.
- ``long_tail``: an industry with hundreds of values in a long tail, a title whose absence
  predicts losing (missing not at random), one strong field (source) plus many weak ones,
  company sizes all stored as text with thousands separators, ~20% positives.

Each returns a ``History`` whose ``deal_value`` leaks the outcome; ``IMPORTANT`` and ``NOISE``
name the fields each model does and does not use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.bench_learn import PLACEHOLDERS, synthetic_history
from leadflow.learning.history import History

Generator = Callable[[int, int], History]


def _pick(rng: np.random.Generator, values: list[Any], rows: int, p: Any = None) -> Any:
    return np.array(values, dtype=object)[rng.choice(len(values), size=rows, p=p)]


def _blank(rng: np.random.Generator, values: Any, missing: Any) -> list[Any]:
    """``values`` with the ``missing`` rows written as a random placeholder."""
    out = np.array(values, dtype=object)
    out[missing] = _pick(rng, PLACEHOLDERS, int(missing.sum()))
    return list(out.tolist())


def _leak(rng: np.random.Generator, won: Any) -> list[Any]:
    rows = len(won)
    return list(np.where(won, rng.uniform(1e3, 5e4, rows), None).tolist())


def _outcome(rng: np.random.Generator, logit: Any) -> Any:
    return rng.random(len(logit)) < 1 / (1 + np.exp(-logit))


def numeric_history(rows: int, seed: int = 0) -> History:
    """Numbers carry the signal: timeline_days U-shaped (soon or far beats mid-term),
    web_visits a threshold (5 or more), budget monotone in its logarithm, authority a
    true/false; plan_interest a weak attribute; positives ~7%."""
    rng = np.random.default_rng(seed)
    timeline = rng.integers(0, 366, rows)
    visits = rng.poisson(3.0, rows)
    budget = np.round(np.exp(rng.normal(9.5, 1.3, rows)), -2)
    authority = rng.random(rows) < 0.35
    authority_missing = rng.random(rows) < 0.25
    plan = _pick(rng, ["starter", "team", "enterprise"], rows, p=[0.5, 0.35, 0.15])
    logit = (
        -3.4
        + 1.6 * ((timeline - 180) / 180) ** 2
        + np.where(visits >= 5, 1.1, 0.0)
        + 0.45 * (np.log(budget + 1) - 9.5)
        + np.where(authority_missing, -0.2, np.where(authority, 0.8, 0.0))
        + np.where(plan == "enterprise", 0.3, 0.0)
    )
    won = _outcome(rng, logit)
    budget_missing = rng.random(rows) < 0.12
    visits_text = np.where(rng.random(rows) < 0.3, [f" {v} " for v in visits], visits)
    columns: dict[str, list[Any]] = {
        "timeline_days": timeline.tolist(),
        "web_visits": visits_text.tolist(),
        "budget": _blank(rng, budget, budget_missing),
        "authority": np.where(authority_missing, None, authority).tolist(),
        "plan_interest": _blank(rng, plan, rng.random(rows) < 0.05),
        "company_size": rng.integers(1, 5000, rows).tolist(),  # noise
        "country": _pick(rng, ["US", "GB", "DE", "FR", "IN", "BR"], rows).tolist(),  # noise
        "source": _pick(rng, ["web", "event", "import"], rows).tolist(),  # noise
        "deal_value": _leak(rng, won),
    }
    return History(columns, won.tolist(), "synthetic numeric", "won vs lost")


def _zipf_shares(count: int, power: float) -> Any:
    p = 1.0 / np.arange(1, count + 1) ** power
    return p / p.sum()


def _weak(rng: np.random.Generator, values: list[str], rows: int, scale: float) -> Any:
    """A field with small effects per value: its values and their log-odds."""
    effects = dict(zip(values, rng.normal(0.0, scale, len(values)), strict=True))
    picked = _pick(rng, values, rows)
    return picked, np.array([effects[v] for v in picked.tolist()])


def long_tail_history(rows: int, seed: int = 0) -> History:
    """One strong field (source: referral), a long-tailed industry, a missing title that
    predicts losing, several weak fields, sizes as text with separators; positives ~20%."""
    rng = np.random.default_rng(seed)
    model = np.random.default_rng(1000)  # the effects: the same model for every seed
    industries = [f"industry_{i:03d}" for i in range(300)]
    industry_effect = dict(zip(industries, model.normal(0.0, 0.6, 300), strict=True))
    industry = _pick(rng, industries, rows, p=_zipf_shares(300, 1.1))
    source = _pick(rng, ["web", "event", "referral", "import", "ads"], rows)
    title = _pick(rng, ["Owner", "Manager", "Analyst", "Director", "Consultant"], rows)
    title_missing = rng.random(rows) < 0.3
    size = np.round(np.exp(rng.normal(5.0, 1.8, rows))).astype(np.int64) + 1
    country, country_effect = _weak(model, [f"C{i}" for i in range(20)], rows, 0.15)
    zone, zone_effect = _weak(model, [f"Z{i}" for i in range(8)], rows, 0.12)
    basis, basis_effect = _weak(model, ["consent", "contract", "interest"], rows, 0.12)
    logit = (
        -1.7
        + np.array([industry_effect[v] for v in industry.tolist()])
        + np.where(source == "referral", 2.0, np.where(source == "ads", -0.3, 0.0))
        + np.where(title_missing, -1.0, 0.0)
        + 0.25 * (np.log(size) - 5.0)
        + country_effect
        + zone_effect
        + basis_effect
    )
    won = _outcome(rng, logit)
    columns: dict[str, list[Any]] = {
        "industry": industry.tolist(),
        "source": source.tolist(),
        "title": _blank(rng, title, title_missing),
        "company_size": [f"{v:,}" for v in size.tolist()],
        "country": country.tolist(),
        "timezone": zone.tolist(),
        "lawful_basis": basis.tolist(),
        "need": _pick(rng, ["yes", "maybe", None], rows).tolist(),  # noise
        "web_visits": rng.poisson(2.0, rows).tolist(),  # noise
        "deal_value": _leak(rng, won),
    }
    return History(columns, won.tolist(), "synthetic long tail", "won vs lost")


GENERATORS: dict[str, Generator] = {
    "firmographic": synthetic_history,
    "numeric": numeric_history,
    "long_tail": long_tail_history,
}
IMPORTANT = {
    "firmographic": {"industry", "title", "company_size", "email", "country"},
    "numeric": {"timeline_days", "web_visits", "budget", "authority"},
    "long_tail": {"industry", "source", "title"},
}
NOISE = {
    "firmographic": {"source", "timeline_days", "web_visits"},
    "numeric": {"company_size", "country", "source"},
    "long_tail": {"need", "web_visits"},
}
