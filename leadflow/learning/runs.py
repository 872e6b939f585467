"""What ``leadflow learn``, ``leadflow score evaluate`` and the ``learn`` flow ask of learning:
the request checked before any work, the history read, the model learned or the rules
evaluated, and the proposal written only once it validates."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leadflow.config import ConfigError, LoadedConfig, load_config
from leadflow.learning.history import (
    History,
    history_from_database,
    history_from_file,
    unknown_stage,
)
from leadflow.runtime import Runtime
from leadflow.suggest import did_you_mean

if TYPE_CHECKING:
    from leadflow.learning.learn import Learned, Quality

# ``leadflow.learning.learn`` imports scikit-learn (1-3 s here), so it is imported by the
# functions that learn or judge, never by the engine's import of this module: a tick pays
# nothing for a flow that runs once a month.

MIN_ROWS = 20  # closed leads; fewer cannot be split into a fit and a held-out part
MIN_EACH = 5  # positives and negatives, each


def check_request(
    loaded: LoadedConfig,
    history: Path | None,
    *,
    outcome: str | None,
    positive: str | None,
    exclude: Sequence[str],
) -> str | None:
    """Why the request cannot be served, in one line, or None."""
    if history is not None:
        if not history.is_file():
            return f"{history}: no such file"
        if outcome is None or positive is None:
            return "a history file needs --outcome COLUMN and --positive VALUE"
    else:
        if positive is not None:
            return "--positive is for a history file; the database's outcome is a stage"
        if outcome is not None and (problem := unknown_stage(loaded, outcome)):
            return f"--outcome: {problem}"
    fields = sorted(loaded.catalog.fields)
    for name in exclude:
        if name not in loaded.catalog.fields:
            return f"--exclude: unknown field '{name}'{did_you_mean(name, fields)}"
    return None


def enough(history: History) -> str | None:
    """Why ``history`` is too small to learn from or judge, or None."""
    rows = len(history.outcome)
    positives = sum(1 for won in history.outcome if won)
    if rows < MIN_ROWS or min(positives, rows - positives) < MIN_EACH:
        return (
            f"not enough history: {rows} closed lead(s), {positives} positive ({history.target});"
            f" at least {MIN_ROWS} with {MIN_EACH} of each outcome are needed"
        )
    return None


class NotEnoughHistory(ValueError):
    """Too few closed leads (or of one outcome only) to learn from or judge."""


def read_history(
    rt: Runtime, path: Path | None, *, outcome: str | None, positive: str | None
) -> History:
    if path is not None:
        assert outcome is not None and positive is not None
        history = history_from_file(path, rt.loaded, outcome_column=outcome, positive=positive)
    else:
        with rt.engine.connect() as conn:
            history = history_from_database(conn, rt.loaded, outcome=outcome)
    problem = enough(history)
    if problem:
        raise NotEnoughHistory(problem)
    return history


def learn_from(
    rt: Runtime,
    path: Path | None,
    *,
    outcome: str | None,
    positive: str | None,
    exclude: Sequence[str],
    max_rules: int,
    seed: int,
    grades: bool,
) -> tuple[Learned, dict[str, int] | None, str]:
    """The learned model, the grade floors if asked, and the config text to propose over."""
    from leadflow.learning.learn import grade_thresholds, learn

    history = read_history(rt, path, outcome=outcome, positive=positive)
    learned = learn(history, rt.loaded, exclude=exclude, max_rules=max_rules, seed=seed)
    floors = None
    if grades:
        names = list(rt.loaded.config.scoring.grades)
        floors = grade_thresholds(history, learned.rules, names)
    return learned, floors, rt.loaded.path.read_text(encoding="utf-8")


def evaluate_database(rt: Runtime, *, outcome: str | None) -> tuple[Quality, str]:
    """Today's fit rules judged on the closed leads in the database."""
    from leadflow.learning.learn import evaluate

    history = read_history(rt, None, outcome=outcome, positive=None)
    return evaluate(history, rt.loaded), history.target


def provenance(learned: Learned, *, now: datetime) -> list[str]:
    """The comment above the proposed rules: when, from what, and how good."""
    lines = [
        f"on {now.date().isoformat()} from {learned.rows:,} rows ({learned.source}; "
        f"{learned.target}; seed {learned.seed})",
        f"held-out AUC {learned.learned.auc:.3f} on {learned.holdout_rows:,} rows "
        f"(today's rules {learned.current.auc:.3f}); a proposal: review it before merging",
    ]
    if learned.excluded:
        lines.append(f"fields left out: {', '.join(learned.excluded)}")
    return lines


def write_checked(path: Path, text: str, *, templates: Path) -> LoadedConfig:
    """Write the proposal only if it validates (it always should; if not, nothing is left
    behind and the errors say why)."""
    folder = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=".proposed-", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        loaded = load_config(Path(temporary), templates=templates)
        os.replace(temporary, path)
    except (ConfigError, OSError):
        Path(temporary).unlink(missing_ok=True)
        raise
    return loaded


def render_quality(quality: Quality, *, title: str) -> str:
    """One Quality as text: the headline figures, then the calibration bands."""
    lines = [
        title,
        f"  closed leads {quality.rows:,}, positive {quality.positives:,}",
        f"  AUC {quality.auc:.3f}, lift in the top decile {quality.lift_top_decile:.2f}",
        "  points band      leads  positive   rate",
    ]
    for band in quality.calibration:
        high = "" if band.high is None else str(band.high)
        span = f"{band.low}..{high}" if high else f"{band.low}+"
        lines.append(f"  {span:<14} {band.rows:>7,} {band.positives:>9,} {band.rate:>6.1%}")
    return "\n".join(lines)


def evaluation_figures(rt: Runtime) -> dict[str, Any]:
    """The ``learn`` flow's artifact: today's rules on the closed leads and what learning
    from them would propose (never applied), or why there is not enough history."""
    from leadflow.learning.learn import evaluate, learn

    try:
        history = read_history(rt, None, outcome=None, positive=None)
    except NotEnoughHistory as exc:
        return {"summary": str(exc), "enough_history": False}
    current = evaluate(history, rt.loaded)
    learned = learn(history, rt.loaded)
    return {
        "enough_history": True,
        "target": history.target,
        "closed_leads": current.rows,
        "auc_today": round(current.auc, 4),
        "auc_learned_held_out": round(learned.learned.auc, 4),
        "proposed_rules": [{"id": r.id, "when": r.when, "points": r.points} for r in learned.rules],
        "current": current.as_dict(),
        "learned": learned.as_dict(),
        "summary": (
            f"today's rules AUC {current.auc:.3f} on {current.rows:,} closed leads; "
            f"learned rules would reach {learned.learned.auc:.3f} held out "
            f"({len(learned.rules)} rules; `leadflow learn --out proposed.yaml` to review)"
        ),
    }
