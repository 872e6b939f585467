"""Who owns a lead: the ``assignment:`` rules, each group's weighted round robin, reassignment
away from inactive members, and assignment by hand. Every change is audited in
``owner_change`` like a stage move is in ``stage_transition``.

A tick's ``assign`` step (after ``advance``: a new lead has its pipeline, stage and score,
and before sending) looks at the active leads with no owner, or whose owner is inactive or
no longer in the team, a batch at a time in id order:

1. one SELECT per batch says, for each lead, which assignment rules match (each rule is one
   boolean column compiled to SQL) and whether the lead is open (not in a won/lost stage);
2. ``plan_assignments`` (pure: no database) walks the leads in id order. The first matching
   rule with room wins: ``owner: ID`` if that member is active and under ``capacity``, else
   ``group: ID``'s smooth weighted round robin over its active members with room. A rule
   with no one to take the lead is passed over; a lead no rule can place waits for the next
   tick (an inactive member's lead keeps its owner until then);
3. a few bulk statements write the owners, the audit rows and the round robin's state.

Once assigned, a lead keeps its owner (sticky): rules are not asked again when its data
change. Only an inactive or removed owner, or ``leadflow assign`` by hand, changes it.

Smooth weighted round robin (nginx's): each pick adds every eligible member's weight to its
running ``current``, takes the highest (the first listed on a tie) and takes the eligible
weights' total off the one picked. After ``n`` picks among the same members, member ``i``
has ``n * w_i / W`` picks to within one, at every ``n``, and picks are interleaved
(weights 2:1 give ``a b a a b a``, not ``a a b``). The ``current`` values live in the
``round_robin`` table, so a run continues the sequence where the last one left it; each
batch holds the assignment lock (PostgreSQL: a transaction advisory lock; SQLite: its one
writer) from reading the state and capacities to committing, so overlapping runs take turns
and never both place one lead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from leadflow.config.schema import PipelineConfig


@dataclass(frozen=True)
class Target:
    """One assignment rule as the planner needs it (whether it matches comes from SQL)."""

    index: int
    owner: str | None
    group: str | None
    reason: str


@dataclass(frozen=True)
class Roster:
    """The team as the planner sees it: who exists, who may get leads, how much room each
    has, the groups' members with their weights in listed order, and the rules."""

    members: frozenset[str]
    active: frozenset[str]
    capacity: Mapping[str, int]
    groups: Mapping[str, tuple[tuple[str, int], ...]]
    targets: tuple[Target, ...]

    def gone(self, owner: str | None) -> bool:
        """An owner whose leads go to somebody else: inactive, or no longer in the team."""
        return owner is not None and owner not in self.active

    def why_gone(self, owner: str) -> str:
        if owner in self.members:
            return f"{owner} is inactive"
        return f"'{owner}' is no longer in the team"


def roster(config: PipelineConfig) -> Roster:
    team = config.team
    targets = []
    for i, rule in enumerate(config.assignment):
        reason = rule.reason or f"assignment[{i}]: {rule.when or 'every lead'} → {rule.target}"
        targets.append(Target(i, rule.owner, rule.group, reason))
    return Roster(
        members=frozenset(m.id for m in team.members),
        active=frozenset(team.active_ids),
        capacity={m.id: m.capacity for m in team.members if m.capacity is not None},
        groups={
            gid: tuple((e.member, e.weight) for e in entries)
            for gid, entries in team.groups.items()
        },
        targets=tuple(targets),
    )


@dataclass(frozen=True)
class Candidate:
    """A lead to place: no owner yet, or one who is gone. ``matches`` has one entry per
    assignment rule; ``is_open``: it counts towards its owner's capacity."""

    lead_id: int
    email: str
    owner: str | None
    is_open: bool
    matches: tuple[bool, ...]


@dataclass(frozen=True)
class Change:
    """One owner change: the lead row's new owner and its audit row."""

    lead_id: int
    email: str
    from_owner: str | None
    to_owner: str
    at: datetime
    kind: str  # rule, reassign, manual
    rule: int | None
    group: str | None
    reason: str
    actor: str = "engine"

    def audit_row(self, config_hash: str) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "from_owner": self.from_owner,
            "to_owner": self.to_owner,
            "at": self.at,
            "kind": self.kind,
            "rule": self.rule,
            "group_id": self.group,
            "reason": self.reason[:500],
            "actor": self.actor[:100],
            "config_hash": config_hash,
        }


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)  # lead ids no rule could place
    state: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> member -> current
    picks: Counter[tuple[str, str]] = field(default_factory=Counter)  # (group, member)


def plan_assignments(
    candidates: Sequence[Candidate],
    roster: Roster,
    *,
    state: Mapping[str, Mapping[str, int]],
    open_counts: Mapping[str, int],
    now: datetime,
) -> Plan:
    """Who gets each candidate (in the order given: id order), from the round robins'
    ``state`` (group -> member -> current) and each member's open leads now. Pure: the
    returned ``Plan`` holds the changes, the leads left waiting and the new state."""
    plan = Plan(state={g: dict(members) for g, members in state.items()})
    counts = Counter(open_counts)

    def has_room(member: str) -> bool:
        cap = roster.capacity.get(member)
        return member in roster.active and (cap is None or counts[member] < cap)

    for lead in candidates:
        change = None
        for target, matched in zip(roster.targets, lead.matches, strict=True):
            if not matched:
                continue
            if target.owner is not None:
                if has_room(target.owner):
                    change = _change(lead, target, target.owner, None, roster, now)
                    break
                continue
            assert target.group is not None
            entries = roster.groups.get(target.group, ())
            eligible = {member for member, _ in entries if has_room(member)}
            if eligible:
                current = plan.state.setdefault(target.group, {})
                member = smooth_pick(entries, eligible, current)
                plan.picks[(target.group, member)] += 1
                change = _change(lead, target, member, target.group, roster, now)
                break
        if change is None:
            plan.waiting.append(lead.lead_id)
            continue
        plan.changes.append(change)
        if lead.is_open:
            counts[change.to_owner] += 1
    return plan


def smooth_pick(
    entries: Sequence[tuple[str, int]], eligible: set[str], current: dict[str, int]
) -> str:
    """One pick of the smooth weighted round robin among ``eligible`` (``current`` updated)."""
    total, best = 0, ""
    for member, weight in entries:
        if member not in eligible:
            continue
        current[member] = current.get(member, 0) + weight
        total += weight
        if not best or current[member] > current[best]:
            best = member
    current[best] -= total
    return best


def _change(
    lead: Candidate, target: Target, owner: str, group: str | None, roster: Roster, now: datetime
) -> Change:
    kind, reason = "rule", target.reason
    if lead.owner is not None:
        kind, reason = "reassign", f"{roster.why_gone(lead.owner)}; {target.reason}"
    return Change(
        lead.lead_id, lead.email, lead.owner, owner, now, kind, target.index, group, reason
    )


@dataclass
class AssignOutcome:
    """What an ``assign`` step did: leads given an owner (by owner), of them reassigned from a
    gone owner, and leads no rule could place yet."""

    examined: int = 0
    assigned: Counter[str] = field(default_factory=Counter)
    reassigned: int = 0
    waiting: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    batches: int = 0

    def add(self, plan: Plan, examined: int) -> None:
        self.examined += examined
        self.waiting += len(plan.waiting)
        for change in plan.changes:
            self.assigned[change.to_owner] += 1
            self.reassigned += change.kind == "reassign"
            kept = self.examples.setdefault(change.to_owner, [])
            if len(kept) < 3:
                kept.append(change.email)

    def merge(self, other: AssignOutcome) -> None:
        self.examined += other.examined
        self.assigned.update(other.assigned)
        self.reassigned += other.reassigned
        self.waiting += other.waiting
        self.batches += other.batches
        for owner, emails in other.examples.items():
            kept = self.examples.setdefault(owner, [])
            kept.extend(emails[: max(0, 3 - len(kept))])

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "assigned": dict(sorted(self.assigned.items())),
            "reassigned": self.reassigned,
            "waiting": self.waiting,
            "owners": [
                {"owner": owner, "count": n, "examples": self.examples.get(owner, [])[:3]}
                for owner, n in sorted(self.assigned.items())
            ],
        }

    def summary(self) -> str:
        total = sum(self.assigned.values())
        if not total and not self.waiting:
            return ""
        parts = [f"assigned {total}"]
        if total:
            parts[0] += " (" + ", ".join(f"{o} {n}" for o, n in sorted(self.assigned.items())) + ")"
        if self.reassigned:
            parts.append(f"reassigned from inactive members {self.reassigned}")
        if self.waiting:
            parts.append(f"waiting for a member with room {self.waiting}")
        return ", ".join(parts)
