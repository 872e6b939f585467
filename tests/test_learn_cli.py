"""``leadflow learn`` and ``leadflow score evaluate`` through the real command line: a CRM
export or the database's closed leads in, a report and a proposed config out that
``validate`` and ``plan`` read like a hand edit, and one-line errors for bad requests."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import DEFAULT_CONFIG, Cli
from sqlalchemy import insert

from benchmarks.bench_learn import synthetic_history
from leadflow.runtime import Runtime
from leadflow.settings import load_settings
from models.tables import LEADS

ROWS = 3000
CLOSED_AT = datetime(2026, 11, 2, tzinfo=UTC)
NOW = "2026-12-07T09:00:00+00:00"
# the default config's intake.mapping: export column -> lead field
EXPORT_COLUMNS = {
    "E-mail": "email",
    "Industry": "industry",
    "Job Title": "title",
    "Country": "country",
    "Employees": "company_size",
}


def write_export(path: Path, rows: int = ROWS) -> Path:
    """A CRM export of past leads with a ``Converted`` column (1 won, 0 lost)."""
    history = synthetic_history(rows, seed=3)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow([*EXPORT_COLUMNS, "Converted"])
        for i, won in enumerate(history.outcome):
            cells = [history.columns[field][i] for field in EXPORT_COLUMNS.values()]
            writer.writerow([*("" if c is None else c for c in cells), "1" if won else "0"])
    return path


def learn_json(cli: Cli, *args: str) -> dict[str, Any]:
    code, out, err = cli("learn", *args, "--now", NOW, "--json")
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def test_learning_from_an_export_reports_held_out_figures_next_to_todays_rules(
    cli: Cli, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "history.csv")

    document = learn_json(cli, str(export), "--outcome", "Converted", "--positive", "1")

    assert document["rows"] == ROWS
    assert document["holdout_rows"] == ROWS // 4
    assert document["target"] == "Converted = 1"
    assert 1 <= len(document["rules"]) <= 25
    assert document["learned"]["rows"] == document["current"]["rows"] == ROWS // 4
    assert document["learned"]["auc"] > document["current"]["auc"]
    assert document["learned"]["auc"] > 0.6
    assert document["proposed_config"] is None


def test_the_proposed_config_validates_plans_and_changes_only_the_fit_rules(
    cli: Cli, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "history.csv")
    proposed = tmp_path / "proposed.yaml"

    document = learn_json(
        cli, str(export), "--outcome", "Converted", "--positive", "1", "--out", str(proposed)
    )

    assert document["proposed_config"] == str(proposed)
    text = proposed.read_text(encoding="utf-8")
    rules = [line for line in text.splitlines() if line.startswith("    - {id: learned_")]
    assert len(rules) == len(document["rules"])

    def other_lines(config: str) -> list[str]:
        """Every line but a fit rule and the provenance comment above the rules."""
        return [
            line
            for line in config.splitlines()
            if not line.startswith("    - {id:") and not line.startswith("  # ")
        ]

    assert other_lines(text) == other_lines(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert "  # learned by `leadflow learn` on 2026-12-07 from 3,000 rows" in text
    assert cli("validate", "--config", str(proposed))[0] == 0
    code, out, err = cli("plan", "--config", str(proposed), "--now", NOW)
    assert code == 0, err
    assert out.startswith("Plan for the tick at 2026-12-07T09:00:00+00:00")
    assert "proposed" in out  # the column of what the proposed config would do


def test_the_same_history_and_seed_propose_the_same_file_byte_for_byte(
    cli: Cli, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "history.csv", rows=1500)
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    for out in (first, second):
        args = (str(export), "--outcome", "Converted", "--positive", "1", "--out", str(out))
        assert cli("learn", *args, "--now", NOW)[0] == 0
    assert first.read_bytes() == second.read_bytes()


def test_grades_quantiles_proposes_falling_thresholds_for_the_configs_grades(
    cli: Cli, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "history.csv", rows=1500)
    proposed = tmp_path / "proposed.yaml"
    args = ["--outcome", "Converted", "--positive", "1", "--grades", "quantiles"]

    document = learn_json(cli, str(export), *args, "--out", str(proposed))

    grades = document["grades"]
    assert list(grades) == ["A", "B", "C", "D"]
    assert grades["A"] > grades["B"] > grades["C"] > grades["D"]
    line = "  grades: {" + ", ".join(f"{k}: {v}" for k, v in grades.items()) + "}"
    assert line in proposed.read_text(encoding="utf-8").splitlines()


def closed_leads(count: int) -> None:
    """``count`` closed leads in the CLI's database, half won: saas wins, media loses."""
    rt = Runtime.open(load_settings())
    try:
        with rt.engine.begin() as conn:
            conn.execute(
                insert(LEADS),
                [
                    {
                        "email": f"closed{n}@example.com",
                        "pipeline": "b2b",
                        "stage": "won" if n % 2 else "lost",
                        "industry": ("saas" if n % 10 < 8 else "media")
                        if n % 2
                        else ("media" if n % 10 < 8 else "saas"),
                        "attributes": {},
                        "created_at": CLOSED_AT,
                        "updated_at": CLOSED_AT,
                    }
                    for n in range(count)
                ],
            )
    finally:
        rt.close()


def test_score_evaluate_judges_todays_rules_on_the_closed_leads(cli: Cli) -> None:
    closed_leads(200)

    code, out, err = cli("score", "evaluate", "--json")

    assert code == 0, err
    document = json.loads(out)
    # today's rules give saas 20 points and media 8: 80 of 100 wins are saas, 80 of 100 losses
    # media, so a random win outscores a random loss with 0.8*0.8 + 0.5*(0.2*0.8 + 0.8*0.2)
    assert document["target"] == "won vs lost"
    assert (document["rows"], document["positives"]) == (200, 100)
    assert document["auc"] == pytest.approx(0.8, abs=1e-9)


def test_learning_from_the_database_finds_the_field_that_separates_won_from_lost(
    cli: Cli,
) -> None:
    closed_leads(400)

    document = learn_json(cli)

    assert document["source"] == "database"
    (rule,) = document["rules"]
    # one rule on industry, whichever of the two levels is the baseline: saas outscores media
    saas_points = rule["points"] if "saas" in rule["when"] else 0
    media_points = rule["points"] if "media" in rule["when"] else 0
    assert rule["when"] in ('industry == "saas"', 'industry == "media"')
    # saas wins at 4:1 odds, media at 1:4: 16 times the odds, four doublings of 10 points
    # (the regularization may shave a point or two)
    assert 37 <= saas_points - media_points <= 40


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history.csv", "--outcome", "Converted"], "needs --outcome COLUMN and --positive"),
        (["nowhere.csv", "--outcome", "C", "--positive", "1"], "nowhere.csv: no such file"),
        (["--positive", "1"], "--positive is for a history file"),
        (["--outcome", "meting"], "unknown stage 'meting' (did you mean 'meeting'?)"),
        (["--exclude", "industy"], "unknown field 'industy' (did you mean 'industry'?)"),
        (["--grades", "deciles"], "--grades 'deciles': the only choice is quantiles"),
    ],
)
def test_a_bad_request_is_one_line_and_exit_1(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    write_export(tmp_path / "history.csv", rows=50)

    code, out, err = cli("learn", *args)

    assert code == 1
    assert out == ""
    assert err.startswith("error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_too_little_history_is_refused_with_the_counts(cli: Cli) -> None:
    closed_leads(6)

    code, _out, err = cli("learn")

    assert code == 1
    assert "not enough history: 6 closed lead(s), 3 positive (won vs lost)" in err


def test_a_failed_learn_leaves_no_proposal_behind(cli: Cli, tmp_path: Path) -> None:
    closed_leads(6)
    proposed = tmp_path / "proposed.yaml"

    assert cli("learn", "--out", str(proposed))[0] == 1
    assert not proposed.exists()
