"""The shape of ``config/pipeline.yaml``: a declarative pydantic schema.

Structure only lives here (types, ranges, unknown keys). Cross-references — exits to unknown
stages, rules naming unknown fields, missing templates — are checked in ``validate.py`` so
that every problem is reported at once with its file position.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from leadflow.config.alerts import Alerts
from leadflow.config.team import AssignmentRule, Team

Identifier = Annotated[
    str,
    Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64, description="lower_snake_case id"),
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WORKWEEK: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
FieldKind = Literal["str", "int", "float", "bool", "datetime"]
FLOWS: tuple[str, ...] = (
    "intake",
    "score",
    "advance",
    "nurture",
    "callbacks",
    "checkins",
    "report",
    "mailbox",
    "learn",
    "tick",
)
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class Strict(BaseModel):
    """Every section refuses unknown keys, so a typo is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Sender(Strict):
    from_name: str = Field(min_length=1, max_length=200)
    from_email: str = Field(min_length=3, max_length=320)
    reply_to: str | None = None
    company: str = Field(min_length=1)
    postal_address: str = Field(min_length=5, description="Legal footer (CAN-SPAM)")
    unsubscribe_mailto: str | None = None
    daily_cap: int = Field(default=1000, ge=1, description="Emails per day for this sender")
    per_minute: int = Field(default=60, ge=1, description="Emails per minute (token bucket)")
    per_domain_daily_cap: int | None = Field(
        default=None, ge=1, description="Emails per recipient domain per day"
    )

    @field_validator("from_email", "reply_to", "unsubscribe_mailto")
    @classmethod
    def _looks_like_email(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise ValueError(f"'{value}' is not an email address")
        return value


class Holidays(Strict):
    country: str | None = Field(default=None, description="Country code for public holidays")
    subdivision: str | None = None
    extra: list[dt.date] = Field(default_factory=list, description="Company days off")


class SendWindow(Strict):
    days: list[Weekday] = Field(default_factory=lambda: list(WORKWEEK))
    start: str = "09:00"
    end: str = "17:00"
    timezone: Literal["lead", "pipeline"] = "lead"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"'{value}' is not a time of day like 09:30")
        return value

    @field_validator("days")
    @classmethod
    def _some_days(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a send window needs at least one day")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.start >= self.end:
            raise ValueError(f"window start {self.start} must be before its end {self.end}")
        return self

    @property
    def start_time(self) -> dt.time:
        return dt.time.fromisoformat(self.start)

    @property
    def end_time(self) -> dt.time:
        return dt.time.fromisoformat(self.end)

    @property
    def weekday_numbers(self) -> frozenset[int]:
        return frozenset(WEEKDAYS.index(day) for day in self.days)


class Variant(Strict):
    id: Identifier
    template: str
    weight: int = Field(default=1, ge=1)


class CadenceStep(Strict):
    id: Identifier = Field(description="Stable id: leads mid-cadence are matched to steps by id")
    template: str | None = None
    variants: list[Variant] | None = None
    delay_days: int = Field(default=0, ge=0, description="Calendar days after the previous step")
    delay_business_days: int | None = Field(
        default=None, ge=0, description="Business days after the previous step (wins over days)"
    )

    @model_validator(mode="after")
    def _one_template_source(self) -> CadenceStep:
        if (self.template is None) == (self.variants is None):
            raise ValueError("a step needs exactly one of 'template' or 'variants'")
        if self.variants is not None and not self.variants:
            raise ValueError("'variants' must not be empty")
        return self


class CadenceCompletion(Strict):
    action: Literal["advance", "recycle", "none"] = "none"
    to: Identifier | None = Field(default=None, description="Target stage for 'advance'")
    after_days: int = Field(default=0, ge=0, description="Wait after the last step")
    reason: str = "cadence completed"

    @model_validator(mode="after")
    def _target(self) -> CadenceCompletion:
        if self.action == "advance" and self.to is None:
            raise ValueError("'advance' needs a target stage in 'to'")
        return self


class Cadence(Strict):
    name: str | None = None
    window: SendWindow = Field(default_factory=SendWindow)
    steps: list[CadenceStep] = Field(min_length=1)
    stop_on: list[str] = Field(
        default_factory=lambda: ["replied", "meeting_booked", "unsubscribed", "bounced"],
        description="Event types that end the cadence; leaving the stage always ends it",
    )
    on_complete: CadenceCompletion = Field(default_factory=CadenceCompletion)


class Sla(Strict):
    max_days: int = Field(ge=1)
    action: Literal["recycle", "move", "flag"] = "flag"
    to: Identifier | None = None
    reason: str | None = None

    @model_validator(mode="after")
    def _target(self) -> Sla:
        if self.action == "move" and self.to is None:
            raise ValueError("SLA action 'move' needs a target stage in 'to'")
        return self


class Exit(Strict):
    to: Identifier
    when: str = Field(min_length=1)
    reason: str | None = None


class OnEnter(Strict):
    cadence: Identifier | None = None
    checkins: Identifier | None = None


class Stage(Strict):
    id: Identifier
    name: str | None = None
    kind: Literal["open", "won", "lost"] = "open"
    probability: float = Field(default=0.0, ge=0.0, le=1.0, description="Win probability")
    entry: str | None = Field(default=None, description="Guard for automatic moves into it")
    exits: list[Exit] = Field(default_factory=list)
    sla: Sla | None = None
    on_enter: OnEnter = Field(default_factory=OnEnter)

    @property
    def display_name(self) -> str:
        return self.name or self.id.replace("_", " ").capitalize()


class Pipeline(Strict):
    id: Identifier
    name: str | None = None
    match: str | None = Field(default=None, description="Rule choosing this pipeline at intake")
    timezone: str | None = None
    target: float | None = Field(default=None, ge=0, description="Pipeline value target")
    stages: list[Stage] = Field(min_length=1)
    moved_stages: dict[Identifier, Identifier] = Field(
        default_factory=dict,
        description="Stages removed from this pipeline -> the stage their open leads move to "
        "(an audited move at the next run)",
    )

    def stage(self, stage_id: str) -> Stage | None:
        return next((s for s in self.stages if s.id == stage_id), None)


class FitRule(Strict):
    id: Identifier
    when: str
    points: float


class Engagement(Strict):
    half_life_days: float = Field(default=30.0, gt=0)
    points: dict[str, float] = Field(default_factory=dict)
    refresh_days: float = Field(default=1.0, gt=0, description="How often decay is refreshed")


class Bant(Strict):
    budget: str | None = None
    authority: str | None = None
    need: str | None = None
    timeline: str | None = None
    points_each: float = 5.0

    def rules(self) -> dict[str, str]:
        found = {
            "budget": self.budget,
            "authority": self.authority,
            "need": self.need,
            "timeline": self.timeline,
        }
        return {key: rule for key, rule in found.items() if rule}


class Scoring(Strict):
    fit: list[FitRule] = Field(default_factory=list)
    engagement: Engagement = Field(default_factory=Engagement)
    bant: Bant = Field(default_factory=Bant)
    grades: dict[str, float] = Field(
        default_factory=lambda: {"A": 70.0, "B": 50.0, "C": 25.0, "D": 0.0},
        description="Grade -> minimum total score",
    )


class Recycling(Strict):
    callback_days: int = Field(default=90, ge=1)
    reenter_stage: Identifier
    max_recycles: int = Field(default=2, ge=0)
    lost_stage: Identifier | None = Field(
        default=None, description="Where leads go after max_recycles (default: first lost stage)"
    )
    cadence: Identifier | None = Field(
        default=None, description="Cadence for revived leads instead of the stage's own"
    )


class Checkin(Strict):
    id: Identifier
    after_days: int = Field(ge=0)
    template: str


class Renewal(Strict):
    id: Identifier
    date_field: str = Field(description="Custom attribute holding the contract end date")
    days_before: int = Field(ge=0)
    template: str


class CheckinPlan(Strict):
    checkins: list[Checkin] = Field(default_factory=list)
    renewals: list[Renewal] = Field(default_factory=list)


class Intake(Strict):
    mapping: dict[str, str] = Field(default_factory=dict, description="Source column -> lead field")
    attributes: dict[str, FieldKind] = Field(
        default_factory=dict, description="Declared custom attributes and their kinds"
    )
    do_not_email_columns: list[str] = Field(default_factory=lambda: ["do_not_email"])
    default_source: str = "import"


DEFAULT_UNSUBSCRIBE_PHRASES: tuple[str, ...] = (
    "unsubscribe",
    "remove me",
    "take me off",
    "stop emailing",
    "stop sending",
    "do not contact",
    "don't contact",
    "do not email",
    "don't email",
    "opt out",
    "opt-out",
    "abmelden",
    "austragen",
    "keine e-mails mehr",
    "désabonner",
    "desabonner",
    "désinscrire",
    "ne plus recevoir",
    "darme de baja",
    "dar de baja",
    "no me escriban",
    "no más correos",
)


class Mailbox(Strict):
    """How replies, auto-replies and bounces read from the mailbox are acted upon.

    Where the mailbox is (``LEADFLOW_MAILBOX_URL``) and its password are settings, never YAML.
    """

    after: str = Field(
        default="leave",
        pattern=r"^(leave|seen|move:\S.*)$",
        description="What to do with a message once recorded: leave, seen, or move:Folder",
    )
    soft_bounce_limit: int = Field(
        default=3, ge=1, description="Transient bounces in a row before the address is suppressed"
    )
    out_of_office_business_days: int = Field(
        default=5, ge=1, le=60, description="Pause after an auto-reply with no readable return date"
    )
    max_pause_days: int = Field(
        default=45, ge=1, le=365, description="Longest pause a return date read from a reply sets"
    )
    unsubscribe_phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_UNSUBSCRIBE_PHRASES),
        description="Phrases that make a reply an unsubscribe request (case-insensitive)",
    )
    batch_size: int = Field(default=500, ge=1, le=10_000, description="Messages per transaction")


class Tracking(Strict):
    """Open pixel and click redirects, attributed to the outbox row that sent them."""

    opens: bool = True
    clicks: bool = True
    human_after_seconds: int = Field(
        default=10,
        ge=0,
        le=3600,
        description="Opens and clicks sooner than this after sending count as machine traffic",
    )


class Schedules(Strict):
    timezone: str = Field(
        default="UTC",
        description="Time zone the crons are read in (IANA name), for serve and the deployments",
    )
    intake: str | None = None
    score: str | None = None
    advance: str | None = None
    nurture: str | None = None
    callbacks: str | None = None
    checkins: str | None = None
    report: str | None = None
    mailbox: str | None = None
    learn: str | None = None  # no cron by default: a model is proposed by people, when asked
    tick: str | None = None


class PipelineConfig(Strict):
    version: Literal[1] = 1
    timezone: str = Field(default="UTC", description="Default time zone for leads without one")
    currency: str = Field(
        default="USD", description="ISO 4217 code of deal values and targets (the report's money)"
    )
    sender: Sender
    holidays: Holidays = Field(default_factory=Holidays)
    schedules: Schedules = Field(default_factory=Schedules)
    intake: Intake = Field(default_factory=Intake)
    scoring: Scoring = Field(default_factory=Scoring)
    cadences: dict[Identifier, Cadence] = Field(default_factory=dict)
    recycling: Recycling
    checkins: dict[Identifier, CheckinPlan] = Field(default_factory=dict)
    mailbox: Mailbox = Field(default_factory=Mailbox)
    tracking: Tracking = Field(default_factory=Tracking)
    labels: dict[str, dict[str, Annotated[str, Field(min_length=1, max_length=200)]]] = Field(
        default_factory=dict,
        description="Display labels of coded lead values for templates: field -> code -> label",
    )
    team: Team = Field(default_factory=Team, description="Who works leads (docs/team.md)")
    assignment: list[AssignmentRule] = Field(default_factory=list, description="First match wins")
    alerts: Alerts | None = Field(default=None, description="Alert channels (docs/alerts.md)")
    pipelines: list[Pipeline] = Field(min_length=1)

    def pipeline(self, pipeline_id: str) -> Pipeline | None:
        return next((p for p in self.pipelines if p.id == pipeline_id), None)
