"""``leadflow sending``: whether sending is paused (the guard or a person), and lifting or
setting the pause by hand, audited with who and why (``leadflow/alerts/guard.py``)."""

from __future__ import annotations

import getpass

import typer

from leadflow.app.cli.common import (
    ConfigOpt,
    JsonOpt,
    NowOpt,
    ReasonOpt,
    emit_json,
    fail,
    instant,
    out,
    require_reason,
    runtime,
)

commands = typer.Typer(
    help="The sending pause: status, resume after fixing the cause, or pause by hand.",
    no_args_is_help=True,
)


@commands.command("status")
def sending_status(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Whether sending is paused, why and since when, and the last pauses."""
    from leadflow.alerts import guard

    with runtime(config) as rt, rt.engine.connect() as conn:
        held = guard.active_pause(conn)
        past = guard.history(conn)
    if as_json:
        emit_json(
            {"paused": held is not None, "pause": held.__dict__ if held else None, "history": past}
        )
        return
    if held is None:
        out.print("sending: active (no pause holds)")
    else:
        out.print(
            f"sending paused since {held.paused_at:%Y-%m-%d %H:%M} UTC by {held.paused_by}: "
            f"{held.reason}",
            soft_wrap=True,
        )
        out.print("resume with: leadflow sending resume --reason '...'")
    for row in past:
        if row["resumed_at"] is not None:
            out.print(
                f"  pause {row['id']}: {row['reason']} — resumed "
                f"{row['resumed_at']:%Y-%m-%d %H:%M} by {row['resumed_by']}: "
                f"{row['resume_reason']}",
                soft_wrap=True,
            )


@commands.command("resume")
def sending_resume(reason: ReasonOpt, now: NowOpt = None, config: ConfigOpt = None) -> None:
    """Lift the pause; the guard judges only sends made after this."""
    from leadflow.alerts import guard
    from models.db import session_scope

    why = require_reason(reason, "with the pause")
    with runtime(config) as rt, session_scope(rt.engine) as session:
        held = guard.resume(
            session.connection(), reason=why, by=getpass.getuser(), now=instant(now)
        )
    if held is None:
        fail("sending is not paused")
    out.print(f"sending resumed (pause {held.id}: {held.reason})", soft_wrap=True)


@commands.command("pause")
def sending_pause(reason: ReasonOpt, now: NowOpt = None, config: ConfigOpt = None) -> None:
    """Pause all sending until `leadflow sending resume`."""
    from leadflow.alerts import guard
    from models.db import session_scope

    why = require_reason(reason, "with the pause")
    with runtime(config) as rt, session_scope(rt.engine) as session:
        held = guard.pause(session.connection(), reason=why, by=getpass.getuser(), now=instant(now))
    if held is None:
        fail("sending is already paused (see leadflow sending status)")
    out.print(f"sending paused: {held.reason}", soft_wrap=True)
