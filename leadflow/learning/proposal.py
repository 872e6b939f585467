"""A proposed config: the reviewed file with only ``scoring.fit`` (and, if asked, the grades)
replaced, everything else kept as written, comments included.

The output is a proposal for a pull request, never applied by itself: ``leadflow validate``
and ``leadflow plan --config`` read it like any hand edit. ruamel.yaml's round trip keeps
the comments, key order and quoting of the rest of the file (the default config comes back
byte for byte); the new rules are written in the file's own one-line style.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    SingleQuotedScalarString,
)

PROVENANCE_MARK = "learned by `leadflow learn`"
CONTINUATION = "   "  # the provenance's later lines are indented under its first


class RuleLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def when(self) -> str: ...
    @property
    def points(self) -> int: ...


class ProposalError(ValueError):
    """The file cannot carry a proposal (no ``scoring`` mapping to put the rules in)."""


def _yaml() -> YAML:
    yaml = YAML()  # round-trip, safe: builds only plain mappings, sequences and scalars
    yaml.preserve_quotes = True
    yaml.width = 4096  # a long rule stays on its line, as people write them
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _quoted(text: str) -> str:
    """Rules are always quoted, as in the default file: a bare ``a >= 1`` reads fine, but a
    ``:`` or ``#`` in a value would not."""
    style = SingleQuotedScalarString if '"' in text else DoubleQuotedScalarString
    quoted: str = style(text)
    return quoted


def _flow_map(values: Mapping[str, Any]) -> CommentedMap:
    node = CommentedMap(values)
    node.fa.set_flow_style()
    return node


def _without_provenance(tokens: list[Any] | None) -> list[Any]:
    """``tokens`` less an earlier proposal's provenance: its first line and the indented
    lines that follow it."""
    kept: list[Any] = []
    inside = False
    for token in tokens or []:
        text = getattr(token, "value", "").lstrip()
        if text.startswith("# " + PROVENANCE_MARK):
            inside = True
        elif not (inside and text.startswith("#" + CONTINUATION)):
            inside = False
            kept.append(token)
    return kept


def _provenance_comment(data: CommentedMap, scoring: CommentedMap, lines: Sequence[str]) -> None:
    """The provenance above ``fit:``, replacing the one an earlier proposal left there.

    ruamel keeps a comment above a mapping's first key in two places (the mapping's own
    comment and the parent's entry for it), and one above a later key on that key."""
    if scoring.ca.comment and scoring.ca.comment[1]:
        scoring.ca.comment[1] = _without_provenance(scoring.ca.comment[1])
    parent = data.ca.items.get("scoring")
    if parent and len(parent) > 3 and parent[3]:
        parent[3] = _without_provenance(parent[3])
    own = scoring.ca.items.get("fit")
    if own and own[1]:
        own[1] = _without_provenance(own[1])
    scoring.yaml_set_comment_before_after_key("fit", before="\n".join(lines), indent=2)


def propose(
    source: str,
    rules: Sequence[RuleLike],
    *,
    provenance: Sequence[str],
    grades: Mapping[str, int] | None = None,
) -> str:
    """``source`` (a pipeline.yaml's text) with ``scoring.fit`` replaced by ``rules``,
    ``scoring.grades`` by ``grades`` when given, and ``provenance`` (lines, the first one
    naming this tool) as the comment above the rules."""
    yaml = _yaml()
    data = yaml.load(source)
    scoring = data.get("scoring") if isinstance(data, CommentedMap) else None
    if not isinstance(scoring, CommentedMap):
        raise ProposalError("the config has no `scoring:` mapping to put the learned rules in")
    fit = CommentedSeq(
        _flow_map({"id": rule.id, "when": _quoted(rule.when), "points": int(rule.points)})
        for rule in rules
    )
    scoring["fit"] = fit  # in its place, or last: a comment above the first key stays put
    if grades is not None:
        scoring["grades"] = _flow_map({name: int(floor) for name, floor in grades.items()})
    first = PROVENANCE_MARK + (f" {provenance[0]}" if provenance else "")
    rest = [CONTINUATION[1:] + line for line in provenance[1:]]
    _provenance_comment(data, scoring, [first, *rest])
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()
