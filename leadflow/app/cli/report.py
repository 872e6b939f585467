"""``leadflow report``: the pipeline metrics of a period, on the terminal, as JSON, as HTML
or as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leadflow.app.cli.common import (
    ConfigOpt,
    JsonOpt,
    NowOpt,
    check_writable,
    emit_json,
    fail,
    instant,
    out,
    runtime,
)
from leadflow.reporting.sales import IDLE_DAYS

commands = typer.Typer()


@commands.command()
def report(
    since: Annotated[str | None, typer.Option(help="Start of the period (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="End of the period (default: now).")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")] = None,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Write every table to one CSV file.")
    ] = None,
    idle_days: Annotated[
        int,
        typer.Option(
            "--idle-days",
            min=1,
            help="A deal with no activity (event, email sent, stage move) for this many days "
            "is at risk.",
        ),
    ] = IDLE_DAYS,
    now: NowOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Pipeline metrics: forecast, deals at risk, funnel, conversion, aging, win rate, velocity."""
    from leadflow.reporting.build import build_report
    from leadflow.reporting.console import render_report
    from leadflow.reporting.csvexport import export_report
    from leadflow.reporting.page import write_html
    from leadflow.suggest import did_you_mean

    when = instant(until or now)
    start = instant(since) if since else None
    if start is not None and start >= when:
        fail(f"--since {start.isoformat()} is not before --until {when.isoformat()}")
    if html is not None:
        check_writable(html, "--html")
    if csv is not None:
        check_writable(csv, "--csv")
    with runtime(config) as rt, rt.engine.connect() as conn:
        ids = [p.id for p in rt.loaded.config.pipelines]
        if pipeline is not None and pipeline not in ids:
            hint = did_you_mean(pipeline, ids)
            fail(f"unknown pipeline '{pipeline}'{hint}; pipelines: {', '.join(ids)}")
        data = build_report(
            conn, rt.loaded, since=start, until=when, pipeline=pipeline, idle_days=idle_days
        )
    if html is not None:
        write_html(data, html)
    if csv is not None:
        export_report(data, csv)
    if as_json:
        emit_json(data)
        return
    render_report(data, out)
    if html is not None:
        out.print(f"HTML report written to {html}")
    if csv is not None:
        out.print(f"CSV report written to {csv}")
