"""Getting data in by hand: ``import`` a lead file, record an ``event`` for one lead."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from leadflow.app.cli.common import (
    ConfigOpt,
    JsonOpt,
    NowOpt,
    check_writable,
    emit_json,
    err,
    fail,
    instant,
    out,
    runtime,
)
from leadflow.runtime import Runtime

commands = typer.Typer()


@commands.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV or JSON Lines file.")],
    rejects: Annotated[Path | None, typer.Option(help="Write rejected rows to this CSV.")] = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Import leads from a CSV or JSON Lines file (streamed in batches)."""
    from leadflow.intake import IntakeError, import_file, write_rejects

    when = instant(now)
    if not file.exists():
        fail(f"{file}: file not found")
    if rejects is not None:
        check_writable(rejects, "--rejects")  # before the import commits anything
    with runtime(config) as rt:
        try:
            summary = _import_with_progress(rt, file, when, quiet=as_json, importer=import_file)
        except IntakeError as exc:
            fail(f"{file}: {exc}")
    if rejects is not None and summary.rejects:
        try:
            write_rejects(rejects, summary.rejects)
        except OSError as exc:  # a full disk: checked writable, then could not be written
            fail(
                f"--rejects {rejects}: cannot write ({exc.strerror}); the import itself was "
                f"committed (created {summary.created}, updated {summary.updated}, rejected "
                f"{summary.rejected}): run it again with another --rejects path to get the rows"
            )
    if as_json:
        emit_json(summary.as_dict())
        return
    out.print(
        f"{file}: created {summary.created}, updated {summary.updated}, "
        f"unchanged {summary.unchanged}, rejected {summary.rejected}, "
        f"suppressed {summary.suppressed}"
    )
    for reject in summary.rejects[:20]:
        err.print(f"  row {reject.row}: {reject.field}: {reject.message}", highlight=False)
    if len(summary.rejects) > 20:
        err.print(f"  ... {len(summary.rejects) - 20} more (use --rejects FILE)")


def _import_with_progress(
    rt: Runtime, file: Path, when: datetime, *, quiet: bool, importer: Any
) -> Any:
    kwargs = {
        "default_timezone": rt.loaded.config.timezone,
        "now": when,
        "batch_size": min(rt.settings.batch_size, 5000),
    }
    intake = rt.loaded.config.intake
    if quiet or not err.is_terminal:
        return importer(rt.engine, file, intake, **kwargs)
    from rich.progress import Progress

    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"importing {file.name}", total=None)
        return importer(
            rt.engine,
            file,
            intake,
            on_progress=lambda n: progress.update(task, completed=n),
            **kwargs,
        )


@commands.command()
def event(
    email: str,
    type: Annotated[str, typer.Argument(help="replied, meeting_booked, proposal_sent, won...")],
    at: Annotated[str | None, typer.Option("--at", help="When it happened (ISO 8601).")] = None,
    data: Annotated[list[str] | None, typer.Option("--data", help="key=value, repeatable")] = None,
    config: ConfigOpt = None,
) -> None:
    """Record an engagement or sales event for a lead."""
    from leadflow.pipeline.events import KNOWN_EVENTS, EventIn, record_events
    from leadflow.queries import find_lead
    from leadflow.suggest import did_you_mean
    from models.db import session_scope

    if type not in KNOWN_EVENTS:
        fail(
            f"unknown event type '{type}'{did_you_mean(type, KNOWN_EVENTS)}; known: "
            f"{', '.join(sorted(KNOWN_EVENTS))}"
        )
    when = instant(at)
    payload: dict[str, str] = {}
    for item in data or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--data expects key=value, got '{item}'")
        payload[key] = value
    with runtime(config) as rt, session_scope(rt.engine) as session:
        conn = session.connection()
        lead = find_lead(conn, email)
        if lead is None:
            fail(f"no lead with email '{email}'")
        record_events(
            conn,
            [EventIn(lead.id, type, when, payload, source="cli")],
            stop_on=rt.stop_on,
            now=when,
        )
    out.print(f"recorded {type} for {lead.email} at {when.isoformat()}")
