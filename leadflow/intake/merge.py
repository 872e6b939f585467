"""How one email's rows merge onto its stored lead (pure: the batches that read and write
the leads are in store.py).

A batch's rows are grouped by normalized email; each group is folded, in file order, onto
the stored lead (if any). For every field and attribute key:

* a row's non-blank value fills a blank;
* within the import, a later row's value replaces an earlier row's;
* it replaces a *stored* value only if the row is newer than the stored lead: always, unless
  the row has an ``updated_at``/``last_modified`` column older than the lead's ``updated_at``;
* values that come from configuration (``source`` default, default time zone) only fill blanks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from leadflow.intake.normalize import NormalizedLead
from leadflow.intake.values import LEAD_FIELDS

DATA_FIELDS = tuple(name for name in LEAD_FIELDS if name != "email")


@dataclass(slots=True)
class LeadState:
    """A stored lead as read at the start of a batch."""

    id: int
    values: dict[str, Any]
    attributes: dict[str, Any]
    status: str
    updated_at: datetime
    rescore_at: datetime | None
    next_action_at: datetime | None


@dataclass(slots=True)
class Fold:
    """One email's rows folded onto its stored lead; ``outcome`` is per row, in order."""

    values: dict[str, Any]
    attributes: dict[str, Any]
    changed: bool
    outcome: list[str]


_ABSENT = object()  # no stored value (None is a stored blank)

# Who set a value during a fold: (index of the row in its group, came from a default).
_Origin = tuple[int, bool]


def fold_rows(state: LeadState | None, leads: list[NormalizedLead]) -> Fold:
    """Apply the merge rules of the module docstring to one email's rows."""
    if len(leads) == 1:  # one row for the address: most of an import, and of a re-import
        lead = leads[0]
        if state is None:
            values: dict[str, Any] = dict.fromkeys(DATA_FIELDS)
            values.update(lead.fields)
            return Fold(values, dict(lead.attributes), True, ["created"])
        if _holds(state.values, lead.fields) and _holds(state.attributes, lead.attributes):
            # every value is stored already: whatever the rules, nothing changes
            return Fold(dict(state.values), dict(state.attributes), False, ["unchanged"])
    return fold_by_rules(state, leads)


def fold_by_rules(state: LeadState | None, leads: list[NormalizedLead]) -> Fold:
    """``fold_rows`` without its shortcuts for one row (tests compare the two)."""
    values: dict[str, Any] = dict.fromkeys(DATA_FIELDS) if state is None else dict(state.values)
    attributes: dict[str, Any] = {} if state is None else dict(state.attributes)
    field_origin: dict[str, _Origin] = {}
    attribute_origin: dict[str, _Origin] = {}
    for index, lead in enumerate(leads):
        newer = (
            state is None
            or lead.source_updated_at is None
            or lead.source_updated_at >= state.updated_at
        )
        _offer(values, field_origin, lead.fields, index, newer, lead.defaults)
        _offer(attributes, attribute_origin, lead.attributes, index, newer, frozenset())
    if state is None:  # changes are measured against what the first row alone created
        base_values: dict[str, Any] = dict.fromkeys(DATA_FIELDS)
        base_values.update(leads[0].fields)
        base_attributes = leads[0].attributes
    else:
        base_values, base_attributes = state.values, state.attributes
    contributors = _changed_by(values, base_values, field_origin) | _changed_by(
        attributes, base_attributes, attribute_origin
    )
    outcome = ["updated" if index in contributors else "unchanged" for index in range(len(leads))]
    if state is None:
        outcome[0] = "created"
    changed = state is None or not (
        _same_dict(values, state.values) and _same_dict(attributes, state.attributes)
    )
    return Fold(values, attributes, changed, outcome)


def _offer(
    target: dict[str, Any],
    origin: dict[str, _Origin],
    incoming: dict[str, Any],
    index: int,
    newer: bool,
    defaults: frozenset[str],
) -> None:
    for name, value in incoming.items():
        blank = _is_blank(target.get(name))
        if name in defaults:
            if blank:
                target[name] = value
                origin[name] = (index, True)
        elif blank or newer or name in origin:
            target[name] = value
            origin[name] = (index, False)


def _changed_by(
    final: dict[str, Any], base: dict[str, Any], origin: dict[str, _Origin]
) -> set[int]:
    """Rows that supplied a final value differing from the baseline."""
    return {
        index
        for name, (index, _default) in origin.items()
        if not _same(final.get(name), base.get(name))
    }


def _holds(stored: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """Whether ``stored`` has every one of ``incoming``'s values already."""
    return all(_same(stored.get(name, _ABSENT), value) for name, value in incoming.items())


def _same_dict(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type: ``True`` is not ``1`` and ``"5"`` is not ``5``."""
    return type(a) is type(b) and bool(a == b)
