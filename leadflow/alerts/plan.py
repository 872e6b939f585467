"""What ``leadflow plan`` shows of alerts: the config, the guard's verdict, what would fire."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from leadflow.pipeline.run_outcome import RunOutcome
from leadflow.runtime import Runtime


def plan_section(rt: Runtime, out: RunOutcome) -> dict[str, Any] | None:
    """The alerts part of a dry run (None without an ``alerts:`` section)."""
    cfg = rt.loaded.config.alerts
    if cfg is None:
        return None
    guard = out.outcome("guard").as_dict() if "guard" in out.ran else {}
    fired = out.outcome("alerts").as_dict() if "alerts" in out.ran else {}
    return {
        "channels": {
            name: (
                ", ".join(c.to)
                if c.type == "email"
                else f"{c.type} (${c.url_env}{'' if os.environ.get(c.url_env) else ', unset here'})"
            )
            for name, c in cfg.channels.items()
        },
        "events": {event: list(names) for event, names in cfg.events.items()},
        "sending_guard": cfg.sending_guard.model_dump(),
        "guard": guard,
        "would_raise": fired.get("raised", {}),
        "would_send": fired.get("would_send", {}),
    }


def render(section: dict[str, Any] | None, console: Console) -> None:
    if section is None:
        console.print(
            Text(
                "alerts: none configured (no alerts: section): the sending guard does not "
                "run; 'alerts: {}' runs it with its defaults",
                style="yellow",
            )
        )
        return
    table = Table("event", "channels", title="Alerts")
    for event, names in section["events"].items():
        table.add_row(event, ", ".join(f"{n}: {section['channels'].get(n, '?')}" for n in names))
    console.print(table)
    guard = section["guard"]
    limits = section["sending_guard"]
    if guard.get("paused"):
        console.print(Text(f"sending paused: {guard['reason']}", style="red"))
    elif limits["enabled"] and guard.get("figures"):
        f = guard["figures"]
        console.print(
            f"sending guard: bounces {f['bounce_percent']}%, complaints "
            f"{f['complaint_percent']}% over the last {f['sends']} sends (limits "
            f"{limits['max_bounce_percent']}%, {limits['max_complaint_percent']}%; "
            f"judged from {limits['min_sends']} sends)"
        )
    for kind, n in section["would_raise"].items():
        channels = section["would_send"].get(kind, [])
        console.print(f"would alert: {kind} {n} → {', '.join(channels) or 'no channel'}")
    for kind, what in section["would_send"].items():
        if kind not in section["would_raise"]:
            console.print(f"would send: {kind}: {', '.join(what)}")
