"""``leadflow plan``: the next tick, simulated inside a transaction that is rolled back.

The real engine code runs (scoring, revivals, stage moves, claims) so the dry run cannot
drift from what a tick will do; no SMTP call is made and nothing is committed. With a
proposed config the same simulation runs again and the two outcomes are compared.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from leadflow import config_change, engine, outbox, scoring, stages, stranded
from leadflow.moves import AdvanceOutcome
from leadflow.runtime import Runtime


def simulate(rt: Runtime, *, now: datetime) -> dict[str, Any]:
    """What one tick at ``now`` would do under ``rt``'s config. Changes nothing.

    A config that differs from the last run's makes every open lead due first, exactly as
    ``config_change.apply_config_change`` will (also for a file edited in place)."""
    callback_ranges = engine.callback_ranges(rt, now=now)
    config_changed = config_change.config_change_pending(rt)
    with rt.engine.connect() as conn:
        trans = conn.begin()
        try:
            change = (
                config_change.change_config(conn, rt, now=now)
                if config_changed
                else config_change.ConfigChange(stranded=stranded.find(conn, rt.loaded))
            )
            rescored = changed = 0
            for r in _ranges(conn, "lead", scoring.due_condition(now)):
                result = scoring.score_batch(conn, rt.loaded, r, now=now)
                rescored += result.rescored
                changed += result.changed
            revived = AdvanceOutcome()
            for r in callback_ranges:
                revived.merge(stages.revive_batch(conn, rt, r, now=now))
            advanced = AdvanceOutcome()
            for r in _ranges(conn, "lead", stages.due_condition(now)):
                advanced.merge(stages.advance_batch(conn, rt, r, now=now))
            emails: Counter[str] = Counter()
            deferred: Counter[str] = Counter()
            cancelled: Counter[str] = Counter()
            for kind in ("cadence", "checkin"):
                for r in _ranges(conn, "outbound_message", outbox.due_condition(now, kind)):
                    claim = outbox.claim_batch(conn, rt, r, now=now, kind=kind)
                    emails.update(c.template for c in claim.claimed)
                    deferred.update(claim.deferred)
                    cancelled.update(claim.cancelled)
        finally:
            trans.rollback()
    return {
        "now": now.isoformat(),
        "config_hash": rt.loaded.short_hash,
        "config_change": change.as_dict(),
        "rescored": rescored,
        "score_changed": changed,
        "revived": revived.as_dict(),
        "advance": advanced.as_dict(),
        "emails": dict(sorted(emails.items())),
        "deferred": dict(deferred),
        "cancelled": dict(cancelled),
    }


def _ranges(conn: Any, table: str, condition: Any) -> list[tuple[int, int]]:
    """Id ranges read on the simulation's own connection (it sees its uncommitted moves)."""
    from sqlalchemy import func, select

    from models.tables import LEADS, OUTBOX

    column = (LEADS if table == "lead" else OUTBOX).c.id
    row = conn.execute(select(func.min(column), func.max(column)).where(condition)).one()
    return [] if row[0] is None else [(int(row[0]), int(row[1]))]


def plan_tick(
    current: Runtime, *, now: datetime, proposed: Runtime | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {"current": simulate(current, now=now)}
    if proposed is not None:
        result["proposed"] = simulate(proposed, now=now)
        result["diff"] = diff(result["current"], result["proposed"])
    return result


def _moves(sim: dict[str, Any]) -> Counter[str]:
    out: Counter[str] = Counter()
    for section in (sim["config_change"]["relocated"], sim["advance"], sim["revived"]):
        for m in section["moves"]:
            out[f"{m['from']} → {m['to']}"] += m["count"]
    return out


def diff(current: dict[str, Any], proposed: dict[str, Any]) -> dict[str, Any]:
    moves_a, moves_b = _moves(current), _moves(proposed)
    emails_a, emails_b = Counter(current["emails"]), Counter(proposed["emails"])
    return {
        "moves": {
            k: {"current": moves_a[k], "proposed": moves_b[k]}
            for k in sorted(set(moves_a) | set(moves_b))
            if moves_a[k] != moves_b[k]
        },
        "emails": {
            k: {"current": emails_a[k], "proposed": emails_b[k]}
            for k in sorted(set(emails_a) | set(emails_b))
            if emails_a[k] != emails_b[k]
        },
        "recycled": {
            "current": current["advance"]["recycled"],
            "proposed": proposed["advance"]["recycled"],
        },
        "stranded": [g for g in proposed["config_change"]["stranded"] if g["to"] is None],
    }


def render_plan(result: dict[str, Any], console: Console) -> None:
    sim = result["current"]
    console.print(
        Text.assemble(
            (f"Plan for the tick at {sim['now']}", "bold"),
            f" (config {sim['config_hash']}; nothing is changed)",
        )
    )
    change = sim["config_change"]
    if change["reevaluated"]:
        console.print(
            f"config changed since the last run: {change['reevaluated']} open lead(s) "
            "re-evaluated first"
        )
    for m in change["relocated"]["moves"]:
        console.print(
            f"stage removed from the config: {m['count']} lead(s) move {m['from']} → {m['to']}"
        )
    for g in change["stranded"]:
        if g["to"] is None:
            where = f"stage '{g['stage']}'" if g["stage"] else "removed pipeline"
            console.print(
                Text(
                    f"stranded: {g['leads']} open lead(s) in {where} of pipeline "
                    f"'{g['pipeline']}' (e.g. {', '.join(g['examples'])}); add moved_stages",
                    style="yellow",
                )
            )
    console.print(
        f"rescored {sim['rescored']} lead(s), {sim['score_changed']} with a new score or grade"
    )
    moves = Table("from", "to", "leads", "examples", title="Stage moves")
    for section in ("revived", "advance"):
        for m in sim[section]["moves"]:
            moves.add_row(m["from"], m["to"], str(m["count"]), ", ".join(m["examples"]))
    console.print(moves)
    console.print(
        f"recycled to the callback list: {sim['advance']['recycled']}, flagged stuck: "
        f"{sim['advance']['flagged']}"
    )
    emails = Table("template", "emails", title="Emails that would go out")
    for template, n in sim["emails"].items():
        emails.add_row(template, str(n))
    console.print(emails)
    for reason, n in sim["deferred"].items():
        console.print(f"deferred ({reason}): {n}")
    if "diff" in result:
        d = result["diff"]
        table = Table("change", "current", "proposed", title="Proposed config vs current")
        for key, v in d["moves"].items():
            table.add_row(f"move {key}", str(v["current"]), str(v["proposed"]))
        for key, v in d["emails"].items():
            table.add_row(f"emails {key}", str(v["current"]), str(v["proposed"]))
        table.add_row("recycled", str(d["recycled"]["current"]), str(d["recycled"]["proposed"]))
        console.print(table)
        for g in d["stranded"]:
            where = f"stage '{g['stage']}'" if g["stage"] else "the removed pipeline"
            console.print(
                Text(
                    f"the proposed config strands {g['leads']} open lead(s) in {where} "
                    f"'{g['pipeline']}' (e.g. {', '.join(g['examples'])}): add moved_stages "
                    "to say where they go",
                    style="red",
                )
            )
