"""``learn``: a history in, readable fit rules out, judged against the current rules and two
reference models on the same held-out rows.

The rows are split once (``seed``); everything is fitted on the training part only, and the
learned rules, the config's current fit rules, a plain logistic regression on the same groups
and a naive Bayes are all scored on the held-out part, the rules through SQL as production
scores them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from leadflow.config import LoadedConfig
from leadflow.learning.choose import Chosen, choose
from leadflow.learning.features import Encoded, encode_all, one_hot
from leadflow.learning.fit import logistic, naive_bayes_scores, per_field
from leadflow.learning.history import History
from leadflow.learning.metrics import Band, Quality, auc, quality
from leadflow.learning.report import render_report
from leadflow.learning.sqlscore import score_rows
from leadflow.learning.tune import tune
from leadflow.learning.values import learnable
from leadflow.rules import Rule, compile_rule
from leadflow.rules.fields import LEAD_COLUMNS
from leadflow.rules.fields import catalog as lead_catalog
from leadflow.suggest import did_you_mean

__all__ = [
    "Band",
    "Learned",
    "LearnedRule",
    "Quality",
    "evaluate",
    "grade_thresholds",
    "learn",
    "render_report",
]


@dataclass(frozen=True)
class LearnedRule:
    id: str
    when: str
    points: int


@dataclass(frozen=True)
class Learned:
    rules: list[LearnedRule]
    learned: Quality
    current: Quality
    reference: dict[str, float]
    rows: int
    holdout_rows: int
    target: str
    source: str
    seed: int
    excluded: list[str]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["learned"] = self.learned.as_dict()
        out["current"] = self.current.as_dict()
        out["reference"] = {k: round(v, 4) for k, v in self.reference.items()}
        return out


def outcome_array(history: History) -> npt.NDArray[np.bool_]:
    y = np.array([bool(v) for v in history.outcome], dtype=np.bool_)
    for name, values in history.columns.items():
        if len(values) != len(y):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(y)} outcomes")
    return y


def _fields(history: History, loaded: LoadedConfig, exclude: Collection[str]) -> dict[str, str]:
    known = set(loaded.catalog.fields) | set(history.columns)
    for name in exclude:
        if name not in known:
            raise ValueError(f"cannot exclude unknown field {name!r}{did_you_mean(name, known)}")
    available = [name for name in history.columns if name not in set(exclude)]
    return learnable(loaded.catalog.fields, available)


def split(rows: int, seed: int, holdout: float) -> tuple[npt.NDArray[np.intp], ...]:
    """Training and held-out row numbers, each in row order: the same for the same seed."""
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be between 0 and 1, not {holdout}")
    order = np.random.default_rng(seed).permutation(rows)
    cut = round(rows * holdout)
    return np.sort(order[cut:]), np.sort(order[:cut])


def rule_id(field: str, number: int | None) -> str:
    base = re.sub(r"[^a-z0-9_]+", "_", field.lower()).strip("_")[:48] or "field"
    return f"learned_{base}_{'missing' if number is None else number}"


def named(chosen: Sequence[Chosen]) -> list[LearnedRule]:
    """Ids readable and stable: by field name, then points (highest first)."""
    ordered = sorted(chosen, key=lambda c: (c.encoded.field, -c.points, c.text))
    rules: list[LearnedRule] = []
    numbers: dict[str, int] = {}
    for c in ordered:
        only_missing = [c.encoded.groups[g].kind for g in c.level.groups] == ["missing"]
        if only_missing:
            number = None
        else:
            number = numbers[c.encoded.field] = numbers.get(c.encoded.field, 0) + 1
        rules.append(LearnedRule(rule_id(c.encoded.field, number), c.text, c.points))
    return rules


def compiled(rules: Sequence[LearnedRule], loaded: LoadedConfig) -> list[tuple[float, Rule]]:
    """The rules as the config would compile them (raises RuleError for a bad one)."""
    return [(float(r.points), compile_rule(r.when, loaded.catalog)) for r in rules]


def current_rules(loaded: LoadedConfig) -> list[tuple[float, Rule]]:
    return [(float(points), rule) for _id, points, rule in loaded.fit_rules]


def _scores(
    history: History,
    loaded: LoadedConfig,
    rule_sets: Sequence[Sequence[tuple[float, Rule]]],
    rows: npt.NDArray[np.intp],
) -> list[npt.NDArray[np.float64]]:
    attributes = loaded.config.intake.attributes
    return score_rows(history.columns, loaded.catalog, attributes, rule_sets, rows)


def _references(
    fields: Sequence[Encoded],
    train: npt.NDArray[np.intp],
    test: npt.NDArray[np.intp],
    y: npt.NDArray[np.bool_],
) -> tuple[list[npt.NDArray[np.float64]], dict[str, float]]:
    """The full model's coefficients per field, and the reference models' held-out AUCs."""
    x = one_hot(fields)
    model = logistic(x[train], y[train])
    reference = {
        "logistic_regression": auc(model.decision_function(x[test]), y[test]),
        "naive_bayes": auc(naive_bayes_scores(fields, train, test, y), y[test]),
    }
    return per_field(fields, model), reference


def learn(
    history: History,
    loaded: LoadedConfig,
    *,
    exclude: Collection[str] = (),
    max_rules: int = 25,
    seed: int = 0,
    holdout: float = 0.25,
) -> Learned:
    """Fit rules from ``history``; see the module docstring for what is compared."""
    y = outcome_array(history)
    if y.all() or not y.any():
        raise ValueError("the history needs both positive and negative outcomes to learn from")
    train, test = split(len(y), seed, holdout)
    if not y[train].any() or y[train].all():
        raise ValueError("too few rows of one outcome to learn from")
    fields = encode_all(history.columns, _fields(history, loaded, exclude), len(y))
    rules: list[LearnedRule] = []
    reference = {"logistic_regression": 0.5, "naive_bayes": 0.5}
    if fields:
        coefs, reference = _references(fields, train, test, y)
        pruning = tune(fields, train, y, max_rules, seed)
        rules = named(choose(fields, coefs, train, y, max_rules, pruning))
    learned_scores, current_scores = _scores(
        history, loaded, [compiled(rules, loaded), current_rules(loaded)], test
    )
    return Learned(
        rules=rules,
        learned=quality(learned_scores, y[test]),
        current=quality(current_scores, y[test]),
        reference=reference,
        rows=len(y),
        holdout_rows=len(test),
        target=history.target,
        source=history.source,
        seed=seed,
        excluded=sorted(set(exclude)),
    )


def evaluate(history: History, loaded: LoadedConfig) -> Quality:
    """The config's current fit rules on every row of ``history``."""
    y = outcome_array(history)
    rows = np.arange(len(y))
    (scores,) = _scores(history, loaded, [current_rules(loaded)], rows)
    return quality(scores, y)


def grade_thresholds(
    history: History, rules: Sequence[LearnedRule], grades: Sequence[str]
) -> dict[str, int]:
    """Minimum points per grade, best first, splitting the history's rows into equal parts
    by the rules' points; the last grade is a floor every row reaches."""
    if not grades:
        raise ValueError("at least one grade is needed")
    kinds = dict(history.kinds) if history.kinds is not None else inferred_kinds(history)
    attributes = {name: kind for name, kind in kinds.items() if name not in LEAD_COLUMNS}
    catalog = lead_catalog(attributes)  # type: ignore[arg-type]
    rule_set = [(float(r.points), compile_rule(r.when, catalog)) for r in rules]
    rows = np.arange(len(history.outcome))
    (scores,) = score_rows(history.columns, catalog, attributes, [rule_set], rows)
    return thresholds(scores, grades)


def thresholds(scores: npt.NDArray[np.float64], grades: Sequence[str]) -> dict[str, int]:
    """Equal-frequency cuts, whole points, strictly falling; the last one the lowest score."""
    out: dict[str, int] = {}
    previous: int | None = None
    floor = math.floor(float(scores.min())) if len(scores) else 0
    for i, grade in enumerate(grades):
        last = i == len(grades) - 1
        cut = floor if last else math.ceil(float(np.quantile(scores, 1 - (i + 1) / len(grades))))
        if previous is not None:
            cut = min(cut, previous - 1)
        out[grade] = previous = cut
    return out


def inferred_kinds(history: History) -> dict[str, str]:
    """Field kinds for a history built by hand: the catalog's for lead columns, and for
    other columns the kind of their values (true/false, number, else text)."""
    kinds: dict[str, str] = {}
    for name, values in history.columns.items():
        if name in LEAD_COLUMNS:
            kinds[name] = LEAD_COLUMNS[name]
            continue
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, bool) for v in present):
            kinds[name] = "bool"
        elif present and all(isinstance(v, int | float) for v in present):
            kinds[name] = "float"
        else:
            kinds[name] = "str"
    return kinds
