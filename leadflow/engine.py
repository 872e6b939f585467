"""The pipeline's steps as plain functions, each ``(runtime, batch, now) -> outcome``.

Flows map tasks over the batches these functions plan; tests, benchmarks and
``leadflow plan`` call them directly. Each batch runs in its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from leadflow import scoring, stages, stranded
from leadflow.batching import IdRange, id_ranges
from leadflow.delivery import (
    DeliveryOutcome,
    DeliverySession,
    TransportFactory,
    deliver_batch,
    reconcile_stale,
)
from leadflow.listening.sync import SyncOutcome
from leadflow.moves import AdvanceOutcome
from leadflow.outbox import due_condition as outbox_due
from leadflow.runtime import Runtime
from leadflow.stranded import StrandedStage
from models.db import session_scope
from models.tables import CALLBACKS, LEADS, OUTBOX

STEPS = ("intake", "mailbox", "score", "advance", "nurture", "callbacks", "checkins", "report")


def score_ranges(rt: Runtime, *, now: datetime) -> list[IdRange]:
    return id_ranges(rt.engine, LEADS.c.id, scoring.due_condition(now), rt.settings.batch_size)


def score(rt: Runtime, id_range: IdRange, *, now: datetime) -> scoring.ScoreOutcome:
    with session_scope(rt.engine) as session:
        return scoring.score_batch(session.connection(), rt.loaded, id_range, now=now)


def advance_ranges(rt: Runtime, *, now: datetime) -> list[IdRange]:
    return id_ranges(rt.engine, LEADS.c.id, stages.due_condition(now), rt.settings.batch_size)


def advance(rt: Runtime, id_range: IdRange, *, now: datetime) -> AdvanceOutcome:
    with session_scope(rt.engine) as session:
        return stages.advance_batch(session.connection(), rt, id_range, now=now)


def callback_ranges(rt: Runtime, *, now: datetime) -> list[IdRange]:
    return id_ranges(
        rt.engine,
        CALLBACKS.c.id,
        stages.callbacks_due_condition(now),
        rt.settings.batch_size,
    )


def revive(rt: Runtime, id_range: IdRange, *, now: datetime) -> AdvanceOutcome:
    with session_scope(rt.engine) as session:
        return stages.revive_batch(session.connection(), rt, id_range, now=now)


def outbox_ranges(rt: Runtime, *, now: datetime, kind: str) -> list[IdRange]:
    return id_ranges(rt.engine, OUTBOX.c.id, outbox_due(now, kind), rt.settings.batch_size)


def deliver(
    rt: Runtime, id_range: IdRange, *, now: datetime, kind: str, transport: TransportFactory
) -> DeliveryOutcome:
    return deliver_batch(rt, id_range, now=now, transport=transport, kind=kind)


def deliver_all(
    rt: Runtime, *, now: datetime, kind: str, transport: TransportFactory
) -> tuple[DeliveryOutcome, int]:
    """Every due batch of ``kind``, one after another without a pause, in one
    ``DeliverySession`` (one SMTP pool and helper for all of them); returns the merged outcome
    and the number of batches. Each batch is claimed and recorded by itself."""
    ranges = outbox_ranges(rt, now=now, kind=kind)
    if not ranges:
        return DeliveryOutcome(), 0
    with DeliverySession(rt, now=now, transport=transport) as session:
        return session.deliver(ranges, kind=kind), len(ranges)


def listen(rt: Runtime, *, now: datetime) -> SyncOutcome:
    """Read the mailbox (``LEADFLOW_MAILBOX_URL``) from its checkpoints on; nothing when unset.

    Runs before scoring and the stage engine, so a reply read now stops the cadence before
    the same tick would send the next step."""
    from leadflow.listening.sync import sync_mailbox

    return sync_mailbox(rt, now=now)


def reconcile(rt: Runtime, *, now: datetime) -> list[int]:
    return reconcile_stale(rt, now=now)


@dataclass
class TickOutcome:
    """What one tick did, step by step (also the body of the run's artifact)."""

    now: datetime
    config_hash: str
    mailbox: SyncOutcome = field(default_factory=SyncOutcome)
    scored: int = 0
    score_changed: int = 0
    advance: AdvanceOutcome = field(default_factory=AdvanceOutcome)
    revived: AdvanceOutcome = field(default_factory=AdvanceOutcome)
    nurture: DeliveryOutcome = field(default_factory=DeliveryOutcome)
    checkins: DeliveryOutcome = field(default_factory=DeliveryOutcome)
    unknown: list[int] = field(default_factory=list)
    batches: int = 0
    config: ConfigChange = field(default_factory=lambda: ConfigChange())

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "config_hash": self.config_hash[:12],
            "mailbox": self.mailbox.as_dict(),
            "scored": self.scored,
            "score_changed": self.score_changed,
            "advance": self.advance.as_dict(),
            "callbacks": self.revived.as_dict(),
            "nurture": self.nurture.as_dict(),
            "checkins": self.checkins.as_dict(),
            "unknown": self.unknown,
            "batches": self.batches,
            "config_change": self.config.as_dict(),
        }


def tick(rt: Runtime, *, now: datetime, transport: TransportFactory) -> TickOutcome:
    """All steps in order, without Prefect: the baseline the flows are measured against."""
    out = TickOutcome(now=now, config_hash=rt.config_hash)
    out.config = apply_config_change(rt, now=now)
    out.mailbox = listen(rt, now=now)
    for r in score_ranges(rt, now=now):
        result = score(rt, r, now=now)
        out.scored += result.rescored
        out.score_changed += result.changed
        out.batches += 1
    for r in callback_ranges(rt, now=now):
        out.revived.merge(revive(rt, r, now=now))
        out.batches += 1
    for r in advance_ranges(rt, now=now):
        out.advance.merge(advance(rt, r, now=now))
        out.batches += 1
    out.unknown = reconcile(rt, now=now)
    for kind, target in (("cadence", out.nurture), ("checkin", out.checkins)):
        delivered, batches = deliver_all(rt, now=now, kind=kind, transport=transport)
        target.merge(delivered)
        out.batches += batches
    return out


def record_run(rt: Runtime, kind: str, *, now: datetime, summary: dict[str, Any]) -> None:
    """Keep which config version ran at which instant, and what it did."""
    from leadflow.timeutil import utcnow
    from models.tables import RunRecord

    with session_scope(rt.engine) as session:
        session.add(
            RunRecord(
                kind=kind,
                now=now,
                started_at=utcnow(),
                finished_at=utcnow(),
                config_hash=rt.config_hash,
                summary=_jsonable(summary),
            )
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def last_config_hash(rt: Runtime) -> str | None:
    from sqlalchemy import select

    from models.tables import RUNS

    with rt.engine.connect() as conn:
        return conn.execute(
            select(RUNS.c.config_hash).order_by(RUNS.c.started_at.desc(), RUNS.c.id.desc())
        ).scalar()


@dataclass
class ConfigChange:
    """What the first run under a new config did before its steps: every open lead made due
    once, and the open leads of removed stages moved as ``moved_stages`` says."""

    reevaluated: int = 0
    relocated: AdvanceOutcome = field(default_factory=AdvanceOutcome)
    stranded: list[StrandedStage] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reevaluated": self.reevaluated,
            "relocated": self.relocated.as_dict(),
            "stranded": [g.as_dict() for g in self.stranded],
        }

    def summary(self) -> str:
        parts = []
        if self.reevaluated:
            parts.append(f"config changed: {self.reevaluated} lead(s) re-evaluated")
        for (old, new), n in sorted(self.relocated.moves.items()):
            parts.append(f"moved {n} lead(s) {old} → {new} (stage removed)")
        for g in self.stranded:
            if g.to is None:
                parts.append(f"{g.describe()} (see leadflow validate)")
        return "; ".join(parts)


def apply_config_change(rt: Runtime, *, now: datetime) -> ConfigChange:
    """After a config change, every open lead is due once for rescoring and its stage rules,
    and the leads of removed stages move where ``moved_stages`` says.

    New fit rules or exits must reach leads that have no new data; this is one set-based
    UPDATE, run only when the config hash differs from the last recorded run's.
    """
    if not config_change_pending(rt):
        return ConfigChange()
    with session_scope(rt.engine) as session:
        return change_config(session.connection(), rt, now=now)


def change_config(conn: Any, rt: Runtime, *, now: datetime) -> ConfigChange:
    """The config change's writes, in the caller's transaction (``plan`` rolls them back)."""
    reevaluated = mark_all_due(conn, now=now)
    relocated = stranded.relocate(conn, rt, now=now)
    return ConfigChange(
        reevaluated=reevaluated, relocated=relocated, stranded=stranded.find(conn, rt.loaded)
    )


def config_change_pending(rt: Runtime) -> bool:
    """Whether the next run under ``rt`` re-evaluates every open lead (``plan`` asks too)."""
    previous = last_config_hash(rt)
    return previous is not None and previous != rt.config_hash


def mark_all_due(conn: Any, *, now: datetime) -> int:
    from sqlalchemy import update

    from models.tables import LEADS, LeadStatus

    result = conn.execute(
        update(LEADS)
        .where(LEADS.c.status == LeadStatus.ACTIVE)
        .values(rescore_at=now, next_action_at=now)
    )
    return max(int(result.rowcount), 0)
