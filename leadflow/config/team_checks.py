"""Checks of ``team:`` and ``assignment:`` against each other and the rest of the file.

Called by the validator (``validate._Checker.team``) so every problem is reported with the
others, at its own line, with a "did you mean" where a near name exists:

- duplicate member ids, and a member listed twice in one group;
- unknown time zones of members;
- group entries, assignment rules and ``owner == "..."`` in any rule naming nobody;
- a group with no active member (a lead sent there could never be assigned);
- an assignment rule's ``when``, compiled like every rule;
- (warnings) a rule sending leads to an inactive member; no rule without ``when`` (leads that
  match no rule stay without an owner and are looked at again every tick).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Protocol

from leadflow.config.schema import PipelineConfig
from leadflow.config.source import Issue, Path_, YamlDocument
from leadflow.pipeline.business_time import is_valid_zone
from leadflow.rules import Rule
from leadflow.suggest import did_you_mean

# ``owner == "ana"``, ``"ana" != owner``, ``owner in ["ana", "ben"]``: the ids a rule names
_OWNER_COMPARED = re.compile(
    r"""\bowner\s*(?:==|!=)\s*(["'])(.*?)\1|(["'])([^"']*)\3\s*(?:==|!=)\s*owner\b"""
)
_OWNER_IN = re.compile(r"\bowner\s+(?:not\s+)?in\s*\[([^\]]*)\]")
_QUOTED = re.compile(r"""(["'])(.*?)\1""")


class Checker(Protocol):
    """What of the validator's checker these checks use."""

    config: PipelineConfig
    doc: YamlDocument
    issues: list[Issue]

    def error(
        self, path: Path_, message: str, *, key: bool = False, offset: int | None = None
    ) -> None: ...

    def rule(self, path: Path_, text: str) -> Rule | None: ...


@cache
def _zones() -> frozenset[str]:
    from zoneinfo import available_timezones

    return frozenset(available_timezones())


def check_team(checker: Checker) -> None:
    _members(checker)
    _groups(checker)
    _assignment(checker)
    _owner_in_rules(checker)


def _warn(checker: Checker, path: Path_, message: str, *, key: bool = False) -> None:
    checker.issues.append(checker.doc.issue(path, message, key=key, severity="warning"))


def _members(checker: Checker) -> None:
    first: dict[str, int] = {}
    for i, member in enumerate(checker.config.team.members):
        path: Path_ = ("team", "members", i)
        if member.id in first:
            checker.error(
                (*path, "id"),
                f"duplicate member id '{member.id}' (also members[{first[member.id]}])",
            )
        first.setdefault(member.id, i)
        if not is_valid_zone(member.timezone):
            checker.error(
                (*path, "timezone"),
                f"unknown time zone '{member.timezone}'{did_you_mean(member.timezone, _zones())}",
            )


def _groups(checker: Checker) -> None:
    team = checker.config.team
    ids = [m.id for m in team.members]
    for group_id, entries in team.groups.items():
        path: Path_ = ("team", "groups", group_id)
        seen: set[str] = set()
        for j, entry in enumerate(entries):
            if entry.member not in ids:
                checker.error(
                    (*path, j, "member"),
                    f"unknown team member '{entry.member}'{did_you_mean(entry.member, ids)}",
                )
            elif entry.member in seen:
                checker.error((*path, j, "member"), f"'{entry.member}' is in this group twice")
            seen.add(entry.member)
        active = [e.member for e in entries if (m := team.member(e.member)) and m.active]
        if not active:
            checker.error(
                path,
                f"group '{group_id}' has no active member: a lead sent to it could never be "
                "assigned",
                key=True,
            )


def _assignment(checker: Checker) -> None:
    team = checker.config.team
    ids = [m.id for m in team.members]
    for i, rule in enumerate(checker.config.assignment):
        path: Path_ = ("assignment", i)
        if rule.when is not None:
            checker.rule((*path, "when"), rule.when)
        if rule.owner is not None:
            member = team.member(rule.owner)
            if member is None:
                checker.error(
                    (*path, "owner"),
                    f"unknown team member '{rule.owner}'{did_you_mean(rule.owner, ids)}",
                )
            elif not member.active:
                _warn(
                    checker,
                    (*path, "owner"),
                    f"'{rule.owner}' is inactive: this rule assigns nobody (the next matching "
                    "rule is tried)",
                )
        if rule.group is not None and rule.group not in team.groups:
            checker.error(
                (*path, "group"),
                f"unknown group '{rule.group}'{did_you_mean(rule.group, team.groups)}",
            )
    rules = checker.config.assignment
    if rules and all(rule.when is not None for rule in rules):
        _warn(
            checker,
            ("assignment",),
            "no rule without 'when': leads that match no rule stay without an owner (and are "
            "looked at again every tick)",
            key=True,
        )


def rule_texts(config: PipelineConfig) -> Iterator[tuple[Path_, str]]:
    """Every rule of the file with where it is written."""
    for i, fit in enumerate(config.scoring.fit):
        yield ("scoring", "fit", i, "when"), fit.when
    for name, text in config.scoring.bant.rules().items():
        yield ("scoring", "bant", name), text
    for pi, pipeline in enumerate(config.pipelines):
        if pipeline.match:
            yield ("pipelines", pi, "match"), pipeline.match
        for si, stage in enumerate(pipeline.stages):
            if stage.entry:
                yield ("pipelines", pi, "stages", si, "entry"), stage.entry
            for ei, exit_ in enumerate(stage.exits):
                yield ("pipelines", pi, "stages", si, "exits", ei, "when"), exit_.when
    for i, rule in enumerate(config.assignment):
        if rule.when:
            yield ("assignment", i, "when"), rule.when


def _owner_in_rules(checker: Checker) -> None:
    """``owner == "anna"`` in any rule names a member of the team."""
    ids = [m.id for m in checker.config.team.members]
    for path, text in rule_texts(checker.config):
        for name, offset in _named_owners(text):
            if name not in ids:
                checker.error(
                    path,
                    f"rule: unknown team member '{name}'{did_you_mean(name, ids)}",
                    offset=offset,
                )


def _named_owners(text: str) -> Iterator[tuple[str, int]]:
    for match in _OWNER_COMPARED.finditer(text):
        group = 2 if match.group(2) is not None else 4
        yield match.group(group), match.start(group)
    for match in _OWNER_IN.finditer(text):
        for quoted in _QUOTED.finditer(match.group(1)):
            yield quoted.group(2), match.start(1) + quoted.start(2)
