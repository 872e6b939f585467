"""The team leaderboard: per pipeline and owner (``lead.owner``, a team member's id).

- Open: the owner's leads active now and not won (post-sale leads are customers, not deals).
- New: their leads created in the period.
- Won, won value, lost: as the report's outcomes define them (``outcomes``), in the period.
- Win rate: won / (won + lost) in the period; none when nothing closed.
- Days to win: the mean of ``created_at`` → ``won_at`` of the leads won in the period.
- Stuck: open leads flagged by their stage SLA.

Leads nobody owns are left out: with no team the leaderboard is empty and the report shows
no table. One GROUP BY over the owned leads (``ix_lead_owner`` leads with ``owner``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, case, func, select

from leadflow.reporting.numbers import money, ratio, round_days, round_rate
from leadflow.reporting.outcomes import lost
from leadflow.reporting.sqlfn import Scope, days_between
from models.tables import LEADS, LeadStatus


def leaderboard(conn: Connection, scope: Scope) -> dict[str | None, list[dict[str, Any]]]:
    """Each pipeline's owners, best first (won value, then wins, then the id)."""
    lead = LEADS
    won = scope.within(lead.c.won_at)
    was_lost = lost(scope.within(lead.c.closed_at))
    is_open = (lead.c.status == LeadStatus.ACTIVE) & lead.c.won_at.is_(None)
    rows = conn.execute(
        select(
            lead.c.pipeline,
            lead.c.owner,
            func.sum(case((is_open, 1), else_=0)),
            func.sum(case((scope.within(lead.c.created_at), 1), else_=0)),
            func.sum(case((won, 1), else_=0)),
            func.coalesce(func.sum(case((won, lead.c.deal_value), else_=None)), 0.0),
            func.sum(case((was_lost, 1), else_=0)),
            func.avg(case((won, days_between(scope.dialect, lead.c.won_at, lead.c.created_at)))),
            func.sum(case(((is_open & lead.c.stuck), 1), else_=0)),
        )
        .where(lead.c.owner.is_not(None), *scope.in_pipeline(lead.c.pipeline))
        .group_by(lead.c.pipeline, lead.c.owner)
    ).all()
    found: dict[str | None, list[dict[str, Any]]] = {}
    for pipeline, owner, open_, new, wins, value, losses, days, stuck in rows:
        found.setdefault(pipeline, []).append(
            {
                "owner": owner,
                "open": int(open_),
                "new": int(new),
                "won": int(wins),
                "won_value": money(float(value)),
                "lost": int(losses),
                "win_rate": round_rate(ratio(int(wins), int(wins) + int(losses))),
                "days_to_win": round_days(None if days is None else float(days)),
                "stuck": int(stuck),
            }
        )
    for owners in found.values():
        owners.sort(key=lambda o: (-(o["won_value"] or 0.0), -o["won"], o["owner"]))
    return found
