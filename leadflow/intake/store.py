"""Write normalized leads to the database: set-based batches, one transaction each.

Merging, per batch: the batch's rows are grouped by normalized email and folded, in file
order, onto the stored lead (if any), by the rules of merge.py.

A stored lead whose values end up different is written with ``updated_at = now``; one that
ends up identical is not written at all, so re-importing a file changes nothing. The final
values do not depend on the batch size. (Caveats: a lead whose rows are split over batches is
re-stamped on a re-import if those rows disagree; and after a batch touched a lead, its
``updated_at`` is ``now``, so timestamped rows in later batches only fill its blanks.)

Counts are per row: the first row of a new lead ``created`` it; a row that supplied a value
that changed a lead (stored, or just created) ``updated`` it; other accepted rows are
``unchanged``. So ``created + updated + unchanged + rejected == rows``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from leadflow.config.schema import Intake
from leadflow.intake.merge import DATA_FIELDS, Fold, LeadState, fold_rows
from leadflow.intake.normalize import NormalizedLead, Normalizer, Rejected
from leadflow.intake.readers import RawRow, read_rows
from leadflow.pipeline.suppression import suppress_many
from models.bulk import Same, Values, insert_columns
from models.db import WRITE
from models.tables import LEADS, SUPPRESSIONS, LeadStatus

SUPPRESSION_REASON = "do_not_email"
# What a new lead starts with besides its values and ``now`` (the columns' own defaults)
NEW_LEAD: dict[str, Any] = {
    "status": LeadStatus.ACTIVE.value,
    "pipeline": None,
    "stage": None,
    **{
        column.name: column.default.arg
        for column in LEADS.c
        if isinstance(column.default, ScalarElementColumnDefault)
        and column.name not in ("status", "email")
    },
}
IN_CHUNK = 5000  # bound parameters per IN (...): far below SQLite's and PostgreSQL's limits
ATTEMPTS = 3  # a batch racing another importer on a new email is retried from a fresh read
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_T = TypeVar("_T")


@dataclass(slots=True)
class ImportSummary:
    """What an import did; ``rejects`` is complete so they can be written out and fixed."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    suppressed: int = 0
    rows: int = 0
    rejects: list[Rejected] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "suppressed": self.suppressed,
            "rows": self.rows,
            "rejects": [reject.as_dict() for reject in self.rejects],
            "warnings": list(self.warnings),
        }

    def add(self, other: ImportSummary) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.rejected += other.rejected
        self.suppressed += other.suppressed
        self.rows += other.rows
        self.rejects.extend(other.rejects)
        self.warnings.extend(other.warnings)


def import_rows(
    engine: Engine,
    rows: Iterable[RawRow],
    intake: Intake,
    *,
    default_timezone: str,
    now: datetime,
    batch_size: int = 1000,
    source_label: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import rows in batches of ``batch_size``, each batch in its own transaction.

    ``source_label`` (e.g. ``"webform"``) replaces ``intake.default_source`` for rows without
    a source. ``on_progress`` gets the number of rows done after each committed batch.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    normalizer = Normalizer(intake, default_timezone=default_timezone, default_source=source_label)
    summary = ImportSummary()
    for batch in _batched(rows, batch_size):
        results = [normalizer.normalize(raw) for raw in batch]
        summary.add(_import_batch(engine, results, now=now))
        if on_progress is not None:
            on_progress(summary.rows)
    return summary


def import_file(
    engine: Engine,
    path: Path,
    intake: Intake,
    *,
    default_timezone: str,
    now: datetime,
    batch_size: int = 1000,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """``read_rows`` + ``import_rows``: a CSV or JSON Lines file, streamed."""
    return import_rows(
        engine,
        read_rows(path),
        intake,
        default_timezone=default_timezone,
        now=now,
        batch_size=batch_size,
        on_progress=on_progress,
    )


def write_rejects(path: Path, rejects: Iterable[Rejected]) -> None:
    """CSV of (row, field, message), UTF-8 with BOM so Excel shows accents correctly.

    Cells that a spreadsheet would run as a formula get a leading ``'``.
    """
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", "field", "message"])
        for reject in rejects:
            writer.writerow(
                [
                    _escape_cell(str(reject.row)),
                    _escape_cell(reject.field),
                    _escape_cell(reject.message),
                ]
            )


def _escape_cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _batched(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    batch: list[_T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _chunks(items: Sequence[_T], size: int = IN_CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _import_batch(
    engine: Engine, results: list[NormalizedLead | Rejected], *, now: datetime
) -> ImportSummary:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            # a writer: on SQLite, take the write lock up front (BEGIN IMMEDIATE) so two
            # imports at once queue instead of failing with 'database is locked'
            with engine.execution_options(**WRITE).begin() as conn:
                return _write_batch(conn, results, now=now)
        except IntegrityError:
            if attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _write_batch(
    conn: Connection, results: list[NormalizedLead | Rejected], *, now: datetime
) -> ImportSummary:
    summary = ImportSummary(rows=len(results))
    groups: dict[str, list[NormalizedLead]] = {}
    for result in results:
        if isinstance(result, Rejected):
            summary.rejected += 1
            summary.rejects.append(result)
        else:
            if result.warnings:
                summary.warnings.extend(f"row {result.row}: {text}" for text in result.warnings)
            groups.setdefault(result.email, []).append(result)
    stored = _load_states(conn, sorted(groups))
    inserts: list[tuple[str, Fold]] = []
    updates: list[dict[str, Any]] = []
    for email, leads in groups.items():
        state = stored.get(email)
        fold = fold_rows(state, leads)
        summary.created += fold.outcome.count("created")
        summary.updated += fold.outcome.count("updated")
        summary.unchanged += fold.outcome.count("unchanged")
        if state is None:
            inserts.append((email, fold))
        elif fold.changed:
            updates.append(_update_row(state, fold, now))
    if inserts:
        insert_columns(conn, LEADS, _insert_columns(inserts, now))
    if updates:
        conn.execute(update(LEADS).where(LEADS.c.id == bindparam("b_id")), updates)
    summary.suppressed = _suppress(conn, results, now)
    return summary


def _load_states(conn: Connection, emails: list[str]) -> dict[str, LeadState]:
    """One SELECT (per ``IN_CHUNK`` addresses) of the stored leads, locked for the batch."""
    table = LEADS
    columns = [table.c[name] for name in DATA_FIELDS]
    states: dict[str, LeadState] = {}
    for chunk in _chunks(emails):
        query = (
            select(
                table.c.id,
                table.c.email,
                table.c.status,
                table.c.updated_at,
                table.c.rescore_at,
                table.c.next_action_at,
                table.c.attributes,
                *columns,
            )
            .where(table.c.email.in_(chunk))
            .with_for_update()
        )
        for row in conn.execute(query).mappings():
            attributes = row["attributes"]
            states[row["email"]] = LeadState(
                id=row["id"],
                values={name: row[name] for name in DATA_FIELDS},
                attributes=dict(attributes) if isinstance(attributes, dict) else {},
                status=row["status"],
                updated_at=row["updated_at"],
                rescore_at=row["rescore_at"],
                next_action_at=row["next_action_at"],
            )
    return states


def _due(current: datetime | None, now: datetime) -> datetime:
    """``now``, unless the lead is already due earlier (then it keeps its place)."""
    return now if current is None or current > now else current


def _insert_columns(inserts: list[tuple[str, Fold]], now: datetime) -> dict[str, Values]:
    """New leads as columns: their values, then what every new lead starts with."""
    folds = [fold for _email, fold in inserts]
    columns: dict[str, Values] = {
        name: [fold.values[name] for fold in folds] for name in DATA_FIELDS
    }
    columns["email"] = [email for email, _fold in inserts]
    columns["attributes"] = [fold.attributes for fold in folds]
    for name, value in NEW_LEAD.items():
        columns[name] = Same(value)
    for name in ("created_at", "updated_at", "rescore_at", "next_action_at"):
        columns[name] = Same(now)
    return columns


def _update_row(state: LeadState, fold: Fold, now: datetime) -> dict[str, Any]:
    active = state.status == LeadStatus.ACTIVE.value
    return {
        **fold.values,
        "b_id": state.id,
        "attributes": fold.attributes,
        "updated_at": now,
        "rescore_at": _due(state.rescore_at, now),
        "next_action_at": _due(state.next_action_at, now) if active else state.next_action_at,
    }


def _suppress(conn: Connection, results: list[NormalizedLead | Rejected], now: datetime) -> int:
    """Suppress do-not-email addresses (rejected rows' too); returns how many are new."""
    wanted = sorted(
        {result.email for result in results if result.do_not_email and result.email is not None}
    )
    if not wanted:
        return 0
    table = SUPPRESSIONS
    known: set[str] = set()
    for chunk in _chunks(wanted):
        known.update(conn.execute(select(table.c.email).where(table.c.email.in_(chunk))).scalars())
    fresh = [email for email in wanted if email not in known]
    suppress_many(conn, [(email, SUPPRESSION_REASON) for email in fresh], now=now)
    return len(fresh)
