"""The outbox's sending promises on real parts: the test database (SQLite, or PostgreSQL with
LEADFLOW_TEST_DATABASE_URL), aiosmtpd servers on 127.0.0.1, threads and processes.

P1 at most one email per step (unique row, atomic claim, overlapping runs, kill -9), P2 no
silent loss (expired claims become ``unknown`` and are reported), P4 suppression wins even
against a claim in flight, send windows and caps, config changes mid-cadence (steps matched
by id) and stop conditions. Messages are counted at the SMTP server by Message-ID.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.smtp import SMTP, Envelope, Session
from conftest import DEFAULT_CONFIG, T0, TEMPLATES, insert_lead
from crash_sender import deliver_all
from seeding import enrolled_lead, seed_due_intros
from smtp_faults import FaultSmtpServer
from sqlalchemy import Engine, Row, select, update
from sqlalchemy.exc import IntegrityError
from waiting import wait_until

from leadflow.config import load_config
from leadflow.delivery.outcome import DeliveryOutcome
from leadflow.delivery.session import deliver_batch
from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.mail.sink import EphemeralPortController
from leadflow.outbox import caps
from leadflow.outbox.reconcile import CLAIM_TTL
from leadflow.outbox.rows import outbox_row
from leadflow.pipeline.engine import tick
from leadflow.pipeline.events import EventIn, record_events
from leadflow.pipeline.stages import manual_move
from leadflow.pipeline.suppression import suppress_many
from leadflow.runtime import Runtime
from models.db import insert_ignore, session_scope
from models.tables import EVENTS, LEADS, OUTBOX, Lead, OutboundMessage

CRASH_SENDER = Path(__file__).with_name("crash_sender.py")
WEDNESDAY_9AM_NY = datetime(2026, 11, 4, 14, 0, tzinfo=UTC)


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[FaultSmtpServer]:
    with FaultSmtpServer() as server:
        yield server


def with_smtp(rt: Runtime, port: int, **settings: Any) -> Runtime:
    """The same database and config, sending to 127.0.0.1:``port``."""
    changed = rt.settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, **settings}
    )
    return Runtime(settings=changed, loaded=rt.loaded, engine=rt.engine)


def variant(rt: Runtime, **edits: Any) -> Runtime:
    """``rt`` under a modified pipeline.yaml; keys are paths joined by ``__``
    (``sender__daily_cap=3``)."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    for name, value in edits.items():
        *parents, last = name.split("__")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    text = yaml.safe_dump(data, sort_keys=False)
    loaded = load_config(DEFAULT_CONFIG, templates=TEMPLATES, text=text)
    return Runtime(settings=rt.settings, loaded=loaded, engine=rt.engine)


def enroll(rt: Runtime, email: str, **fields: Any) -> int:
    """A lead in stage ``prospect`` working cadence ``outbound`` (not due for the engine)."""
    return insert_lead(rt.engine, enrolled_lead(email, now=T0, industry="saas", **fields))


def seed_due_messages(
    engine: Engine, count: int, *, now: datetime, domain: str = "example.com"
) -> list[int]:
    """``count`` enrolled leads at ``domain`` whose step ``intro`` is due at ``now``; returns
    the outbox ids in order. Leads are not due for scoring or the stage engine, so a tick
    only sends."""
    leads = [
        enrolled_lead(f"seeded{n}@{domain}", now=now, first_name=f"Lead{n}") for n in range(count)
    ]
    return seed_due_intros(engine, leads, now=now)


def queue(
    rt: Runtime, lead_id: int, step: str = "intro", *, due: datetime = T0, **fields: Any
) -> int:
    """An outbox row for ``step`` of the lead's cadence, due at ``due`` (a plain INSERT)."""
    with session_scope(rt.engine) as session:
        lead = session.get(Lead, lead_id)
        assert lead is not None
        values = outbox_row(
            lead_id=lead_id,
            to_email=lead.email,
            cadence="outbound",
            step=step,
            stage=lead.stage,
            due_at=due,
            now=T0,
        )
        message = OutboundMessage(**{**values, **fields})
        session.add(message)
        session.flush()
        assert message.id is not None
        return message.id


def rows(rt: Runtime) -> dict[int, Row[Any]]:
    with rt.engine.connect() as conn:
        return {r.id: r for r in conn.execute(select(OUTBOX).order_by(OUTBOX.c.id))}


def statuses(rt: Runtime) -> Counter[str]:
    return Counter(r.status for r in rows(rt).values())


def message_ids(payloads: list[bytes]) -> Counter[str]:
    parser = BytesHeaderParser(policy=default_policy)
    return Counter(str(parser.parsebytes(data)["Message-ID"]) for data in payloads)


def received(server: FaultSmtpServer) -> Counter[str]:
    return message_ids([m.data for m in server.messages])


def once_each_sent_row(rt: Runtime) -> Counter[str]:
    """What the server must hold: every sent row's Message-ID, exactly once."""
    return Counter({r.message_id: 1 for r in rows(rt).values() if r.status == "sent"})


def deliver_all_rows(rt: Runtime, *, now: datetime) -> DeliveryOutcome:
    """One batch over every row (the id range a planner would hand out)."""
    return deliver_batch(rt, (1, 10**9), now=now, transport=smtp_transport_factory(rt))


def start_sender(rt: Runtime, port: int, now: datetime, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CRASH_SENDER), rt.settings.db_url, str(port), now.isoformat(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def after_select(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> None:
    """Run ``action`` once inside the next ``claim_batch``, after its SELECT of due rows and
    before any of its writes (``caps.sent_today`` is the first thing called in between)."""
    original = caps.sent_today
    fired: list[bool] = []

    def hooked(conn: Any, day_start: datetime, **options: Any) -> Any:
        if not fired:
            fired.append(True)
            action()
        return original(conn, day_start, **options)

    monkeypatch.setattr(caps, "sent_today", hooked)


# --- P1: one row per step -------------------------------------------------------------------


def test_a_second_row_for_the_same_step_is_impossible(rt: Runtime) -> None:
    lead = enroll(rt, "ada@example.com")
    queue(rt, lead, "intro")
    with pytest.raises(IntegrityError):
        queue(rt, lead, "intro", due=T0 + timedelta(days=1))
    row = outbox_row(
        lead_id=lead,
        to_email="ada@example.com",
        cadence="outbound",
        step="intro",
        stage="prospect",
        due_at=T0,
        now=T0,
    )
    with rt.engine.begin() as conn:
        assert insert_ignore(conn, OUTBOX, [row]) == 0
    assert [(r.step, r.round) for r in rows(rt).values()] == [("intro", 0)]
    with rt.engine.begin() as conn:  # a revival's round is a new message
        insert_ignore(conn, OUTBOX, [{**row, "round": 1}])
    assert [(r.step, r.round) for r in rows(rt).values()] == [("intro", 0), ("intro", 1)]


# --- P1: overlapping runs -------------------------------------------------------------------


def test_two_threads_sending_the_same_due_set_deliver_each_message_once(
    rt: Runtime, smtp: FaultSmtpServer
) -> None:
    seed_due_messages(rt.engine, 30, now=T0)
    sender = with_smtp(rt, smtp.port, batch_size=10, smtp_concurrency=2)
    start = threading.Barrier(2)

    def run() -> DeliveryOutcome:
        start.wait()
        return deliver_all(sender, now=T0)

    with ThreadPoolExecutor(2) as pool:
        outcomes = [f.result() for f in [pool.submit(run) for _ in range(2)]]

    assert sum(o.claimed for o in outcomes) == 30
    assert statuses(rt) == {"sent": 30, "pending": 30}  # pending: each lead's next step
    assert received(smtp) == once_each_sent_row(rt)


@pytest.mark.slow  # two Python processes start up
def test_two_processes_sending_the_same_due_set_deliver_each_message_once(
    rt: Runtime, smtp: FaultSmtpServer, tmp_path: Path
) -> None:
    seed_due_messages(rt.engine, 30, now=T0)
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{n}" for n in range(2)]
    senders = [
        start_sender(rt, smtp.port, T0, "--batch-size=10", f"--ready={r}", f"--go={go}")
        for r in ready
    ]
    wait_until(lambda: all(r.exists() for r in ready), timeout=30, what="both senders ready")
    go.touch()
    outcomes = [finish(p) for p in senders]

    assert sum(o["claimed"] for o in outcomes) == 30
    assert statuses(rt) == {"sent": 30, "pending": 30}  # pending: each lead's next step
    assert received(smtp) == once_each_sent_row(rt)


ON_POSTGRES = pytest.mark.skipif(
    not os.environ.get("LEADFLOW_TEST_DATABASE_URL"),
    reason="on SQLite no writer can commit between our SELECT and our claim (BEGIN IMMEDIATE);"
    " test_no_writer_gets_between_our_select_and_our_claim_on_sqlite proves it",
)


def test_no_writer_gets_between_our_select_and_our_claim_on_sqlite(
    rt: Runtime, smtp: FaultSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if rt.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only; PostgreSQL uses FOR UPDATE SKIP LOCKED")
    import sqlite3

    seed_due_messages(rt.engine, 3, now=T0)
    database = rt.engine.url.database
    assert database is not None
    refused: list[str] = []

    def rival_writer() -> None:
        other = sqlite3.connect(database, timeout=0.2, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            refused.append(str(exc))
        finally:
            other.close()

    after_select(monkeypatch, rival_writer)
    ours = deliver_all_rows(with_smtp(rt, smtp.port), now=T0)
    assert refused == ["database is locked"]
    assert ours.claimed == 3


def rival_after_our_count(
    monkeypatch: pytest.MonkeyPatch, action: Callable[[], None], *, wait: float = 2.0
) -> list[threading.Thread]:
    """Start ``action`` on another thread inside the next ``claim_batch``, once it has read
    its due rows and counted today's sends, and give it ``wait`` seconds to finish before our
    claim goes on: without serialized claims it would claim and send in that gap."""
    original = caps.sent_today
    started: list[threading.Thread] = []

    def hooked(conn: Any, day_start: datetime, **options: Any) -> Any:
        counted = original(conn, day_start, **options)
        if not started:
            rival = threading.Thread(target=action)
            started.append(rival)
            rival.start()
            rival.join(wait)
        return counted

    monkeypatch.setattr(caps, "sent_today", hooked)
    return started


@ON_POSTGRES
def test_a_rival_claim_waits_for_ours_and_finds_nothing_left(
    rt: Runtime, smtp: FaultSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed_due_messages(rt.engine, 5, now=T0)
    sender = with_smtp(rt, smtp.port)
    rival: list[DeliveryOutcome] = []
    started = rival_after_our_count(
        monkeypatch, lambda: rival.append(deliver_all_rows(sender, now=T0))
    )

    ours = deliver_all_rows(sender, now=T0)
    started[0].join(30)

    assert (rival[0].claimed, ours.claimed) == (0, 5)
    assert statuses(rt) == {"sent": 5, "pending": 5}
    assert received(smtp) == once_each_sent_row(rt)
    assert [i for i, r in rows(rt).items() if r.status == "sent"] == ids


@ON_POSTGRES
def test_a_rival_claim_at_the_same_time_cannot_push_sends_past_the_daily_cap(
    rt: Runtime, smtp: FaultSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs over different rows would each count 0 sends today and claim up to the cap
    of 3, 6 in all, if their claims ran side by side; serialized, the rival counts our 3."""
    ours_ids = seed_due_messages(rt.engine, 3, now=T0, domain="a.example")
    rival_ids = seed_due_messages(rt.engine, 3, now=T0, domain="b.example")
    capped = with_smtp(variant(rt, sender__daily_cap=3), smtp.port)

    def deliver(ids: list[int]) -> DeliveryOutcome:
        return deliver_batch(
            capped, (ids[0], ids[-1]), now=T0, transport=smtp_transport_factory(capped)
        )

    rival: list[DeliveryOutcome] = []
    started = rival_after_our_count(monkeypatch, lambda: rival.append(deliver(rival_ids)))

    ours = deliver(ours_ids)
    started[0].join(30)

    assert (ours.claimed, rival[0].claimed) == (3, 0)
    assert rival[0].deferred == {"daily cap": 3}
    assert statuses(rt) == {"sent": 3, "deferred": 3, "pending": 3}
    assert received(smtp) == once_each_sent_row(rt)


# --- P1/P2: kill -9 mid-batch ---------------------------------------------------------------


class SlowRelay:
    """aiosmtpd handler taking ``delay`` s per message; message number ``hold_at`` is kept
    unanswered until ``release`` is set, so a test can kill the client exactly there."""

    def __init__(self, delay: float, hold_at: int) -> None:
        self.delay = delay
        self.hold_at = hold_at
        self.payloads: list[bytes] = []
        self.holding = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:  # counted on arrival: the server has it, whatever happens next
            self.payloads.append(envelope.original_content or b"")
            number = len(self.payloads)
        if number == self.hold_at:
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        await asyncio.sleep(self.delay)
        return "250 OK: queued"


@pytest.fixture
def slow_relay() -> Iterator[tuple[SlowRelay, int]]:
    relay = SlowRelay(delay=0.05, hold_at=6)
    controller = EphemeralPortController(relay, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield relay, controller.port
    finally:
        relay.release.set()
        controller.stop()


@pytest.mark.slow  # a Python process starts up
def test_a_sender_killed_mid_batch_neither_duplicates_nor_loses(
    rt: Runtime, slow_relay: tuple[SlowRelay, int]
) -> None:
    """Batches of 4 over one connection, through the nurture step a tick runs; the sender is
    killed while message 6 waits for its reply. Whatever it had recorded stays sent, what it
    had claimed and not recorded becomes unknown on the rerun after CLAIM_TTL (never sent
    again), and what it had not claimed is sent by the rerun: no message twice, none lost."""
    relay, port = slow_relay
    ids = [  # four domains, each under the per-domain daily cap
        i
        for d in range(4)
        for i in seed_due_messages(rt.engine, 25, now=T0, domain=f"d{d}.example")
    ]
    killed = start_sender(rt, port, T0, "--batch-size=4", "--concurrency=1")
    if not relay.holding.wait(60):
        killed.kill()
        pytest.fail(f"the sender never reached message 6: {killed.communicate()[1]}")
    killed.kill()
    killed.communicate(timeout=30)  # no helper process of its keeps the pipes open
    relay.release.set()
    relay.delay = 0.0

    at_kill = rows(rt)
    by_status: dict[str, list[int]] = {}
    for i in ids:
        by_status.setdefault(at_kill[i].status, []).append(i)
    claimed, done, untouched = (by_status.get(s, []) for s in ("sending", "sent", "pending"))
    assert set(by_status) <= {"sending", "sent", "pending"}
    assert ids[5] in claimed  # message 6 was on the wire when the sender died
    assert untouched  # claims run ahead of the wire by a batch or so, not to the end

    sender = with_smtp(rt, port, batch_size=4)
    later = T0 + CLAIM_TTL + timedelta(minutes=1)
    rerun = tick(sender, now=later, transport=smtp_transport_factory(sender))

    final = rows(rt)
    assert sorted(rerun.nurture.reconciled) == claimed
    assert (rerun.nurture.claimed, dict(rerun.nurture.statuses)) == (
        len(untouched),
        {"sent": len(untouched)},
    )
    assert {i for i in ids if final[i].status == "unknown"} == set(claimed)
    assert {i for i in ids if final[i].status == "sent"} == set(done) | set(untouched)
    assert {final[i].last_error for i in claimed} == {
        "claim expired: the sender stopped mid-send; delivery unknown"
    }
    at_server = message_ids(relay.payloads)
    assert set(at_server.values()) == {1}  # no duplicates
    sent_ids = {r.message_id for r in final.values() if r.status == "sent"}
    assert sent_ids <= set(at_server)  # every row recorded as sent reached the server
    assert len(at_server) == len(sent_ids) + len(set(at_server) - sent_ids)
    assert len(set(at_server) - sent_ids) <= len(claimed)  # the unknown ones it did get


# --- P4: suppression wins ---------------------------------------------------------------------


def test_an_address_suppressed_before_the_claim_is_never_sent(
    rt: Runtime, smtp: FaultSmtpServer
) -> None:
    ada = queue(rt, enroll(rt, "ada@example.com"))
    bob = queue(rt, enroll(rt, "bob@example.com"))
    with rt.engine.begin() as conn:  # keyed by the normalized address
        suppress_many(conn, [(" ADA@Example.COM ", "do_not_email")], now=T0)

    out = deliver_all_rows(with_smtp(rt, smtp.port), now=T0)

    assert (out.claimed, out.suppressed) == (1, 1)
    after = rows(rt)
    assert (after[ada].status, after[ada].attempts) == ("suppressed", 0)
    assert after[ada].last_error == "address is on the suppression list"
    assert after[bob].status == "sent"
    assert smtp.delivered_to() == ["bob@example.com"]


@ON_POSTGRES
def test_a_suppression_committed_between_select_and_claim_is_honoured(
    rt: Runtime, smtp: FaultSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = queue(rt, enroll(rt, "ada@example.com"))
    bob = queue(rt, enroll(rt, "bob@example.com"))

    def unsubscribe() -> None:
        with rt.engine.begin() as conn:
            suppress_many(conn, [("ada@example.com", "unsubscribed")], now=T0)

    after_select(monkeypatch, unsubscribe)
    sender = with_smtp(rt, smtp.port)

    first = deliver_all_rows(sender, now=T0)
    assert first.claimed == 1
    assert (rows(rt)[ada].status, rows(rt)[ada].attempts) == ("pending", 0)

    second = deliver_all_rows(sender, now=T0)
    assert (second.claimed, second.suppressed) == (0, 1)
    assert rows(rt)[ada].status == "suppressed"
    assert rows(rt)[bob].status == "sent"
    assert smtp.delivered_to() == ["bob@example.com"]


# --- send windows and caps ------------------------------------------------------------------


def test_a_row_outside_the_leads_window_waits_for_its_next_window_start(
    rt: Runtime, smtp: FaultSmtpServer
) -> None:
    ny = queue(rt, enroll(rt, "ny@example.com"))
    berlin = queue(rt, enroll(rt, "berlin@example.com", timezone="Europe/Berlin"))
    sender = with_smtp(rt, smtp.port)
    closing = T0 + timedelta(hours=2)  # Tue 11:30 in New York (end is exclusive), 17:30 Berlin

    out = deliver_all_rows(sender, now=closing)

    assert (out.claimed, dict(out.deferred)) == (0, {"send window": 2})
    after = rows(rt)
    wednesday_9am_berlin = datetime(2026, 11, 4, 8, 0, tzinfo=UTC)
    assert (after[ny].status, after[ny].defer_reason) == ("deferred", "send window")
    assert after[ny].due_at == WEDNESDAY_9AM_NY
    assert (after[berlin].status, after[berlin].defer_reason) == ("deferred", "send window")
    assert after[berlin].due_at == wednesday_9am_berlin
    assert smtp.messages == []

    assert deliver_all_rows(sender, now=wednesday_9am_berlin).claimed == 1
    assert smtp.delivered_to() == ["berlin@example.com"]
    assert deliver_all_rows(sender, now=WEDNESDAY_9AM_NY).claimed == 1
    assert smtp.delivered_to() == ["berlin@example.com", "ny@example.com"]
    assert [rows(rt)[i].status for i in (ny, berlin)] == ["sent", "sent"]


def test_daily_and_domain_caps_defer_the_excess_to_the_next_days_window(
    rt: Runtime, smtp: FaultSmtpServer
) -> None:
    capped = with_smtp(variant(rt, sender__daily_cap=3, sender__per_domain_daily_cap=2), smtp.port)
    emails = ["a1@a.example", "a2@a.example", "a3@a.example", "b1@b.example", "b2@b.example"]
    ids = dict(zip(emails, (queue(rt, enroll(rt, e)) for e in emails), strict=True))

    out = deliver_all_rows(capped, now=T0)

    assert out.claimed == 3
    assert dict(out.deferred) == {"domain cap": 1, "daily cap": 1}
    assert smtp.delivered_to() == ["a1@a.example", "a2@a.example", "b1@b.example"]
    after = rows(rt)
    assert (after[ids["a3@a.example"]].defer_reason, after[ids["b2@b.example"]].defer_reason) == (
        "domain cap",
        "daily cap",
    )
    assert {after[ids[e]].due_at for e in ("a3@a.example", "b2@b.example")} == {WEDNESDAY_9AM_NY}

    assert deliver_all_rows(capped, now=WEDNESDAY_9AM_NY).claimed == 2
    assert sorted(smtp.delivered_to()) == emails
    assert [rows(rt)[i].status for i in ids.values()] == ["sent"] * 5


# --- config changes mid-cadence (steps are matched by id) ---------------------------------


@pytest.fixture
def at_value_step(rt: Runtime) -> tuple[int, int]:
    """A lead whose intro went out and whose ``value`` step is due now: (lead, row)."""
    lead = enroll(rt, "ada@example.com")
    queue(rt, lead, "intro", due=T0 - timedelta(days=7), status="sent")
    return lead, queue(rt, lead, "value")


def _steps() -> list[dict[str, Any]]:
    """The ``outbound`` cadence's steps as written in the default pipeline.yaml."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    steps: list[dict[str, Any]] = config["cadences"]["outbound"]["steps"]
    return steps


def test_a_step_removed_from_config_is_cancelled(
    rt: Runtime, smtp: FaultSmtpServer, at_value_step: tuple[int, int]
) -> None:
    _lead, row = at_value_step
    steps = [s for s in _steps() if s["id"] != "value"]
    changed = with_smtp(variant(rt, cadences__outbound__steps=steps), smtp.port)

    out = deliver_all_rows(changed, now=T0)

    assert (out.claimed, dict(out.cancelled)) == (0, {"step removed from config": 1})
    assert (rows(rt)[row].status, rows(rt)[row].last_error) == (
        "cancelled",
        "step removed from config",
    )
    assert smtp.messages == []
    # nothing is left to send, so the cadence counts as complete and on_complete applies
    # (outbound: recycle to the callback list) instead of the lead waiting forever
    from leadflow.pipeline import stages
    from models.tables import CALLBACKS

    later = T0 + timedelta(seconds=2)
    with session_scope(rt.engine) as session:
        stages.advance_batch(session.connection(), changed, (_lead, _lead), now=later)
    with rt.engine.connect() as conn:
        lead = conn.execute(
            select(LEADS.c.status, LEADS.c.cadence).where(LEADS.c.id == _lead)
        ).one()
        reasons = conn.execute(select(CALLBACKS.c.reason)).scalars().all()
    assert tuple(lead) == ("callback", None)
    assert reasons == ["no response to outbound cadence"]


def test_a_changed_template_is_used_from_the_next_send(
    rt: Runtime, smtp: FaultSmtpServer, at_value_step: tuple[int, int]
) -> None:
    _lead, row = at_value_step
    steps = [
        {"id": "value", "template": "case_study", "delay_business_days": 3}
        if s["id"] == "value"
        else s
        for s in _steps()
    ]
    changed = with_smtp(variant(rt, cadences__outbound__steps=steps), smtp.port)

    deliver_all_rows(changed, now=T0)

    after = rows(rt)[row]
    assert (after.status, after.template, after.variant) == ("sent", "case_study", None)
    [message] = smtp.messages
    assert message.parsed()["Subject"] == "How a SaaS team cut follow-up time in half"


def test_a_step_inserted_after_the_current_one_comes_next(
    rt: Runtime, smtp: FaultSmtpServer, at_value_step: tuple[int, int]
) -> None:
    lead, row = at_value_step
    steps = _steps()
    steps.insert(2, {"id": "extra", "template": "breakup", "delay_days": 1})
    changed = with_smtp(variant(rt, cadences__outbound__steps=steps), smtp.port)

    deliver_all_rows(changed, now=T0)

    after = rows(rt)
    assert after[row].status == "sent"
    [following] = [r for r in after.values() if r.lead_id == lead and r.status == "pending"]
    assert (following.step, following.due_at) == ("extra", T0 + timedelta(days=1))


# --- stop conditions --------------------------------------------------------------------------


def test_a_reply_cancels_the_pending_cadence_rows(rt: Runtime, smtp: FaultSmtpServer) -> None:
    lead = enroll(rt, "ada@example.com")
    due_now = queue(rt, lead, "value")
    later = queue(rt, lead, "proof", due=T0 + timedelta(days=7))
    with rt.engine.begin() as conn:
        record_events(conn, [EventIn(lead, "replied", T0)], stop_on=rt.stop_on, now=T0)

    out = deliver_all_rows(with_smtp(rt, smtp.port), now=T0)

    assert out.claimed == 0
    after = rows(rt)
    assert {(after[i].status, after[i].last_error) for i in (due_now, later)} == {
        ("cancelled", "stopped: replied")
    }
    assert smtp.messages == []
    with rt.engine.connect() as conn:
        assert conn.execute(select(LEADS.c.cadence).where(LEADS.c.id == lead)).scalar() is None
        assert conn.execute(select(EVENTS.c.type)).scalars().all() == ["replied"]


def test_leaving_the_stage_cancels_the_pending_cadence_rows(rt: Runtime) -> None:
    lead = enroll(rt, "ada@example.com", score=35.0)
    row = queue(rt, lead, "value")
    with rt.engine.begin() as conn:
        manual_move(conn, rt, lead, "qualified", reason="call went well", now=T0, actor="test")

    assert (rows(rt)[row].status, rows(rt)[row].last_error) == (
        "cancelled",
        "stopped: stage changed",
    )


def test_a_row_whose_lead_left_the_stage_is_cancelled_at_claim_time(
    rt: Runtime, smtp: FaultSmtpServer
) -> None:
    lead = enroll(rt, "ada@example.com")
    row = queue(rt, lead, "value")
    with rt.engine.begin() as conn:  # e.g. an edit that bypassed the stage engine
        conn.execute(update(LEADS).where(LEADS.c.id == lead).values(stage="meeting"))

    out = deliver_all_rows(with_smtp(rt, smtp.port), now=T0)

    assert dict(out.cancelled) == {"stopped: stage changed": 1}
    assert (rows(rt)[row].status, rows(rt)[row].last_error) == (
        "cancelled",
        "stopped: stage changed",
    )
    assert smtp.messages == []
