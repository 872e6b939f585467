"""What one run did, step by step: the one result type every runner's outcomes merge into,
and whose ``as_dict`` is a flow's result, its artifact's body and ``leadflow run``'s output."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from leadflow.delivery.outcome import DeliveryOutcome
from leadflow.listening.sync import SyncOutcome
from leadflow.pipeline import scoring
from leadflow.pipeline.config_change import ConfigChange
from leadflow.pipeline.moves import AdvanceOutcome


class Outcome(Protocol):
    def as_dict(self) -> dict[str, Any]: ...

    def summary(self) -> str: ...


@dataclass
class Figures:
    """The outcome of a step that reports figures as they are (intake totals, the report)."""

    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k != "summary"}

    def summary(self) -> str:
        return str(self.data.get("summary", ""))


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
    learn: Figures = field(default_factory=Figures)
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
        return one_line(self.as_dict())


def one_line(result: dict[str, Any]) -> str:
    """A run's summary line from its ``as_dict()`` (a flow's result): the steps that have
    something to say, in the order they ran. The flow logs it, ``leadflow run`` prints it."""
    parts = [
        f"{name}: {text}"
        for name, data in result.items()
        if isinstance(data, dict) and (text := data.get("summary"))
    ]
    return "; ".join(parts) or "nothing to do"
