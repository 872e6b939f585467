"""Benchmark ``leadflow.learning.learn`` on a million closed leads against the bare
scikit-learn fit it is built on.

    python -m benchmarks.bench_learn [--rows 1000000] [--seed 0] [--max-rules 25]
                                     [--model firmographic|numeric|long_tail]

Measured: ``learn`` over a synthetic history of ``--rows`` closed leads (a known logistic
model over industry, company size, title, country, e-mail domain and a declared attribute,
plus noise fields, placeholders, blanks and rare categories; ``--model`` picks another
generating model of ``benchmarks.learn_histories``): encoding, the regularized
logistic regression, naive Bayes, the choice and refits of the rules, and scoring the learned
and current rules through SQL on the held-out quarter. Its wall time and its peak RSS (it
runs in a child process of its own) are set next to the bare ``LogisticRegression.fit`` on
the same one-hot matrix (built outside the timing). Targets: ``learn`` <= 60 s and <= 2 GB.

Output: one JSON line, then lines for people.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from benchmarks.common import CONFIG, TEMPLATES, run_phase
from leadflow.learning.history import History

TARGET_SECONDS = 60.0
TARGET_MIB = 2048.0

INDUSTRIES = {  # value -> effect on the log-odds of winning
    "saas": 1.0,
    "fintech": 1.0,
    "ecommerce": 0.9,
    "healthcare": 0.4,
    "logistics": 0.4,
    "retail": 0.0,
    "media": 0.0,
    "manufacturing": -0.2,
    "education": -0.3,
}
TITLES = {
    "VP Sales": 0.9,
    "CTO": 1.0,
    "Head of Data": 0.8,
    "Engineering Manager": 0.4,
    "Director of IT": 0.4,
    "Analyst": -0.2,
    "Intern": -0.8,
    "Student": -0.8,
}
COUNTRIES = {"US": 0.3, "CA": 0.3, "GB": 0.1, "DE": 0.1, "FR": 0.0, "BR": 0.0, "IN": 0.0}
DOMAINS = {"gmail.com": -0.7, "yahoo.com": -0.7, "outlook.com": -0.3}
PLACEHOLDERS = ["Select", "N/A", "", " unknown ", "-", None]
NOISE_SOURCES = ["import", "web", "event", "partner", "referral"]
INTERCEPT = -1.9


def _pick(rng: np.random.Generator, values: list[Any], rows: int, p: Any = None) -> Any:
    return np.array(values, dtype=object)[rng.choice(len(values), size=rows, p=p)]


def _with_missing(rng: np.random.Generator, values: Any, share: float) -> Any:
    missing = rng.random(len(values)) < share
    values = values.copy()
    values[missing] = _pick(rng, PLACEHOLDERS, int(missing.sum()))
    return values, missing


def _effect(values: Any, effects: dict[str, float], missing: Any, when_missing: float) -> Any:
    lookup = np.vectorize(lambda v: effects.get(v, 0.0), otypes=[float])
    return np.where(missing, when_missing, lookup(values))


def _company_size(rng: np.random.Generator, rows: int) -> tuple[Any, Any, Any]:
    size = np.round(np.exp(rng.normal(4.5, 1.6, rows))).astype(np.int64) + 1
    effect = np.where((size >= 50) & (size < 1000), 0.8, np.where(size >= 1000, 0.3, 0.0))
    missing = rng.random(rows) < 0.1
    values = size.astype(object)
    as_text = rng.random(rows) < 0.2  # numbers stored as text, some with separators
    values[as_text] = [f"{v:,}" if v >= 1000 else f" {v} " for v in size[as_text]]
    values[missing] = _pick(rng, PLACEHOLDERS, int(missing.sum()))
    return values, np.where(missing, -0.3, effect), size


def synthetic_history(rows: int, seed: int = 0) -> History:
    """Closed leads from a known model (see the constants above); positives ~ 25%."""
    rng = np.random.default_rng(seed)
    industry = _pick(
        rng,
        [*INDUSTRIES, *(f"rare_{i}" for i in range(40))],
        rows,
        p=_shares(len(INDUSTRIES), 40, 0.08),
    )
    industry, industry_missing = _with_missing(rng, industry, 0.08)
    title, title_missing = _with_missing(rng, _pick(rng, list(TITLES), rows), 0.1)
    country = _pick(rng, list(COUNTRIES), rows)
    domain = _pick(
        rng,
        [*DOMAINS, *(f"corp{i}.example" for i in range(3000))],
        rows,
        p=_shares(len(DOMAINS), 3000, 0.6),
    )
    size, size_effect, true_size = _company_size(rng, rows)
    enterprise = (true_size >= 1000) & (rng.random(rows) < 0.7)
    plan = np.where(enterprise, "enterprise", _pick(rng, ["starter", "team", None], rows))
    logit = (
        INTERCEPT
        + _effect(industry, INDUSTRIES, industry_missing, -0.5)
        + _effect(title, TITLES, title_missing, -0.4)
        + _effect(country, COUNTRIES, np.zeros(rows, dtype=bool), 0.0)
        + _effect(domain, DOMAINS, np.zeros(rows, dtype=bool), 0.0)
        + size_effect
        + np.where(plan == "enterprise", 0.5, 0.0)
    )
    won = rng.random(rows) < 1 / (1 + np.exp(-logit))
    budget = np.where(true_size > 0, true_size * 120.0 * np.exp(rng.normal(0, 0.3, rows)), 0.0)
    columns: dict[str, list[Any]] = {
        "email": [f"lead{i}@{d}" for i, d in enumerate(domain.tolist())],
        "industry": industry.tolist(),
        "title": title.tolist(),
        "country": country.tolist(),
        "company_size": size.tolist(),
        "plan_interest": plan.tolist(),
        "budget": budget.tolist(),  # a proxy of company_size: naive Bayes counts it twice
        "source": _pick(rng, NOISE_SOURCES, rows).tolist(),  # noise
        "timeline_days": rng.integers(0, 365, rows).tolist(),  # noise
        "web_visits": rng.poisson(3, rows).tolist(),  # noise
        "deal_value": np.where(won, rng.uniform(1e3, 5e4, rows), None).tolist(),  # leaks
    }
    return History(columns, won.tolist(), "synthetic", "won vs lost")


def _shares(common: int, rare: int, rare_total: float) -> Any:
    p = np.array([(1 - rare_total) / common] * common + [rare_total / rare] * rare)
    return p / p.sum()


def history_of(model: str, rows: int, seed: int) -> History:
    from benchmarks.learn_histories import GENERATORS

    return GENERATORS[model](rows, seed)


def learn_phase(rows: int, seed: int, max_rules: int, model: str) -> dict[str, Any]:
    """In a child process: build the history, then time ``learn`` and note its memory."""
    from benchmarks.common import peak_rss_mib, reset_peak_rss, rss_mib
    from leadflow.config import load_config
    from leadflow.learning.learn import learn

    loaded = load_config(CONFIG, templates=TEMPLATES)
    history = history_of(model, rows, seed)
    before = rss_mib()
    reset_peak_rss()
    started = time.perf_counter()
    learned = learn(history, loaded, exclude=["deal_value"], max_rules=max_rules, seed=seed)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rules": len(learned.rules),
        "auc": {
            "learned": round(learned.learned.auc, 4),
            "current": round(learned.current.auc, 4),
            **{k: round(v, 4) for k, v in learned.reference.items()},
        },
    }


def bare_fit_phase(rows: int, seed: int, model: str) -> dict[str, Any]:
    """In a child process: ``LogisticRegression.fit`` alone on the matrix ``learn`` fits."""
    from benchmarks.common import peak_rss_mib, reset_peak_rss
    from leadflow.config import load_config
    from leadflow.learning.features import encode_all, one_hot
    from leadflow.learning.fit import logistic
    from leadflow.learning.learn import outcome_array, split
    from leadflow.learning.values import learnable

    loaded = load_config(CONFIG, templates=TEMPLATES)
    history = history_of(model, rows, seed)
    y = outcome_array(history)
    train, _test = split(len(y), seed, 0.25)
    kinds = learnable(loaded.catalog.fields, set(history.columns) - {"deal_value"})
    x = one_hot(encode_all(history.columns, kinds, len(y)))[train]
    reset_peak_rss()
    started = time.perf_counter()
    logistic(x, y[train])
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "matrix": list(x.shape),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rules", type=int, default=25)
    parser.add_argument(
        "--model", choices=["firmographic", "numeric", "long_tail"], default="firmographic"
    )
    args = parser.parse_args()
    learned = run_phase(learn_phase, args.rows, args.seed, args.max_rules, args.model)
    bare = run_phase(bare_fit_phase, args.rows, args.seed, args.model)
    result = {
        "benchmark": "learn",
        "model": args.model,
        "rows": args.rows,
        "learn": learned,
        "bare_fit": bare,
        "ratio": round(learned["seconds"] / bare["seconds"], 2) if bare["seconds"] else None,
        "within_target": learned["seconds"] <= TARGET_SECONDS
        and learned["peak_rss_mib"] <= TARGET_MIB,
    }
    print(json.dumps(result))
    auc = learned["auc"]
    print(
        f"learn: {args.rows:,} rows in {learned['seconds']:.1f} s, peak RSS "
        f"{learned['peak_rss_mib']:,.0f} MiB (history alone {learned['rss_before_mib']:,.0f} MiB); "
        f"bare LogisticRegression.fit on the {bare['matrix'][0]:,} x {bare['matrix'][1]} matrix "
        f"{bare['seconds']:.1f} s; {learned['rules']} rules; held-out AUC learned "
        f"{auc['learned']:.3f}, logistic regression {auc['logistic_regression']:.3f}, naive Bayes "
        f"{auc['naive_bayes']:.3f}, current rules {auc['current']:.3f}; targets "
        f"<= {TARGET_SECONDS:.0f} s and <= {TARGET_MIB:,.0f} MiB: "
        f"{'met' if result['within_target'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
