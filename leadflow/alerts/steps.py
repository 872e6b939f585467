"""What the engine's ``guard`` and ``alerts`` steps and their dry runs call.

``guard``: a pause that holds is reported; otherwise the window's rates are judged and, over
a limit, sending is paused and a ``sending_guard`` alert raised and delivered at once (the
delivery steps right after it then claim nothing). It runs when the config has an ``alerts:``
section (``configured``; ``alerts: {}`` is enough: the guard's defaults, its alert recorded
and sent to no channel); without one only a pause set by hand holds (docs/alerts.md says
why). ``alerts``: deals the SLA flagged are
raised, then every due delivery is sent (``outlet.deliver_pending``). Each raise is
exactly-once (``store``); a channel that fails does not stop the run, it is retried on the
next run (``store.BACKOFF``) and named in the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from leadflow.alerts import guard, sla, store
from leadflow.alerts.outlet import AlertsOutcome, Outlet, deliver_pending
from leadflow.config.alerts import Alerts
from leadflow.delivery.smtp import TransportFactory
from leadflow.runtime import Runtime
from models.db import session_scope

__all__ = [
    "AlertsOutcome",
    "GuardOutcome",
    "alerts_dry",
    "alerts_step",
    "check_guard",
    "configured",
    "guard_step",
    "sending_paused",
]

RESUME_HINT = "sending resumes only by hand: leadflow sending resume --reason '...'"


@dataclass
class GuardOutcome:
    paused: str | None = None  # why sending is paused, when it is
    new_pause: bool = False
    figures: dict[str, Any] = field(default_factory=dict)
    alerts: AlertsOutcome | None = None

    def merge(self, other: GuardOutcome) -> None:
        self.paused = other.paused or self.paused
        self.new_pause = self.new_pause or other.new_pause
        self.figures = other.figures or self.figures

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "paused": self.paused is not None,
            "reason": self.paused,
            "new_pause": self.new_pause,
            "figures": self.figures,
        }
        if self.alerts is not None:
            out["alerts"] = self.alerts.as_dict()
        return out

    def summary(self) -> str:
        return f"sending paused: {self.paused}" if self.paused else ""


def configured(rt: Runtime) -> bool:
    """Whether the guard and alerts steps run: the config has an ``alerts:`` section."""
    return rt.loaded.config.alerts is not None


def _alerts(rt: Runtime) -> Alerts:
    found = rt.loaded.config.alerts
    return found if found is not None else Alerts()


# --- the guard ------------------------------------------------------------------------------


def check_guard(conn: Connection, rt: Runtime, *, now: datetime) -> GuardOutcome:
    """Report the pause that holds, or judge the window and pause (in ``conn``'s
    transaction); the dry run calls this on its rolled-back connection."""
    held = guard.active_pause(conn)
    if held is not None:
        return GuardOutcome(paused=held.reason, figures=held.figures)
    cfg = _alerts(rt)
    if not cfg.sending_guard.enabled:
        return GuardOutcome()
    found = guard.figures(conn, cfg.sending_guard, now=now)
    why = guard.verdict(found, cfg.sending_guard)
    if why is None:
        return GuardOutcome(figures=found.as_dict())
    new = guard.pause(conn, reason=why, by="guard", now=now, found=found.as_dict())
    if new is None:  # another run paused first: report its pause
        other = guard.active_pause(conn)
        return GuardOutcome(paused=other.reason if other else why, figures=found.as_dict())
    alert = store.AlertIn(
        kind="sending_guard",
        subject="sending",
        period=f"pause:{new.id}",
        title=f"Sending paused: {why}",
        detail=RESUME_HINT,
        data=found.as_dict(),
    )
    store.raise_alerts(conn, [alert], cfg.routes, now=now)
    return GuardOutcome(paused=why, new_pause=True, figures=found.as_dict())


def guard_step(rt: Runtime, *, now: datetime, transport: TransportFactory) -> GuardOutcome:
    with session_scope(rt.engine) as session:
        out = check_guard(session.connection(), rt, now=now)
    if out.new_pause:
        out.alerts = deliver_pending(Outlet.of(rt), now=now, transport=transport)
    return out


def sending_paused(conn: Connection) -> bool:
    """Whether a pause holds: the delivery steps claim nothing while one does."""
    return guard.active_pause(conn) is not None


# --- the alerts step ------------------------------------------------------------------------


def alerts_step(rt: Runtime, *, now: datetime, transport: TransportFactory) -> AlertsOutcome:
    cfg = _alerts(rt)
    with session_scope(rt.engine) as session:
        new = store.raise_alerts(
            session.connection(),
            sla.flagged(session.connection(), rt.loaded, now=now),
            cfg.routes,
            now=now,
        )
    out = deliver_pending(Outlet.of(rt), now=now, transport=transport)
    if new:
        out.raised[sla.KIND] += new
    return out


def alerts_dry(conn: Connection, rt: Runtime, now: datetime) -> AlertsOutcome:
    """What the alerts step would raise and send (nothing is sent)."""
    cfg = _alerts(rt)
    out = AlertsOutcome()
    flagged = sla.flagged(conn, rt.loaded, now=now)
    if flagged:
        out.raised[sla.KIND] = len(flagged)
        out.would_send[sla.KIND] = cfg.routes(sla.KIND)
    waiting = store.pending_count(conn, now=now)
    if waiting:
        out.would_send["already due"] = [f"{waiting} delivery(ies)"]
    return out
