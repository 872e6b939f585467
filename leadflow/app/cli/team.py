"""The team commands: ``team`` (who is on it, how full each member is, each group's round
robin) and ``assign`` (give a lead to a member by hand, audited)."""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer
from rich.table import Table

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

commands = typer.Typer()


@commands.command()
def assign(
    email: str,
    owner: str,
    reason: ReasonOpt,
    actor: Annotated[
        str | None, typer.Option(help="Who is assigning (default: the OS user).")
    ] = None,
    now: NowOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Give a lead to a team member by hand; audited like a stage move."""
    from leadflow.pipeline.owners import assign_by_hand, open_counts
    from leadflow.queries import find_lead
    from leadflow.suggest import did_you_mean
    from models.db import session_scope

    when = instant(now)
    require_reason(reason)
    who = actor if actor is not None else getpass.getuser()
    if not who.strip():
        fail("--actor must name who is assigning")
    with runtime(config) as rt, session_scope(rt.engine) as session:
        team = rt.loaded.config.team
        member = team.member(owner)
        if member is None:
            ids = [m.id for m in team.members]
            listed = f"; members: {', '.join(ids)}" if ids else "; the config has no team"
            fail(f"unknown team member '{owner}'{did_you_mean(owner, ids)}{listed}")
        if not member.active:
            fail(f"{owner} is inactive: give the lead to an active member")
        conn = session.connection()
        lead = find_lead(conn, email)
        if lead is None:
            fail(f"no lead with email '{email}'")
        change = assign_by_hand(conn, rt, lead, owner, reason=reason, actor=who, now=when)
        held = open_counts(conn, rt.loaded.config, [owner]).get(owner, 0)
    if change is None:
        out.print(f"{lead.email} is already {owner}'s")
        return
    out.print(f"assigned {lead.email}: {change.from_owner or '(nobody)'} -> {owner}")
    if member.capacity is not None and held > member.capacity:
        out.print(f"note: {owner} now holds {held} open leads (capacity {member.capacity})")


@commands.command()
def team(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """The team: each member's open leads against their capacity, and the groups."""
    from leadflow.pipeline.owners import open_counts

    with runtime(config) as rt, rt.engine.connect() as conn:
        members = rt.loaded.config.team.members
        groups = rt.loaded.config.team.groups
        held = open_counts(conn, rt.loaded.config, [m.id for m in members])
    rows: list[dict[str, Any]] = [
        {
            "id": m.id,
            "name": m.name,
            "email": m.email,
            "timezone": m.timezone,
            "active": m.active,
            "open_leads": held.get(m.id, 0),
            "capacity": m.capacity,
            "daily_cap": m.daily_cap,
            "groups": {
                gid: e.weight
                for gid, entries in groups.items()
                for e in entries
                if e.member == m.id
            },
        }
        for m in members
    ]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        out.print("no team in the config (see docs/team.md)")
        return
    table = Table("id", "name", "active", "open leads", "capacity", "daily cap", "groups (weight)")
    for r in rows:
        table.add_row(
            r["id"],
            r["name"],
            "yes" if r["active"] else "no",
            str(r["open_leads"]),
            str(r["capacity"] or "-"),
            str(r["daily_cap"] or "-"),
            ", ".join(f"{g} ({w})" for g, w in r["groups"].items()) or "-",
        )
    out.print(table)
