"""Where alerts go out from: the database that records them, the ``alerts:`` config and the
sender, with ``deliver_pending`` (claim, send one message per channel and kind, record) and
``flow_failed`` (the alert of a failed flow run).

An ``Outlet`` is made from a runtime, or, when the config failed validation as a whole (the
usual reason a scheduled run fails after an edit), from the file's ``alerts:`` and ``sender:``
sections validated alone (``from_files``): the failure of the run can then still be told.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import Engine

from leadflow.alerts import notify, store
from leadflow.config.alerts import Alerts
from leadflow.config.schema import Sender
from leadflow.delivery.smtp import TransportFactory, smtp_config
from leadflow.mail.transport import SmtpTransport, Transport
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.db import open_database, session_scope


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


@dataclass(frozen=True)
class Outlet:
    engine: Engine
    alerts: Alerts | None
    sender: Sender

    @classmethod
    def of(cls, rt: Runtime) -> Outlet:
        return cls(rt.engine, rt.loaded.config.alerts, rt.loaded.config.sender)


def from_files(settings: Settings) -> tuple[Outlet, TransportFactory] | None:
    """An outlet from the config file's ``alerts:`` and ``sender:`` alone (None when either is
    missing or invalid, or the YAML does not parse), and an SMTP transport made from the
    settings (the sender's per-minute pacing is not applied to these few emails)."""
    try:
        data = yaml.safe_load(settings.config.read_text(encoding="utf-8"))
        cfg = Alerts.model_validate(data["alerts"])
        sender = Sender.model_validate(data["sender"])
    except (OSError, yaml.YAMLError, TypeError, KeyError, ValidationError):
        return None
    s = settings

    def transport() -> Transport:
        return SmtpTransport(smtp_config(s))

    return Outlet(open_database(s.db_url, migrate=False), cfg, sender), transport


def deliver_pending(
    outlet: Outlet,
    *,
    now: datetime,
    transport: TransportFactory,
    env: Mapping[str, str] | None = None,
) -> AlertsOutcome:
    """Claim every due delivery, send one message per channel and kind, record each."""
    cfg = outlet.alerts or Alerts()
    with session_scope(outlet.engine) as session:
        claimed = store.claim(session.connection(), now=now)
    groups: dict[tuple[str, str], list[store.Claimed]] = defaultdict(list)
    for item in claimed:
        groups[(item.channel, item.kind)].append(item)
    out = AlertsOutcome()
    for (name, kind), items in groups.items():
        error, note = _send(outlet, cfg, name, kind, items, now=now, transport=transport, env=env)
        with session_scope(outlet.engine) as session:
            store.record(session.connection(), items, error, now=now, note=note)
        if error is None:
            out.sent += len(items)
        else:
            out.failed += len(items)
            out.errors.append(error)
    return out


def _send(
    outlet: Outlet,
    cfg: Alerts,
    name: str,
    kind: str,
    items: list[store.Claimed],
    *,
    now: datetime,
    transport: TransportFactory,
    env: Mapping[str, str] | None,
) -> tuple[str | None, str | None]:
    """Why the message failed, or None; and what part of it was refused when it was sent."""
    channel = cfg.channels.get(name)
    if channel is None:
        return f"channel '{name}' is no longer defined", None
    try:
        note = notify.send(
            name,
            channel,
            notify.compose(kind, items),
            sender=outlet.sender,
            transport=transport,
            env=os.environ if env is None else env,
            now=now,
        )
    except notify.NotifyError as exc:
        return str(exc), None
    except Exception as exc:  # an alert must never stop the run: recorded, retried
        return f"channel '{name}': {type(exc).__name__}", None
    return None, note


def flow_failed(
    outlet: Outlet,
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
    if outlet.alerts is None:
        return AlertsOutcome()
    alert = store.AlertIn(
        kind="flow_failed",
        subject=f"flow_run:{run_id}",
        period="run",
        title=f"Flow run '{run_name}' {state.lower()}",
        detail=message[:500],
        data={"flow": flow, "flow_run_id": run_id, "flow_run": run_name, "state": state},
    )
    with session_scope(outlet.engine) as session:
        new = store.raise_alerts(session.connection(), [alert], outlet.alerts.routes, now=now)
    out = deliver_pending(outlet, now=now, transport=transport)
    if new:
        out.raised["flow_failed"] += new
    return out
