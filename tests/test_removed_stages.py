"""Removing a stage never strands its leads: ``validate`` and ``plan`` name them, and
``moved_stages`` moves them as audited transitions at the next run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DEFAULT_CONFIG, T0, TEMPLATES, Cli
from sqlalchemy import func, select, update

from leadflow.config import load_config
from leadflow.config.source import ConfigError
from leadflow.mail.transport import MemoryTransport
from leadflow.pipeline import engine
from leadflow.pipeline.run_record import record_run
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.db import session_scope
from models.tables import LEADS, TRANSITIONS, Lead

NEGOTIATION_EXIT = (
    '          - {to: negotiation, when: \'events("replied") > 0 or '
    'events("meeting_booked") > 0\'}\n'
)
NEGOTIATION_STAGE = """      - id: negotiation
        name: Negotiation
        probability: 0.7
        exits:
          - {to: won, when: 'events("won") > 0'}
          - {to: lost, when: 'events("lost") > 0'}
        sla: {max_days: 45, action: flag}
"""
MOVED = "    target: 250000\n    moved_stages: {negotiation: proposal}\n"


def without_negotiation(moved: bool = False) -> str:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    assert NEGOTIATION_EXIT in text and NEGOTIATION_STAGE in text
    text = text.replace(NEGOTIATION_EXIT, "").replace(NEGOTIATION_STAGE, "")
    return text.replace("    target: 250000\n", MOVED, 1) if moved else text


def _seed_negotiation(cli: Cli, count: int) -> Runtime:
    """``count`` leads in negotiation, and a run recorded under the current config."""
    import os

    settings = Settings(
        home=Path(os.environ["LEADFLOW_HOME"]),
        database_url=os.environ["LEADFLOW_DATABASE_URL"],
        config=DEFAULT_CONFIG,
        templates=TEMPLATES,
        demo=True,
    )
    rt = Runtime.open(settings)
    with session_scope(rt.engine) as session:
        for n in range(count):
            session.add(
                Lead(
                    email=f"deal{n}@acme.example",
                    pipeline="b2b",
                    stage="negotiation",
                    stage_entered_at=T0,
                    deal_value=1000.0,
                    created_at=T0,
                    updated_at=T0,
                )
            )
        session.add(
            Lead(
                email="fresh@acme.example",
                pipeline="b2b",
                stage="proposal",
                stage_entered_at=T0,
                created_at=T0,
                updated_at=T0,
            )
        )
    record_run(rt, "tick", now=T0, summary={})
    return rt


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edited.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_validate_names_the_leads_a_removed_stage_strands(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = _seed_negotiation(cli, 25)
    rt.close()
    edited = _write(tmp_path, without_negotiation())
    monkeypatch.setenv("LEADFLOW_CONFIG", str(edited))

    code, out, err = cli("validate")

    assert code == 1
    lines = err.strip().splitlines()
    assert lines[-1] == "1 error(s) against the database; nothing was changed."
    assert lines[0].startswith(f"error {edited}:")
    assert (
        "25 open lead(s) in stage 'negotiation' of pipeline 'b2b', which the config no longer "
        "has (e.g. deal0@acme.example, deal1@acme.example, deal2@acme.example); add "
        "`moved_stages: {negotiation: <stage>}` to pipeline 'b2b'" in lines[0]
    )
    code, out, _ = cli("validate", "--json")
    report = json.loads(out)
    assert code == 1 and report["valid"] is False
    assert report["stranded"] == [
        {
            "pipeline": "b2b",
            "stage": "negotiation",
            "leads": 25,
            "examples": ["deal0@acme.example", "deal1@acme.example", "deal2@acme.example"],
            "to": None,
        }
    ]


def test_plan_with_a_proposed_config_names_the_stranded_leads(cli: Cli, tmp_path: Path) -> None:
    _seed_negotiation(cli, 4).close()
    edited = _write(tmp_path, without_negotiation())

    code, out, _ = cli("plan", "--json", "--config", str(edited), "--now", "2026-11-04T15:00:00Z")

    assert code == 0
    plan = json.loads(out)
    assert plan["diff"]["stranded"] == [
        {
            "pipeline": "b2b",
            "stage": "negotiation",
            "leads": 4,
            "examples": ["deal0@acme.example", "deal1@acme.example", "deal2@acme.example"],
            "to": None,
        }
    ]
    code, out, _ = cli("plan", "--config", str(edited), "--now", "2026-11-04T15:00:00Z")
    assert "the proposed config strands 4 open lead(s) in stage 'negotiation'" in " ".join(
        out.split()
    )


def test_moved_stages_moves_the_leads_as_audited_transitions_at_the_next_run(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = _seed_negotiation(cli, 25)
    edited = _write(tmp_path, without_negotiation(moved=True))
    monkeypatch.setenv("LEADFLOW_CONFIG", str(edited))

    code, out, _ = cli("validate")
    assert code == 0
    assert "the next run moves 25 open lead(s) negotiation → proposal in pipeline 'b2b'" in out

    code, out, _ = cli("plan", "--json", "--now", "2026-11-04T15:00:00Z")
    planned = json.loads(out)["current"]["config_change"]["relocated"]["moves"]
    assert [(m["from"], m["to"], m["count"]) for m in planned] == [("negotiation", "proposal", 25)]

    moved_rt = Runtime(
        settings=rt.settings,
        loaded=load_config(edited, templates=TEMPLATES),
        engine=rt.engine,
    )
    when = T0.replace(day=4, hour=15)
    done = engine.tick(moved_rt, now=when, transport=MemoryTransport)
    assert dict(done.config.relocated.moves) == {("negotiation", "proposal"): 25}
    assert done.config.stranded == []
    with rt.engine.connect() as conn:
        stages = dict(
            conn.execute(select(LEADS.c.stage, func.count()).group_by(LEADS.c.stage)).all()
        )
        audit = conn.execute(
            select(TRANSITIONS.c.kind, TRANSITIONS.c.reason, TRANSITIONS.c.actor, func.count())
            .where(TRANSITIONS.c.from_stage == "negotiation")
            .group_by(TRANSITIONS.c.kind, TRANSITIONS.c.reason, TRANSITIONS.c.actor)
        ).all()
    assert stages == {"proposal": 26}
    assert [tuple(a) for a in audit] == [
        ("config", "stage 'negotiation' removed from the config (moved_stages)", "config", 25)
    ]
    # a second run under the same config moves nothing more
    again = engine.tick(moved_rt, now=when, transport=MemoryTransport)
    assert not again.config.relocated.moves
    rt.close()


def test_validate_names_a_stage_that_only_the_database_knows(cli: Cli, tmp_path: Path) -> None:
    """Leads whose stage the running config never had (written by hand, or by an older
    config) are reported by the running config's validate too."""
    rt = _seed_negotiation(cli, 2)
    with session_scope(rt.engine) as session:
        session.connection().execute(
            update(LEADS).where(LEADS.c.email == "deal0@acme.example").values(stage="limbo")
        )
    code, _, err = cli("validate")
    assert code == 1
    assert "1 open lead(s) in stage 'limbo' of pipeline 'b2b'" in " ".join(err.split())
    rt.close()


@pytest.mark.parametrize(
    ("moved", "message"),
    [
        (
            "{negotiation: proposal}",
            "'negotiation' is still a stage of pipeline 'b2b': "
            "moved_stages lists removed stages only",
        ),
        ("{closing: propsal}", "moves to unknown stage 'propsal' (did you mean 'proposal'?)"),
    ],
)
def test_moved_stages_must_name_a_removed_stage_and_an_existing_one(
    moved: str, message: str
) -> None:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8").replace(
        "    target: 250000\n", f"    target: 250000\n    moved_stages: {moved}\n", 1
    )
    with pytest.raises(ConfigError) as caught:
        load_config(Path("pipeline.yaml"), templates=TEMPLATES, text=text)
    [issue] = caught.value.issues
    assert issue.message == message
    assert issue.path.startswith("pipelines[0].moved_stages")
    assert issue.line == 136


@pytest.mark.parametrize(
    ("url", "note"),
    [
        ("sqlite:///{home}/none-yet.db", "no database yet"),
        (
            "postgresql+psycopg://nobody@127.0.0.1:1/none",
            "database not checked: postgresql+psycopg://nobody@127.0.0.1:1/none:",
        ),
    ],
    ids=["no-file-yet", "unreachable"],
)
def test_validate_without_a_database_checks_the_file_and_creates_nothing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, note: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", url.format(home=home))

    code, out, _ = cli("validate")

    assert code == 0
    assert out.startswith(f"{DEFAULT_CONFIG}: valid (config ")
    assert f"; {note}" in " ".join(out.split())
    assert list(home.iterdir()) == []
