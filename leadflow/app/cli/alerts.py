"""``leadflow alerts``: the latest alerts and what became of each channel's delivery."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from leadflow.app.cli.common import ConfigOpt, JsonOpt, emit_json, out, runtime

commands = typer.Typer()


@commands.command("alerts")
def alerts(
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Alerts shown.")] = 50,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The latest alerts (failed runs, SLA flags, sending pauses) per channel: sent, failed
    with the reason, or waiting."""
    from leadflow.alerts.store import recent

    with runtime(config) as rt, rt.engine.connect() as conn:
        rows = recent(conn, limit=limit)
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "raised at", "event", "title", "channel", "status", "attempts", "error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            f"{r['raised_at']:%Y-%m-%d %H:%M}",
            r["kind"],
            r["title"],
            r["channel"] or "(no channel)",
            r["status"] or "-",
            str(r["attempts"] or 0),
            r["last_error"] or "",
        )
    out.print(table)
