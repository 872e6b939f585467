"""What the first run under a new config does before its steps: every open lead due once,
and the leads of removed stages moved (``moved_stages``). ``plan`` asks the same questions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update

from leadflow.pipeline import stranded
from leadflow.pipeline.moves import AdvanceOutcome
from leadflow.pipeline.run_record import last_config_hash
from leadflow.pipeline.stranded import StrandedStage
from leadflow.runtime import Runtime
from models.db import session_scope
from models.tables import LEADS, LeadStatus


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
    result = conn.execute(
        update(LEADS)
        .where(LEADS.c.status == LeadStatus.ACTIVE)
        .values(rescore_at=now, next_action_at=now)
    )
    return max(int(result.rowcount), 0)
