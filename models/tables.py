"""SQLModel tables: the database is the source of truth and the guard.

One module over 400 lines because it is one concept, the schema: every table, index and
constraint read together, as the migrations mirror them.

Every "what is due now" question is answered through an indexed timestamp column:
``Lead.rescore_at`` (scoring), ``Lead.next_action_at`` (stage engine),
``OutboundMessage.due_at`` with ``status`` (sending), ``Callback.due_at`` (revival).
An idle tick therefore reads a handful of index pages, whatever the number of leads.

All timestamps are aware UTC datetimes (SQLModel's ``UTCDateTime`` column type).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Column, Index, Table, UniqueConstraint
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Float
from sqlmodel import Field, SQLModel


class LeadStatus(StrEnum):
    """Where a lead lives: in a pipeline stage, parked on the callback list, or closed."""

    ACTIVE = "active"
    CALLBACK = "callback"
    CLOSED = "closed"


class MessageStatus(StrEnum):
    """Outbox states. ``sending`` is a claim; ``unknown`` is never retried automatically."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    BOUNCED = "bounced"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


OPEN_MESSAGE_STATES = (MessageStatus.PENDING, MessageStatus.DEFERRED)


class LeadBase(SQLModel):
    """Fields a lead can be created with (from a CSV row, a web form, the API)."""

    email: str = Field(max_length=320)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    company: str | None = Field(default=None, max_length=300)
    title: str | None = Field(default=None, max_length=300)
    phone: str | None = Field(default=None, max_length=64)
    industry: str | None = Field(default=None, max_length=100)
    company_size: int | None = None
    country: str | None = Field(default=None, max_length=64)
    timezone: str | None = Field(default=None, max_length=64)
    source: str | None = Field(default=None, max_length=100)
    lawful_basis: str | None = Field(default=None, max_length=64)
    deal_value: float | None = None
    budget: float | None = None
    authority: bool | None = None
    need: str | None = Field(default=None, max_length=300)
    timeline_days: int | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Lead(LeadBase, table=True):
    """A person in (or out of) a pipeline; one row per normalized email."""

    __tablename__ = "lead"
    __table_args__ = (
        Index("ix_lead_next_action_at", "next_action_at"),
        Index("ix_lead_rescore_at", "rescore_at"),
        Index("ix_lead_pipeline_stage", "pipeline", "stage"),
        # The report's snapshot, outcomes and weekly trend: covering, pipeline first, so each
        # is one index-only pass in GROUP BY order (see leadflow/reporting/).
        Index(
            "ix_lead_report_stage",
            "pipeline",
            "stage",
            "status",
            "stage_entered_at",
            "stuck",
            "deal_value",
            "next_action_at",  # deals at risk: the open deals read from the index alone
        ),
        Index("ix_lead_report_source", "pipeline", "source", "created_at", "won_at"),
        Index("ix_lead_report_won", "pipeline", "won_at", "created_at", "deal_value"),
        Index("ix_lead_report_closed", "pipeline", "status", "closed_at"),
        # owner first: `leads --owner`, a member's open leads (capacity), the leads of an
        # inactive member and the unassigned ones (owner IS NULL), each an index range
        Index("ix_lead_owner", "owner", "status", "pipeline", "stage"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, sa_column_kwargs={"unique": True})
    status: str = Field(default=LeadStatus.ACTIVE, max_length=16)
    pipeline: str | None = Field(default=None, max_length=64)
    stage: str | None = Field(default=None, max_length=64)
    stage_entered_at: datetime | None = None
    round: int = 0  # incremented on every revival from the callback list
    recycle_count: int = 0
    stuck: bool = False
    fit_score: float = 0.0
    engagement_score: float = 0.0
    score: float = 0.0
    grade: str | None = Field(default=None, max_length=8)
    scored_at: datetime | None = None
    rescore_at: datetime | None = None
    next_action_at: datetime | None = None
    cadence: str | None = Field(default=None, max_length=64)
    cadence_done_at: datetime | None = None
    won_at: datetime | None = None
    closed_at: datetime | None = None
    owner: str | None = Field(default=None, max_length=64)  # a team member's id
    created_at: datetime
    updated_at: datetime


class LeadCreate(LeadBase):
    """What the API and importers accept."""


class LeadPublic(LeadBase):
    """What the API returns."""

    id: int
    status: str
    pipeline: str | None
    stage: str | None
    score: float
    grade: str | None


class Event(SQLModel, table=True):
    """An engagement or sales event (opened, clicked, replied, meeting_booked, won...)."""

    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_lead_type_at", "lead_id", "type", "occurred_at"),
        Index("ix_event_type_at", "type", "occurred_at", "lead_id"),  # report: who replied
        Index("ix_event_message", "message_id", "type", "occurred_at"),  # report: per message
        Index("ix_event_occurred", "occurred_at", "lead_id"),  # report: recent activity
    )

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    type: str = Field(max_length=64)
    occurred_at: datetime
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    source: str | None = Field(default=None, max_length=64)
    message_id: int | None = None


class StageTransition(SQLModel, table=True):
    """Append-only history of every move; replaying it gives the current stage.

    A row is also one completed stay: ``from_stage`` entered at ``from_entered_at`` and left
    at ``at`` for ``to_stage``, so reports aggregate stays without pairing rows per lead.
    ``from_entered_at`` is NULL when there was no stage before (intake, revival).
    """

    __tablename__ = "stage_transition"
    __table_args__ = (
        # lead_id, at: a lead's history; pipeline, to_stage: the report's furthest stage per lead.
        Index("ix_transition_lead_at", "lead_id", "at", "pipeline", "to_stage"),
        Index("ix_transition_to_at", "to_stage", "at"),
        # The report's stays and flows: covering, and in GROUP BY order (no sort).
        Index("ix_transition_stay", "pipeline", "from_stage", "to_stage", "at", "from_entered_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    pipeline: str | None = Field(default=None, max_length=64)
    from_stage: str | None = Field(default=None, max_length=64)
    to_stage: str | None = Field(default=None, max_length=64)
    from_entered_at: datetime | None = None
    at: datetime
    kind: str = Field(max_length=32)  # intake, rule, sla, cadence, manual, event, recycle, revive
    reason: str = Field(default="", max_length=500)
    actor: str = Field(default="engine", max_length=100)
    config_hash: str | None = Field(default=None, max_length=64)


class OwnerChange(SQLModel, table=True):
    """Append-only history of who owns a lead, audited like a stage move: every assignment
    (``kind``: rule, reassign, manual) with the owner before and after, why and by whom."""

    __tablename__ = "owner_change"
    __table_args__ = (
        Index("ix_owner_change_lead_at", "lead_id", "at"),
        Index("ix_owner_change_to_at", "to_owner", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    from_owner: str | None = Field(default=None, max_length=64)
    to_owner: str | None = Field(default=None, max_length=64)
    at: datetime
    kind: str = Field(max_length=16)  # rule, reassign, manual
    rule: int | None = None  # the assignment rule's index (kind rule or reassign)
    group_id: str | None = Field(default=None, max_length=64)  # whose round robin picked
    reason: str = Field(default="", max_length=500)
    actor: str = Field(default="engine", max_length=100)
    config_hash: str | None = Field(default=None, max_length=64)


class RoundRobin(SQLModel, table=True):
    """Each group's smooth weighted round robin, where the last pick left it: a member's
    running ``current`` weight. Kept in the database so consecutive and overlapping runs
    continue one sequence; rows are reset when the group's members or weights change."""

    __tablename__ = "round_robin"

    group_id: str = Field(primary_key=True, max_length=64)
    member_id: str = Field(primary_key=True, max_length=64)
    weight: int
    current: int = Field(default=0, sa_type=BigInteger)
    picks: int = Field(default=0, sa_type=BigInteger)  # since the last reset
    updated_at: datetime


class OutboundMessage(SQLModel, table=True):
    """The outbox: one row per (lead, cadence, step, round), claimed before any SMTP call."""

    __tablename__ = "outbound_message"
    __table_args__ = (
        UniqueConstraint("lead_id", "cadence", "step", "round", name="uq_outbox_lead_step"),
        Index("ix_outbox_status_due", "status", "due_at"),
        Index("ix_outbox_lead_status", "lead_id", "status"),
        Index("ix_outbox_claimed_at", "claimed_at"),  # today's sends, for the daily caps
        Index("ix_outbox_lead_sent", "lead_id", "sent_at"),  # report: a lead's first email
        Index("ix_outbox_sent", "sent_at", "lead_id"),  # report: recent activity
    )

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    cadence: str = Field(max_length=64)
    step: str = Field(max_length=64)
    round: int = 0
    kind: str = Field(default="cadence", max_length=16)  # cadence | checkin
    stage: str | None = Field(default=None, max_length=64)
    template: str | None = Field(default=None, max_length=128)
    variant: str | None = Field(default=None, max_length=32)
    to_email: str = Field(max_length=320)
    subject: str | None = Field(default=None, max_length=1000)
    message_id: str | None = Field(default=None, max_length=400)
    status: str = Field(default=MessageStatus.PENDING, max_length=16)
    due_at: datetime
    claim_token: str | None = Field(default=None, max_length=64)
    claimed_at: datetime | None = None
    sent_at: datetime | None = None
    attempts: int = 0
    smtp_code: int | None = None
    last_error: str | None = Field(default=None, max_length=1000)
    defer_reason: str | None = Field(default=None, max_length=64)
    created_at: datetime
    updated_at: datetime


class Callback(SQLModel, table=True):
    """The future-callback list: a recycled lead waits here until its follow-up date."""

    __tablename__ = "callback"
    __table_args__ = (Index("ix_callback_open_due", "revived_at", "due_at"),)

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    pipeline: str | None = Field(default=None, max_length=64)
    from_stage: str | None = Field(default=None, max_length=64)
    reason: str = Field(default="", max_length=500)
    due_at: datetime
    created_at: datetime
    revived_at: datetime | None = None


class Suppression(SQLModel, table=True):
    """Addresses that must never be mailed (unsubscribe, bounce, do-not-email, objection)."""

    __tablename__ = "suppression"

    email: str = Field(primary_key=True, max_length=320)
    reason: str = Field(max_length=64)
    detail: str | None = Field(default=None, max_length=500)
    created_at: datetime


class ScoreChange(SQLModel, table=True):
    """Score history, one row each time a lead's total or grade changes."""

    __tablename__ = "score_change"
    __table_args__ = (Index("ix_score_change_lead_at", "lead_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="lead.id")
    at: datetime
    fit_score: float
    engagement_score: float
    score: float
    grade: str | None = Field(default=None, max_length=8)


class InboundMessage(SQLModel, table=True):
    """One message read from the mailbox, with what it was taken for and why.

    ``key`` is the message's Message-ID (or a hash of its headers when it has none) and is
    unique: re-syncing, a crash mid-sync and two syncs at once record each message once.
    """

    __tablename__ = "inbound_message"
    __table_args__ = (
        Index("ix_inbound_lead_received", "lead_id", "received_at"),
        Index("ix_inbound_kind_received", "kind", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=400, sa_column_kwargs={"unique": True})
    mailbox: str = Field(max_length=300)
    folder: str = Field(max_length=200)
    uid: int | None = Field(default=None, sa_type=BigInteger)
    received_at: datetime
    synced_at: datetime
    kind: str = Field(max_length=16)  # bounced, soft_bounced, out_of_office, unsubscribed, ...
    lead_id: int | None = None
    outbox_id: int | None = None
    matched_by: str | None = Field(default=None, max_length=16)  # thread, dsn, address
    from_email: str | None = Field(default=None, max_length=320)
    subject: str | None = Field(default=None, max_length=1000)
    snippet: str | None = Field(default=None, max_length=2000)
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class MailboxCheckpoint(SQLModel, table=True):
    """How far a mailbox folder has been read: the last UID under one UIDVALIDITY.

    A folder whose UIDVALIDITY changed starts a new checkpoint from UID 0; the messages it
    finds again are recognised by their key (``InboundMessage.key``) and not recorded twice.
    """

    __tablename__ = "mailbox_checkpoint"

    mailbox: str = Field(primary_key=True, max_length=300)
    folder: str = Field(primary_key=True, max_length=200)
    uidvalidity: int = Field(primary_key=True, sa_type=BigInteger)
    last_uid: int = Field(default=0, sa_type=BigInteger)
    messages: int = 0  # recorded under this checkpoint (re-offered known ones not counted)
    synced_at: datetime


class RunRecord(SQLModel, table=True):
    """One row per engine run: which config version ran, at which simulated time, what it did."""

    __tablename__ = "run_record"
    __table_args__ = (Index("ix_run_record_started", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    now: datetime
    started_at: datetime
    finished_at: datetime | None = None
    config_hash: str = Field(max_length=64)
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Alert(SQLModel, table=True):
    """Something ops or sales were told about, once: ``(kind, subject, period)`` is unique, so
    overlapping runs and retries raise it once (``leadflow/alerts/``). ``lead_id`` and
    ``since`` repeat the key in columns the "not alerted yet" queries join on."""

    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint("kind", "subject", "period", name="uq_alert_key"),
        Index("ix_alert_kind_lead_since", "kind", "lead_id", "since"),
        Index("ix_alert_raised", "raised_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)  # flow_failed, sla_flagged, sending_guard
    subject: str = Field(max_length=200)  # what it is about: a flow run, a lead, sending
    period: str = Field(max_length=100)  # which occurrence: a stage entry, a pause
    title: str = Field(max_length=500)
    detail: str = Field(default="", max_length=2000)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    lead_id: int | None = None
    since: datetime | None = None
    raised_at: datetime


class AlertDelivery(SQLModel, table=True):
    """One alert to one channel: pending, claimed (``sending``) before the request is made,
    then sent or failed (retried while ``attempts`` allow). A claim a crash left is never
    resent: the alert may have arrived."""

    __tablename__ = "alert_delivery"
    __table_args__ = (
        UniqueConstraint("alert_id", "channel", name="uq_alert_delivery"),
        Index("ix_alert_delivery_status_due", "status", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id")
    channel: str = Field(max_length=64)
    status: str = Field(default="pending", max_length=16)  # pending sending sent failed
    attempts: int = 0
    due_at: datetime
    claim_token: str | None = Field(default=None, max_length=64)
    claimed_at: datetime | None = None
    sent_at: datetime | None = None
    last_error: str | None = Field(default=None, max_length=1000)


class SendingPause(SQLModel, table=True):
    """Sending is paused while a row has ``active`` true; ``active`` is NULL once resumed,
    and unique, so at most one pause holds. The rows are the history (who, why, figures)."""

    __tablename__ = "sending_pause"

    id: int | None = Field(default=None, primary_key=True)
    active: bool | None = Field(default=True, sa_column_kwargs={"unique": True})
    paused_at: datetime
    paused_by: str = Field(max_length=100)  # "guard" or a person
    reason: str = Field(max_length=500)
    figures: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    resumed_at: datetime | None = None
    resumed_by: str | None = Field(default=None, max_length=100)
    resume_reason: str | None = Field(default=None, max_length=500)


__all__ = [
    "ALERTS",
    "ALERT_DELIVERIES",
    "CALLBACKS",
    "EVENTS",
    "INBOUND",
    "LEADS",
    "MAILBOX_CHECKPOINTS",
    "OPEN_MESSAGE_STATES",
    "OUTBOX",
    "OWNER_CHANGES",
    "ROUND_ROBIN",
    "RUNS",
    "SCORE_CHANGES",
    "SENDING_PAUSES",
    "SUPPRESSIONS",
    "TRANSITIONS",
    "Alert",
    "AlertDelivery",
    "Callback",
    "Event",
    "InboundMessage",
    "Lead",
    "LeadBase",
    "LeadCreate",
    "LeadPublic",
    "LeadStatus",
    "MailboxCheckpoint",
    "MessageStatus",
    "OutboundMessage",
    "OwnerChange",
    "RoundRobin",
    "RunRecord",
    "ScoreChange",
    "SendingPause",
    "StageTransition",
    "Suppression",
]


def _table(model: type[SQLModel]) -> Table:
    """The Core table behind a model, typed (SQLModel does not declare ``__table__``)."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


LEADS = _table(Lead)
EVENTS = _table(Event)
TRANSITIONS = _table(StageTransition)
OUTBOX = _table(OutboundMessage)
CALLBACKS = _table(Callback)
SUPPRESSIONS = _table(Suppression)
SCORE_CHANGES = _table(ScoreChange)
RUNS = _table(RunRecord)
INBOUND = _table(InboundMessage)
MAILBOX_CHECKPOINTS = _table(MailboxCheckpoint)
ALERTS = _table(Alert)
ALERT_DELIVERIES = _table(AlertDelivery)
SENDING_PAUSES = _table(SendingPause)
OWNER_CHANGES = _table(OwnerChange)
ROUND_ROBIN = _table(RoundRobin)


class stay_order(FunctionElement[float]):  # lower case: used like a SQL function
    """Orders stays by length: ``stay_order(at, from_entered_at)``, the key of an index.

    On SQLite it is exactly the report's value (days, ``leadflow.reporting.sqlfn``), so the
    index hands it over without computing it; PostgreSQL allows only immutable index
    expressions, so there it is the interval ``at - from_entered_at`` (same order).
    """

    type = Float()
    name = "stay_order"
    inherit_cache = True


@compiles(stay_order, "sqlite")
def _stay_order_sqlite(element: stay_order, compiler: SQLCompiler, **kw: Any) -> str:
    at, entered = (compiler.process(c, **kw) for c in element.clauses)
    return f"(julianday({at}) - 2440587.5) - (julianday({entered}) - 2440587.5)"


@compiles(stay_order)
def _stay_order_default(element: stay_order, compiler: SQLCompiler, **kw: Any) -> str:
    at, entered = (compiler.process(c, **kw) for c in element.clauses)
    return f"({at} - {entered})"


# Time in stage per (pipeline, stage): the stays in length order, so a percentile is one
# ``ORDER BY ... LIMIT 2 OFFSET k`` walk of the index instead of a sort of every stay.
# ``from_entered_at`` makes it covering in SQLite's eyes, so its planner picks it.
Index(
    "ix_transition_stay_days",
    TRANSITIONS.c.pipeline,
    TRANSITIONS.c.from_stage,
    stay_order(TRANSITIONS.c.at, TRANSITIONS.c.from_entered_at),
    TRANSITIONS.c.at,
    TRANSITIONS.c.from_entered_at,
)
