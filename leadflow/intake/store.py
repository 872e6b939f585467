"""Write normalized leads to the database: set-based batches, one transaction each.

Merging follows one rule, applied row by row in file order, as if each row were imported
on its own: a row's non-blank value fills a blank, and overwrites a stored value only when
the row is *newer* than the lead as it stands. A row is newer unless it carries an
``updated_at``/``last_modified`` time older than the lead's ``updated_at``; every change stamps
``updated_at = now``. So within one import later rows win, a timestamped row that is older than
the stored lead only fills blanks, and values from configuration defaults (``source``, the
default time zone) only ever fill blanks. Attributes merge key by key with the same rule.

Because the rule only looks at the lead as it stands, the result does not depend on how the
rows are cut into batches, and re-importing a file changes nothing. Counts are per row: every
row either created a lead, updated one (stored, or created by an earlier row), left it
unchanged, or was rejected, so ``created + updated + unchanged + rejected == rows``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from leadflow.config.schema import Intake
from leadflow.intake.normalize import LEAD_FIELDS, LEAD_TABLE, NormalizedLead, Normalizer, Rejected
from leadflow.intake.readers import RawRow, read_rows
from leadflow.suppression import suppress_many
from models.tables import LeadStatus

SUPPRESSION_REASON = "do_not_email"
SUPPRESSION_TABLE = SQLModel.metadata.tables["suppression"]
IN_CHUNK = 5000  # bound parameters per IN (...): far below SQLite's and PostgreSQL's limits
ATTEMPTS = 3  # a batch racing another importer on a new email is retried from a fresh read
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_DATA_FIELDS = tuple(name for name in LEAD_FIELDS if name != "email")
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


@dataclass(slots=True)
class _LeadState:
    """A lead as it stands during the fold: loaded from the database or created by a row."""

    id: int | None
    email: str
    values: dict[str, Any]
    attributes: dict[str, Any]
    status: str
    updated_at: datetime
    rescore_at: datetime | None = None
    next_action_at: datetime | None = None
    touched: bool = False


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
            with engine.begin() as conn:
                return _write_batch(conn, results, now=now)
        except IntegrityError:
            if attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _write_batch(
    conn: Connection, results: list[NormalizedLead | Rejected], *, now: datetime
) -> ImportSummary:
    summary = ImportSummary(rows=len(results))
    leads = [result for result in results if isinstance(result, NormalizedLead)]
    states = _load_states(conn, sorted({lead.email for lead in leads}))
    for result in results:
        if isinstance(result, Rejected):
            summary.rejected += 1
            summary.rejects.append(result)
            continue
        summary.warnings.extend(f"row {result.row}: {warning}" for warning in result.warnings)
        state = states.get(result.email)
        if state is None:
            states[result.email] = _new_state(result, now)
            summary.created += 1
        elif _apply(state, result, now):
            summary.updated += 1
        else:
            summary.unchanged += 1
    _insert_new(conn, [s for s in states.values() if s.id is None], now)
    _update_touched(conn, [s for s in states.values() if s.id is not None and s.touched], now)
    summary.suppressed = _suppress(conn, results, now)
    return summary


def _load_states(conn: Connection, emails: list[str]) -> dict[str, _LeadState]:
    """One SELECT (per ``IN_CHUNK`` addresses) of the stored leads, locked for the batch."""
    table = LEAD_TABLE
    columns = [table.c[name] for name in _DATA_FIELDS]
    states: dict[str, _LeadState] = {}
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
            states[row["email"]] = _LeadState(
                id=row["id"],
                email=row["email"],
                values={name: row[name] for name in _DATA_FIELDS},
                attributes=dict(attributes) if isinstance(attributes, dict) else {},
                status=row["status"],
                updated_at=row["updated_at"],
                rescore_at=row["rescore_at"],
                next_action_at=row["next_action_at"],
            )
    return states


def _new_state(lead: NormalizedLead, now: datetime) -> _LeadState:
    values = dict.fromkeys(_DATA_FIELDS)
    values.update(lead.fields)
    return _LeadState(
        id=None,
        email=lead.email,
        values=values,
        attributes=dict(lead.attributes),
        status=LeadStatus.ACTIVE.value,
        updated_at=now,
        rescore_at=now,
        next_action_at=now,
        touched=True,
    )


def _apply(state: _LeadState, lead: NormalizedLead, now: datetime) -> bool:
    """Merge one row into the lead (see the module docstring); True if anything changed."""
    newer = lead.source_updated_at is None or lead.source_updated_at >= state.updated_at
    changed = _merge(state.values, lead.fields, newer=newer, defaults=lead.defaults)
    changed = _merge(state.attributes, lead.attributes, newer=newer) or changed
    if changed:
        state.updated_at = now
        state.touched = True
    return changed


def _merge(
    target: dict[str, Any],
    incoming: dict[str, Any],
    *,
    newer: bool,
    defaults: frozenset[str] = frozenset(),
) -> bool:
    changed = False
    for name, value in incoming.items():
        current = target.get(name)
        may_write = _is_blank(current) or (newer and name not in defaults)
        if may_write and not _same(current, value):
            target[name] = value
            changed = True
    return changed


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type: ``True`` is not ``1`` and ``"5"`` is not ``5``."""
    return type(a) is type(b) and bool(a == b)


def _due(current: datetime | None, now: datetime) -> datetime:
    """``now``, unless the lead is already due earlier (then it keeps its place)."""
    return now if current is None or current > now else current


def _insert_new(conn: Connection, states: list[_LeadState], now: datetime) -> None:
    if not states:
        return
    rows = [
        {
            **state.values,
            "email": state.email,
            "attributes": state.attributes,
            "status": state.status,
            "pipeline": None,
            "stage": None,
            "created_at": now,
            "updated_at": now,
            "rescore_at": now,
            "next_action_at": now,
        }
        for state in states
    ]
    conn.execute(insert(LEAD_TABLE), rows)


def _update_touched(conn: Connection, states: list[_LeadState], now: datetime) -> None:
    if not states:
        return
    table = LEAD_TABLE
    rows = [
        {
            **state.values,
            "b_id": state.id,
            "attributes": state.attributes,
            "updated_at": now,
            "rescore_at": _due(state.rescore_at, now),
            "next_action_at": (
                _due(state.next_action_at, now)
                if state.status == LeadStatus.ACTIVE.value
                else state.next_action_at
            ),
        }
        for state in states
    ]
    conn.execute(update(table).where(table.c.id == bindparam("b_id")), rows)


def _suppress(conn: Connection, results: list[NormalizedLead | Rejected], now: datetime) -> int:
    """Suppress do-not-email addresses (rejected rows' too); returns how many are new."""
    wanted = sorted(
        {result.email for result in results if result.do_not_email and result.email is not None}
    )
    if not wanted:
        return 0
    table = SUPPRESSION_TABLE
    known: set[str] = set()
    for chunk in _chunks(wanted):
        known.update(conn.execute(select(table.c.email).where(table.c.email.in_(chunk))).scalars())
    fresh = [email for email in wanted if email not in known]
    suppress_many(conn, [(email, SUPPRESSION_REASON) for email in fresh], now=now)
    return len(fresh)
