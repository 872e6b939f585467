"""The operator's way back from ``unknown``: list such emails, then requeue or close them.

A row becomes ``unknown`` when a sender died between handing the message to SMTP and hearing
the answer: it may or may not have been delivered, so leadflow never resends it by itself.
A person who knows better (the relay's log, the recipient's reply) decides, row by row:

| decision | the row becomes | when |
|---|---|---|
| ``requeue`` | ``pending``, due now: sent again (same Message-ID) | the relay never took it |
| ``close`` | ``failed``, as a send the relay refused | it went out, or it should not |

Each decision is audited: a ``run_record`` row of kind ``outbox-decision`` with the rows,
the decision, the reason and who made it, and the reason on each row's ``last_error``.
Only rows still ``unknown`` are changed; anything else named is reported, not touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, insert, select, update

from models.tables import LEADS, OUTBOX, RUNS, MessageStatus

Decision = Literal["requeue", "close"]
_TARGET = {"requeue": MessageStatus.PENDING, "close": MessageStatus.FAILED}


def list_unknown(conn: Connection, *, limit: int = 1000) -> list[dict[str, Any]]:
    """What is known about each ``unknown`` row, oldest claim first."""
    rows = conn.execute(
        select(
            OUTBOX.c.id,
            LEADS.c.email,
            OUTBOX.c.cadence,
            OUTBOX.c.step,
            OUTBOX.c.template,
            OUTBOX.c.variant,
            OUTBOX.c.message_id,
            OUTBOX.c.claimed_at,
            OUTBOX.c.attempts,
            OUTBOX.c.smtp_code,
            OUTBOX.c.last_error,
        )
        .join(LEADS, LEADS.c.id == OUTBOX.c.lead_id)
        .where(OUTBOX.c.status == MessageStatus.UNKNOWN)
        .order_by(OUTBOX.c.claimed_at, OUTBOX.c.id)
        .limit(limit)
    ).all()
    return [dict(r._mapping) for r in rows]


@dataclass(frozen=True)
class DecisionOutcome:
    changed: list[int]
    skipped: dict[int, str]  # row id -> why it was left alone (not unknown, no such row)


def decide(
    conn: Connection,
    ids: Sequence[int],
    decision: Decision,
    *,
    reason: str,
    actor: str,
    now: datetime,
    config_hash: str,
) -> DecisionOutcome:
    """Apply one decision to the ``unknown`` rows among ``ids``, audited, in one transaction."""
    wanted = sorted(set(ids))
    found = dict(
        conn.execute(select(OUTBOX.c.id, OUTBOX.c.status).where(OUTBOX.c.id.in_(wanted))).all()
    )
    skipped = {
        i: ("no such email" if i not in found else f"it is {found[i]}, not unknown")
        for i in wanted
        if found.get(i) != MessageStatus.UNKNOWN
    }
    chosen = [i for i in wanted if i not in skipped]
    if chosen:
        values: dict[str, Any] = {
            "status": _TARGET[decision],
            "updated_at": now,
            "last_error": f"operator {actor}: {decision}: {reason}"[:1000],
            "claim_token": None,
        }
        if decision == "requeue":
            values.update(due_at=now, defer_reason="requeued by operator")
        changed = conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id.in_(chosen), OUTBOX.c.status == MessageStatus.UNKNOWN)
            .values(**values)
        ).rowcount
        if changed != len(chosen):  # another operator decided meanwhile: change nothing
            raise RuntimeError("some rows changed while deciding; nothing was changed")
        conn.execute(
            insert(RUNS).values(
                kind="outbox-decision",
                now=now,
                started_at=now,
                finished_at=now,
                config_hash=config_hash,
                summary={"rows": chosen, "decision": decision, "reason": reason, "actor": actor},
            )
        )
    return DecisionOutcome(changed=chosen, skipped=skipped)
