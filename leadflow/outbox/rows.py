"""A new outbox row, made in one place.

Enrolment and check-ins (``moves``), the next cadence step (``record``), the tests and the
benchmarks all queue a message with ``outbox_row``, so a queued message looks the same whoever
queued it: pending, never attempted, due at ``due_at``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.tables import MessageStatus


def outbox_row(
    *,
    lead_id: int,
    to_email: str,
    cadence: str,
    step: str,
    stage: str | None,
    due_at: datetime,
    now: datetime,
    round: int = 0,  # the column's name: a revived lead's messages are round 1, 2, ...
    kind: str = "cadence",
) -> dict[str, Any]:
    """The values of a pending message for ``step`` of ``cadence`` (a cadence id, or a check-in
    plan id when ``kind`` is ``"checkin"``), ready for ``insert_ignore``."""
    return {
        "lead_id": lead_id,
        "cadence": cadence,
        "step": step,
        "round": round,
        "kind": kind,
        "stage": stage,
        "to_email": to_email,
        "status": MessageStatus.PENDING,
        "due_at": due_at,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
