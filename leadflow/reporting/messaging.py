"""Email results per template and A/B variant, and how fast leads first answer.

A message counts as sent when it reached SMTP (it has ``sent_at``, or was refused with a
bounce) at a moment inside the period. Engagement comes from events carrying the message's
outbox id in ``message_id``, up to ``until``; each message counts at most once per kind,
however many times it was opened. A bounce is either the SMTP refusal or a later bounce
event. Rates divide by delivered (sent - bounced); the bounce rate divides by sent.
"""

from __future__ import annotations

import operator
from functools import reduce
from typing import Any

from sqlalchemy import Connection, Subquery, and_, case, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from leadflow.reporting.sqlfn import Distribution, Scope, days_between, distributions
from models.tables import EVENTS, LEADS, OUTBOX, MessageStatus

ENGAGEMENT = {
    "opened": "email_opened",
    "clicked": "email_clicked",
    "replied": "replied",
    "unsubscribed": "unsubscribed",
    "bounced": "bounced",
}


def variant_results(conn: Connection, scope: Scope) -> list[dict[str, Any]]:
    """Sent, bounced and engaged messages per (pipeline, template, variant).

    One pass over the sent messages: each message's engagement is a bit per kind it had (on
    SQLite one seek on ``ix_event_message`` per message, ``OFFSET 0`` keeping that a subquery
    run once per message; on PostgreSQL the events grouped per message once and hash-joined),
    then the bits are summed per group.
    """
    sent = _sent_messages(scope)

    def had(name: str) -> ColumnElement[bool]:
        return sent.c.seen.op("&")(_BIT[name]) != 0

    rows = conn.execute(
        select(
            sent.c.pipeline,
            sent.c.template,
            sent.c.variant,
            func.count().label("sent"),
            func.sum(case((or_(sent.c.refused, had("bounced")), 1), else_=0)).label("bounced"),
            *[
                func.sum(case((had(name), 1), else_=0)).label(name)
                for name in ENGAGEMENT
                if name != "bounced"
            ],
        ).group_by(sent.c.pipeline, sent.c.template, sent.c.variant)
    ).all()
    return [
        {
            "pipeline": r.pipeline,
            "template": r.template,
            "variant": r.variant,
            **{name: int(getattr(r, name) or 0) for name in ("sent", *ENGAGEMENT)},
        }
        for r in rows
    ]


def _sent_messages(scope: Scope) -> Subquery:
    """Each message sent (or refused) in scope: its group, whether it bounced at once, and
    the bits of the engagement kinds it had by ``scope.until``."""
    msg = OUTBOX
    event = EVENTS
    lead = LEADS
    bits = [
        func.max(case((event.c.type == kind, _BIT[name]), else_=0))
        for name, kind in ENGAGEMENT.items()
    ]
    messages = msg.join(lead, lead.c.id == msg.c.lead_id)
    seen: ColumnElement[Any]
    if scope.dialect == "postgresql":  # one hashed pass over the events, joined by hash
        engaged = (
            select(event.c.message_id, reduce(operator.add, bits).label("seen"))
            .where(event.c.message_id.is_not(None), event.c.occurred_at <= scope.until)
            .group_by(event.c.message_id)
            .subquery()
        )
        messages = messages.outerjoin(engaged, engaged.c.message_id == msg.c.id)
        seen = func.coalesce(engaged.c.seen, 0)
    else:  # SQLite: one ix_event_message seek per message (no hash join to use)
        seen = (
            select(reduce(operator.add, bits))
            .where(event.c.message_id == msg.c.id, event.c.occurred_at <= scope.until)
            .scalar_subquery()
        )
    return (
        select(
            lead.c.pipeline,
            msg.c.template,
            msg.c.variant,
            (msg.c.status == MessageStatus.BOUNCED).label("refused"),
            seen.label("seen"),
        )
        .select_from(messages)
        .where(
            or_(msg.c.sent_at.is_not(None), msg.c.status == MessageStatus.BOUNCED),
            scope.within(func.coalesce(msg.c.sent_at, msg.c.updated_at)),
            *scope.in_pipeline(lead.c.pipeline),
        )
        .offset(0)
        .subquery()
    )


_BIT = {name: 1 << i for i, name in enumerate(ENGAGEMENT)}


def first_response(conn: Connection, scope: Scope) -> dict[str | None, Distribution]:
    """Hours from a lead's first sent email to its first reply after it, for replies in the
    period.

    Starts from the leads that replied by ``until`` (usually far fewer than those mailed):
    their first emails are one join on ``ix_outbox_lead_sent``, and each first reply after
    it one seek on ``ix_event_lead_type_at``. ``OFFSET 0`` keeps that step a subquery run
    once per lead (neither database inlines a subquery with an OFFSET).
    """
    msg = OUTBOX
    event = EVENTS
    lead = LEADS
    repliers = (
        select(event.c.lead_id)
        .where(event.c.type == "replied", event.c.occurred_at <= scope.until)
        .group_by(event.c.lead_id)
        .subquery()
    )
    first_sent = (
        select(repliers.c.lead_id, func.min(msg.c.sent_at).label("first_sent"))
        .select_from(
            repliers.join(
                msg, and_(msg.c.lead_id == repliers.c.lead_id, msg.c.sent_at <= scope.until)
            )
        )
        .group_by(repliers.c.lead_id)
        .subquery()
    )
    reply = event.alias("reply")
    first_reply = (
        select(
            first_sent.c.lead_id,
            first_sent.c.first_sent,
            select(func.min(reply.c.occurred_at))
            .where(
                reply.c.lead_id == first_sent.c.lead_id,
                reply.c.type == "replied",
                reply.c.occurred_at >= first_sent.c.first_sent,
                reply.c.occurred_at <= scope.until,
            )
            .scalar_subquery()
            .label("first_reply"),
        )
        .offset(0)
        .subquery()
    )
    hours = (
        select(
            lead.c.pipeline,
            (
                days_between(scope.dialect, first_reply.c.first_reply, first_reply.c.first_sent)
                * 24.0
            ).label("v"),
        )
        .select_from(first_reply.join(lead, lead.c.id == first_reply.c.lead_id))
        .where(scope.within(first_reply.c.first_reply), *scope.in_pipeline(lead.c.pipeline))
    )
    return {key[0]: dist for key, dist in distributions(conn, hours, ["pipeline"]).items()}
