"""Getting data in by hand: ``import`` a lead file, record an ``event`` for one lead."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from leadflow.intake import ImportSummary

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
    from leadflow.intake import IntakeError, write_rejects

    when = instant(now)
    if not file.exists():
        fail(f"{file}: file not found")
    if rejects is not None:
        check_writable(rejects, "--rejects")  # before the import commits anything
    with runtime(config) as rt:
        try:
            summary = _import_with_progress(rt, file, when, quiet=as_json)
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


def run_import(
    rt: Runtime, file: Path, when: datetime, *, on_progress: Callable[[int], None] | None = None
) -> ImportSummary:
    """What ``leadflow import FILE`` does (benchmarks/bench_import.py measures this call)."""
    from leadflow.intake import import_file

    return import_file(
        rt.engine,
        file,
        rt.loaded.config.intake,
        default_timezone=rt.loaded.config.timezone,
        now=when,
        batch_size=min(rt.settings.batch_size, 5000),
        on_progress=on_progress,
    )


def _import_with_progress(rt: Runtime, file: Path, when: datetime, *, quiet: bool) -> ImportSummary:
    """``run_import`` with a live line on stderr when it is a terminal: rows done, their rate
    and the time so far (the file is streamed, so its number of rows is not known ahead)."""
    if quiet or not err.is_terminal:
        return run_import(rt, file, when)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}: {task.completed:,.0f} rows, {task.fields[rate]:,.0f}/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"importing {file.name}", total=None, rate=0.0)
        started = time.perf_counter()

        def advance(rows: int) -> None:
            rate = rows / max(time.perf_counter() - started, 1e-9)
            progress.update(task, completed=rows, rate=rate)

        return run_import(rt, file, when, on_progress=advance)


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
