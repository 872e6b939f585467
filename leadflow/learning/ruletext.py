"""A level as rule text in the rule language, matching exactly the rows of its groups.

Missing follows the language: ``x == null`` for numbers and true/false fields,
``not is_set(x)`` for text (null or empty), plus the placeholder spellings seen, so the
database matches the same rows the model grouped. The "other" group is written as "set and
none of the known values"; a text list is sorted, constants are JSON-quoted (a valid Python,
so rule, literal).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from leadflow.learning.features import Encoded
from leadflow.learning.levels import Level

MAX_RULE_CHARS = 2000


def number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _quoted(values: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def _member(field: str, values: Sequence[str], *, negate: bool = False) -> str:
    if len(values) == 1:
        return f"{field} {'!=' if negate else '=='} {json.dumps(values[0], ensure_ascii=False)}"
    return f"{field} {'not in' if negate else 'in'} {_quoted(values)}"


def _domains(field: str, domains: Sequence[str]) -> str:
    return " or ".join(f"endswith({field}, {json.dumps(d, ensure_ascii=False)})" for d in domains)


def rule_text(encoded: Encoded, level: Level) -> str | None:
    """The rule for ``level``; None when it would match every row (nothing to score)."""
    if len(level.groups) == len(encoded.groups):
        return None
    if encoded.encoding == "number":
        return _number_text(encoded, level)
    if encoded.encoding == "bool":
        return _bool_text(encoded, level)
    return _text_text(encoded, level)


def _number_text(encoded: Encoded, level: Level) -> str:
    field = encoded.field
    groups = encoded.groups
    bins = [g for g in level.groups if groups[g].kind == "bin"]
    parts: list[str] = []
    runs: list[list[int]] = []
    for g in bins:
        if runs and runs[-1][-1] == g - 1:
            runs[-1].append(g)
        else:
            runs.append([g])
    for run in runs:
        low, high = groups[run[0]].low, groups[run[-1]].high
        conditions = []
        if low is not None:
            conditions.append(f"{field} >= {number(low)}")
        if high is not None:
            conditions.append(f"{field} < {number(high)}")
        parts.append(" and ".join(conditions) or f"{field} != null")
    if any(groups[g].kind == "missing" for g in level.groups):
        parts.append(f"{field} == null")
    if len(parts) > 1:
        parts = [f"({p})" if " and " in p else p for p in parts]
    return " or ".join(parts)


def _bool_text(encoded: Encoded, level: Level) -> str:
    field = encoded.field
    kinds = {encoded.groups[g].kind for g in level.groups}
    if kinds == {"true", "false"}:
        return f"{field} != null"
    words = {"true": field, "false": f"not {field}", "missing": f"{field} == null"}
    return " or ".join(words[k] for k in ("true", "false", "missing") if k in kinds)


def _text_text(encoded: Encoded, level: Level) -> str | None:
    field = encoded.field
    groups = encoded.groups
    kinds = {groups[g].kind for g in level.groups}
    chosen = sorted(str(groups[g].value) for g in level.groups if groups[g].kind == "category")
    placeholders = list(encoded.placeholders)
    email = encoded.encoding == "email"
    if "other" in kinds:
        rest = sorted(set(encoded.known) - set(chosen))
        if "missing" in kinds:
            if not rest:
                return None
            clauses = [f"not is_set({field})", _excluded(field, rest, email)]
            return " or ".join(clauses)
        conditions = [f"is_set({field})"]
        if placeholders:
            conditions.append(_member(field, placeholders, negate=True))
        if rest:
            conditions.append(_excluded(field, rest, email))
        return " and ".join(conditions)
    clauses = []
    if "missing" in kinds:
        clauses.append(f"not is_set({field})")
        if placeholders:
            clauses.append(_member(field, placeholders))
    if chosen:
        clauses.append(_domains(field, chosen) if email else _member(field, chosen))
    return " or ".join(clauses)


def _excluded(field: str, values: Sequence[str], email: bool) -> str:
    if email:
        return f"not ({_domains(field, values)})"
    return _member(field, values, negate=True)


def fits(text: str) -> bool:
    """The language's length limit (2000 characters)."""
    return len(text) <= MAX_RULE_CHARS
