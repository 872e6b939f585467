"""The database half of assignment (``assignment.py`` plans): which leads are due, what one
batch reads, and the set-based apply; the ``assign`` step, its dry form, and ``leadflow
assign`` by hand.

A batch is a few statements whatever its size: the assignment lock, the round robins' state,
the open-lead counts of members with a capacity (one GROUP BY over ``ix_lead_owner``), the
candidates with one boolean column per assignment rule, then one UPDATE of the lead rows
(executemany), one INSERT of the audit rows and one UPDATE of the state rows. Nothing is
asked per lead.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from leadflow.config.loaded import LoadedConfig
from leadflow.config.schema import PipelineConfig
from leadflow.pipeline.assignment import (
    AssignOutcome,
    Candidate,
    Change,
    Plan,
    Roster,
    plan_assignments,
    roster,
)
from leadflow.pipeline.batching import IdRange, id_ranges, one_range
from leadflow.rules import Rule, compile_rule
from leadflow.rules.fields import LeadSql
from leadflow.runtime import Runtime
from models.db import session_scope
from models.tables import LEADS, OWNER_CHANGES, ROUND_ROBIN, LeadStatus

LOCK_KEY = zlib.crc32(b"leadflow.assignment")  # PostgreSQL advisory lock of assignment
REEVALUATE_AFTER = timedelta(seconds=1)  # as a stage move: the next tick looks again


def needed(rt: Runtime) -> bool:
    """The step runs when there is something to assign by: a team and rules."""
    config = rt.loaded.config
    return bool(config.team.members and config.assignment)


def lock(conn: Connection) -> None:
    """Hold the assignment lock until the transaction ends (SQLite: its writers are one at a
    time already, from BEGIN IMMEDIATE on)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))


def owners_in_use(conn: Connection) -> list[str]:
    """Every distinct owner of a lead, found by one seek per owner on ``ix_lead_owner`` (a
    recursive "loose index scan"), not a pass over the leads."""
    lead, other = LEADS, LEADS.alias("later")
    seen = select(func.min(lead.c.owner).label("owner")).cte("owners", recursive=True)
    following = select(func.min(other.c.owner)).where(other.c.owner > seen.c.owner)
    seen = seen.union_all(select(following.scalar_subquery()).where(seen.c.owner.is_not(None)))
    return [row[0] for row in conn.execute(select(seen.c.owner).where(seen.c.owner.is_not(None)))]


def gone_owners(conn: Connection, team: Roster) -> list[str]:
    return sorted(o for o in owners_in_use(conn) if team.gone(o))


def due_condition(gone: Sequence[str]) -> ColumnElement[bool]:
    """Active leads without an owner, or whose owner is gone: ranges of ``ix_lead_owner``."""
    owner = LEADS.c.owner
    who = or_(owner.is_(None), owner.in_(list(gone))) if gone else owner.is_(None)
    return and_(who, LEADS.c.status == LeadStatus.ACTIVE)


def open_condition(config: PipelineConfig) -> ColumnElement[bool]:
    """An open lead: active and not in a won or lost stage (what ``capacity`` counts)."""
    lead = LEADS
    closed = [
        and_(lead.c.pipeline == p.id, lead.c.stage.in_(ids))
        for p in config.pipelines
        if (ids := [s.id for s in p.stages if s.kind != "open"])
    ]
    active = lead.c.status == LeadStatus.ACTIVE
    if not closed:
        return active
    return and_(active, not_(func.coalesce(or_(*closed), false(), type_=Boolean())))


def compiled_rules(loaded: LoadedConfig) -> list[Rule | None]:
    """The assignment rules' ``when`` compiled (None: no ``when``, always matches); the
    validator has compiled each once already, so this cannot fail."""
    return [
        compile_rule(rule.when, loaded.catalog) if rule.when else None
        for rule in loaded.config.assignment
    ]


def owner_in_rules(loaded: LoadedConfig) -> bool:
    """Whether a scoring or stage rule reads ``owner`` (then an owner change makes the lead
    due for both, as new data would)."""
    rules: list[Rule] = [r for _, _, r in loaded.fit_rules]
    rules += [*loaded.bant_rules.values(), *loaded.entries.values(), *loaded.matches.values()]
    rules += [e.rule for exits in loaded.exits.values() for e in exits]
    return any("owner" in rule.fields for rule in rules)


# --- one batch ----------------------------------------------------------------------------


def read_state(conn: Connection, team: Roster, now: datetime) -> dict[str, dict[str, int]]:
    """Each group's round robin as stored; a group whose members or weights changed in the
    YAML starts again from zero (its rows are replaced)."""
    rr = ROUND_ROBIN
    stored: dict[str, dict[str, tuple[int, int]]] = {}
    for row in conn.execute(select(rr.c.group_id, rr.c.member_id, rr.c.weight, rr.c.current)):
        stored.setdefault(row.group_id, {})[row.member_id] = (row.weight, row.current)
    state: dict[str, dict[str, int]] = {}
    for gid, entries in team.groups.items():
        rows = stored.get(gid, {})
        if {m: w for m, (w, _) in rows.items()} == dict(entries):
            state[gid] = {m: current for m, (_, current) in rows.items()}
            continue
        conn.execute(delete(rr).where(rr.c.group_id == gid))
        conn.execute(
            insert(rr),
            [
                {
                    "group_id": gid,
                    "member_id": m,
                    "weight": w,
                    "current": 0,
                    "picks": 0,
                    "updated_at": now,
                }
                for m, w in entries
            ],
        )
        state[gid] = {m: 0 for m, _ in entries}
    return state


def open_counts(conn: Connection, config: PipelineConfig, members: Sequence[str]) -> dict[str, int]:
    if not members:
        return {}
    lead = LEADS
    rows = conn.execute(
        select(lead.c.owner, func.count())
        .where(lead.c.owner.in_(list(members)), open_condition(config))
        .group_by(lead.c.owner)
    ).all()
    return {owner: int(n) for owner, n in rows}


def candidates(
    conn: Connection, rt: Runtime, id_range: IdRange, gone: Sequence[str], now: datetime
) -> list[Candidate]:
    """The batch's due leads in id order, each with which assignment rules match."""
    lead = LEADS
    config = rt.loaded.config
    sql = LeadSql(dialect=conn.dialect.name, now=now, attributes=config.intake.attributes)
    rules = compiled_rules(rt.loaded)
    columns = [
        (rule.to_sql(sql) if rule is not None else true()).label(f"r{i}")
        for i, rule in enumerate(rules)
    ]
    query = (
        select(lead.c.id, lead.c.email, lead.c.owner, open_condition(config).label("is_open"))
        .add_columns(*columns)
        .where(lead.c.id.between(id_range[0], id_range[1]), due_condition(gone))
        .order_by(lead.c.id)
    )
    return [
        Candidate(row[0], row[1], row[2], bool(row[3]), tuple(bool(v) for v in row[4:]))
        for row in conn.execute(query)
    ]


def assign_batch(
    conn: Connection, rt: Runtime, id_range: IdRange, gone: Sequence[str], *, now: datetime
) -> AssignOutcome:
    """Place the due leads of ``id_range``; call inside a transaction (it takes the lock)."""
    team = roster(rt.loaded.config)
    lock(conn)
    state = read_state(conn, team, now)
    counts = open_counts(conn, rt.loaded.config, sorted(team.capacity))
    found = candidates(conn, rt, id_range, gone, now)
    plan = plan_assignments(found, team, state=state, open_counts=counts, now=now)
    apply(conn, rt, plan.changes, now=now)
    save_state(conn, plan, now)
    out = AssignOutcome()
    out.add(plan, len(found))
    return out


def apply(conn: Connection, rt: Runtime, changes: Sequence[Change], *, now: datetime) -> None:
    """The owners and their audit rows, in two statements (three when rules read ``owner``)."""
    if not changes:
        return
    lead = LEADS
    conn.execute(
        update(lead)
        .where(lead.c.id == bindparam("b_id"))
        .values(owner=bindparam("b_owner"), updated_at=literal(now, lead.c.updated_at.type)),
        [{"b_id": c.lead_id, "b_owner": c.to_owner} for c in changes],
    )
    conn.execute(insert(OWNER_CHANGES), [c.audit_row(rt.config_hash) for c in changes])
    if owner_in_rules(rt.loaded):
        soon = now + REEVALUATE_AFTER
        ids = [c.lead_id for c in changes]
        for column in (lead.c.next_action_at, lead.c.rescore_at):
            conn.execute(
                update(lead)
                .where(
                    lead.c.id.in_(ids),
                    lead.c.status == LeadStatus.ACTIVE,
                    or_(column.is_(None), column > soon),
                )
                .values({column.name: soon})
            )


def save_state(conn: Connection, plan: Plan, now: datetime) -> None:
    rr = ROUND_ROBIN
    picked = {group for group, _ in plan.picks}
    rows = [
        {
            "b_group": group,
            "b_member": member,
            "b_current": current,
            "b_picks": plan.picks[(group, member)],
        }
        for group in sorted(picked)
        for member, current in plan.state[group].items()
    ]
    if rows:
        conn.execute(
            update(rr)
            .where(rr.c.group_id == bindparam("b_group"), rr.c.member_id == bindparam("b_member"))
            .values(
                current=bindparam("b_current"),
                picks=rr.c.picks + bindparam("b_picks"),
                updated_at=literal(now, rr.c.updated_at.type),
            ),
            rows,
        )


# --- the step -------------------------------------------------------------------------------


def assign_owners(rt: Runtime, *, now: datetime) -> AssignOutcome:
    """The ``assign`` step: every due batch in id order, each in a transaction of its own."""
    team = roster(rt.loaded.config)
    with rt.engine.connect() as conn:
        gone = gone_owners(conn, team)
    ranges = id_ranges(rt.engine, LEADS.c.id, due_condition(gone), rt.settings.batch_size)
    out = AssignOutcome(batches=len(ranges))
    for id_range in ranges:
        with session_scope(rt.engine) as session:
            out.merge(assign_batch(session.connection(), rt, id_range, gone, now=now))
    return out


def assign_dry(conn: Connection, rt: Runtime, now: datetime) -> AssignOutcome:
    """What the step would do, on the dry run's connection (rolled back by the caller)."""
    gone = gone_owners(conn, roster(rt.loaded.config))
    out = AssignOutcome()
    for id_range in one_range(conn, LEADS.c.id, due_condition(gone)):
        out.merge(assign_batch(conn, rt, id_range, gone, now=now))
    return out


def assign_by_hand(
    conn: Connection,
    rt: Runtime,
    lead: Any,
    owner: str,
    *,
    reason: str,
    actor: str,
    now: datetime,
) -> Change | None:
    """A person gives ``lead`` (a row with id, email, owner) to ``owner``: audited with the
    reason and who did it. None when the lead is already theirs."""
    lock(conn)
    current = conn.execute(select(LEADS.c.owner).where(LEADS.c.id == lead.id)).scalar_one()
    if current == owner:
        return None
    change = Change(lead.id, lead.email, current, owner, now, "manual", None, None, reason, actor)
    apply(conn, rt, [change], now=now)
    return change
