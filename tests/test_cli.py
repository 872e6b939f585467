"""The command line contract: every command documented, JSON output, exit codes 0/1/2."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import DEFAULT_CONFIG, database_url

from leadflow.app.cli import app

COMMANDS = [
    "validate",
    "lint",
    "schema",
    "import",
    "event",
    "show",
    "leads",
    "move",
    "callbacks",
    "suppress",
    "run",
    "plan",
    "preview",
    "send-test",
    "report",
    "serve",
    "web",
    "demo",
    "db",
    "mailbox",
]


def test_help_lists_every_command(cli) -> None:
    code, out, _ = cli("--help")
    assert code == 0
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "db"] + ["db upgrade"])
def test_every_command_has_help(cli, command: str) -> None:
    code, out, _ = cli(*command.split(), "--help")
    assert code == 0
    assert "Usage:" in out


def test_usage_error_exits_with_2(cli) -> None:
    code, _, err = cli("leads", "--limit", "zero")
    assert code == 2
    assert "Invalid value" in err


def test_validate_reports_errors_and_exits_1(cli, tmp_path: Path) -> None:
    broken = tmp_path / "pipeline.yaml"
    broken.write_text(DEFAULT_CONFIG.read_text().replace("  reply_to:", "  reply_too:"))
    code, _, err = cli("validate", "--config", str(broken))
    assert code == 1
    assert f"{broken}:12:3: sender.reply_too: unknown key 'reply_too' (did you mean" in err
    code, out, _ = cli("validate", "--json")
    assert code == 0
    assert json.loads(out)["valid"] is True


def test_schema_is_json_schema_and_matches_the_shipped_file(cli) -> None:
    code, out, _ = cli("schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["title"] == "PipelineConfig"
    shipped = Path(__file__).resolve().parent.parent / "docs" / "pipeline.schema.json"
    assert json.loads(shipped.read_text()) == schema
    assert DEFAULT_CONFIG.read_text().startswith(
        "# yaml-language-server: $schema=../docs/pipeline.schema.json"
    )


def _write_leads(path: Path) -> None:
    path.write_text(
        "E-mail,First Name,Company,Job Title,Employees,Industry,Country\n"
        "ada@example.com,Ada,Analytical Engines,CTO,120,saas,US\n"
        "grace@example.com,Grace,Cobol Corp,Engineering Manager,40,fintech,US\n"
        "broken-address,Bob,Nowhere,CEO,5,saas,US\n",
        encoding="utf-8",
    )


def test_lead_lifecycle_through_the_cli(cli, tmp_path: Path) -> None:
    leads_csv = tmp_path / "leads.csv"
    _write_leads(leads_csv)
    code, out, _ = cli("import", str(leads_csv), "--json", "--now", "2026-11-03T14:00:00Z")
    assert code == 0
    summary = json.loads(out)
    assert (summary["created"], summary["rejected"]) == (2, 1)
    code, out, _ = cli("event", "ada@example.com", "web_visit", "--at", "2026-11-03T14:10:00Z")
    assert code == 0
    code, _, err = cli("event", "ada@example.com", "replyed")
    assert code == 1
    assert "did you mean 'replied'" in err
    code, out, _ = cli("leads", "--json")
    assert [lead["email"] for lead in json.loads(out)] == ["ada@example.com", "grace@example.com"]
    code, out, _ = cli(
        "move",
        "grace@example.com",
        "qualified",
        "--reason",
        "called us",
        "--now",
        "2026-11-03T15:00:00Z",
    )
    assert code == 0
    code, out, _ = cli("show", "grace@example.com", "--json", "--now", "2026-11-03T15:00:00Z")
    shown = json.loads(out)
    assert [(t["to_stage"], t["kind"], t["reason"]) for t in shown["transitions"]] == [
        ("qualified", "manual", "called us")
    ]
    code, _, err = cli("move", "grace@example.com", "qualifed", "--reason", "x")
    assert code == 1
    assert "did you mean 'qualified'" in err
    code, out, _ = cli("suppress", "Ada@Example.com")
    assert (code, out.strip()) == (0, "suppressed ada@example.com (manual)")
    code, out, _ = cli("callbacks", "--json")
    assert (code, json.loads(out)) == (0, [])
    code, _, err = cli("show", "nobody@example.com")
    assert code == 1
    assert "no lead with email 'nobody@example.com'" in err


def test_plan_changes_nothing(cli, tmp_path: Path) -> None:
    leads_csv = tmp_path / "leads.csv"
    _write_leads(leads_csv)
    cli("import", str(leads_csv), "--now", "2026-11-03T14:00:00Z")
    db = tmp_path / "test.db"
    if not db.exists():
        pytest.skip("byte comparison needs the SQLite file")
    import sqlite3

    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code, out, _ = cli("plan", "--json", "--now", "2026-11-03T14:30:00Z")
    assert code == 0
    plan = json.loads(out)["current"]
    assert plan["rescored"] == 2
    assert plan["advance"]["moves"][0]["count"] == 2
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_bad_config_changes_nothing(cli, tmp_path: Path) -> None:
    broken = tmp_path / "pipeline.yaml"
    broken.write_text(DEFAULT_CONFIG.read_text().replace("daily_cap: 400", "daily_cap: -1"))
    code, _, err = cli("run", "--config", str(broken))
    assert code == 1
    assert "sender.daily_cap: Input should be greater than or equal to 1" in err
    assert not (tmp_path / "test.db").exists()


def test_app_object_is_typer() -> None:
    assert app.info.name == "leadflow"


MARKUP = ["[/bold]", "[link=https://evil.example]click[/link]", "[red]x", "[/x]"]


def test_data_is_printed_as_text_never_as_terminal_markup(cli, tmp_path: Path) -> None:
    """Every command that shows lead data prints it as written: rich markup in a company,
    a name or a rejected value never styles, links or crashes the output."""
    leads_csv = tmp_path / "markup.csv"
    rows = [f"m{i}@example.com,{value},{value},CTO,120,saas,US" for i, value in enumerate(MARKUP)]
    leads_csv.write_text(
        "E-mail,First Name,Company,Job Title,Employees,Industry,Country\n"
        + "\n".join(rows)
        + "\n[/x]@bad,[/x],[/x],CTO,1,saas,US\n",
        encoding="utf-8",
    )
    code, out, err = cli("import", str(leads_csv), "--now", "2026-11-03T14:00:00Z")
    assert code == 0, err
    assert "row 5: email:" in err
    assert "'[', ']'" in err  # the reject reason quotes the brackets: shown as written
    code, out, err = cli("leads")
    assert code == 0, err
    for value in MARKUP:
        assert value[:6] in out  # a table may wrap a long cell; its start is there as written
    assert "\x1b]8;" not in out
    for i, value in enumerate(MARKUP):
        code, out, err = cli("show", f"m{i}@example.com", "--now", "2026-11-03T15:00:00Z")
        assert code == 0, err
        assert value in out.splitlines()[0]  # the heading line: name <email> — company
        assert "\x1b]8;" not in out  # no terminal hyperlink escape


@pytest.mark.parametrize("command", [("run", "tick"), ("serve",), ("web",)])
def test_the_placeholder_secret_is_refused_before_anything_starts(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    """Outside demo mode the placeholder key is refused at once: no server starts, no run
    commits intake, scoring or moves (the database file is not even created)."""
    monkeypatch.setenv("LEADFLOW_DEMO", "false")
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'untouched.db'}")
    code, _out, err = cli(*command)
    assert code == 1
    assert err.startswith("error: LEADFLOW_SECRET_KEY is the demo placeholder")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "untouched.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("leads", "--status", "bogus"), "error: unknown status 'bogus'"),
        (("leads", "--stage", "qualifed"), "error: unknown stage 'qualifed' (did you mean"),
        (("move", "a@example.com", "lost", "--reason", "  "), "error: --reason must say why"),
        (("plan", "--now", "0001-01-01"), "error: '0001-01-01' is outside the years"),
    ],
)
def test_bad_arguments_are_one_line_errors(cli, args: tuple[str, ...], message: str) -> None:
    code, _out, err = cli(*args)
    assert code == 1
    assert err.startswith(message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("preview", "welcom"), "error: unknown template 'welcom' (did you mean 'welcome'?)"),
        (("preview", "welcome", "--lead", "nobody@example.com"), "error: no lead with email"),
        (("send-test", "nope", "--to", "a@example.com"), "error: unknown template 'nope'"),
        (("send-test", "welcome", "--to", "not-an-address"), "error: --to: 'not-an-address'"),
        (("send-test", "welcome", "--to", "a@example.com\nBcc: b@x.example"), "error: --to takes"),
        (("report", "--pipeline", "b2c"), "error: unknown pipeline 'b2c' (did you mean 'b2b'?)"),
        (
            ("report", "--since", "2026-12-01", "--until", "2026-11-01"),
            "error: --since 2026-12-01T00:00:00+00:00 is not before --until",
        ),
    ],
)
def test_commands_answer_bad_input_with_one_line_not_a_traceback(
    cli, args: tuple[str, ...], message: str
) -> None:
    code, _out, err = cli(*args)
    assert code == 1
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1


def test_import_checks_the_rejects_path_before_importing(cli, tmp_path: Path) -> None:
    leads_csv = tmp_path / "leads.csv"
    _write_leads(leads_csv)
    missing = tmp_path / "no-such-folder" / "rejects.csv"
    code, _out, err = cli("import", str(leads_csv), "--rejects", str(missing))
    assert code == 1
    assert err.startswith(f"error: --rejects {missing}: the folder")
    code, out, _ = cli("leads", "--json")
    assert (code, json.loads(out)) == (0, [])  # nothing was imported


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: f"sqlite:///{d / 'missing' / 'x.db'}", "the folder"),
        (lambda d: f"sqlite:///{d}", "is a folder, not a database file"),
        (lambda d: "mysql://u@localhost/db", "'mysql' is not supported"),
        (lambda d: "not a url", "is not a database URL"),
        (lambda d: f"postgresql+psycopg://u@127.0.0.1:{_closed_port()}/db", "127.0.0.1"),
        (lambda d: _corrupt(d), "file is not a database"),
    ],
    ids=["missing-folder", "folder", "mysql", "not-a-url", "closed-port", "corrupt"],
)
def test_a_database_that_cannot_be_opened_is_one_line_and_creates_nothing(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make, message: str
) -> None:
    url = make(tmp_path)
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", url)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _out, err = cli("leads")
    assert code == 1
    assert err.startswith("error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no folder or file made


def _corrupt(folder: Path) -> str:
    path = folder / "corrupt.db"
    path.write_bytes(b"this is not a SQLite database, just some bytes " * 200)
    return f"sqlite:///{path}"


def test_unknown_emails_are_listed_then_requeued_or_closed_by_an_audited_decision(
    cli, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from models.db import open_database
    from models.tables import LEADS, OUTBOX, RUNS

    at = datetime(2026, 11, 3, 15, 0, tzinfo=UTC)
    db = open_database(database_url(tmp_path))
    with db.begin() as conn:
        lead = conn.execute(
            insert(LEADS)
            .values(email="ada@example.com", attributes={}, created_at=at, updated_at=at)
            .returning(LEADS.c.id)
        ).scalar_one()
        for i, status in enumerate(["unknown", "unknown", "sent"], start=1):
            row = {"id": i, "lead_id": lead, "step": f"s{i}", "status": status}
            conn.execute(
                insert(OUTBOX).values(
                    cadence="outbound",
                    to_email="ada@example.com",
                    due_at=at,
                    claimed_at=at,
                    created_at=at,
                    updated_at=at,
                    **row,
                )
            )
    code, out, _ = cli("outbox", "unknown", "--json")
    assert (code, [r["id"] for r in json.loads(out)]) == (0, [1, 2])
    code, _out, err = cli("outbox", "requeue", "1", "3", "--reason", "relay log: never received")
    assert code == 1  # row 3 is not unknown: reported, left alone; row 1 requeued
    assert "email 3 left alone: it is sent, not unknown" in err
    code, _out, _err = cli("outbox", "close", "2", "--reason", "delivered per relay log")
    assert code == 0
    with db.connect() as conn:
        states = dict(conn.execute(select(OUTBOX.c.id, OUTBOX.c.status)).all())
        audit = [
            r.summary for r in conn.execute(select(RUNS).where(RUNS.c.kind == "outbox-decision"))
        ]
    db.dispose()
    assert states == {1: "pending", 2: "failed", 3: "sent"}
    assert [(a["rows"], a["decision"], a["reason"]) for a in audit] == [
        ([1], "requeue", "relay log: never received"),
        ([2], "close", "delivered per relay log"),
    ]


def test_a_report_that_fails_after_the_html_check_leaves_no_empty_file(cli, tmp_path) -> None:
    page = tmp_path / "report.html"
    code, _, err = cli("report", "--pipeline", "nope", "--html", str(page))
    assert code == 1
    assert "unknown pipeline 'nope'" in err
    assert not page.exists()


# --- issue 20: templates are found from the config file's folder, not the working directory


def _project_copy(root: Path, templates_at: str) -> Path:
    """The shipped config and templates laid out under ``root``; the config file's path."""
    shipped = Path(__file__).resolve().parent.parent
    (root / "config").mkdir(parents=True)
    config = root / "config" / "pipeline.yaml"
    config.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    shutil.copytree(shipped / "templates" / "email", root / templates_at)
    return config


def test_validate_and_preview_from_another_folder_find_the_templates(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("LEADFLOW_TEMPLATES")  # the default: found from the config's folder

    code, out, err = cli("validate")
    assert (code, err) == (0, "")
    assert f"{DEFAULT_CONFIG}: valid" in " ".join(out.split())

    code, out, err = cli("preview", "welcome")
    assert (code, err) == (0, "")
    assert out.startswith("Subject: Welcome, Dana: a quick hello from Acme Analytics Inc.\n")


def test_a_relative_templates_setting_is_read_from_the_config_folder(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _project_copy(tmp_path / "project", "mail/templates")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("LEADFLOW_TEMPLATES", "../mail/templates")

    code, out, err = cli("validate", "--config", str(config))
    assert (code, err) == (0, "")
    assert "valid" in out

    code, out, _ = cli("preview", "breakup", "--config", str(config))
    assert code == 0
    assert out.startswith("Subject: Should I close your file, Dana?\n")

    (elsewhere / "mail").symlink_to(tmp_path / "project" / "mail")
    monkeypatch.setenv("LEADFLOW_TEMPLATES", "mail/templates")  # in the cwd, not the config's
    code, _, err = cli("validate", "--config", str(config))
    assert code == 1
    assert (
        f"cadences.outbound.steps[0].template: template 'welcome' not found: the templates "
        f"folder {config.parent / 'mail' / 'templates'} does not exist (LEADFLOW_TEMPLATES)"
    ) in " ".join(err.split())


def test_templates_folder_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from leadflow.settings import TEMPLATES_FOLDER, templates_folder

    project = tmp_path / "project"
    (project / "config").mkdir(parents=True)
    (project / "templates" / "email").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)

    shipped_layout = project / "config" / "pipeline.yaml"
    proposed_beside = project / "proposed.yaml"
    assert templates_folder(shipped_layout, None) == project / "templates" / "email"
    assert templates_folder(proposed_beside, None) == project / "templates" / "email"
    assert templates_folder(shipped_layout, Path("../mail")) == project / "config" / "../mail"
    assert templates_folder(shipped_layout, tmp_path / "abs") == tmp_path / "abs"
    assert templates_folder(tmp_path / "lonely.yaml", None) == tmp_path / TEMPLATES_FOLDER  # cwd
    monkeypatch.chdir(project)
    assert templates_folder(Path("config/pipeline.yaml"), None) == project / "templates" / "email"


def test_settings_validated_again_keep_their_templates_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadflow.settings import Settings

    monkeypatch.delenv("LEADFLOW_TEMPLATES", raising=False)
    monkeypatch.delenv("LEADFLOW_CONFIG", raising=False)
    settings = Settings()
    again = Settings.model_validate(settings.model_dump())

    assert settings.templates == Path(__file__).resolve().parent.parent / "templates" / "email"
    assert again.templates == settings.templates


# --- issue 20: CSV exports of the lead list and the report --------------------------------------


def _hostile_leads(path: Path, count: int) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["E-mail", "First Name", "Company", "Job Title", "Industry", "Deal Value"])
        hostile = ['=HYPERLINK("http://x.example","y")', "+cmd", "saas", "1000"]
        writer.writerow(["eve@example.com", "@SUM(A1)", *hostile])
        for i in range(count - 1):
            writer.writerow(
                [f"lead{i}@example.com", f"Lead{i}", f"-Co {i}", "CTO", "ecommerce", ""]
            )


def test_leads_csv_writes_every_lead_with_formulas_neutralised(cli, tmp_path: Path) -> None:
    import csv

    source = tmp_path / "in.csv"
    _hostile_leads(source, 12)
    assert cli("import", str(source), "--now", "2026-11-03T14:00:00Z")[0] == 0
    path = tmp_path / "out" / "leads.csv"
    (tmp_path / "out").mkdir()

    code, out, err = cli("leads", "--csv", str(path), "--limit", "5")

    assert (code, err) == (0, "")
    assert " ".join(out.split()) == f"12 leads written to {path}"  # --limit is the screen's
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    eve = next(r for r in rows if r["email"] == "eve@example.com")
    assert (eve["first_name"], eve["company"], eve["title"]) == (
        "'@SUM(A1)",
        """'=HYPERLINK("http://x.example","y")""",
        "'+cmd",
    )
    assert (eve["industry"], eve["deal_value"], eve["stage"], eve["status"]) == (
        "saas",
        "1000.0",
        "",  # not yet placed in a stage: no tick ran
        "active",
    )
    assert {r["company"][:4] for r in rows if r["email"] != "eve@example.com"} == {"'-Co"}


def test_leads_csv_refuses_json_and_an_unwritable_path(cli, tmp_path: Path) -> None:
    code, _, err = cli("leads", "--csv", str(tmp_path / "x.csv"), "--json")
    assert (code, err) == (1, "error: --csv and --json: choose one\n")
    missing = tmp_path / "nowhere" / "x.csv"
    code, _, err = cli("leads", "--csv", str(missing))
    assert code == 1
    assert err.startswith(f"error: --csv {missing}: the folder")


def test_report_csv_writes_every_table_with_money_as_numbers(cli, tmp_path: Path) -> None:
    import csv

    source = tmp_path / "in.csv"
    _hostile_leads(source, 3)
    cli("import", str(source), "--now", "2026-11-03T14:00:00Z")
    path = tmp_path / "report.csv"

    code, out, _ = cli("report", "--csv", str(path), "--now", "2026-11-04T14:00:00Z")

    assert code == 0
    assert " ".join(out.split()).endswith(f"CSV report written to {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    headers = [r for r in rows if r[:2] == ["Pipeline", "Table"]]
    assert headers[:2] == [
        ["Pipeline", "Table", "Figure", "Value"],
        ["Pipeline", "Table", "Month", "Deals", "Open value (USD)", "Forecast (USD)"],
    ]
    assert len(headers) == 13  # every table of the one pipeline
    now = "Leads per stage now (lost and the callback list included)"
    assert ["b2b", now, "New lead", "open", "0", "0.0"] in rows
    assert ["b2b", "Key figures", "Pipeline target", "$250,000"] in rows
    assert ["b2b", "Key figures", "Coverage of the $250,000 target", "0.0%"] in rows
