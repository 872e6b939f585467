"""The ``leadflow`` command line (typer + rich).

Exit codes: 0 success, 1 invalid input (bad config, bad file, unknown lead), 2 usage error.
Commands that report results take ``--json`` and then print exactly one JSON document.

One concept, the command-line surface, in one module of ~880 lines: each command is a thin
parse-check-call-print over the engine. Splitting it into command groups (``mailbox``,
``outbox``, ``db``, the lead commands) is planned with the layout of issue 17.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from leadflow.config import ConfigError, load_config
from leadflow.runtime import Runtime
from leadflow.settings import Settings, SettingsError, load_settings
from leadflow.timeutil import parse_instant
from models.db import DatabaseUnavailable

app = typer.Typer(
    name="leadflow",
    help="Sales-pipeline automation: pipeline as code, scored leads, safe drip emails.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
outbox_app = typer.Typer(
    help="Emails whose delivery is unknown after a crash: list, requeue or close them.",
    no_args_is_help=True,
)
app.add_typer(outbox_app, name="outbox")
mailbox_app = typer.Typer(
    help="Replies, out-of-office answers and bounces (LEADFLOW_MAILBOX_URL).", no_args_is_help=True
)
app.add_typer(mailbox_app, name="mailbox")

# Lead data, file contents and YAML keys are printed on these consoles: no rich markup and no
# highlighting is ever read from what they print ("[/bold]" in a company name is text).
# Emphasis is given with ``style=`` or ``Text`` objects, never with markup in a string.
out = Console(emoji=False, markup=False, highlight=False)
err = Console(stderr=True, emoji=False, markup=False, highlight=False, soft_wrap=True)


def _styled(*parts: str | tuple[str, str]) -> Text:
    """A line of text with some styled pieces: ``_styled(("error", "red"), " ", message)``."""
    return Text.assemble(*parts)


NowOpt = Annotated[
    str | None,
    typer.Option("--now", help="Act as if the clock said this ISO 8601 instant (time travel)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Pipeline YAML (default: LEADFLOW_CONFIG).")
]


class Invalid(Exception):
    """Bad input from the user: printed without a traceback, exit code 1."""


def fail(message: str) -> NoReturn:
    raise Invalid(message)


def _settings(config: Path | None = None) -> Settings:
    settings = load_settings()
    if config is not None:
        settings = settings.model_copy(update={"config": config})
    return settings


def _now(value: str | None) -> datetime:
    try:
        return parse_instant(value)
    except ValueError as exc:
        fail(str(exc))


@contextmanager
def runtime(config: Path | None = None) -> Iterator[Runtime]:
    rt = Runtime.open(_settings(config))
    try:
        yield rt
    finally:
        rt.close()


def _check_writable(path: Path, option: str) -> None:
    """Fail now, not after the work, if ``path`` cannot be written."""
    try:
        if path.is_dir():
            fail(f"{option} {path}: is a folder")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            fail(f"{option} {path}: the folder {folder} does not exist")
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:  # also from is_dir: a name too long, a loop of links
        fail(f"{option} {path}: cannot write ({exc.strerror})")


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str, ensure_ascii=False) + "\n")


# --- config --------------------------------------------------------------------------------


@app.command()
def validate(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Check pipeline.yaml and its templates: every error at once, FILE:LINE:COL: path: message."""
    settings = _settings(config)
    try:
        loaded = load_config(settings.config, templates=settings.templates)
    except ConfigError as exc:
        if as_json:
            emit_json({"valid": False, "errors": [i.__dict__ for i in exc.issues]})
        else:
            for issue in exc.issues:
                err.print(_styled(("error", "red"), f" {issue}"), soft_wrap=True)
            err.print(f"{len(exc.issues)} error(s); nothing was changed.")
        raise typer.Exit(1) from None
    from leadflow import stranded

    groups, not_checked = stranded.against_database(settings.db_url, loaded)
    problems = stranded.issues(loaded, groups)
    if as_json:
        emit_json(
            {
                "valid": not problems,
                "hash": loaded.hash,
                "errors": [i.__dict__ for i in problems],
                "warnings": [i.__dict__ for i in loaded.warnings],
                "stranded": [g.as_dict() for g in groups],
                "database": not_checked or "checked",
            }
        )
        if problems:
            raise typer.Exit(1)
        return
    for warning in loaded.warnings:
        err.print(_styled(("warning", "yellow"), f" {warning}"), soft_wrap=True)
    for g in groups:
        if g.to is not None:
            out.print(
                f"the next run moves {g.leads} open lead(s) {g.stage} → {g.to} in pipeline "
                f"'{g.pipeline}' (moved_stages)",
                soft_wrap=True,
            )
    if problems:
        for issue in problems:
            err.print(_styled(("error", "red"), f" {issue}"), soft_wrap=True)
        err.print(f"{len(problems)} error(s) against the database; nothing was changed.")
        raise typer.Exit(1)
    checked = f"; {not_checked}" if not_checked else ""
    out.print(
        f"{settings.config}: valid (config {loaded.short_hash}, {len(loaded.warnings)} "
        f"warning(s){checked})"
    )


@app.command()
def lint(config: ConfigOpt = None) -> None:
    """Warnings only: unreachable stages, stages with no exit, cadences that never stop..."""
    settings = _settings(config)
    loaded = load_config(settings.config, templates=settings.templates)
    for warning in loaded.warnings:
        out.print(f"warning {warning}", highlight=False, soft_wrap=True)
    if not loaded.warnings:
        out.print("no warnings")


@app.command()
def schema() -> None:
    """Print the JSON Schema of pipeline.yaml (for editors)."""
    from leadflow.config.schema import PipelineConfig

    emit_json(PipelineConfig.model_json_schema())


# --- leads ---------------------------------------------------------------------------------


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV or JSON Lines file.")],
    rejects: Annotated[Path | None, typer.Option(help="Write rejected rows to this CSV.")] = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Import leads from a CSV or JSON Lines file (streamed in batches)."""
    from leadflow.intake import IntakeError, import_file, write_rejects

    when = _now(now)
    if not file.exists():
        fail(f"{file}: file not found")
    if rejects is not None:
        _check_writable(rejects, "--rejects")  # before the import commits anything
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


@app.command()
def event(
    email: str,
    type: Annotated[str, typer.Argument(help="replied, meeting_booked, proposal_sent, won...")],
    at: Annotated[str | None, typer.Option("--at", help="When it happened (ISO 8601).")] = None,
    data: Annotated[list[str] | None, typer.Option("--data", help="key=value, repeatable")] = None,
    config: ConfigOpt = None,
) -> None:
    """Record an engagement or sales event for a lead."""
    from leadflow.config.validate import suggest
    from leadflow.events import KNOWN_EVENTS, EventIn, record_events
    from leadflow.queries import find_lead
    from models.db import session_scope

    if type not in KNOWN_EVENTS:
        fail(
            f"unknown event type '{type}'{suggest(type, KNOWN_EVENTS)}; known: "
            f"{', '.join(sorted(KNOWN_EVENTS))}"
        )
    when = _now(at)
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


@app.command()
def show(
    email: str, now: NowOpt = None, as_json: JsonOpt = False, config: ConfigOpt = None
) -> None:
    """One lead: stage, score explained rule by rule and event by event, history, emails."""
    from leadflow import queries
    from leadflow.scoring import explain

    with runtime(config) as rt, rt.engine.connect() as conn:
        lead = queries.find_lead(conn, email)
        if lead is None:
            fail(f"no lead with email '{email}'")
        # by default explain the stored score (as of its last scoring), so the lines add up
        # to the number shown; --now asks what the decayed score would be at that instant
        when = _now(now) if now else (lead.scored_at or _now(None))
        contributions = explain(conn, rt.loaded, lead.id, now=when)
        history = queries.transitions(conn, lead.id)
        scores = queries.score_history(conn, lead.id)
        mails = queries.messages(conn, lead.id)
        evts = queries.events(conn, lead.id)
    if as_json:
        emit_json(
            {
                "lead": queries.row_dict(lead),
                "score": [c.__dict__ for c in contributions],
                "transitions": [queries.row_dict(r) for r in history],
                "score_history": [queries.row_dict(r) for r in scores],
                "messages": [queries.row_dict(r) for r in mails],
                "events": [queries.row_dict(r) for r in evts],
            }
        )
        return
    name = " ".join(p for p in (lead.first_name, lead.last_name) if p) or "(no name)"
    out.print(
        _styled((name, "bold"), f" <{lead.email}> — {lead.company or '-'}, {lead.title or '-'}")
    )
    out.print(
        _styled(
            f"status {lead.status}, pipeline {lead.pipeline}, stage {lead.stage}",
            (" (stuck)", "red") if lead.stuck else "",
            f", score {lead.score:g} "
            f"(fit {lead.fit_score:g} + engagement {lead.engagement_score:g}), "
            f"grade {lead.grade or '-'}",
        )
    )
    table = Table(
        "source",
        "rule / event",
        "points",
        "why",
        title=f"Score explained (as of {when:%Y-%m-%d %H:%M} UTC)",
    )
    for c in contributions:
        table.add_row(c.source, c.name, f"{c.points:+.1f}", c.detail)
    table.add_row("", Text("total", "bold"), f"{sum(c.points for c in contributions):.1f}", "")
    out.print(table)
    if scores:
        sh = Table("at", "fit", "engagement", "total", "grade", title="Score history")
        for s in scores[-10:]:
            sh.add_row(
                str(s.at)[:16],
                f"{s.fit_score:g}",
                f"{s.engagement_score:g}",
                f"{s.score:g}",
                s.grade or "-",
            )
        out.print(sh)
    th = Table("at", "from", "to", "kind", "reason", "by", title="Stage history")
    for t in history:
        th.add_row(
            str(t.at)[:16],
            t.from_stage or "-",
            t.to_stage or "(callback)",
            t.kind,
            t.reason,
            t.actor,
        )
    out.print(th)
    if mails:
        mt = Table("due", "cadence/step", "template", "status", "sent", title="Emails")
        for m in mails:
            mt.add_row(
                str(m.due_at)[:16],
                f"{m.cadence}/{m.step}",
                m.template or "-",
                m.status,
                str(m.sent_at)[:16] if m.sent_at else "-",
            )
        out.print(mt)


@app.command()
def leads(
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
    status: Annotated[str | None, typer.Option(help="active, callback or closed.")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """List leads (highest score first)."""
    from leadflow import queries
    from leadflow.config.validate import suggest
    from models.tables import LeadStatus

    statuses = [s.value for s in LeadStatus]
    if status is not None and status not in statuses:
        fail(f"unknown status '{status}'{suggest(status, statuses)}; one of {', '.join(statuses)}")
    with runtime(config) as rt, rt.engine.connect() as conn:
        stages = sorted({st.id for p in rt.loaded.config.pipelines for st in p.stages})
        if stage is not None and stage not in stages:
            fail(f"unknown stage '{stage}'{suggest(stage, stages)}")
        rows = queries.list_leads(conn, stage=stage, status=status, pipeline=pipeline, limit=limit)
    if as_json:
        emit_json([queries.row_dict(r) for r in rows])
        return
    table = Table("email", "company", "stage", "status", "score", "grade", "in stage since")
    for r in rows:
        table.add_row(
            r.email,
            r.company or "-",
            (r.stage or "-") + (" ⚑" if r.stuck else ""),
            r.status,
            f"{r.score:g}",
            r.grade or "-",
            str(r.stage_entered_at)[:10],
        )
    out.print(table)


@app.command()
def move(
    email: str,
    stage: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")],
    now: NowOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Move a lead by hand; audited like every other move."""
    from leadflow.config.validate import suggest
    from leadflow.queries import find_lead
    from leadflow.stages import manual_move
    from models.db import session_scope

    when = _now(now)
    if not " ".join(reason.split()):
        fail("--reason must say why (it is kept in the audit trail)")
    with runtime(config) as rt, session_scope(rt.engine) as session:
        conn = session.connection()
        lead = find_lead(conn, email)
        if lead is None:
            fail(f"no lead with email '{email}'")
        pipeline = rt.loaded.config.pipeline(lead.pipeline or rt.loaded.config.pipelines[0].id)
        ids = [s.id for s in pipeline.stages] if pipeline else []
        if stage not in ids:
            fail(f"unknown stage '{stage}'{suggest(stage, ids)}; stages: {', '.join(ids)}")
        manual_move(conn, rt, lead.id, stage, reason=reason, now=when)
    out.print(f"moved {lead.email}: {lead.stage or '(callback)'} -> {stage}")


@app.command()
def callbacks(
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The future-callback list, due first."""
    from leadflow import queries

    with runtime(config) as rt, rt.engine.connect() as conn:
        rows = queries.open_callbacks(conn, limit=limit)
    if as_json:
        emit_json([queries.row_dict(r) for r in rows])
        return
    table = Table("due", "email", "company", "from stage", "recycles", "reason")
    for r in rows:
        table.add_row(
            str(r.due_at)[:10],
            r.email,
            r.company or "-",
            r.from_stage or "-",
            str(r.recycle_count),
            r.reason,
        )
    out.print(table)
    out.print(f"{len(rows)} lead(s) on the callback list")


@app.command()
def suppress(
    email: str,
    reason: Annotated[str, typer.Option(help="unsubscribed, objection, manual...")] = "manual",
    now: NowOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Never email this address again (takes effect before the next claim)."""
    from leadflow.suppression import suppress_many
    from models.db import session_scope

    when = _now(now)
    if "@" not in email:
        fail(f"'{email}' is not an email address")
    with runtime(config) as rt, session_scope(rt.engine) as session:
        suppress_many(session.connection(), [(email, reason)], now=when)
    out.print(f"suppressed {email.strip().lower()} ({reason})")


# --- running -------------------------------------------------------------------------------


@app.command()
def run(
    flows: Annotated[list[str] | None, typer.Argument(help="Flows to run (default: tick).")] = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Run flows once as real Prefect flow runs (intake, score, advance, nurture, callbacks,
    checkins, report, or tick = all in order)."""
    from leadflow.config.schema import FLOWS
    from leadflow.config.validate import suggest

    names = flows or ["tick"]
    for name in names:
        if name not in FLOWS:
            fail(f"unknown flow '{name}'{suggest(name, FLOWS)}; flows: {', '.join(FLOWS)}")
    when = _now(now)
    settings = _settings(config)
    settings.require_real_secret()  # before anything starts or commits: links are signed
    Runtime.open(settings).close()  # a bad config or database fails before Prefect starts
    from flows.runner import run_flows

    results = run_flows(names, now=when, settings=settings)
    if as_json:
        emit_json(results)
        return
    for name, result in results.items():
        out.print(_styled((name, "bold"), f": {result.get('summary', result)}"))


@app.command()
def plan(
    now: NowOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Dry run of the next tick: who would move, what would be sent. Changes nothing.

    With --config PROPOSED.yaml it also shows the difference from the current config."""
    from leadflow.planning import plan_tick, render_plan

    when = _now(now)
    settings = load_settings()
    current = Runtime.open(settings)
    try:
        proposed = None
        if config is not None:
            proposed = Runtime(
                settings=settings,
                loaded=load_config(config, templates=settings.templates),
                engine=current.engine,
            )
        result = plan_tick(current, now=when, proposed=proposed)
    finally:
        current.close()
    if as_json:
        emit_json(result)
        return
    render_plan(result, out)


@app.command()
def preview(
    template: str,
    lead: Annotated[str | None, typer.Option("--lead", help="Render for this lead.")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Render with sample data.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write the HTML here.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Render a template's subject, text and HTML (sample data unless --lead)."""
    from leadflow.mail.rendering import TemplateRenderError
    from leadflow.preview import render_preview

    if html is not None:
        _check_writable(html, "--html")
    with runtime(config) as rt:
        _known_template(rt, template)
        try:
            rendered = render_preview(rt, template, lead_email=None if sample else lead)
        except (TemplateRenderError, ValueError) as exc:
            fail(" ".join(str(exc).split()))
    out.print(_styled(("Subject:", "bold"), f" {rendered.subject}"))
    out.rule("text")
    out.print(rendered.text, highlight=False, markup=False)
    if html is not None:
        html.write_text(rendered.html, encoding="utf-8")
        out.print(f"HTML written to {html}")
    else:
        out.rule("html")
        out.print(rendered.html, highlight=False, markup=False)


def _known_template(rt: Runtime, name: str) -> None:
    from leadflow.config.validate import suggest

    names = rt.templates.names()
    if name not in names:
        fail(f"unknown template '{name}'{suggest(name, names)}; templates: {', '.join(names)}")


@app.command("send-test")
def send_test(
    template: str,
    to: Annotated[str, typer.Option("--to", help="Recipient of the test email.")],
    config: ConfigOpt = None,
) -> None:
    """Send one rendered template (sample data) through the configured SMTP server."""
    from leadflow.intake.normalize import InvalidValue, normalize_email
    from leadflow.mail.rendering import TemplateRenderError
    from leadflow.preview import send_test_email

    if any(ch in to for ch in "\r\n,;"):
        fail("--to takes one email address (no line breaks, commas or semicolons)")
    try:
        normalize_email(to)
    except InvalidValue as exc:
        fail(f"--to: {to!r} is not an email address ({exc})")
    with runtime(config) as rt:
        _known_template(rt, template)
        try:
            result = send_test_email(rt, template, to)
        except (TemplateRenderError, ValueError) as exc:
            fail(" ".join(str(exc).split()))
    out.print(f"{to}: {result.outcome} {result.code or ''} {result.detail}")
    if str(result.outcome) != "sent":
        raise typer.Exit(1)


@app.command()
def report(
    since: Annotated[str | None, typer.Option(help="Start of the period (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="End of the period (default: now).")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")] = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Pipeline metrics: funnel, conversion, aging, stuck leads, win rate, velocity."""
    from leadflow.config.validate import suggest
    from leadflow.report import build_report, render_report, write_html

    when = _now(until or now)
    start = _now(since) if since else None
    if start is not None and start >= when:
        fail(f"--since {start.isoformat()} is not before --until {when.isoformat()}")
    if html is not None:
        _check_writable(html, "--html")
    with runtime(config) as rt, rt.engine.connect() as conn:
        ids = [p.id for p in rt.loaded.config.pipelines]
        if pipeline is not None and pipeline not in ids:
            hint = suggest(pipeline, ids)
            fail(f"unknown pipeline '{pipeline}'{hint}; pipelines: {', '.join(ids)}")
        data = build_report(conn, rt.loaded, since=start, until=when, pipeline=pipeline)
    if html is not None:
        write_html(data, html)
    if as_json:
        emit_json(data)
        return
    render_report(data, out)
    if html is not None:
        out.print(f"HTML report written to {html}")


@app.command()
def serve(config: ConfigOpt = None) -> None:
    """Serve every flow as a Prefect deployment on the crons of pipeline.yaml."""
    settings = _settings(config)
    settings.require_real_secret()  # served runs sign links: refuse before serving anything
    loaded = load_config(settings.config, templates=settings.templates)
    from flows.deployments import PrefectUnavailable, serve_all

    try:  # stops within seconds on SIGTERM/SIGINT, even with the Prefect API gone
        serve_all(settings, loaded.config)
    except PrefectUnavailable as exc:  # unreachable at start, or a stop that could not pause
        fail(str(exc))


@app.command()
def web(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    config: ConfigOpt = None,
) -> None:
    """HTTP app: POST /leads, POST /events, one-click unsubscribe."""
    import uvicorn

    from leadflow.web import create_app

    _settings(config).require_real_secret()  # unsubscribe and tracked links need the key
    with runtime(config) as rt:
        uvicorn.run(create_app(rt), host=host, port=port, log_level="info")


@app.command()
def demo(
    days: Annotated[int, typer.Option(min=1, max=120, help="Simulated days.")] = 30,
    leads: Annotated[int, typer.Option(min=10, max=5000, help="Sample leads.")] = 300,
    home: Annotated[Path, typer.Option(help="Folder for the demo's data.")] = Path("var/demo"),
) -> None:
    """The main job on embedded defaults: sample leads, a local SMTP sink, ~30 simulated days."""
    from leadflow.demo import run_demo

    run_demo(home=home, days=days, lead_count=leads, console=out)


@outbox_app.command("unknown")
def outbox_unknown(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """List emails whose delivery is unknown (a sender died mid-send), with what is known."""
    from leadflow.unknown_sends import list_unknown

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

    from leadflow.unknown_sends import decide
    from models.db import session_scope

    when = _now(now)
    if not " ".join(reason.split()):
        fail("--reason must say why (it is kept in the audit trail)")
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


ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")]


@outbox_app.command("requeue")
def outbox_requeue(
    ids: Annotated[list[int], typer.Argument(help="Outbox ids (see `outbox unknown`).")],
    reason: ReasonOpt,
    now: NowOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send these unknown emails again (same Message-ID): the relay never took them."""
    _decide(ids, "requeue", reason, now, config)


@outbox_app.command("close")
def outbox_close(
    ids: Annotated[list[int], typer.Argument(help="Outbox ids (see `outbox unknown`).")],
    reason: ReasonOpt,
    now: NowOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Never send these unknown emails again (they end as failed)."""
    _decide(ids, "close", reason, now, config)


@mailbox_app.command("sync")
def mailbox_sync(now: NowOpt = None, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Read what is new in the mailbox now: record replies, auto-replies and bounces once."""
    from leadflow import engine
    from leadflow.listening.sources import MailboxError
    from leadflow.run_record import record_run

    when = _now(now)
    with runtime(config) as rt:
        if not rt.settings.mailbox_url:
            fail("LEADFLOW_MAILBOX_URL is not set (see docs/mailbox.md)")
        try:
            outcome = engine.listen(rt, now=when)
        except (MailboxError, engine.MailboxUnreadable) as exc:
            fail(str(exc))
        record_run(rt, "mailbox", now=when, summary={"mailbox": outcome.as_dict()})
    if as_json:
        emit_json(outcome.as_dict())
    else:
        out.print(outcome.summary(), markup=False, highlight=False)
    if outcome.errors:
        raise typer.Exit(1)


@mailbox_app.command("status")
def mailbox_status(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Checkpoint per folder, messages per class, and the last sync's result or error."""
    from leadflow.listening.status import mailbox_status as status_of

    with runtime(config) as rt, rt.engine.connect() as conn:
        status = status_of(conn)
    if as_json:
        emit_json(status)
        return
    table = Table("mailbox", "folder", "uidvalidity", "last uid", "messages", "synced at")
    for c in status["checkpoints"]:
        table.add_row(
            *(
                Text(str(c[k]))
                for k in ("mailbox", "folder", "uidvalidity", "last_uid", "messages", "synced_at")
            )
        )
    out.print(table)
    classes = Table("class", "matched", "unmatched")
    for kind, n in status["classes"].items():
        classes.add_row(Text(kind), str(n["matched"]), str(n["unmatched"]))
    out.print(classes)
    last = status["last_sync"]
    if last is None:
        out.print("never synced")
    else:
        out.print(f"last sync at {last['now']}: {last['summary']}", markup=False, highlight=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done automatically on every run)."""
    from models.db import make_engine, upgrade

    settings = load_settings()
    engine = make_engine(settings.db_url)
    applied = upgrade(engine)
    out.print("database upgraded" if applied else "database already up to date")


def main() -> None:
    """Entry point: bad input exits 1 with a message and no traceback; usage errors exit 2."""
    try:
        app()
    except Invalid as exc:
        err.print(_styled(("error:", "red"), f" {exc}"))
        sys.exit(1)
    except ConfigError as exc:
        for issue in exc.issues:
            err.print(_styled(("error", "red"), f" {issue}"), soft_wrap=True)
        err.print(f"{len(exc.issues)} error(s) in the configuration; nothing was changed.")
        sys.exit(1)
    except (SettingsError, DatabaseUnavailable) as exc:
        err.print(_styled(("error:", "red"), f" {exc}"))
        sys.exit(1)


if __name__ == "__main__":
    main()
