"""What a model learns from: lead fields per row and whether each row turned out positive.

From the database, closed leads (a stage of kind ``won`` against one of kind ``lost``), or
every lead that ever reached a named stage against closed leads that never did; fields are
read through ``LeadSql``, the same SQL the rules use, so attributes come out as their
declared kinds. From a file, rows are read and normalized exactly as ``leadflow import``
does (``intake.mapping``, declared attributes, conversions), after placeholder cells are
blanked: a "Select" in a number column must not cost the row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, exists, false, or_, select
from sqlalchemy.sql.elements import ColumnElement

from leadflow.config import LoadedConfig
from leadflow.intake.normalize import NormalizedLead, Normalizer, Rejected
from leadflow.intake.readers import RawRow, read_rows
from leadflow.intake.values import clean
from leadflow.learning.values import is_placeholder, learnable
from leadflow.rules.fields import LEAD_COLUMNS, LeadSql
from leadflow.suggest import did_you_mean
from models.tables import LEADS, TRANSITIONS

_NOW = datetime(2000, 1, 1, tzinfo=UTC)  # no clock-dependent field is read
_FETCH = 10_000
_RETRIES = 4


@dataclass(frozen=True)
class History:
    columns: dict[str, Sequence[Any]]  # rule-language field name -> values (None = missing)
    outcome: Sequence[bool]  # True = positive
    source: str  # "database" or the file's path
    target: str  # human words: "won vs lost", "reached stage meeting", "Converted = 1"
    kinds: Mapping[str, str] | None = None  # field kinds, when the reader knew them
    skipped: int = 0  # rows left out (no outcome, unreadable)


def _stage_sets(loaded: LoadedConfig, kind: str) -> list[tuple[str, list[str]]]:
    return [
        (p.id, [s.id for s in p.stages if s.kind == kind])
        for p in loaded.config.pipelines
        if any(s.kind == kind for s in p.stages)
    ]


def _in_stages(sets: list[tuple[str, list[str]]]) -> ColumnElement[bool]:
    lead = LEADS
    parts = [and_(lead.c.pipeline == p, lead.c.stage.in_(stages)) for p, stages in sets]
    return or_(*parts) if parts else false()


def unknown_stage(loaded: LoadedConfig, stage: str) -> str | None:
    """Why ``stage`` cannot be an outcome (no pipeline has it), with the closest name."""
    known = sorted({s.id for p in loaded.config.pipelines for s in p.stages})
    if stage in known:
        return None
    return f"unknown stage '{stage}'{did_you_mean(stage, known)}; stages: {', '.join(known)}"


def _reached(loaded: LoadedConfig, stage: str) -> ColumnElement[bool]:
    problem = unknown_stage(loaded, stage)
    if problem:
        raise ValueError(problem)
    pipelines = [p.id for p in loaded.config.pipelines if p.stage(stage) is not None]
    t = TRANSITIONS
    return exists().where(
        t.c.lead_id == LEADS.c.id, t.c.to_stage == stage, t.c.pipeline.in_(pipelines)
    )


def history_from_database(
    conn: Connection, loaded: LoadedConfig, *, outcome: str | None = None
) -> History:
    """Closed leads, won vs lost; with ``outcome`` (a stage id), leads that reached it vs
    closed leads that never did."""
    closed = or_(_in_stages(_stage_sets(loaded, "won")), _in_stages(_stage_sets(loaded, "lost")))
    if outcome is None:
        positive, where, target = _in_stages(_stage_sets(loaded, "won")), closed, "won vs lost"
    else:
        positive = _reached(loaded, outcome)
        where, target = or_(positive, closed), f"reached stage {outcome}"
    kinds = learnable(loaded.catalog.fields, loaded.catalog.fields)
    sql = LeadSql(dialect=conn.dialect.name, now=_NOW, attributes=loaded.config.intake.attributes)
    statement = (
        select(*[sql.field(name) for name in kinds], positive)
        .select_from(LEADS)
        .where(where)
        .order_by(LEADS.c.id)
    )
    columns: dict[str, list[Any]] = {name: [] for name in kinds}
    outcomes: list[bool] = []
    lists = list(columns.values())
    for rows in conn.execution_options(yield_per=_FETCH).execute(statement).partitions():
        for row in rows:
            for values, value in zip(lists, row, strict=False):
                values.append(value)
            outcomes.append(bool(row[-1]))
    return History(dict(columns), outcomes, "database", target, kinds)


def _outcome_key(data: Mapping[str, str | None], outcome_column: str) -> str:
    if outcome_column in data:
        return outcome_column
    folded = {key.casefold(): key for key in data}
    key = folded.get(outcome_column.strip().casefold())
    if key is None:
        hint = did_you_mean(outcome_column, data)
        raise ValueError(f"no column {outcome_column!r} in the file{hint}")
    return key


def _normalized(normalizer: Normalizer, raw: RawRow) -> tuple[NormalizedLead | None, bool]:
    """The row as import would store it, placeholders blanked; a cell that does not convert
    is blanked and the row tried again. A row without a usable address gets a stand-in one
    (the second value says so): history rows need no address."""
    data = {k: None if v is not None and is_placeholder(v) else v for k, v in raw.data.items()}
    emails = [c for i, c in enumerate(data, 1) if normalizer.target(c, i) == ("field", "email")]
    synthetic = not any(clean(data[c]) for c in emails)
    for _attempt in range(_RETRIES):
        if synthetic:
            stand_in = f"row{raw.number}@history.example"
            data = {**{c: None if c in emails else v for c, v in data.items()}, "email": stand_in}
        result = normalizer.normalize(RawRow(raw.number, data, structured=raw.structured))
        if isinstance(result, NormalizedLead):
            return result, synthetic
        if result.field == "email":
            synthetic = True
            data = {c: None if c in emails else v for c, v in data.items()}
            continue
        data = _blanked(normalizer, data, result)
    return None, synthetic


def _blanked(normalizer: Normalizer, data: dict[str, str | None], why: Rejected) -> dict[str, Any]:
    return {
        c: None if normalizer.target(c, i)[1] == why.field else v
        for i, (c, v) in enumerate(data.items(), 1)
    }


def _rows(path: Path, outcome_column: str) -> Iterator[tuple[RawRow, str | None]]:
    key: str | None = None
    for raw in read_rows(path):
        if raw.error is not None:
            yield raw, None
            continue
        key = key or _outcome_key(raw.data, outcome_column)
        label = clean(raw.data.get(key))
        data = {c: v for c, v in raw.data.items() if c != key}
        yield RawRow(raw.number, data, raw.warnings, None, raw.structured), label


def history_from_file(
    path: Path, loaded: LoadedConfig, *, outcome_column: str, positive: str
) -> History:
    """A CSV or JSON Lines file read as ``leadflow import`` reads it; ``outcome_column`` equal
    to ``positive`` (trimmed, any case) is a positive row, any other value a negative one."""
    config = loaded.config
    normalizer = Normalizer(config.intake, default_timezone=config.timezone)
    kinds = learnable(loaded.catalog.fields, loaded.catalog.fields)
    columns: dict[str, list[Any]] = {name: [] for name in kinds}
    outcomes: list[bool] = []
    skipped = 0
    wanted = positive.strip().casefold()
    for raw, label in _rows(path, outcome_column):
        lead, synthetic = (None, False) if label is None else _normalized(normalizer, raw)
        if lead is None or label is None:
            skipped += 1
            continue
        for name, values in columns.items():
            if name == "email":
                values.append(None if synthetic else lead.email)
            elif name in LEAD_COLUMNS:
                values.append(lead.fields.get(name))
            else:
                values.append(lead.attributes.get(name))
        outcomes.append(label.casefold() == wanted)
    target = f"{outcome_column} = {positive}"
    return History(dict(columns), outcomes, str(path), target, kinds, skipped)
