"""Real Prefect flow runs: the tick flow delivers over real SMTP and reports what it did."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from conftest import T0, LeadFactory
from seeding import intake_lead
from sqlalchemy import func, select

import flows  # noqa: F401  (its Prefect settings are in place before the harness imports prefect)
from leadflow.mail.sink import SmtpSink
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.tables import OUTBOX

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_server")]

FIT = {"industry": "saas", "company_size": 120, "title": "CTO", "country": "US"}


def _run(flow_name: str, settings: Settings, now: str) -> tuple[dict[str, Any], UUID]:
    from flows.context import use_settings
    from flows.pipeline import FLOWS
    from flows.runner import quick_flows

    use_settings(settings)
    with quick_flows():
        state = FLOWS[flow_name](now=now, return_state=True)
    assert state.is_completed(), state
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return state.result(), flow_run_id


async def _task_names(flow_run_id: UUID, *, expected: int) -> list[str]:
    """The flow run's task runs by name, once ``expected`` of them are on record (or 20 s have
    passed). Prefect 3 records task runs from events the server takes in asynchronously, so a
    read straight after the flow returned may not see the last one yet (a CI failure)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 20
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            if len(runs) >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    return sorted(r.name.rsplit("-", 1)[0] for r in runs)


async def _artifact(key: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return found


def test_tick_flow_delivers_a_templated_email_over_smtp(
    rt: Runtime, settings: Settings, add_lead: LeadFactory
) -> None:
    add_lead(
        email="zoe@example.com",
        first_name="Zoë",
        last_name="Ångström",
        company="Müller GmbH",
        **FIT,
    )
    with SmtpSink() as sink:
        live = settings.model_copy(update={"smtp_port": sink.port})
        first, _ = _run("tick", live, T0.isoformat())
        second, _ = _run("tick", live, (T0 + timedelta(hours=1)).isoformat())
        third, _ = _run("tick", live, (T0 + timedelta(days=1)).isoformat())
        received = sink.messages
    assert first["advance"]["moves"] == [
        {"from": "(new)", "to": "lead", "count": 1, "examples": ["zoe@example.com"]}
    ]
    assert second["advance"]["moves"][0]["to"] == "prospect"
    assert second["nurture"]["sent"] == 0 or third["nurture"]["sent"] == 0
    assert second["nurture"]["sent"] + third["nurture"]["sent"] == 1
    assert len(received) == 1
    message = email.message_from_bytes(received[0].data, policy=email.policy.default)
    assert message["From"] == "Ada Byron <ada@acme-analytics.example>"
    assert message["To"] == "Zoë Ångström <zoe@example.com>"
    assert message["Subject"]
    assert message["Date"]
    assert message["Message-ID"].endswith("@acme-analytics.example>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "100 Main Street" in text.get_content()
    assert "Zoë" in html.get_content()
    with rt.engine.connect() as conn:
        statuses = dict(conn.execute(select(OUTBOX.c.step, OUTBOX.c.status)).all())
    assert statuses == {"intro": "sent", "value": "pending"}


def test_tick_flow_publishes_an_artifact_of_what_it_did(
    settings: Settings, add_lead: LeadFactory
) -> None:
    """Only what a person needs: the steps that did something, their summary and moves, the
    idle steps on one line; no zero counts, no internal figures."""
    add_lead(email="ada_l@example.com", **FIT)
    _run("tick", settings, T0.isoformat())
    artifacts = asyncio.run(_artifact("tick-summary"))
    newest = max(artifacts, key=lambda a: a.created)
    assert newest.data == (
        "# tick at 2026-11-03T14:30:00+00:00\n"
        "\n"
        "## score\n"
        "\n"
        "**rescored 1, 1 with a new score or grade**\n"
        "\n"
        "## advance\n"
        "\n"
        "**moved 1, (new)→lead 1**\n"
        "\n"
        "| from | to | leads | examples |\n"
        "|---|---|---:|---|\n"
        "| (new) | lead | 1 | ada\\_l@example.com |\n"
        "\n"
        "Nothing to do: intake, callbacks, nurture, checkins.\n"
    )


async def _logs(flow_run_id: UUID, *, containing: str) -> list[tuple[str, str]]:
    """The flow run's logs on the server as (level name, message), once one contains
    ``containing`` (or 20 s have passed): the log handler sends them in batches."""
    import logging

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    deadline = time.monotonic() + 20
    async with get_client() as client:
        while True:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            found = [(logging.getLevelName(log.level), log.message) for log in logs]
            if any(containing in m for _, m in found) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.2)


def test_a_flow_run_logs_its_summary_to_the_prefect_api_at_info(
    settings: Settings, add_lead: LeadFactory
) -> None:
    """The run's page in the UI shows its summary line (the console handler stays at WARNING
    here: conftest sets PREFECT_LOGGING_LEVEL=WARNING)."""
    add_lead(**FIT)
    _, run_id = _run("tick", settings, T0.isoformat())

    logs = asyncio.run(_logs(run_id, containing="tick at "))

    summary = (
        "tick at 2026-11-03T14:30:00+00:00: intake: 0 file(s): created 0, updated 0, "
        "rejected 0; score: rescored 1, 1 with a new score or grade; callbacks: moved 0; "
        "advance: moved 1, (new)→lead 1; nurture: sent 0; checkins: sent 0"
    )
    assert ("INFO", summary) in logs
    assert any(level == "INFO" and "Finished in state Completed" in m for level, m in logs)
    from prefect.logging.configuration import PROCESS_LOGGING_CONFIG

    assert PROCESS_LOGGING_CONFIG["handlers"]["console"]["level"] == "WARNING"


def test_task_runs_grow_with_batches_not_with_leads(
    rt: Runtime, settings: Settings, add_lead: LeadFactory
) -> None:
    for _ in range(12):
        add_lead(**FIT)
    small_batches = settings.model_copy(update={"batch_size": 5})
    _, run_id = _run("score", small_batches, T0.isoformat())
    # 12 leads / 5 per batch = 3 batches, plus the config-change check of every run
    names = asyncio.run(_task_names(run_id, expected=4))
    assert names == ["apply config change"] + ["score batch"] * 3
    for _ in range(12):
        add_lead(**FIT)
    big_batches = settings.model_copy(update={"batch_size": 1000})
    _, run_id = _run("score", big_batches, T0.isoformat())
    assert asyncio.run(_task_names(run_id, expected=2)) == ["apply config change", "score batch"]
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(OUTBOX)).scalar() == 0


def test_a_step_with_more_batches_than_task_runs_spreads_them_over_the_most_allowed(
    rt: Runtime, settings: Settings, add_lead: LeadFactory
) -> None:
    """The server records ~20 task runs a second: more batches than ``MAX_TASK_RUNS`` share
    that many task runs, and every batch is still done (in a transaction of its own)."""
    from flows.tasks import MAX_TASK_RUNS

    batches = MAX_TASK_RUNS + 4
    for _ in range(2 * batches):
        add_lead(**FIT)
    tiny_batches = settings.model_copy(update={"batch_size": 2})

    result, run_id = _run("score", tiny_batches, T0.isoformat())

    names = asyncio.run(_task_names(run_id, expected=MAX_TASK_RUNS + 1))
    assert names == ["apply config change"] + ["score batch"] * MAX_TASK_RUNS
    assert (result["score"]["rescored"], result["score"]["batches"]) == (2 * batches, batches)


@pytest.mark.parametrize(
    ("batches", "sizes"),
    [(0, []), (1, [1]), (16, [1] * 16), (17, [2] + [1] * 15), (100, [7] * 4 + [6] * 12)],
)
def test_task_groups_keep_every_range_once_in_order(batches: int, sizes: list[int]) -> None:
    from flows.tasks import task_groups

    ranges = [(n * 10, n * 10 + 9) for n in range(batches)]

    groups = task_groups(ranges, limit=16)

    assert [len(g) for g in groups] == sizes
    assert [r for g in groups for r in g] == ranges


def test_mailbox_flow_records_a_reply_from_the_maildir_as_a_task_run(
    rt: Runtime, settings: Settings, add_lead: LeadFactory, tmp_path: Any
) -> None:
    import mailbox as stdlib_mailbox

    from models.tables import EVENTS, INBOUND

    lead_id = add_lead(email="ana@globex.example")
    box = stdlib_mailbox.Maildir(tmp_path / "mail", create=True)
    box.add(
        b"From: Ana <Ana@Globex.example>\r\nTo: sales@acme-analytics.example\r\n"
        b"Subject: Re: hello\r\nMessage-ID: <r1@globex.example>\r\n"
        b"Date: Tue, 03 Nov 2026 12:00:00 +0000\r\n\r\nSounds good, call me Friday.\r\n"
    )
    with_mailbox = settings.model_copy(update={"mailbox_url": f"maildir://{tmp_path / 'mail'}"})
    result, run_id = _run("mailbox", with_mailbox, (T0 + timedelta(hours=1)).isoformat())
    again, _ = _run("mailbox", with_mailbox, (T0 + timedelta(hours=2)).isoformat())
    with rt.engine.connect() as conn:
        kinds = conn.execute(select(INBOUND.c.kind, INBOUND.c.lead_id)).all()
        events = conn.execute(
            select(EVENTS.c.type).where(EVENTS.c.lead_id == lead_id, EVENTS.c.source == "mailbox")
        ).all()
    assert result["mailbox"]["kinds"] == {"replied": 1}
    assert again["mailbox"]["recorded"] == 0
    assert kinds == [("replied", lead_id)]
    assert [e.type for e in events] == ["replied"]
    assert asyncio.run(_task_names(run_id, expected=1)) == ["sync mailbox"]


def _same_leads(runtime: Runtime) -> None:
    """Three leads, as intake would add them, in ``runtime``'s database."""
    from models.db import session_scope
    from models.tables import Lead

    with session_scope(runtime.engine) as session:
        for n, title in enumerate(("CTO", "VP Engineering", "Intern")):
            session.add(
                Lead(**intake_lead(f"same{n}@example.com", now=T0, **{**FIT, "title": title}))
            )


def test_the_tick_flow_does_exactly_what_engine_tick_does(
    rt: Runtime, settings: Settings, tmp_path: Path
) -> None:
    """One definition of a run: the Prefect flow and the in-process walk of the same steps,
    on two databases with the same leads, report the same outcome at every instant and send
    the same number of emails."""
    from conftest import database_url

    from leadflow.delivery.smtp import smtp_transport_factory
    from leadflow.pipeline import engine

    (tmp_path / "direct").mkdir()
    direct_settings = settings.model_copy(
        update={"home": tmp_path / "direct", "database_url": database_url(tmp_path / "direct")}
    )
    direct = Runtime.open(direct_settings)
    try:
        _same_leads(rt)
        _same_leads(direct)
        instants = [T0, T0 + timedelta(hours=1), T0 + timedelta(days=1)]
        with SmtpSink() as flow_sink, SmtpSink() as direct_sink:
            live = settings.model_copy(update={"smtp_port": flow_sink.port})
            flowed = [_run("tick", live, at.isoformat())[0] for at in instants]
            direct.settings = direct_settings.model_copy(update={"smtp_port": direct_sink.port})
            walked = [
                engine.tick(direct, now=at, transport=smtp_transport_factory(direct)).as_dict()
                for at in instants
            ]
            sent = (len(flow_sink.messages), len(direct_sink.messages))
    finally:
        direct.close()
    assert flowed == walked
    assert sum(run["nurture"]["sent"] for run in flowed) == sent[0] == sent[1] > 0


def test_every_flow_the_config_can_schedule_is_defined_once_and_served() -> None:
    """The flow names: the YAML's ``schedules`` keys, the engine's step lists and the Prefect
    flows are the same set (a new flow is added to the engine and given a flow body)."""
    from flows.pipeline import FLOWS as PREFECT_FLOWS
    from leadflow.config.schema import FLOWS as SCHEDULABLE
    from leadflow.pipeline.engine import FLOWS, STEPS

    assert list(FLOWS) == list(SCHEDULABLE) == list(PREFECT_FLOWS)
    assert all(step in STEPS for steps in FLOWS.values() for step in steps)
    assert {flow.name for flow in PREFECT_FLOWS.values()} == set(FLOWS)


def test_learn_flow_judges_todays_rules_and_publishes_what_learning_would_propose(
    rt: Runtime, settings: Settings
) -> None:
    from sqlalchemy import insert

    from models.tables import LEADS

    with rt.engine.begin() as conn:  # saas wins 4 to 1, media loses 4 to 1
        conn.execute(
            insert(LEADS),
            [
                {
                    "email": f"closed{n}@example.com",
                    "pipeline": "b2b",
                    "stage": "won" if n % 2 else "lost",
                    "industry": "saas" if (n % 10 < 8) == bool(n % 2) else "media",
                    "attributes": {},
                    "created_at": T0,
                    "updated_at": T0,
                }
                for n in range(200)
            ],
        )

    result, _ = _run("learn", settings, T0.isoformat())

    learned = result["learn"]
    assert learned["current"]["auc"] == pytest.approx(0.8)
    (rule,) = learned["learned"]["rules"]
    assert rule["when"] in ('industry == "saas"', 'industry == "media"')
    assert learned["summary"].startswith("today's rules AUC 0.800 on 200 closed leads")
    artifacts = asyncio.run(_artifact("learn-summary"))
    newest = max(artifacts, key=lambda a: a.created)
    assert "today's rules AUC 0.800 on 200 closed leads" in newest.data


def test_leadflow_run_prints_the_run_summary_line_and_json_on_request(cli: Any) -> None:
    """``leadflow run`` prints the line the flow run logs to the UI, never a raw dict;
    ``--json`` prints the flows' results as one JSON document."""
    code, out, err = cli("run", "--now", T0.isoformat())
    assert (code, err) == (0, "")
    assert out == (
        "tick at 2026-11-03T14:30:00+00:00: intake: 0 file(s): created 0, updated 0, "
        "rejected 0; score: rescored 0, 0 with a new score or grade; callbacks: moved 0; "
        "advance: moved 0; nurture: sent 0; checkins: sent 0\n"
    )

    code, out, err = cli("run", "score", "report", "--now", T0.isoformat(), "--json")
    assert (code, err) == (0, "")
    results = json.loads(out)
    assert list(results) == ["score", "report"]
    assert results["score"]["score"]["summary"] == "rescored 0, 0 with a new score or grade"


def test_leadflow_run_on_a_terminal_shows_which_flow_runs(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal a spinner line names each flow as it starts (and is gone at the end);
    the summary on stdout is unchanged."""
    import io

    from rich.console import Console

    from leadflow.app.cli import running

    screen = io.StringIO()
    monkeypatch.setattr(running, "err", Console(file=screen, force_terminal=True, width=80))
    code, out, _ = cli("run", "score", "advance", "--now", T0.isoformat())
    assert code == 0
    assert out.splitlines()[1] == "advance at 2026-11-03T14:30:00+00:00: advance: moved 0"
    shown = screen.getvalue()
    assert "running score (1/2)" in shown
    assert "running advance (2/2)" in shown
    assert shown.index("running score (1/2)") < shown.index("running advance (2/2)")


def test_the_demo_says_it_starts_a_temporary_server_only_when_it_does() -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from flows.runner import where_runs_go

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert where_runs_go() == (
            "Prefect: runs go to the server at http://127.0.0.1:4200/api",
            "Prefect UI: http://127.0.0.1:4200",
        )
    with temporary_settings(updates={PREFECT_API_URL: "", PREFECT_UI_URL: ""}):
        assert where_runs_go() == (
            "starting Prefect (a temporary local server; first start ~20 s)...",
            "Prefect UI: `make ui`, then open http://127.0.0.1:4200",
        )


def test_a_run_is_named_after_its_flow_and_instant_to_the_second(settings: Settings) -> None:
    from prefect.client.orchestration import get_client

    _, run_id = _run("score", settings, "2026-11-03T14:30:00.250000Z")

    async def name() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).name

    assert asyncio.run(name()) == "score @ 2026-11-03T14:30:00+00:00"


def test_the_report_flow_publishes_the_report_as_markdown_tables_and_a_link(
    rt: Runtime, settings: Settings, add_lead: LeadFactory
) -> None:
    """The report's headline and key figures as markdown, its funnel, conversion, stuck leads
    and A/B variants as table artifacts drawn from ``reporting.tables``, and the whole HTML
    report written under LEADFLOW_HOME and linked."""
    from leadflow.reporting.build import build_report
    from leadflow.reporting.markdown import escape, table_rows
    from leadflow.reporting.tables import (
        conversion,
        funnel,
        headline,
        report_title,
        stuck,
        variants,
    )

    for _ in range(3):
        add_lead(**FIT)
    _run("tick", settings, T0.isoformat())
    at = T0 + timedelta(days=7)

    result, _ = _run("report", settings, at.isoformat())

    with rt.engine.connect() as conn:
        data = build_report(conn, rt.loaded, since=None, until=at, pipeline=None)
    (pipeline,) = data["pipelines"]
    assert result["report"]["summary"] == headline(data)
    html = settings.home.resolve() / "reports" / "report-2026-11-10T143000Z.html"
    assert "<!doctype html>" in html.read_text()
    summary = asyncio.run(_artifact("report-summary"))
    markdown = max(summary, key=lambda a: a.created).data
    assert markdown.startswith(
        f"# {escape(report_title(data))}\n\n"
        "## B2B software\n\n"
        f"**{escape(headline(data))}**\n\n"
        "| Figure | Value |\n|---|---:|\n| Leads | 3 |\n"
    )
    assert markdown.endswith(
        f"The whole report (every table, with charts): [{html.name}]({html.as_uri()})\n"
        f"({escape(str(html))})\n"
    )
    for key, make in [
        ("report-funnel", funnel),
        ("report-conversion", conversion),
        ("report-stuck", stuck),
        ("report-variants", variants),
    ]:
        artifact = max(asyncio.run(_artifact(key)), key=lambda a: a.created)
        assert artifact.type == "table"
        assert json.loads(artifact.data) == table_rows(make(pipeline, data["currency"])), key
    link = max(asyncio.run(_artifact("report-html")), key=lambda a: a.created)
    assert (link.type, link.data) == ("markdown", f"[{html.name}]({html.as_uri()})")
