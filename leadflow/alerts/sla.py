"""Deals their stage SLA flagged (``sla.action: flag`` set ``lead.stuck``) and not alerted yet.

An alert per lead per stage entry: its period is the stage and the instant the lead entered
it, so a lead that leaves and comes back to the stage, and is late again, is alerted again;
every tick after the first sees the alert (``ix_alert_kind_lead_since``) and raises nothing.
The read is one statement per flagging stage, over the stage's leads that entered it at least
``max_days`` ago (a range of ``ix_lead_report_stage``, which holds ``stuck`` too).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, exists, not_, select

from leadflow.alerts.store import AlertIn
from leadflow.config.loaded import LoadedConfig
from models.tables import ALERTS, LEADS, LeadStatus

KIND = "sla_flagged"


def flagged(conn: Connection, loaded: LoadedConfig, *, now: datetime) -> list[AlertIn]:
    """The alerts for flagged leads not alerted in their current stay."""
    lead, alert = LEADS.c, ALERTS.c
    found: list[AlertIn] = []
    for pipeline in loaded.config.pipelines:
        for stage in pipeline.stages:
            if stage.sla is None or stage.sla.action != "flag":
                continue
            told = exists().where(
                alert.kind == KIND, alert.lead_id == lead.id, alert.since == lead.stage_entered_at
            )
            rows = conn.execute(
                select(lead.id, lead.email, lead.company, lead.deal_value, lead.stage_entered_at)
                .where(
                    lead.pipeline == pipeline.id,
                    lead.stage == stage.id,
                    lead.status == LeadStatus.ACTIVE,
                    # a flagged lead is past the SLA: only the late end of the stage is read
                    lead.stage_entered_at <= now - timedelta(days=stage.sla.max_days),
                    lead.stuck.is_(True),
                    not_(told),
                )
                .order_by(lead.id)
            ).all()
            for lead_id, email, company, value, entered in rows:
                entered_utc = entered.astimezone(UTC)
                days = (now - entered_utc).days
                who = f"{email}" + (f" ({company})" if company else "")
                found.append(
                    AlertIn(
                        kind=KIND,
                        subject=f"lead:{lead_id}",
                        period=f"{pipeline.id}/{stage.id}@{entered_utc.isoformat()}",
                        title=f"{who} over the SLA of {stage.display_name}",
                        detail=f"{days} days in stage '{stage.id}' of pipeline '{pipeline.id}' "
                        f"(SLA {stage.sla.max_days} days)",
                        data={
                            "lead_id": lead_id,
                            "email": email,
                            "pipeline": pipeline.id,
                            "stage": stage.id,
                            "days_in_stage": days,
                            "sla_days": stage.sla.max_days,
                            "deal_value": value,
                        },
                        lead_id=lead_id,
                        since=entered,
                    )
                )
    return found
