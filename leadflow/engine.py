"""The one definition of a run: its steps, their order, and what each one did.

``STEPS`` says how each step is planned and done; ``FLOWS`` which steps each flow runs, in
order; ``run`` walks them. Whoever runs a flow walks this same definition with a ``Runner``:
``InlineRunner`` here (``engine.tick``, tests, benchmarks, the demo's direct mode), and the
Prefect runner in ``flows/`` (each step a task run, each batch of a batched step a mapped
task run, retries where the work is I/O). Outcomes are merged here, once, and their
``summary()`` is the text logs, artifacts and ``leadflow run`` show.

A step is either done once (``once``), or planned into id ranges by one indexed read
(``plan``) and done a batch at a time (``batch``), each batch in its own transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from leadflow import scoring, stages
from leadflow.batching import IdRange, id_ranges
from leadflow.config_change import ConfigChange, apply_config_change
from leadflow.delivery import (
    DeliveryOutcome,
    DeliverySession,
    TransportFactory,
    deliver_batch,
    reconcile_stale,
)
from leadflow.inbox import import_inbox
from leadflow.listening.sync import SyncOutcome, sync_mailbox
from leadflow.moves import AdvanceOutcome
from leadflow.outbox import due_condition as outbox_due
from leadflow.report import build_report
from leadflow.runtime import Runtime
from models.db import session_scope
from models.tables import CALLBACKS, LEADS, OUTBOX

# --- the step functions ------------------------------------------------------------------------


def score_ranges(rt: Runtime, *, now: datetime) -> list[IdRange]:
    return id_ranges(rt.engine, LEADS.c.id, scoring.due_condition(now), rt.settings.batch_size)


def score(rt: Runtime, id_range: IdRange, *, now: datetime) -> scoring.ScoreOutcome:
    with session_scope(rt.engine) as session:
        return scoring.score_batch(session.connection(), rt.loaded, id_range, now=now)


def advance_ranges(rt: Runtime, *, now: datetime) -> list[IdRange]:
    return id_ranges(rt.engine, LEADS.c.id, stages.due_condition(now), rt.settings.batch_size)


def advance(rt: Runtime, id_range: IdRange, *, now: datetime) -> AdvanceOutcome:
    with session_scope(rt.engine) as session:
        return stages.advance_batch(session.connection(), rt, id_range, now=now)


def callback_ranges(rt: Runtime, *, now: datetime) -> list[IdRange]:
    return id_ranges(
        rt.engine,
        CALLBACKS.c.id,
        stages.callbacks_due_condition(now),
        rt.settings.batch_size,
    )


def revive(rt: Runtime, id_range: IdRange, *, now: datetime) -> AdvanceOutcome:
    with session_scope(rt.engine) as session:
        return stages.revive_batch(session.connection(), rt, id_range, now=now)


def outbox_ranges(rt: Runtime, *, now: datetime, kind: str) -> list[IdRange]:
    return id_ranges(rt.engine, OUTBOX.c.id, outbox_due(now, kind), rt.settings.batch_size)


def deliver(
    rt: Runtime, id_range: IdRange, *, now: datetime, kind: str, transport: TransportFactory
) -> DeliveryOutcome:
    """One id range of due messages, in a session of its own."""
    return deliver_batch(rt, id_range, now=now, transport=transport, kind=kind)


def deliver_due(
    rt: Runtime, *, now: datetime, kind: str, transport: TransportFactory
) -> DeliveryOutcome:
    """The delivery step: claims a crashed run left unanswered become ``unknown`` first, then
    every due batch of ``kind`` goes out, one after another without a pause, in one
    ``DeliverySession`` (one SMTP pool and building helper for all of them). Each batch is
    claimed and recorded by itself, so a retry after a failure sends only unclaimed rows."""
    unknown = reconcile_stale(rt, now=now)
    ranges = outbox_ranges(rt, now=now, kind=kind)
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


def reconcile(rt: Runtime, *, now: datetime) -> list[int]:
    return reconcile_stale(rt, now=now)


@dataclass
class Figures:
    """The outcome of a step that reports figures as they are (intake totals, the report)."""

    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k != "summary"}

    def summary(self) -> str:
        return str(self.data.get("summary", ""))


def _report(rt: Runtime, *, now: datetime) -> Figures:
    with rt.engine.connect() as conn:
        return Figures(build_report(conn, rt.loaded, since=None, until=now, pipeline=None))


# --- the steps, once -----------------------------------------------------------------------


class Outcome(Protocol):
    def as_dict(self) -> dict[str, Any]: ...

    def summary(self) -> str: ...


@dataclass(frozen=True)
class Step:
    """One step of a run. ``task`` names its task run in the Prefect UI; ``io`` is what a
    retry of it is for (``database``, ``mailbox``, ``smtp``, ``files``)."""

    name: str
    task: str
    io: str
    once: Callable[[Runtime, datetime, TransportFactory], Any] | None = None
    plan: Callable[[Runtime, datetime], list[IdRange]] | None = None
    batch: Callable[[Runtime, IdRange, datetime], Any] | None = None
    empty: Callable[[], Any] = Figures
    needed: Callable[[Runtime], bool] = lambda rt: True


def _batched(
    name: str,
    task: str,
    plan: Callable[..., list[IdRange]],
    batch: Callable[..., Any],
    empty: Callable[[], Any],
) -> Step:
    return Step(
        name,
        task,
        "database",
        plan=lambda rt, now: plan(rt, now=now),
        batch=lambda rt, r, now: batch(rt, r, now=now),
        empty=empty,
    )


def _sending(name: str, kind: str) -> Step:
    return Step(
        name,
        f"deliver due {name}",
        "smtp",
        once=lambda rt, now, transport: deliver_due(rt, now=now, kind=kind, transport=transport),
        empty=DeliveryOutcome,
    )


STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        Step(
            "config",
            "apply config change",
            "database",
            once=lambda rt, now, _t: apply_config_change(rt, now=now),
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
        _batched("score", "score batch", score_ranges, score, scoring.ScoreOutcome),
        _batched("callbacks", "revive callbacks", callback_ranges, revive, AdvanceOutcome),
        _batched("advance", "advance batch", advance_ranges, advance, AdvanceOutcome),
        _sending("nurture", "cadence"),
        _sending("checkins", "checkin"),
        Step(
            "report",
            "compute report",
            "database",
            once=lambda rt, now, _t: _report(rt, now=now),
        ),
    )
}

# Which steps each flow runs, in order. A changed config is applied before anything is
# scored or moved; replies are read before anything is scored or sent.
TICK = ("config", "intake", "mailbox", "score", "callbacks", "advance", "nurture", "checkins")
FLOWS: dict[str, tuple[str, ...]] = {
    "intake": ("intake",),
    "score": ("config", "score"),
    "advance": ("config", "advance"),
    "nurture": ("nurture",),
    "callbacks": ("callbacks",),
    "checkins": ("checkins",),
    "report": ("report",),
    "mailbox": ("mailbox",),
    "tick": TICK,
}


# --- walking them ----------------------------------------------------------------------------


class Runner(Protocol):
    """How a run's steps are executed: here, or as Prefect task runs."""

    def once(self, step: Step, now: datetime) -> Any: ...

    def each(self, step: Step, ranges: Sequence[IdRange], now: datetime) -> list[Any]: ...


class InlineRunner:
    """Every step called here, one batch after another."""

    def __init__(self, rt: Runtime, transport: TransportFactory) -> None:
        self.rt, self.transport = rt, transport

    def once(self, step: Step, now: datetime) -> Any:
        assert step.once is not None
        return step.once(self.rt, now, self.transport)

    def each(self, step: Step, ranges: Sequence[IdRange], now: datetime) -> list[Any]:
        assert step.batch is not None
        return [step.batch(self.rt, r, now) for r in ranges]


@dataclass
class RunOutcome:
    """What one run did, step by step; ``as_dict`` is the flow's result and artifact body."""

    flow: str
    now: datetime
    config_hash: str
    config: ConfigChange = field(default_factory=ConfigChange)
    intake: Figures = field(default_factory=Figures)
    mailbox: SyncOutcome = field(default_factory=SyncOutcome)
    score: scoring.ScoreOutcome = field(default_factory=scoring.ScoreOutcome)
    callbacks: AdvanceOutcome = field(default_factory=AdvanceOutcome)
    advance: AdvanceOutcome = field(default_factory=AdvanceOutcome)
    nurture: DeliveryOutcome = field(default_factory=DeliveryOutcome)
    checkins: DeliveryOutcome = field(default_factory=DeliveryOutcome)
    report: Figures = field(default_factory=Figures)
    ran: list[str] = field(default_factory=list)
    step_batches: dict[str, int] = field(default_factory=dict)

    @property
    def batches(self) -> int:
        return sum(self.step_batches.values())

    def outcome(self, step: str) -> Outcome:
        found: Outcome = getattr(self, step)
        return found

    def as_dict(self) -> dict[str, Any]:
        """``{step: {figures..., "batches": n, "summary": text}}`` for the steps that ran."""
        out: dict[str, Any] = {}
        for name in self.ran:
            outcome = self.outcome(name)
            entry = {**outcome.as_dict(), "summary": outcome.summary()}
            if name in self.step_batches:
                entry["batches"] = self.step_batches[name]
            out[name] = entry
        return out

    def one_line(self) -> str:
        """``score: ...; advance: moved 3 ...; nurture: sent 120, deferred 14 (...)``."""
        parts = [f"{name}: {text}" for name in self.ran if (text := self.outcome(name).summary())]
        return "; ".join(parts) or "nothing to do"


def run(rt: Runtime, flow: str, *, now: datetime, runner: Runner) -> RunOutcome:
    """Walk ``FLOWS[flow]`` with ``runner``; batched outcomes are merged here."""
    out = RunOutcome(flow=flow, now=now, config_hash=rt.config_hash)
    for name in FLOWS[flow]:
        step = STEPS[name]
        if not step.needed(rt):
            continue
        if step.plan is None:
            outcome = runner.once(step, now)
            if hasattr(outcome, "batches"):
                out.step_batches[name] = outcome.batches
        else:
            ranges = step.plan(rt, now)
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
