"""``leadflow plan``: the next tick, simulated inside a transaction that is rolled back.

The real engine code runs (scoring, revivals, stage moves, claims) so the dry run cannot
drift from what a tick will do; no SMTP call is made and nothing is committed. With a
proposed config the same simulation runs again and the two outcomes are compared.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import Connection

from leadflow.alerts import plan as alerts_plan
from leadflow.delivery.outcome import DeliveryOutcome
from leadflow.pipeline import engine
from leadflow.pipeline.batching import IdRange, one_range
from leadflow.runtime import Runtime


class DryRunner:
    """Walks a run's steps on one connection whose transaction the caller rolls back: batched
    steps do their real ``work`` (one batch: nothing is committed between batches anyway),
    once-steps their ``dry`` form (claims without sending; no inbox or mailbox read)."""

    def __init__(self, conn: Connection, rt: Runtime) -> None:
        self.conn, self.rt = conn, rt

    def once(self, step: engine.Step, now: datetime) -> Any:
        return step.empty() if step.dry is None else step.dry(self.conn, self.rt, now)

    def plan(self, step: engine.Step, now: datetime) -> list[IdRange]:
        assert step.due is not None
        return one_range(self.conn, step.rows, step.due(now))

    def each(self, step: engine.Step, ranges: Sequence[IdRange], now: datetime) -> list[Any]:
        assert step.work is not None
        return [step.work(self.conn, self.rt, r, now) for r in ranges]


def simulate(rt: Runtime, *, now: datetime) -> dict[str, Any]:
    """What one tick at ``now`` would do under ``rt``'s config: the tick's own steps
    (``engine.FLOWS["tick"]``) in a transaction that is rolled back. Changes nothing.

    A config that differs from the last run's makes every open lead due first, exactly as
    ``config_change.apply_config_change`` will (also for a file edited in place)."""
    with rt.engine.connect() as conn:
        trans = conn.begin()
        try:
            out = engine.run(rt, "tick", now=now, runner=DryRunner(conn, rt))
        finally:
            trans.rollback()
    deliveries = DeliveryOutcome()
    for sent in (out.nurture, out.checkins):
        deliveries.merge(sent)
    return {
        "now": now.isoformat(),
        "config_hash": rt.loaded.short_hash,
        "config_change": out.config.as_dict(),
        "rescored": out.score.rescored,
        "score_changed": out.score.changed,
        "revived": out.callbacks.as_dict(),
        "advance": out.advance.as_dict(),
        "assign": out.outcome("assign").as_dict() if "assign" in out.ran else None,
        "emails": dict(sorted(deliveries.templates.items())),
        "deferred": dict(deliveries.deferred),
        "cancelled": dict(deliveries.cancelled),
        "alerts": alerts_plan.plan_section(rt, out),
    }


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
    _render_config_change(sim["config_change"], console)
    _render_tick(sim, console)
    alerts_plan.render(sim["alerts"], console)
    if "diff" in result:
        _render_diff(result["diff"], console)


def _render_config_change(change: dict[str, Any], console: Console) -> None:
    """What applying a changed config would do first: re-evaluate, relocate, strand."""
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


def _render_tick(sim: dict[str, Any], console: Console) -> None:
    """The tick's own steps: scores, stage moves, recycling, the emails it would send."""
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
    if sim["assign"] is not None:
        _render_assign(sim["assign"], console)
    emails = Table("template", "emails", title="Emails that would go out")
    for template, n in sim["emails"].items():
        emails.add_row(template, str(n))
    console.print(emails)
    for reason, n in sim["deferred"].items():
        console.print(f"deferred ({reason}): {n}")


def _render_assign(assign: dict[str, Any], console: Console) -> None:
    """Who would get which leads (``leadflow.pipeline.assignment``)."""
    owners = Table("owner", "leads", "examples", title="Owners assigned")
    for o in assign["owners"]:
        owners.add_row(o["owner"], str(o["count"]), ", ".join(o["examples"]))
    console.print(owners)
    if assign["reassigned"] or assign["waiting"]:
        console.print(
            f"reassigned from inactive members: {assign['reassigned']}, waiting for a member "
            f"with room: {assign['waiting']}"
        )


def _render_diff(d: dict[str, Any], console: Console) -> None:
    """A proposed config against the current one, and the leads it would strand."""
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
