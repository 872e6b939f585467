"""What the engine's ``guard`` and ``alerts`` steps, their dry runs and the flow hooks call.

``guard``: a pause that holds is reported; otherwise the window's rates are judged and, over
a limit, sending is paused and a ``sending_guard`` alert raised and delivered at once (the
delivery steps right after it then claim nothing). ``alerts``: deals the SLA flagged are
raised, then every due delivery is sent. ``flow_failed``: a flow run that failed or crashed,
from the Prefect hook. Each raise is exactly-once (``store``); a channel that fails does not
stop the run, it is retried on the next run (``store.BACKOFF``) and named in the summary.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from leadflow.alerts import guard, notify, sla, store
from leadflow.config.alerts import Alerts
from leadflow.delivery.smtp import TransportFactory
from leadflow.runtime import Runtime
from models.db import session_scope

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


@dataclass
class AlertsOutcome:
    raised: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    would_send: dict[str, list[str]] = field(default_factory=dict)  # a dry run: kind → channels

    def merge(self, other: AlertsOutcome) -> None:
        self.raised.update(other.raised)
        self.sent += other.sent
        self.failed += other.failed
        self.errors += other.errors
        self.would_send.update(other.would_send)

    def as_dict(self) -> dict[str, Any]:
        return {
            "raised": dict(self.raised),
            "sent": self.sent,
            "failed": self.failed,
            "errors": list(self.errors),
            "would_send": dict(self.would_send),
        }

    def summary(self) -> str:
        parts = [f"raised {kind} {n}" for kind, n in sorted(self.raised.items()) if n]
        if self.sent:
            parts.append(f"sent {self.sent}")
        if self.failed:
            parts.append(f"failed {self.failed} ({'; '.join(sorted(set(self.errors)))})")
        return ", ".join(parts)


def configured(rt: Runtime) -> bool:
    return rt.loaded.config.alerts is not None


def _alerts(rt: Runtime) -> Alerts:
    found = rt.loaded.config.alerts
    return found if found is not None else Alerts()


def _routes(cfg: Alerts) -> dict[str, list[str]]:
    return {kind: list(names) for kind, names in cfg.events.items()}


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
    store.raise_alerts(conn, [alert], _routes(cfg), now=now)
    return GuardOutcome(paused=why, new_pause=True, figures=found.as_dict())


def guard_step(rt: Runtime, *, now: datetime, transport: TransportFactory) -> GuardOutcome:
    with session_scope(rt.engine) as session:
        out = check_guard(session.connection(), rt, now=now)
    if out.new_pause:
        out.alerts = deliver_pending(rt, now=now, transport=transport)
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
            _routes(cfg),
            now=now,
        )
    out = deliver_pending(rt, now=now, transport=transport)
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


def deliver_pending(
    rt: Runtime,
    *,
    now: datetime,
    transport: TransportFactory,
    env: Mapping[str, str] | None = None,
) -> AlertsOutcome:
    """Claim every due delivery, send one message per channel and kind, record each."""
    cfg = _alerts(rt)
    with session_scope(rt.engine) as session:
        claimed = store.claim(session.connection(), now=now)
    groups: dict[tuple[str, str], list[store.Claimed]] = defaultdict(list)
    for item in claimed:
        groups[(item.channel, item.kind)].append(item)
    out = AlertsOutcome()
    for (name, kind), items in groups.items():
        error = _send(rt, cfg, name, kind, items, now=now, transport=transport, env=env)
        with session_scope(rt.engine) as session:
            store.record(session.connection(), items, error, now=now)
        if error is None:
            out.sent += len(items)
        else:
            out.failed += len(items)
            out.errors.append(error)
    return out


def _send(
    rt: Runtime,
    cfg: Alerts,
    name: str,
    kind: str,
    items: list[store.Claimed],
    *,
    now: datetime,
    transport: TransportFactory,
    env: Mapping[str, str] | None,
) -> str | None:
    channel = cfg.channels.get(name)
    if channel is None:
        return f"channel '{name}' is no longer defined"
    try:
        notify.send(
            name,
            channel,
            notify.compose(kind, items),
            sender=rt.loaded.config.sender,
            transport=transport,
            env=os.environ if env is None else env,
            now=now,
        )
    except notify.NotifyError as exc:
        return str(exc)
    except Exception as exc:  # an alert must never stop the run: recorded, retried
        return f"channel '{name}': {type(exc).__name__}"
    return None


# --- a failed flow run ----------------------------------------------------------------------


def flow_failed(
    rt: Runtime,
    *,
    flow: str,
    run_id: str,
    run_name: str,
    state: str,
    message: str,
    now: datetime,
    transport: TransportFactory,
) -> AlertsOutcome:
    """Raise (once per flow run) and deliver the alert for a run that failed or crashed."""
    if not configured(rt):
        return AlertsOutcome()
    cfg = _alerts(rt)
    alert = store.AlertIn(
        kind="flow_failed",
        subject=f"flow_run:{run_id}",
        period="run",
        title=f"Flow run '{run_name}' {state.lower()}",
        detail=message[:500],
        data={"flow": flow, "flow_run_id": run_id, "flow_run": run_name, "state": state},
    )
    with session_scope(rt.engine) as session:
        new = store.raise_alerts(session.connection(), [alert], _routes(cfg), now=now)
    out = deliver_pending(rt, now=now, transport=transport)
    if new:
        out.raised["flow_failed"] += new
    return out
