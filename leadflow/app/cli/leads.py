"""The lead commands: ``show`` one lead (with its owner), list ``leads`` (``--owner``) and
``callbacks``, ``move`` a lead by hand, ``suppress`` an address."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from leadflow.app.cli.common import (
    ConfigOpt,
    JsonOpt,
    NowOpt,
    check_writable,
    emit_json,
    fail,
    instant,
    out,
    require_reason,
    runtime,
    styled,
)

commands = typer.Typer()


@commands.command()
def show(
    email: str, now: NowOpt = None, as_json: JsonOpt = False, config: ConfigOpt = None
) -> None:
    """One lead: stage, score explained rule by rule and event by event, history, emails."""
    from leadflow import queries
    from leadflow.pipeline.scoring import explain

    with runtime(config) as rt, rt.engine.connect() as conn:
        lead = queries.find_lead(conn, email)
        if lead is None:
            fail(f"no lead with email '{email}'")
        # by default explain the stored score (as of its last scoring), so the lines add up
        # to the number shown; --now asks what the decayed score would be at that instant
        when = instant(now) if now else (lead.scored_at or instant(None))
        contributions = explain(conn, rt.loaded, lead.id, now=when)
        history = queries.transitions(conn, lead.id)
        scores = queries.score_history(conn, lead.id)
        mails = queries.messages(conn, lead.id)
        evts = queries.events(conn, lead.id)
        owners = queries.owner_changes(conn, lead.id)
        team = rt.loaded.config.team
        member = team.member(lead.owner) if lead.owner else None
    if as_json:
        emit_json(
            {
                "lead": queries.row_dict(lead),
                "score": [c.__dict__ for c in contributions],
                "transitions": [queries.row_dict(r) for r in history],
                "score_history": [queries.row_dict(r) for r in scores],
                "messages": [queries.row_dict(r) for r in mails],
                "events": [queries.row_dict(r) for r in evts],
                "owner_changes": [queries.row_dict(r) for r in owners],
            }
        )
        return
    _print_score(lead, contributions, scores, when)
    if team.members or lead.owner or owners:  # one sender and no team: nothing to say
        _print_owner(lead.owner, member, owners)
    _print_history(history, mails)


def _print_score(lead: Any, contributions: list[Any], scores: list[Any], when: datetime) -> None:
    """Who the lead is, the score explained line by line, and the last ten scorings."""
    name = " ".join(p for p in (lead.first_name, lead.last_name) if p) or "(no name)"
    out.print(
        styled((name, "bold"), f" <{lead.email}> — {lead.company or '-'}, {lead.title or '-'}")
    )
    out.print(
        styled(
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


def _print_owner(owner: str | None, member: Any, changes: list[Any]) -> None:
    """Who owns the lead, and every owner change with why and by whom."""
    if owner is None:
        out.print("owner: nobody yet")
    else:
        who = f" ({member.name}{'' if member.active else ', inactive'})" if member else ""
        out.print(f"owner: {owner}{who}")
    if changes:
        table = Table("at", "from", "to", "kind", "reason", "by", title="Owner history")
        for c in changes:
            table.add_row(
                str(c.at)[:16], c.from_owner or "-", c.to_owner or "-", c.kind, c.reason, c.actor
            )
        out.print(table)


def _print_history(history: list[Any], mails: list[Any]) -> None:
    """The lead's stage history and its emails."""
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


@commands.command()
def leads(
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
    status: Annotated[str | None, typer.Option(help="active, callback or closed.")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this team member's leads.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    csv: Annotated[
        Path | None,
        typer.Option("--csv", help="Write every matching lead (no limit) to this CSV file."),
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """List leads (highest score first); --csv writes all of them to a file."""
    from leadflow import queries
    from leadflow.reporting.csvexport import export_leads
    from leadflow.suggest import did_you_mean
    from models.tables import LeadStatus

    statuses = [s.value for s in LeadStatus]
    if status is not None and status not in statuses:
        hint = did_you_mean(status, statuses)
        fail(f"unknown status '{status}'{hint}; one of {', '.join(statuses)}")
    if csv is not None and as_json:
        fail("--csv and --json: choose one")
    if csv is not None and owner is not None:
        fail("--owner does not filter --csv yet; list with --json instead")
    if csv is not None:
        check_writable(csv, "--csv")
    with runtime(config) as rt, rt.engine.connect() as conn:
        stages = sorted({st.id for p in rt.loaded.config.pipelines for st in p.stages})
        if stage is not None and stage not in stages:
            fail(f"unknown stage '{stage}'{did_you_mean(stage, stages)}")
        members = [m.id for m in rt.loaded.config.team.members]
        if owner is not None and owner not in members and not queries.has_owner(conn, owner):
            fail(f"no team member or owner '{owner}'{did_you_mean(owner, members)}")
        if csv is not None:
            written = export_leads(conn, csv, stage=stage, status=status, pipeline=pipeline)
            out.print(f"{written} lead{'' if written == 1 else 's'} written to {csv}")
            return
        rows = queries.list_leads(
            conn, stage=stage, status=status, pipeline=pipeline, owner=owner, limit=limit
        )
    if as_json:
        emit_json([queries.row_dict(r) for r in rows])
        return
    # one sender and no team (the usual single-user set-up): no owner column, as in show
    with_owner = bool(members) or any(r.owner for r in rows)
    headers = ["email", "company", "stage", "status", "score", "grade"]
    table = Table(*headers, *(["owner"] if with_owner else []), "in stage since")
    for r in rows:
        cells = [
            r.email,
            r.company or "-",
            (r.stage or "-") + (" ⚑" if r.stuck else ""),
            r.status,
            f"{r.score:g}",
            r.grade or "-",
        ]
        owner_cell = [r.owner or "-"] if with_owner else []
        table.add_row(*cells, *owner_cell, str(r.stage_entered_at)[:10])
    out.print(table)


@commands.command()
def move(
    email: str,
    stage: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")],
    now: NowOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Move a lead by hand; audited like every other move."""
    from leadflow.pipeline.stages import manual_move
    from leadflow.queries import find_lead
    from leadflow.suggest import did_you_mean
    from models.db import session_scope

    when = instant(now)
    require_reason(reason)
    with runtime(config) as rt, session_scope(rt.engine) as session:
        conn = session.connection()
        lead = find_lead(conn, email)
        if lead is None:
            fail(f"no lead with email '{email}'")
        pipeline = rt.loaded.config.pipeline(lead.pipeline or rt.loaded.config.pipelines[0].id)
        ids = [s.id for s in pipeline.stages] if pipeline else []
        if stage not in ids:
            fail(f"unknown stage '{stage}'{did_you_mean(stage, ids)}; stages: {', '.join(ids)}")
        manual_move(conn, rt, lead.id, stage, reason=reason, now=when)
    out.print(f"moved {lead.email}: {lead.stage or '(callback)'} -> {stage}")


@commands.command()
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


@commands.command()
def suppress(
    email: str,
    reason: Annotated[str, typer.Option(help="unsubscribed, objection, manual...")] = "manual",
    now: NowOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Never email this address again (takes effect before the next claim)."""
    from leadflow.pipeline.suppression import suppress_many
    from models.db import session_scope

    when = instant(now)
    if "@" not in email:
        fail(f"'{email}' is not an email address")
    with runtime(config) as rt, session_scope(rt.engine) as session:
        suppress_many(session.connection(), [(email, reason)], now=when)
    out.print(f"suppressed {email.strip().lower()} ({reason})")
