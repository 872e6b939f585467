"""Alerts: declared in the YAML, received once by a real HTTP receiver and the SMTP sink, for a
failed flow run, a deal its SLA flagged, and the sending guard that pauses sending."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DEFAULT_CONFIG,
    T0,
    TEMPLATES,
    cli_environment,
    insert_lead,
    run_in_threads,
    run_leadflow,
)
from seeding import enrolled_lead, intake_lead, step_row
from sqlalchemy import func, insert, select

from leadflow.alerts.outlet import AlertsOutcome, Outlet, deliver_pending, flow_failed
from leadflow.config import ConfigError, load_config
from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.mail.sink import SmtpSink
from leadflow.mail.transport import MemoryTransport
from leadflow.pipeline import engine
from leadflow.pipeline.planning import plan_tick
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.db import open_database, session_scope
from models.tables import ALERT_DELIVERIES, ALERTS, EVENTS, OUTBOX, SENDING_PAUSES

HOOK_ENV = "ALERT_TEST_WEBHOOK"
SLACK_ENV = "ALERT_TEST_SLACK"
MANAGERS = "sales-lead@acme-analytics.example"
ALERTS_YAML = f"""
alerts:
  channels:
    ops: {{type: webhook, url_env: {HOOK_ENV}}}
    sales: {{type: slack, url_env: {SLACK_ENV}}}
    managers: {{type: email, to: [{MANAGERS}]}}
  events:
    flow_failed: [ops]
    sla_flagged: [sales, managers]
    sending_guard: [ops, managers]
  sending_guard: {{last_sends: 1000, min_sends: 100}}
"""


# --- a real HTTP receiver on loopback ---------------------------------------------------------


class Receiver:
    """An HTTP server in a thread that keeps every POST (path, headers, JSON body) and answers
    ``status``."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.location: str | None = None  # a Location header sent with the answer
        self.requests: list[dict[str, Any]] = []
        self.gets: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                receiver.gets.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.requests.append(
                    {
                        "path": self.path,
                        "type": self.headers["Content-Type"],
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                self.send_response(receiver.status)
                if receiver.location is not None:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with Receiver() as found:
        monkeypatch.setenv(HOOK_ENV, found.url("/hooks/ops-secret-token"))
        monkeypatch.setenv(SLACK_ENV, found.url("/services/T000/B000/slack-secret"))
        yield found


@pytest.fixture
def alert_settings(settings: Settings, tmp_path: Path) -> Settings:
    config = tmp_path / "pipeline.yaml"
    config.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8") + ALERTS_YAML, encoding="utf-8")
    return settings.model_copy(update={"config": config})


@pytest.fixture
def art(alert_settings: Settings, receiver: Receiver) -> Iterator[Runtime]:
    """A runtime whose config declares the alerts above (the receiver's URLs in the env)."""
    runtime = Runtime.open(alert_settings)
    yield runtime
    runtime.close()


def _count(rt: Runtime, table: Any, *where: Any) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


# --- the YAML ---------------------------------------------------------------------------------


def _issues(extra: str) -> list[str]:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8") + extra
    try:
        loaded = load_config(Path("pipeline.yaml"), templates=TEMPLATES, text=text)
    except ConfigError as exc:
        return [f"{i.severity}: {i.path}: {i.message}" for i in exc.issues]
    return [f"{i.severity}: {i.path}: {i.message}" for i in loaded.warnings]


def test_unknown_events_and_undefined_channels_are_errors_with_a_suggestion() -> None:
    assert _issues(
        "alerts:\n  channels:\n    ops: {type: email, to: [ops@acme.example]}\n"
        "  events:\n    flow_faild: [ops]\n    sla_flagged: [opps]\n    tasks_overdue: [ops]\n"
    ) == [
        "error: alerts.events.flow_faild: unknown alert event 'flow_faild' (did you mean "
        "'flow_failed'?); known: flow_failed, sla_flagged, sending_guard",
        "error: alerts.events.sla_flagged[0]: channel 'opps' is not defined under "
        "alerts.channels (did you mean 'ops'?)",
        "error: alerts.events.tasks_overdue: 'tasks_overdue' alerts are not available yet: "
        "tasks are not built yet",
    ]


def test_a_url_in_the_yaml_is_refused_and_an_unset_variable_is_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    literal = (
        "alerts:\n  channels:\n    ops: {type: slack, url_env: 'https://hooks.slack.com/x'}\n"
        "  events: {flow_failed: [ops]}\n"
    )
    assert _issues(literal) == [
        "error: alerts.channels.ops.slack.url_env: url_env names an environment "
        "variable such as LEADFLOW_ALERT_WEBHOOK, not 'https://hooks.slack.com/x' (a URL is "
        "a secret: keep it out of this file)"
    ]
    monkeypatch.delenv("ALERT_UNSET_HOOK", raising=False)
    unset = (
        "alerts:\n  channels:\n    ops: {type: webhook, url_env: ALERT_UNSET_HOOK}\n"
        "    spare: {type: email, to: [ops@acme.example]}\n  events: {flow_failed: [ops]}\n"
    )
    alert_warnings = [w for w in _issues(unset) if "alerts" in w]
    assert alert_warnings == [
        "warning: alerts.channels.ops.url_env: ALERT_UNSET_HOOK is not set in this "
        "environment: alerts to 'ops' fail unless it is set where the flows run",
        "warning: alerts.channels.spare: channel 'spare' is defined but no event is sent to it",
    ]


# --- a deal flagged by its SLA ----------------------------------------------------------------


def _stale_deal(rt: Runtime, email_address: str, *, days: int) -> int:
    """A lead in stage negotiation (SLA: flag after 45 days) for ``days`` days, due now."""
    return insert_lead(
        rt.engine,
        intake_lead(
            email_address,
            now=T0,
            pipeline="b2b",
            stage="negotiation",
            stage_entered_at=T0 - timedelta(days=days),
            company="Globex",
        ),
    )


def test_a_deal_flagged_by_its_sla_is_alerted_once_on_slack_and_by_email(
    art: Runtime, receiver: Receiver
) -> None:
    _stale_deal(art, "late@globex.example", days=46)
    _stale_deal(art, "fine@globex.example", days=10)
    with SmtpSink() as sink:
        live = Runtime(
            settings=art.settings.model_copy(update={"smtp_port": sink.port}),
            loaded=art.loaded,
            engine=art.engine,
        )
        first = engine.tick(live, now=T0, transport=smtp_transport_factory(live))
        second = engine.tick(
            live, now=T0 + timedelta(hours=1), transport=smtp_transport_factory(live)
        )
        to_managers = [m for m in sink.messages if MANAGERS in m.recipients]
    assert first.as_dict()["advance"]["flagged"] == 1
    assert first.as_dict()["alerts"]["summary"] == "raised sla_flagged 1, sent 2"
    assert second.as_dict()["alerts"]["summary"] == ""
    assert [r["path"] for r in receiver.requests] == ["/services/T000/B000/slack-secret"]
    assert receiver.requests[0]["body"] == {
        "text": "*late@globex.example (Globex) over the SLA of Negotiation*\n"
        "• 46 days in stage 'negotiation' of pipeline 'b2b' (SLA 45 days)"
    }
    assert len(to_managers) == 1
    message = email.message_from_bytes(to_managers[0].data, policy=email.policy.default)
    assert (
        message["Subject"] == "[leadflow] late@globex.example (Globex) over the SLA of Negotiation"
    )
    assert message["From"] == "Ada Byron <ada@acme-analytics.example>"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content().splitlines() == [
        "46 days in stage 'negotiation' of pipeline 'b2b' (SLA 45 days)"
    ]
    assert _count(art, ALERTS) == 1
    assert _count(art, ALERT_DELIVERIES, ALERT_DELIVERIES.c.status == "sent") == 2


def test_plan_shows_the_alerts_it_would_raise_and_sends_nothing(
    art: Runtime, receiver: Receiver
) -> None:
    _stale_deal(art, "late@globex.example", days=46)
    plan = plan_tick(art, now=T0)["current"]["alerts"]
    assert plan["events"] == {
        "flow_failed": ["ops"],
        "sla_flagged": ["sales", "managers"],
        "sending_guard": ["ops", "managers"],
    }
    assert plan["channels"] == {
        "ops": f"webhook (${HOOK_ENV})",
        "sales": f"slack (${SLACK_ENV})",
        "managers": MANAGERS,
    }
    assert plan["would_raise"] == {"sla_flagged": 1}
    assert plan["would_send"] == {"sla_flagged": ["sales", "managers"]}
    assert receiver.requests == []
    assert _count(art, ALERTS) == 0


def test_overlapping_deliveries_send_each_alert_once(art: Runtime, receiver: Receiver) -> None:
    """Two runs claiming the same due deliveries at once: each goes out once."""
    for n in range(3):
        _stale_deal(art, f"late{n}@globex.example", days=50)
    engine.run(art, "advance", now=T0, runner=engine.InlineRunner(art, lambda: MemoryTransport()))
    assert _count(art, ALERT_DELIVERIES, ALERT_DELIVERIES.c.status == "sent") == 6
    with session_scope(art.engine) as session:
        session.connection().execute(
            ALERT_DELIVERIES.update().values(status="pending", claim_token=None)
        )
    receiver.requests.clear()
    memory = MemoryTransport()
    outcomes: list[AlertsOutcome] = []
    run_in_threads(
        lambda: outcomes.append(deliver_pending(Outlet.of(art), now=T0, transport=lambda: memory)),
        2,
    )
    assert sorted(o.sent for o in outcomes) == [0, 6]
    assert len(receiver.requests) == 1  # one Slack message listing the three deals
    assert receiver.requests[0]["body"]["text"].startswith("*3 deals over their stage SLA*\n")
    assert [m.recipient for m in memory.sent] == [MANAGERS]


# --- failures: a channel down, a variable unset -----------------------------------------------


def test_a_channel_that_fails_is_retried_later_and_named_without_its_url(
    art: Runtime,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _stale_deal(art, "late@globex.example", days=46)
    monkeypatch.delenv(SLACK_ENV)
    memory = MemoryTransport()
    first = engine.tick(art, now=T0, transport=lambda: memory)
    assert first.as_dict()["alerts"]["summary"] == (
        f"raised sla_flagged 1, sent 1, failed 1 (channel 'sales': {SLACK_ENV} is not set)"
    )
    cli_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", art.settings.db_url)
    code, out, _ = run_leadflow(monkeypatch, capsys, "alerts", "--json")
    assert code == 0
    assert [(r["kind"], r["channel"], r["status"], r["last_error"]) for r in json.loads(out)] == [
        ("sla_flagged", "managers", "sent", None),
        ("sla_flagged", "sales", "failed", f"channel 'sales': {SLACK_ENV} is not set"),
    ]
    receiver.status = 500
    monkeypatch.setenv(SLACK_ENV, receiver.url("/services/secret-path"))
    soon = engine.tick(art, now=T0 + timedelta(minutes=1), transport=lambda: memory)
    assert soon.as_dict()["alerts"]["summary"] == ""  # not due again yet (5 minutes)
    later = engine.tick(art, now=T0 + timedelta(minutes=6), transport=lambda: memory)
    summary = later.as_dict()["alerts"]["summary"]
    assert summary == "failed 1 (channel 'sales': 127.0.0.1 answered HTTP 500)"
    assert "secret" not in summary
    receiver.status = 200
    last = engine.tick(art, now=T0 + timedelta(hours=1), transport=lambda: memory)
    assert last.as_dict()["alerts"]["summary"] == "sent 1"
    assert len(receiver.requests) == 2  # the refused one and the delivered one
    assert [m.recipient for m in memory.sent] == [MANAGERS]


# --- the sending guard ------------------------------------------------------------------------


def _sends(rt: Runtime, *, total: int, bounced: int, complained: int = 0) -> None:
    """``total`` sends to one lead over the day before T0, ``bounced`` of them bounced at
    SMTP time and ``complained`` reported as spam by a feedback loop (events naming them)."""
    lead_id = insert_lead(rt.engine, intake_lead("many@example.com", now=T0 - timedelta(days=2)))
    rows = []
    for n in range(total):
        at = T0 - timedelta(days=1) + timedelta(seconds=n)
        row = step_row(lead_id, "many@example.com", f"s{n}", due=at, now=at)
        row.update(
            status="bounced" if n < bounced else "sent",
            claimed_at=at,
            sent_at=None if n < bounced else at,
            attempts=1,
        )
        rows.append(row)
    with session_scope(rt.engine) as session:
        conn = session.connection()
        conn.execute(insert(OUTBOX), rows)
        ids = conn.execute(select(OUTBOX.c.id).order_by(OUTBOX.c.id.desc())).scalars().all()
        if not complained:
            return
        conn.execute(
            insert(EVENTS),
            [
                {
                    "lead_id": lead_id,
                    "type": "complained",
                    "occurred_at": T0,
                    "data": {},
                    "message_id": ids[n],
                }
                for n in range(complained)
            ],
        )


def _due_email(rt: Runtime) -> int:
    """One cadence email due at T0 to a lead of its own."""
    lead_id = insert_lead(rt.engine, enrolled_lead("next@example.com", now=T0 - timedelta(days=3)))
    with session_scope(rt.engine) as session:
        row = step_row(lead_id, "next@example.com", "intro", due=T0, now=T0 - timedelta(days=3))
        return int(
            session.connection().execute(insert(OUTBOX).returning(OUTBOX.c.id), row).scalar_one()
        )


def _status(rt: Runtime, row_id: int) -> str:
    with rt.engine.connect() as conn:
        return str(conn.execute(select(OUTBOX.c.status).where(OUTBOX.c.id == row_id)).scalar())


def test_the_guard_pauses_at_51_bounces_in_1000_sends_and_alerts_once(
    art: Runtime,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _sends(art, total=1000, bounced=51)
    waiting = _due_email(art)
    memory = MemoryTransport()
    runner = engine.InlineRunner(art, lambda: memory)
    first = engine.run(art, "nurture", now=T0, runner=runner).as_dict()
    again = engine.run(art, "nurture", now=T0 + timedelta(minutes=30), runner=runner).as_dict()
    reason = "bounce rate 5.1% over the last 1000 sends (limit 5%)"
    assert first["guard"]["summary"] == f"sending paused: {reason}"
    assert again["guard"]["summary"] == f"sending paused: {reason}"
    assert first["nurture"]["claimed"] == again["nurture"]["claimed"] == 0
    assert _status(art, waiting) == "pending"
    assert [r["body"]["event"] for r in receiver.requests] == ["sending_guard"]
    assert receiver.requests[0]["path"] == "/hooks/ops-secret-token"
    assert receiver.requests[0]["type"] == "application/json"
    assert receiver.requests[0]["body"]["title"] == f"Sending paused: {reason}"
    assert [m.recipient for m in memory.sent] == [MANAGERS]
    assert _count(art, SENDING_PAUSES, SENDING_PAUSES.c.active.is_(True)) == 1

    cli_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", art.settings.db_url)
    assert run_leadflow(monkeypatch, capsys, "sending", "status")[1].startswith(
        f"sending paused since {T0:%Y-%m-%d %H:%M} UTC by guard: {reason}\n"
    )
    code, out, _ = run_leadflow(
        monkeypatch,
        capsys,
        "sending",
        "resume",
        "--reason",
        "list cleaned",
        "--now",
        (T0 + timedelta(minutes=45)).isoformat(),
    )
    assert (code, out) == (0, f"sending resumed (pause 1: {reason})\n")
    # the window now starts after the resume: the 1,000 sends before it no longer count
    after = engine.run(art, "nurture", now=T0 + timedelta(hours=1), runner=runner).as_dict()
    assert after["guard"]["summary"] == ""
    assert after["guard"]["figures"]["sends"] == 0
    assert after["nurture"]["sent"] == 1
    assert _status(art, waiting) == "sent"
    assert len(receiver.requests) == 1


def test_the_guard_does_not_pause_at_49_bounces_in_1000_sends(
    art: Runtime, receiver: Receiver
) -> None:
    _sends(art, total=1000, bounced=49)
    waiting = _due_email(art)
    runner = engine.InlineRunner(art, lambda: MemoryTransport())
    out = engine.run(art, "nurture", now=T0, runner=runner).as_dict()
    assert out["guard"]["summary"] == ""
    assert out["guard"]["figures"]["bounce_percent"] == 4.9
    assert _status(art, waiting) == "sent"
    assert receiver.requests == []


def test_complaints_above_three_in_a_thousand_pause_sending(
    art: Runtime, receiver: Receiver
) -> None:
    _sends(art, total=1000, bounced=0, complained=4)
    runner = engine.InlineRunner(art, lambda: MemoryTransport())
    out = engine.run(art, "nurture", now=T0, runner=runner).as_dict()
    assert out["guard"]["summary"] == (
        "sending paused: complaint rate 0.4% over the last 1000 sends (limit 0.3%)"
    )


def test_resume_without_a_pause_fails_and_needs_a_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cli_environment(monkeypatch, tmp_path)
    assert run_leadflow(monkeypatch, capsys, "sending", "resume", "--reason", "x") == (
        1,
        "",
        "error: sending is not paused\n",
    )
    assert run_leadflow(monkeypatch, capsys, "sending", "pause", "--reason", " ")[0] == 1
    assert run_leadflow(monkeypatch, capsys, "sending", "pause", "--reason", "DNS change")[1] == (
        "sending paused: DNS change\n"
    )
    assert (
        run_leadflow(monkeypatch, capsys, "sending", "status", "--json")[1].count('"paused": true')
        == 1
    )


# --- a failed flow run (a real Prefect flow run) ----------------------------------------------


@pytest.mark.flow
@pytest.mark.usefixtures("prefect_server")
def test_a_failing_flow_run_produces_exactly_one_alert(
    alert_settings: Settings, receiver: Receiver
) -> None:
    import flows  # noqa: F401
    from flows.context import runtime, use_settings
    from flows.pipeline import FLOWS
    from flows.runner import quick_flows

    use_settings(alert_settings)
    with quick_flows():
        state = FLOWS["tick"](now="yesterday-ish", return_state=True)
    assert state.is_failed()
    run_id = state.state_details.flow_run_id
    assert [r["path"] for r in receiver.requests] == ["/hooks/ops-secret-token"]
    body = receiver.requests[0]["body"]
    assert body["event"] == "flow_failed"
    assert body["title"] == "Flow run 'tick @ yesterday-ish' failed"
    assert body["alerts"][0]["data"]["flow_run_id"] == str(run_id)
    assert "yesterday-ish" in body["text"]
    # the hook again for the same run (a retry, on_crashed after on_failure): nothing more
    rt = runtime()
    again = flow_failed(
        Outlet.of(rt),
        flow="tick",
        run_id=str(run_id),
        run_name="tick @ yesterday-ish",
        state="Failed",
        message="",
        now=datetime.now(T0.tzinfo),
        transport=lambda: MemoryTransport(),
    )
    assert again.raised == {} and again.sent == 0
    assert len(receiver.requests) == 1
    assert _count(rt, ALERTS, ALERTS.c.kind == "flow_failed") == 1


@pytest.mark.flow
@pytest.mark.usefixtures("prefect_server")
def test_a_run_failing_on_an_invalid_config_is_alerted_through_its_alerts_section(
    alert_settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual failure after an edit: the file no longer validates, so there is no runtime;
    its own ``alerts:`` and ``sender:`` sections, valid by themselves, still route the alert."""
    import flows  # noqa: F401
    from flows.context import use_settings
    from flows.pipeline import FLOWS
    from flows.runner import quick_flows

    text = alert_settings.config.read_text(encoding="utf-8")
    alert_settings.config.write_text(
        text.replace("timezone: America/New_York #", "timezone: Mars/Olympus_Mons #", 1),
        encoding="utf-8",
    )
    open_database(alert_settings.db_url).dispose()  # the database the last good run left
    # the environment names another config and no database: the hook must use the settings
    # the process runs with (``use_settings``, as the CLI's --config does), not load_settings
    monkeypatch.setenv("LEADFLOW_CONFIG", str(DEFAULT_CONFIG))
    monkeypatch.delenv("LEADFLOW_DATABASE_URL", raising=False)
    use_settings(alert_settings)
    with quick_flows():
        state = FLOWS["score"](now=T0.isoformat(), return_state=True)
    assert state.is_failed()
    assert len(receiver.requests) == 1
    body = receiver.requests[0]["body"]
    assert body["event"] == "flow_failed"
    assert body["title"] == f"Flow run 'score @ {T0.isoformat()}' failed"
    assert "unknown time zone 'Mars/Olympus_Mons'" in body["text"]


def test_plan_says_sending_would_pause_and_claims_nothing_and_changes_nothing(
    art: Runtime, receiver: Receiver
) -> None:
    _sends(art, total=1000, bounced=51)
    _due_email(art)
    plan = plan_tick(art, now=T0)["current"]
    assert plan["alerts"]["guard"]["reason"] == (
        "bounce rate 5.1% over the last 1000 sends (limit 5%)"
    )
    assert plan["emails"] == {}
    assert _count(art, SENDING_PAUSES) == 0
    assert receiver.requests == []


def test_a_pause_set_by_hand_holds_without_an_alerts_section(quick_rt: Runtime) -> None:
    """No ``alerts:``: the guard does not run, but a pause a person set still stops sending."""
    from leadflow.alerts import guard

    waiting = _due_email(quick_rt)
    with session_scope(quick_rt.engine) as session:
        guard.pause(session.connection(), reason="DKIM rotation", by="ops", now=T0)
    memory = MemoryTransport()
    out = engine.tick(quick_rt, now=T0, transport=lambda: memory).as_dict()
    assert "guard" not in out and "alerts" not in out
    assert out["nurture"]["claimed"] == 0
    assert _status(quick_rt, waiting) == "pending"
    with session_scope(quick_rt.engine) as session:
        guard.resume(session.connection(), reason="done", by="ops", now=T0)
    engine.tick(quick_rt, now=T0 + timedelta(minutes=5), transport=lambda: memory)
    assert _status(quick_rt, waiting) == "sent"


# --- the reviewer's cases: redirects, slow answers, refused recipients, escaping, periods -----


def test_a_webhook_that_redirects_is_a_failure_and_nothing_follows_it(
    art: Runtime, receiver: Receiver
) -> None:
    """urllib would follow a 302 with a bodyless GET to any host and count its 200 as sent."""
    with Receiver() as elsewhere:
        receiver.status = 302
        receiver.location = elsewhere.url("/internal/admin")
        with session_scope(art.engine) as session:
            raise_guard_alert(session.connection(), art)
        out = deliver_pending(Outlet.of(art), now=T0, transport=lambda: MemoryTransport())
        assert elsewhere.gets == [] and elsewhere.requests == []
    assert out.errors == ["channel 'ops': 127.0.0.1 answered HTTP 302"]
    assert len(receiver.requests) == 1
    with art.engine.connect() as conn:
        rows = conn.execute(
            select(ALERT_DELIVERIES.c.channel, ALERT_DELIVERIES.c.status).order_by(
                ALERT_DELIVERIES.c.channel
            )
        ).all()
    assert [tuple(r) for r in rows] == [("managers", "sent"), ("ops", "failed")]


def raise_guard_alert(conn: Any, rt: Runtime, *, title: str = "Sending paused: test") -> None:
    from leadflow.alerts import store

    cfg = rt.loaded.config.alerts
    assert cfg is not None
    store.raise_alerts(
        conn,
        [store.AlertIn(kind="sending_guard", subject="sending", period="pause:1", title=title)],
        cfg.routes,
        now=T0,
    )


class TrickleServer:
    """A raw HTTP server on loopback: ``flood`` answers 200 with an endless body at full
    speed; otherwise it sends a header line every 0.2 s and never ends its headers (each
    socket read succeeds, so only an overall deadline stops the client)."""

    def __init__(self, *, flood: bool) -> None:
        import socket

        self.flood = flood
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                conn.recv(65536)
                try:
                    if self.flood:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
                        while not self.stop.is_set():
                            conn.sendall(b"x" * 65536)
                    else:
                        conn.sendall(b"HTTP/1.1 200 OK\r\n")
                        while not self.stop.wait(0.2):
                            conn.sendall(b"X-Slow: yes\r\n")
                except OSError:  # the client hung up
                    pass

    def __enter__(self) -> TrickleServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_a_webhook_answer_is_read_up_to_a_cap_and_the_request_has_one_deadline() -> None:
    import time

    from leadflow.alerts import notify

    with TrickleServer(flood=True) as flood:
        started = time.monotonic()
        notify.post_json("ops", flood.url(), {"x": 1}, timeout=5)  # a 200: sent
        assert time.monotonic() - started < 3
    with TrickleServer(flood=False) as slow:
        started = time.monotonic()
        with pytest.raises(notify.NotifyError) as caught:
            notify.post_json("ops", slow.url(), {"x": 1}, timeout=1)
        assert time.monotonic() - started < 2.5
    assert str(caught.value) == "channel 'ops': 127.0.0.1 gave no full answer within 1 s"


def test_an_email_some_recipients_refuse_is_sent_once_to_those_who_accepted(
    quick_rt: Runtime,
) -> None:
    from smtp_faults import FaultSmtpServer

    from leadflow.alerts import store
    from leadflow.config.alerts import Alerts
    from leadflow.mail.transport import SmtpTransport

    cfg = Alerts.model_validate(
        {
            "channels": {
                "managers": {"type": "email", "to": ["ok@example.com", "code550@example.com"]}
            },
            "events": {"flow_failed": ["managers"]},
        }
    )
    outlet = Outlet(quick_rt.engine, cfg, quick_rt.loaded.config.sender)
    with session_scope(quick_rt.engine) as session:
        store.raise_alerts(
            session.connection(),
            [store.AlertIn(kind="flow_failed", subject="flow_run:1", period="run", title="t")],
            cfg.routes,
            now=T0,
        )
    with FaultSmtpServer() as server:
        first = deliver_pending(outlet, now=T0, transport=lambda: SmtpTransport(server.config()))
        later = deliver_pending(
            outlet, now=T0 + timedelta(hours=2), transport=lambda: SmtpTransport(server.config())
        )
        received = [r for m in server.messages for r in m.recipients]
    assert (first.sent, first.failed, later.sent, later.failed) == (1, 0, 0, 0)
    assert received == ["ok@example.com"]
    with quick_rt.engine.connect() as conn:
        status, error = conn.execute(
            select(ALERT_DELIVERIES.c.status, ALERT_DELIVERIES.c.last_error)
        ).one()
    assert status == "sent"
    assert error.startswith("channel 'managers': refused by code550@example.com: bounced 550")


def test_lead_data_in_a_slack_message_can_neither_ping_nor_link(
    art: Runtime, receiver: Receiver
) -> None:
    insert_lead(
        art.engine,
        intake_lead(
            "x@evil.example",
            now=T0,
            pipeline="b2b",
            stage="negotiation",
            stage_entered_at=T0 - timedelta(days=46),
            company="<!channel> <https://evil.example|Invoice> & co",
        ),
    )
    engine.tick(art, now=T0, transport=lambda: MemoryTransport())
    [slack] = [r for r in receiver.requests if r["path"].startswith("/services/")]
    assert slack["body"]["text"] == (
        "*x@evil.example (&lt;!channel&gt; &lt;https://evil.example|Invoice&gt; &amp; co) "
        "over the SLA of Negotiation*\n"
        "• 46 days in stage 'negotiation' of pipeline 'b2b' (SLA 45 days)"
    )


def test_long_periods_that_differ_only_in_their_timestamp_are_two_alerts(
    quick_rt: Runtime,
) -> None:
    """The SLA period with 64-character pipeline and stage ids: 162 characters, the
    timestamp at its end; a re-entry into the stage is a new alert."""
    from leadflow.alerts import store

    def period(at: datetime) -> str:
        return f"{'p' * 64}/{'s' * 64}@{at.isoformat()}"

    alerts = [
        store.AlertIn(kind="sla_flagged", subject="lead:1", period=period(at), title="late")
        for at in (T0 + timedelta(microseconds=1), T0 + timedelta(days=3, microseconds=1))
    ]
    assert len(alerts[0].period) == 162
    with session_scope(quick_rt.engine) as session:
        conn = session.connection()
        assert store.raise_alerts(conn, alerts[:1], lambda kind: [], now=T0) == 1
        assert store.raise_alerts(conn, alerts, lambda kind: [], now=T0) == 1
        stored = conn.execute(select(ALERTS.c.period).order_by(ALERTS.c.id)).scalars().all()
    assert [len(p) for p in stored] == [100, 100]
    assert all(p.startswith(f"{'p' * 64}/") for p in stored)
    assert stored[0] != stored[1]


def test_an_empty_alerts_section_runs_the_guard_and_records_its_alert_for_no_channel(
    quick_rt: Runtime,
) -> None:
    """``alerts: {}``: the guard with its defaults; its alert needs no channel."""
    text = DEFAULT_CONFIG.read_text(encoding="utf-8") + "alerts: {}\n"
    loaded = load_config(Path("pipeline.yaml"), templates=TEMPLATES, text=text)
    assert [str(w) for w in loaded.warnings] == []
    rt = Runtime(settings=quick_rt.settings, loaded=loaded, engine=quick_rt.engine)
    _sends(rt, total=500, bounced=26)  # the defaults: the last 500 sends, 5%
    waiting = _due_email(rt)
    out = engine.tick(rt, now=T0, transport=lambda: MemoryTransport()).as_dict()
    assert out["guard"]["summary"] == (
        "sending paused: bounce rate 5.2% over the last 500 sends (limit 5%)"
    )
    assert out["nurture"]["claimed"] == 0
    assert _status(quick_rt, waiting) == "pending"
    assert _count(quick_rt, ALERTS, ALERTS.c.kind == "sending_guard") == 1
    assert _count(quick_rt, ALERT_DELIVERIES) == 0  # no channel: recorded, sent nowhere


def test_a_pause_set_during_a_run_stops_the_batches_after_it(quick_rt: Runtime) -> None:
    """The delivery step read no pause and planned its batches; a pause set then (by hand,
    or by another run's guard) is read again by each batch's claim, which claims nothing."""
    from leadflow.alerts import guard
    from leadflow.delivery.session import DeliverySession

    rows = []
    for n in range(3):
        address = f"lead{n}@example.com"
        lead_id = insert_lead(quick_rt.engine, enrolled_lead(address, now=T0 - timedelta(days=3)))
        rows.append(step_row(lead_id, address, "intro", due=T0, now=T0 - timedelta(days=3)))
    with session_scope(quick_rt.engine) as session:
        session.connection().execute(insert(OUTBOX), rows)
    rt = Runtime(
        settings=quick_rt.settings.model_copy(update={"batch_size": 1}),
        loaded=quick_rt.loaded,
        engine=quick_rt.engine,
    )
    ranges = engine.outbox_ranges(rt, now=T0, kind="cadence")
    assert len(ranges) == 3
    with session_scope(rt.engine) as session:
        guard.pause(session.connection(), reason="DKIM rotation", by="ops", now=T0)
    memory = MemoryTransport()
    with DeliverySession(rt, now=T0, transport=lambda: memory) as delivery:
        out = delivery.deliver(ranges, kind="cadence")
    assert out.as_dict()["claimed"] == 0
    assert memory.sent == []
    assert _count(rt, OUTBOX, OUTBOX.c.status == "pending") == 3


def test_recent_limits_alerts_not_rows_and_pending_counts(art: Runtime) -> None:
    from leadflow.alerts import store

    with session_scope(art.engine) as session:
        conn = session.connection()
        for n in range(3):  # sla_flagged goes to two channels: two rows per alert
            store.raise_alerts(
                conn,
                [store.AlertIn(kind="sla_flagged", subject=f"lead:{n}", period="p", title="t")],
                art.loaded.config.alerts.routes if art.loaded.config.alerts else lambda k: [],
                now=T0,
            )
        rows = store.recent(conn, limit=2)
        assert store.pending_count(conn, now=T0) == 6
    assert [(r["id"], r["channel"]) for r in rows] == [
        (3, "managers"),
        (3, "sales"),
        (2, "managers"),
        (2, "sales"),
    ]
