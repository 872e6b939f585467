"""The one definition of a run: its steps, their order, and what each one did.

``STEPS`` says how each step is planned and done; ``FLOWS`` which steps each flow runs, in
order; ``run`` walks them. Whoever runs a flow walks this same definition with a ``Runner``:
``InlineRunner`` here (``engine.tick``, tests, benchmarks, the demo's direct mode), and the
Prefect runner in ``flows/`` (each step a task run, each batch of a batched step a mapped
task run, retries where the work is I/O). Outcomes are merged here, once, and their
``summary()`` is the text logs, artifacts and ``leadflow run`` show.

A step is either done once (``once``), or planned into id ranges of its due rows by one
indexed read (``plan``) and done a batch at a time (``batch``), each batch in its own
transaction. ``leadflow plan`` walks the same steps inside one transaction it rolls back
(``planning.DryRunner``): a batched step's ``work`` there, a once-step's ``dry`` form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.sql.elements import ColumnElement

from leadflow.alerts import steps as alerts
from leadflow.delivery.outcome import DeliveryOutcome
from leadflow.delivery.session import DeliverySession, reconcile_stale
from leadflow.delivery.smtp import TransportFactory
from leadflow.intake.inbox import import_inbox
from leadflow.learning.runs import evaluation_figures
from leadflow.listening.sync import SyncOutcome, sync_mailbox
from leadflow.outbox.claim import claim_batch
from leadflow.outbox.claim import due_condition as outbox_due
from leadflow.pipeline import owners, scoring, stages, stranded
from leadflow.pipeline.assignment import AssignOutcome
from leadflow.pipeline.batching import IdRange, id_ranges, one_range
from leadflow.pipeline.config_change import (
    ConfigChange,
    apply_config_change,
    change_config,
    config_change_pending,
)
from leadflow.pipeline.moves import AdvanceOutcome
from leadflow.pipeline.run_outcome import Figures, RunOutcome
from leadflow.reporting.build import build_report
from leadflow.reporting.tables import headline
from leadflow.runtime import Runtime
from models.db import session_scope
from models.tables import CALLBACKS, LEADS, OUTBOX

# --- the step functions ------------------------------------------------------------------------


def score_ranges(rt: Runtime, *, now: datetime) -> list[IdRange]:
    return STEPS["score"].plan(rt, now)


def score(rt: Runtime, id_range: IdRange, *, now: datetime) -> scoring.ScoreOutcome:
    result: scoring.ScoreOutcome = STEPS["score"].batch(rt, id_range, now)
    return result


def outbox_ranges(rt: Runtime, *, now: datetime, kind: str) -> list[IdRange]:
    return id_ranges(rt.engine, OUTBOX.c.id, outbox_due(now, kind), rt.settings.batch_size)


def deliver_due(
    rt: Runtime, *, now: datetime, kind: str, transport: TransportFactory
) -> DeliveryOutcome:
    """The delivery step: claims a crashed run left unanswered become ``unknown`` first, then
    every due batch of ``kind`` goes out, one after another without a pause, in one
    ``DeliverySession`` (one SMTP pool and building helper for all of them). Each batch is
    claimed and recorded by itself, so a retry after a failure sends only unclaimed rows."""
    unknown = reconcile_stale(rt, now=now)
    with rt.engine.connect() as conn:  # a sending pause (leadflow/alerts/guard.py) holds
        paused = alerts.sending_paused(conn)
    ranges = [] if paused else outbox_ranges(rt, now=now, kind=kind)
    out = DeliveryOutcome()
    if ranges:
        with DeliverySession(rt, now=now, transport=transport) as session:
            out = session.deliver(ranges, kind=kind)
    out.reconciled = unknown
    out.batches = len(ranges)
    return out


class MailboxUnreadable(RuntimeError):
    """The mailbox could not be read at all: the run stops before anything is sent, since
    who has replied is unknown (the flow's task retries it)."""


def listen(rt: Runtime, *, now: datetime) -> SyncOutcome:
    """Read the mailbox (``LEADFLOW_MAILBOX_URL``) from its checkpoints on.

    Runs before scoring and the stage engine, so a reply read now stops the cadence before
    the same run would send the next step."""
    outcome = sync_mailbox(rt, now=now)
    if outcome.errors and not outcome.fetched:
        raise MailboxUnreadable(outcome.summary())
    return outcome


def _report(conn: Connection, rt: Runtime, now: datetime) -> Figures:
    data = build_report(conn, rt.loaded, since=None, until=now, pipeline=None)
    return Figures({**data, "summary": headline(data)})  # the run's log line: its headline


def _reading(
    rt: Runtime, read: Callable[[Connection, Runtime, datetime], Any], now: datetime
) -> Any:
    with rt.engine.connect() as conn:
        return read(conn, rt, now)


# --- the steps, once -----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a run. ``task`` names its task run in the Prefect UI; ``io`` is what a
    retry of it is for (``database``, ``mailbox``, ``smtp``, ``files``).

    A batched step says which rows are due (``rows``, ``due``) and what one batch does in the
    caller's transaction (``work``); ``plan`` and ``batch`` are how every real run uses them.
    A once-step's ``dry`` is what a dry run does instead (None: nothing, e.g. no mailbox read).
    """

    name: str
    task: str
    io: str
    once: Callable[[Runtime, datetime, TransportFactory], Any] | None = None
    rows: Any = None  # the id column a batched step's ranges are of
    due: Callable[[datetime], ColumnElement[bool]] | None = None
    work: Callable[[Connection, Runtime, IdRange, datetime], Any] | None = None
    dry: Callable[[Connection, Runtime, datetime], Any] | None = None
    empty: Callable[[], Any] = Figures
    needed: Callable[[Runtime], bool] = lambda rt: True

    @property
    def batched(self) -> bool:
        return self.work is not None

    def plan(self, rt: Runtime, now: datetime) -> list[IdRange]:
        """The id ranges of the rows due at ``now``, ``batch_size`` rows each at most."""
        assert self.due is not None
        return id_ranges(rt.engine, self.rows, self.due(now), rt.settings.batch_size)

    def batch(self, rt: Runtime, id_range: IdRange, now: datetime) -> Any:
        """One batch in a transaction of its own (it re-checks ``due`` itself)."""
        assert self.work is not None
        with session_scope(rt.engine) as session:
            return self.work(session.connection(), rt, id_range, now)


def _batched(
    name: str,
    task: str,
    rows: Any,
    due: Callable[[datetime], ColumnElement[bool]],
    work: Callable[..., Any],
    empty: Callable[[], Any],
) -> Step:
    return Step(
        name,
        task,
        "database",
        rows=rows,
        due=due,
        work=lambda conn, rt, r, now: work(conn, rt, r, now=now),
        empty=empty,
    )


def _sending(name: str, kind: str) -> Step:
    return Step(
        name,
        f"deliver due {name}",
        "smtp",
        once=lambda rt, now, transport: deliver_due(rt, now=now, kind=kind, transport=transport),
        dry=lambda conn, rt, now: _claim_only(conn, rt, now=now, kind=kind),
        empty=DeliveryOutcome,
    )


def _claim_only(conn: Connection, rt: Runtime, *, now: datetime, kind: str) -> DeliveryOutcome:
    """A dry run's delivery: the claims a run would make (caps, windows, suppression), no
    message built or sent."""
    out = DeliveryOutcome()
    if alerts.sending_paused(conn):
        return out
    for id_range in one_range(conn, OUTBOX.c.id, outbox_due(now, kind)):
        claim = claim_batch(conn, rt, id_range, now=now, kind=kind)
        out.count_claim(claim)
        out.templates.update(item.template for item in claim.claimed)
    return out


def _config_dry(conn: Connection, rt: Runtime, now: datetime) -> ConfigChange:
    """What applying the config would do; with an unchanged config, the stranded leads."""
    if config_change_pending(rt):
        return change_config(conn, rt, now=now)
    return ConfigChange(stranded=stranded.find(conn, rt.loaded))


STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        Step(
            "config",
            "apply config change",
            "database",
            once=lambda rt, now, _t: apply_config_change(rt, now=now),
            dry=_config_dry,
            empty=ConfigChange,
        ),
        Step(
            "intake",
            "import inbox files",
            "files",
            once=lambda rt, now, _t: Figures(import_inbox(rt, now=now)),
        ),
        Step(
            "mailbox",
            "sync mailbox",
            "mailbox",
            once=lambda rt, now, _t: listen(rt, now=now),
            empty=SyncOutcome,
            needed=lambda rt: bool(rt.settings.mailbox_url),
        ),
        _batched(
            "score",
            "score batch",
            LEADS.c.id,
            scoring.due_condition,
            lambda conn, rt, r, now: scoring.score_batch(conn, rt.loaded, r, now=now),
            scoring.ScoreOutcome,
        ),
        _batched(
            "callbacks",
            "revive callbacks",
            CALLBACKS.c.id,
            stages.callbacks_due_condition,
            stages.revive_batch,
            AdvanceOutcome,
        ),
        _batched(
            "advance",
            "advance batch",
            LEADS.c.id,
            stages.due_condition,
            stages.advance_batch,
            AdvanceOutcome,
        ),
        Step(
            "assign",
            "assign owners",
            "database",
            once=lambda rt, now, _t: owners.assign_owners(rt, now=now),
            dry=owners.assign_dry,
            empty=AssignOutcome,
            needed=owners.needed,
        ),
        Step(
            "guard",
            "check sending guard",
            "database",
            once=lambda rt, now, t: alerts.guard_step(rt, now=now, transport=t),
            dry=lambda conn, rt, now: alerts.check_guard(conn, rt, now=now),
            empty=alerts.GuardOutcome,
            needed=alerts.configured,
        ),
        _sending("nurture", "cadence"),
        _sending("checkins", "checkin"),
        Step(
            "learn",
            "evaluate and learn scoring",
            "database",
            once=lambda rt, now, _t: Figures(evaluation_figures(rt)),
        ),
        Step(
            "report",
            "compute report",
            "database",
            once=lambda rt, now, _t: _reading(rt, _report, now),
            dry=_report,
        ),
        Step(
            "alerts",
            "send alerts",
            "database",
            once=lambda rt, now, t: alerts.alerts_step(rt, now=now, transport=t),
            dry=alerts.alerts_dry,
            empty=alerts.AlertsOutcome,
            needed=alerts.configured,
        ),
    )
}

# Which steps each flow runs, in order. A changed config is applied before anything is
# scored or moved; replies are read before anything is scored or sent; owners are assigned
# once a new lead has its stage, before anything is sent; the sending guard is judged before
# anything is sent; alerts go last (deals the SLA flagged in this run).
TICK = (
    "config",
    "intake",
    "mailbox",
    "score",
    "callbacks",
    "advance",
    "assign",
    "guard",
    "nurture",
    "checkins",
    "alerts",
)
FLOWS: dict[str, tuple[str, ...]] = {
    "intake": ("intake",),
    "score": ("config", "score"),
    "advance": ("config", "advance", "assign", "alerts"),
    "nurture": ("guard", "nurture"),
    "callbacks": ("callbacks",),
    "checkins": ("guard", "checkins"),
    "report": ("report",),
    "mailbox": ("mailbox",),
    "learn": ("learn",),
    "tick": TICK,
}


# --- walking them ----------------------------------------------------------------------------


class Runner(Protocol):
    """How a run's steps are executed: here, or as Prefect task runs."""

    def once(self, step: Step, now: datetime) -> Any: ...

    def plan(self, step: Step, now: datetime) -> list[IdRange]: ...

    def each(self, step: Step, ranges: Sequence[IdRange], now: datetime) -> list[Any]: ...


class InlineRunner:
    """Every step called here, one batch after another."""

    def __init__(self, rt: Runtime, transport: TransportFactory) -> None:
        self.rt, self.transport = rt, transport

    def once(self, step: Step, now: datetime) -> Any:
        assert step.once is not None
        return step.once(self.rt, now, self.transport)

    def plan(self, step: Step, now: datetime) -> list[IdRange]:
        return step.plan(self.rt, now)

    def each(self, step: Step, ranges: Sequence[IdRange], now: datetime) -> list[Any]:
        return [step.batch(self.rt, r, now) for r in ranges]


def run(rt: Runtime, flow: str, *, now: datetime, runner: Runner) -> RunOutcome:
    """Walk ``FLOWS[flow]`` with ``runner``; batched outcomes are merged here."""
    out = RunOutcome(flow=flow, now=now, config_hash=rt.config_hash)
    for name in FLOWS[flow]:
        step = STEPS[name]
        if not step.needed(rt):
            continue
        if not step.batched:
            outcome = runner.once(step, now)
            if hasattr(outcome, "batches"):
                out.step_batches[name] = outcome.batches
        else:
            ranges = runner.plan(step, now)
            outcome = step.empty()
            for part in runner.each(step, ranges, now):
                outcome.merge(part)
            out.step_batches[name] = len(ranges)
        setattr(out, name, outcome)
        out.ran.append(name)
    return out


def tick(rt: Runtime, *, now: datetime, transport: TransportFactory) -> RunOutcome:
    """A whole tick here, without Prefect: the same steps the ``tick`` flow runs."""
    return run(rt, "tick", now=now, runner=InlineRunner(rt, transport))
