"""Claiming: decide the fate of a batch's due rows and take the sendable ones before sending.

A claim is one transaction, committed before any SMTP call. Every row it looks at leaves the due
set: suppressed (the address is on the list: suppression always wins), cancelled (the lead or
the config moved on; steps are matched by id), deferred (send window, daily caps, see ``caps``)
or claimed (``pending|deferred -> sending``), so calling again takes the next ones.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from leadflow.alerts.guard import active_pause
from leadflow.mail.context import LEAD_COLUMNS
from leadflow.outbox.caps import DailyCaps
from leadflow.outbox.claimed import Claimed, ClaimOutcome
from leadflow.pipeline.batching import IdRange
from leadflow.pipeline.business_time import SendWindow, in_window, next_window_start
from leadflow.pipeline.cadence import choose_variant, step_index
from leadflow.pipeline.moves import CHECKIN_WINDOW, REEVALUATE_AFTER
from leadflow.runtime import Runtime
from models.tables import (
    LEADS,
    OPEN_MESSAGE_STATES,
    OUTBOX,
    SUPPRESSIONS,
    LeadStatus,
    MessageStatus,
)

# PostgreSQL advisory lock taken by every claim transaction until it commits: claims run one
# at a time, so each counts the sends of the claims before it against the daily caps. (On
# SQLite, BEGIN IMMEDIATE already serializes every writer.) Sending stays parallel.
CLAIM_LOCK = 0x6C66_636C_6169_6D  # "lfclaim"
# cancellations that leave the lead's cadence with nothing left to send
ORPHANING = frozenset({"step removed from config", "cadence removed from config"})
# what a claim reads of its lead: what a template sees (mail.context), plus what the claim
# policy checks
LEAD_FIELDS = (*LEAD_COLUMNS, "pipeline", "status", "cadence")
_lead_values = attrgetter(*(f"lead_{f}" for f in LEAD_FIELDS))  # a claim row's lead columns


def due_condition(now: datetime, kind: str | None = None) -> ColumnElement[bool]:
    """Outbox rows a claim may take at ``now`` (of ``kind``, if given)."""
    outbox = OUTBOX
    condition = and_(outbox.c.status.in_(list(OPEN_MESSAGE_STATES)), outbox.c.due_at <= now)
    if kind is not None:
        condition = and_(condition, outbox.c.kind == kind)
    return condition


@dataclass
class _Fates:
    """What a claim decided for the rows it looked at, written in a few bulk statements."""

    suppressed: list[int] = field(default_factory=list)
    cancelled: list[dict[str, Any]] = field(default_factory=list)
    orphaned: list[dict[str, Any]] = field(default_factory=list)  # leads: cadence complete
    deferred: list[dict[str, Any]] = field(default_factory=list)
    to_claim: defaultdict[tuple[str, str | None], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def cancel(self, row: Any, why: str) -> None:
        self.cancelled.append({"b_id": row.id, "error": why})
        if why in ORPHANING and row.lead_cadence == row.cadence:
            self.orphaned.append({"b_id": row.lead_id, "b_cadence": row.cadence})

    def defer(self, row: Any, due: datetime, reason: str) -> None:
        self.deferred.append({"b_id": row.id, "due": due, "reason": reason})


def claim_batch(
    conn: Connection,
    rt: Runtime,
    id_range: IdRange,
    *,
    now: datetime,
    kind: str | None = None,
    limit: int | None = None,
) -> ClaimOutcome:
    """Decide the fate of the due rows in ``id_range`` (the first ``limit`` of them, in due
    order, if given) and claim the sendable ones.

    Call inside a transaction and commit before sending. Every row looked at leaves the due
    set (claimed, deferred, cancelled or suppressed), so calling again takes the next ones.
    While sending is paused (``leadflow/alerts/guard.py``) nothing is looked at or claimed:
    the pause is read in the claim's own transaction, so one set during a run stops the
    batches after it.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
    if active_pause(conn) is not None:  # sending paused (by hand or a guard) mid-run
        return ClaimOutcome(token=uuid.uuid4().hex)
    rows = _select_due(conn, id_range, now=now, kind=kind, limit=limit)
    result = ClaimOutcome(token=uuid.uuid4().hex, examined=len(rows))
    caps = DailyCaps.today(conn, rt.loaded.config, now)
    fates = _decide(rt, rows, caps, result, now=now)
    result.cancelled = Counter(c["error"] for c in fates.cancelled)
    result.deferred = Counter(d["reason"] for d in fates.deferred)
    result.suppressed = len(fates.suppressed)
    _write_fates(conn, fates, now=now)
    if fates.to_claim:
        won = _take(conn, fates.to_claim, token=result.token, now=now)
        result.claimed = [c for c in result.claimed if c.id in won]
    return result


def _select_due(
    conn: Connection, id_range: IdRange, *, now: datetime, kind: str | None, limit: int | None
) -> Sequence[Row[*tuple[Any, ...]]]:
    """The due rows in ``id_range`` in due order, with their lead and whether the address is
    suppressed; on PostgreSQL locked, skipping rows a rival claim holds."""
    outbox = OUTBOX
    lead = LEADS
    query = (
        select(
            outbox.c.id,
            outbox.c.lead_id,
            outbox.c.cadence,
            outbox.c.step,
            outbox.c.round,
            outbox.c.kind,
            outbox.c.stage,
            outbox.c.to_email,
            outbox.c.attempts,
            *[lead.c[f].label(f"lead_{f}") for f in LEAD_FIELDS],
            exists().where(SUPPRESSIONS.c.email == outbox.c.to_email).label("suppressed"),
        )
        .join(lead, lead.c.id == outbox.c.lead_id)
        .where(outbox.c.id >= id_range[0], outbox.c.id <= id_range[1], due_condition(now, kind))
        .order_by(outbox.c.due_at, outbox.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=outbox)
    return conn.execute(query).all()


def _decide(
    rt: Runtime,
    rows: Sequence[Row[*tuple[Any, ...]]],
    caps: DailyCaps,
    result: ClaimOutcome,
    *,
    now: datetime,
) -> _Fates:
    """Each row's fate, in due order; the rows to claim also go to ``result.claimed``."""
    fates = _Fates()
    window_opens: dict[tuple[SendWindow, ZoneInfo], datetime | None] = {}  # None: open now
    for row in rows:
        if row.suppressed:
            fates.suppressed.append(row.id)
            continue
        plan = _resolve(rt, row)
        if isinstance(plan, str):
            fates.cancel(row, plan)
            continue
        template, variant, window = plan
        tz = rt.send_zone(
            row.cadence if row.kind == "cadence" else None, row.lead_timezone, row.lead_pipeline
        )
        # the same for every row with this window and zone: worked out once per claim
        if (window, tz) not in window_opens:
            window_opens[(window, tz)] = _window_opens(rt, window, tz, now)
        opens = window_opens[(window, tz)]
        if opens is not None:
            fates.defer(row, opens, "send window")
            continue
        capped = caps.refusal(row.to_email)
        if capped is not None:
            tomorrow = next_window_start(caps.tomorrow, window, tz=tz, holidays=rt.holidays)
            fates.defer(row, tomorrow, capped)
            continue
        caps.take(row.to_email)
        fates.to_claim[(template, variant)].append(row.id)
        result.claimed.append(_claimed(row, template, variant))
    return fates


def _window_opens(rt: Runtime, window: SendWindow, tz: ZoneInfo, now: datetime) -> datetime | None:
    """When ``window`` next opens in ``tz``; None when it is open at ``now``."""
    if in_window(now, window, tz=tz, holidays=rt.holidays):
        return None
    return next_window_start(now, window, tz=tz, holidays=rt.holidays)


def _claimed(row: Any, template: str, variant: str | None) -> Claimed:
    return Claimed(
        id=row.id,
        lead_id=row.lead_id,
        cadence=row.cadence,
        step=row.step,
        round=row.round,
        kind=row.kind,
        template=template,
        variant=variant,
        to_email=row.to_email,
        attempts=row.attempts + 1,
        lead=dict(zip(LEAD_FIELDS, _lead_values(row), strict=True)),
    )


def _resolve(rt: Runtime, row: Any) -> tuple[str, str | None, SendWindow] | str:
    """(template, variant, window) for a row under the current config, or why it is cancelled."""
    config = rt.loaded.config
    if row.kind == "checkin":
        plan = config.checkins.get(row.cadence)
        if row.lead_status == LeadStatus.CLOSED:
            return "stopped: lead closed"
        if plan is None:
            return "check-in plan removed from config"
        templates = {c.id: c.template for c in plan.checkins}
        templates.update({r.id: r.template for r in plan.renewals})
        if row.step not in templates:
            return "check-in removed from config"
        return templates[row.step], None, CHECKIN_WINDOW
    if row.lead_status != LeadStatus.ACTIVE or row.lead_stage != row.stage:
        return "stopped: stage changed"
    if row.lead_cadence != row.cadence:
        return "stopped: cadence ended"
    cadence = config.cadences.get(row.cadence)
    if cadence is None:
        return "cadence removed from config"
    index = step_index(cadence, row.step)
    if index is None:
        return "step removed from config"
    variant, template = choose_variant(row.lead_id, row.cadence, cadence.steps[index])
    return template, variant, rt.send_windows[row.cadence]


# Every write below re-checks that the row is still open: a rival run may have claimed (even
# sent) it since our SELECT, and turning its row back into deferred would send the message
# twice. Only the PostgreSQL row locks make that impossible; SQLite needs the guard.
# (``or_`` rather than ``in_``: expanding IN cannot be used with executemany.)
def _still_open() -> ColumnElement[bool]:
    return or_(*[OUTBOX.c.status == state for state in OPEN_MESSAGE_STATES])


def _write_fates(conn: Connection, fates: _Fates, *, now: datetime) -> None:
    """Store the fates of the rows not claimed: suppressed, cancelled, deferred."""
    outbox = OUTBOX
    still_open = _still_open()
    if fates.suppressed:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(fates.suppressed), still_open)
            .values(
                status=MessageStatus.SUPPRESSED,
                updated_at=now,
                last_error="address is on the suppression list",
            )
        )
    if fates.cancelled:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == bindparam("b_id"), still_open)
            .values(status=MessageStatus.CANCELLED, last_error=bindparam("error"), updated_at=now),
            fates.cancelled,
        )
    if fates.orphaned:
        # The step the lead was waiting on is gone from the config: its cadence counts as
        # complete, so the stage engine applies ``on_complete`` instead of waiting forever.
        done = now + REEVALUATE_AFTER
        conn.execute(
            update(LEADS)
            .where(LEADS.c.id == bindparam("b_id"), LEADS.c.cadence == bindparam("b_cadence"))
            .values(cadence_done_at=done, next_action_at=done, updated_at=now),
            fates.orphaned,
        )
    if fates.deferred:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == bindparam("b_id"), still_open)
            .values(
                status=MessageStatus.DEFERRED,
                due_at=bindparam("due"),
                defer_reason=bindparam("reason"),
                updated_at=now,
            ),
            fates.deferred,
        )


def _take(
    conn: Connection,
    to_claim: dict[tuple[str, str | None], list[int]],
    *,
    token: str,
    now: datetime,
) -> set[int]:
    """Claim the rows (``sending``, attempt counted, template chosen); the ids this claim won.

    One UPDATE per (template, variant), usually a handful per claim: cheaper than a statement
    per row, and the claim holds the interpreter for less time beside the sending.
    """
    outbox = OUTBOX
    still_open = _still_open()
    for (template, variant), claim_ids in to_claim.items():
        # The guard: only rows still open and not suppressed are taken, whatever another
        # process did since we read them.
        conn.execute(
            update(outbox)
            .where(
                outbox.c.id.in_(claim_ids),
                still_open,
                ~exists().where(SUPPRESSIONS.c.email == outbox.c.to_email),
            )
            .values(
                status=MessageStatus.SENDING,
                claim_token=token,
                claimed_at=now,
                attempts=outbox.c.attempts + 1,
                template=template,
                variant=variant,
                updated_at=now,
            )
        )
    won = conn.execute(
        select(outbox.c.id).where(
            outbox.c.claim_token == token, outbox.c.status == MessageStatus.SENDING
        )
    )
    return set(won.scalars().all())
