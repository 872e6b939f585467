"""Fit scoring learned from history, written back as fit rules people can read (issue 19).

A ``History`` (closed leads from the database, or a CSV/JSONL file read through intake) is
encoded as one-hot groups per field (``features``), a regularized logistic regression is fitted
on them (``fit``), its coefficients become at most ``max_rules`` rules in the rule language
with integer points (``levels``, ``ruletext``, ``learn``), and both the learned and the current
rules are scored by compiling them to SQL and running them in SQLite (``sqlscore``), the way
production scores, before ``metrics`` compares them on the same held-out rows.

Plain Python and scikit-learn: no Prefect, no flows. The names below load on first use, so
importing ``leadflow.learning.history`` does not import scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leadflow.lazy import lazy_names

if TYPE_CHECKING:
    from leadflow.learning.history import History, history_from_database, history_from_file
    from leadflow.learning.learn import (
        Learned,
        LearnedRule,
        evaluate,
        grade_thresholds,
        learn,
        render_report,
    )
    from leadflow.learning.metrics import Band, Quality

__all__ = [
    "Band",
    "History",
    "Learned",
    "LearnedRule",
    "Quality",
    "evaluate",
    "grade_thresholds",
    "history_from_database",
    "history_from_file",
    "learn",
    "render_report",
]

__getattr__ = lazy_names(
    __name__,
    {
        "Band": "leadflow.learning.metrics",
        "History": "leadflow.learning.history",
        "Learned": "leadflow.learning.learn",
        "LearnedRule": "leadflow.learning.learn",
        "Quality": "leadflow.learning.metrics",
        "evaluate": "leadflow.learning.learn",
        "grade_thresholds": "leadflow.learning.learn",
        "history_from_database": "leadflow.learning.history",
        "history_from_file": "leadflow.learning.history",
        "learn": "leadflow.learning.learn",
        "render_report": "leadflow.learning.learn",
    },
)
