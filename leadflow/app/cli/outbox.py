"""``leadflow outbox``: the emails whose delivery is unknown after a crash, listed, then
requeued or closed by a person's audited decision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from leadflow.app.cli.common import (
    ConfigOpt,
    JsonOpt,
    NowOpt,
    ReasonOpt,
    emit_json,
    err,
    instant,
    out,
    require_reason,
    runtime,
)

commands = typer.Typer(
    help="Emails whose delivery is unknown after a crash: list, requeue or close them.",
    no_args_is_help=True,
)


@commands.command("unknown")
def outbox_unknown(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """List emails whose delivery is unknown (a sender died mid-send), with what is known."""
    from leadflow.pipeline.unknown_sends import list_unknown

    with runtime(config) as rt, rt.engine.connect() as conn:
        rows = list_unknown(conn)
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "to", "cadence/step", "message-id", "claimed at", "attempts", "last error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["email"],
            f"{r['cadence']}/{r['step']}",
            r["message_id"] or "-",
            str(r["claimed_at"])[:19],
            str(r["attempts"]),
            r["last_error"] or "-",
        )
    out.print(table)
    out.print(f"{len(rows)} email(s) with unknown delivery")


def _decide(
    ids: list[int], decision: str, reason: str, now: str | None, config: Path | None
) -> None:
    import getpass

    from leadflow.pipeline.unknown_sends import decide
    from models.db import session_scope

    when = instant(now)
    require_reason(reason)
    with runtime(config) as rt, session_scope(rt.engine) as session:
        outcome = decide(
            session.connection(),
            ids,
            "requeue" if decision == "requeue" else "close",
            reason=reason,
            actor=getpass.getuser(),
            now=when,
            config_hash=rt.config_hash,
        )
    for row_id, why in outcome.skipped.items():
        err.print(f"email {row_id} left alone: {why}")
    out.print(f"{decision}: {len(outcome.changed)} email(s) {outcome.changed}")
    if outcome.skipped:
        raise typer.Exit(1)


@commands.command("requeue")
def outbox_requeue(
    ids: Annotated[list[int], typer.Argument(help="Outbox ids (see `outbox unknown`).")],
    reason: ReasonOpt,
    now: NowOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send these unknown emails again (same Message-ID): the relay never took them."""
    _decide(ids, "requeue", reason, now, config)


@commands.command("close")
def outbox_close(
    ids: Annotated[list[int], typer.Argument(help="Outbox ids (see `outbox unknown`).")],
    reason: ReasonOpt,
    now: NowOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Never send these unknown emails again (they end as failed)."""
    _decide(ids, "close", reason, now, config)
