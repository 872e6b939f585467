"""A learned model becomes a proposed config: only the fit rules (and grades, if asked) change,
every comment and line elsewhere stays, and the result validates like a hand edit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DEFAULT_CONFIG, TEMPLATES

from leadflow.config import load_config
from leadflow.learning.proposal import ProposalError, propose

SOURCE = DEFAULT_CONFIG.read_text(encoding="utf-8")
WHY = ["on 2026-12-07 from 1,234 closed leads (database, won vs lost)", "held-out AUC 0.812"]


@dataclass(frozen=True)
class Rule:
    id: str
    when: str
    points: int


LEARNED = [
    Rule("learned_industry_1", 'industry in ["saas", "fintech"]', 18),
    Rule("learned_company_size_1", "company_size >= 50 and company_size < 1000", 9),
    Rule("learned_title_missing", "not is_set(title)", -4),
    Rule("learned_title_quote", 'title == "it\'s"', 1),
]


def fit_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("  fit:") + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("    - "))
    return lines[start:end]


def outside_scoring_fit(text: str) -> list[str]:
    """Every line but the fit rules, the provenance comment and the grades."""
    return [
        line
        for line in text.splitlines()
        if not line.startswith("    - {id:")
        and not line.startswith("  #")
        and not line.startswith("  grades:")
    ]


def test_only_the_fit_rules_change_and_every_other_line_stays() -> None:
    out = propose(SOURCE, LEARNED, provenance=WHY)

    assert outside_scoring_fit(out) == outside_scoring_fit(SOURCE)
    assert "# yaml-language-server: $schema=../docs/pipeline.schema.json" in out.splitlines()[0]
    assert fit_lines(out) == [
        '    - {id: learned_industry_1, when: \'industry in ["saas", "fintech"]\', points: 18}',
        "    - {id: learned_company_size_1, when: "
        '"company_size >= 50 and company_size < 1000", points: 9}',
        '    - {id: learned_title_missing, when: "not is_set(title)", points: -4}',
        "    - {id: learned_title_quote, when: 'title == \"it''s\"', points: 1}",
    ]
    assert "  grades: {A: 60, B: 40, C: 20, D: -100}" in out.splitlines()


def test_the_provenance_sits_above_the_rules() -> None:
    lines = propose(SOURCE, LEARNED, provenance=WHY).splitlines()
    fit = lines.index("  fit:")
    assert lines[fit - 2 : fit] == [
        "  # learned by `leadflow learn` on 2026-12-07 from 1,234 closed leads "
        "(database, won vs lost)",
        "  #   held-out AUC 0.812",
    ]


def test_the_proposal_validates_and_carries_exactly_the_learned_rules(tmp_path: Path) -> None:
    path = tmp_path / "proposed.yaml"
    path.write_text(propose(SOURCE, LEARNED, provenance=WHY), encoding="utf-8")

    loaded = load_config(path, templates=TEMPLATES)

    assert [(rule_id, points, rule.text) for rule_id, points, rule in loaded.fit_rules] == [
        (r.id, r.points, r.when) for r in LEARNED
    ]


def test_grades_are_replaced_only_when_asked() -> None:
    out = propose(SOURCE, LEARNED, provenance=WHY, grades={"A": 35, "B": 20, "C": 5, "D": -100})
    assert "  grades: {A: 35, B: 20, C: 5, D: -100}" in out.splitlines()
    assert "  grades: {A: 60, B: 40, C: 20, D: -100}" not in out


def test_proposing_again_replaces_the_earlier_provenance_instead_of_stacking_it() -> None:
    first = propose(SOURCE, LEARNED, provenance=WHY)
    second = propose(first, LEARNED[:2], provenance=["on 2026-12-08", "held-out AUC 0.8"])

    assert "2026-12-07" not in second
    assert second.count("learned by `leadflow learn`") == 1
    assert propose(second, LEARNED[:2], provenance=["on 2026-12-08", "held-out AUC 0.8"]) == (
        second
    )


def test_rules_go_last_when_the_config_had_no_fit_list() -> None:
    source = "version: 1\nscoring:\n  # the grades we agreed\n  grades: {A: 10, D: -100}\n"
    out = propose(source, LEARNED[:1], provenance=WHY[:1])
    assert out.splitlines() == [
        "version: 1",
        "scoring:",
        "  # the grades we agreed",
        "  grades: {A: 10, D: -100}",
        "  # learned by `leadflow learn` on 2026-12-07 from 1,234 closed leads "
        "(database, won vs lost)",
        "  fit:",
        '    - {id: learned_industry_1, when: \'industry in ["saas", "fintech"]\', points: 18}',
    ]


def test_a_config_without_a_scoring_mapping_is_refused() -> None:
    with pytest.raises(ProposalError, match="no `scoring:` mapping"):
        propose("version: 1\nscoring: []\n", LEARNED, provenance=WHY)
