"""SMTP replies drive the outbox (P3), through the real path: ``deliver_batch`` claims, renders
and sends with ``SmtpTransport`` to the fault-injecting aiosmtpd server of ``smtp_faults.py``
(the recipient's local part picks the fault), then records what the server said.

Also here: bounded retries, a bounded run time against a stalling server (P9), header
injection through the full tick, and a missing signing key that must change nothing (P8).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import T0, LeadFactory, database_url, insert_lead
from seeding import enrolled_lead, step_row
from smtp_faults import FaultSmtpServer
from sqlalchemy import Row, select

from leadflow.delivery import batch, chunks, helper
from leadflow.delivery import smtp as smtp_wiring
from leadflow.delivery.compose import Composer
from leadflow.delivery.outcome import DeliveryOutcome
from leadflow.delivery.session import deliver_batch
from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.mail.transport import MemoryTransport, SmtpTransport
from leadflow.outbox.record import BACKOFF, MAX_ATTEMPTS, THROTTLE_BACKOFF
from leadflow.pipeline.engine import tick
from leadflow.pipeline.suppression import suppress_many
from leadflow.runtime import Runtime
from leadflow.settings import PLACEHOLDER_SECRET, Settings, SettingsError
from models.db import session_scope
from models.tables import EVENTS, LEADS, OUTBOX, SUPPRESSIONS, Lead, OutboundMessage

DOMAIN = "faults.example"
SMTP_TIMEOUT = 0.5


class Pauses:
    """Stands in for the transport's ``asyncio.sleep``: records throttle pauses, waits none."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def smtp() -> Iterator[FaultSmtpServer]:
    with FaultSmtpServer() as server:
        yield server


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> Pauses:
    """``smtp_transport_factory`` still builds the transport from the settings; only its
    throttle pauses are recorded instead of slept."""
    recorder = Pauses()
    monkeypatch.setattr(smtp_wiring, "SmtpTransport", partial(SmtpTransport, sleep=recorder))
    # These tests run retries microseconds apart that are minutes apart in production, so the
    # process-wide pacing bucket (per_minute, tested in test_transport) would rightly space them
    # a few milliseconds apart; each transport paces on its own bucket here instead.
    monkeypatch.setattr(smtp_wiring, "shared_bucket", lambda host, port, per_minute: None)
    return recorder


@pytest.fixture
def loop_choice() -> str:
    """The event loop deliveries run on (LEADFLOW_EVENT_LOOP); the matrix runs on both."""
    return "auto"


@pytest.fixture
def sender(rt: Runtime, smtp: FaultSmtpServer, loop_choice: str) -> Runtime:
    settings = rt.settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_timeout": SMTP_TIMEOUT,
            "event_loop": loop_choice,
        }
    )
    return Runtime(settings=settings, loaded=rt.loaded, engine=rt.engine)


def enroll(rt: Runtime, email: str, **fields: Any) -> int:
    """A lead in stage ``prospect`` working cadence ``outbound`` (not due for the engine)."""
    return insert_lead(rt.engine, enrolled_lead(email, now=T0, **fields))


def queue(rt: Runtime, lead_id: int, email: str, step: str, due: datetime) -> int:
    with session_scope(rt.engine) as session:
        message = OutboundMessage(**step_row(lead_id, email, step, due=due, now=T0))
        session.add(message)
        session.flush()
        assert message.id is not None
        return message.id


def row(rt: Runtime, row_id: int) -> Row[Any]:
    with rt.engine.connect() as conn:
        return conn.execute(select(OUTBOX).where(OUTBOX.c.id == row_id)).one()


def deliver(rt: Runtime, row_id: int, now: datetime) -> DeliveryOutcome:
    return deliver_batch(rt, (row_id, row_id), now=now, transport=smtp_transport_factory(rt))


# --- the fault matrix ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    local: str  # the recipient's local part: the fault (see smtp_faults.py)
    status: str
    code: int | None = None
    reason: str | None = None  # defer_reason
    wait: timedelta | None = None  # due_at - now, for deferred rows
    accepted: int = 0  # messages the server acknowledged
    unacknowledged: int = 0  # payloads the server got without replying
    paused: tuple[float, ...] = ()  # throttle pauses the transport asked for


RETRY = BACKOFF[0]
MATRIX = [
    Case("ok", "sent", 250, accepted=1),
    Case("code421", "deferred", 421, "smtp 421", THROTTLE_BACKOFF, paused=(1.0,)),
    Case("code454", "deferred", 454, "smtp 454", THROTTLE_BACKOFF, paused=(1.0,)),
    Case("code451", "deferred", 451, "smtp 451", RETRY),
    Case("code452", "deferred", 452, "smtp 452", RETRY),
    Case("data451", "deferred", 451, "smtp 451", RETRY),
    Case("drop-before-data", "deferred", None, "smtp temporary failure", RETRY),
    Case("stall-before-data", "deferred", None, "smtp temporary failure", RETRY),
    Case("code550", "bounced", 550),
    Case("data554", "failed", 554),
    Case("drop-after-data", "unknown", None, unacknowledged=1),
    Case("stall", "unknown", None, unacknowledged=1),
]


@pytest.mark.parametrize("loop_choice", ["uvloop", "asyncio"])
@pytest.mark.parametrize("case", MATRIX, ids=[c.local for c in MATRIX])
def test_smtp_reply_decides_the_rows_fate(
    case: Case, sender: Runtime, smtp: FaultSmtpServer, pauses: Pauses
) -> None:
    email = f"{case.local}@{DOMAIN}"
    lead = enroll(sender, email)
    due = queue(sender, lead, email, "intro", T0)
    later = queue(sender, lead, email, "proof", T0 + timedelta(days=7))

    out = deliver(sender, due, T0)

    assert out.claimed == 1
    assert dict(out.statuses) == {case.status: 1}
    got = row(sender, due)
    assert (got.status, got.smtp_code, got.defer_reason, got.attempts) == (
        case.status,
        case.code,
        case.reason,
        1,
    )
    assert got.due_at == (T0 + case.wait if case.wait else T0)
    assert got.message_id == f"<lf{due}.{lead}.outbound.intro.0@acme-analytics.example>"
    assert (len(smtp.messages), len(smtp.unacknowledged)) == (case.accepted, case.unacknowledged)
    assert tuple(pauses.calls) == case.paused
    with sender.engine.connect() as conn:
        suppressed = conn.execute(select(SUPPRESSIONS.c.email, SUPPRESSIONS.c.reason)).all()
        events = conn.execute(select(EVENTS.c.type, EVENTS.c.message_id, EVENTS.c.source)).all()
        cadence = conn.execute(select(LEADS.c.cadence).where(LEADS.c.id == lead)).scalar()
    if case.status == "bounced":
        assert [tuple(s) for s in suppressed] == [(email, "bounced")]
        assert [tuple(e) for e in events] == [("bounced", due, "smtp")]
        assert (row(sender, later).status, row(sender, later).last_error) == (
            "cancelled",
            "stopped: bounced",
        )
        assert cadence is None
    else:
        assert (suppressed, events, cadence) == ([], [], "outbound")
        assert row(sender, later).status == "pending"


def test_a_message_deferred_max_attempts_times_fails_for_good(
    sender: Runtime, smtp: FaultSmtpServer, pauses: Pauses
) -> None:
    """Each retry waits out its backoff (and the send window); the last 4xx gives up."""
    email = f"code451@{DOMAIN}"
    due = queue(sender, enroll(sender, email), email, "intro", T0)

    attempted_at: list[datetime] = []
    now = T0
    for _ in range(3 * MAX_ATTEMPTS):
        before = row(sender, due).attempts
        deliver(sender, due, now)
        current = row(sender, due)
        if current.attempts > before:
            attempted_at.append(now)
        if current.status != "deferred":
            break
        now = current.due_at

    def ny(day: int, hour: int, minute: int) -> datetime:
        return datetime(2026, 11, day, hour, minute, tzinfo=ZoneInfo("America/New_York"))

    # 5 min, 15 min, 1 h, then 3 h and 8 h, each pushed to the next Tue-Thu 09:00-11:30 window
    assert attempted_at == [
        ny(3, 9, 30),
        ny(3, 9, 35),
        ny(3, 9, 50),
        ny(3, 10, 50),
        ny(4, 9, 0),
        ny(5, 9, 0),
    ]
    final = row(sender, due)
    assert (final.status, final.attempts, final.smtp_code) == ("failed", MAX_ATTEMPTS, 451)
    assert final.last_error.startswith(f"gave up after {MAX_ATTEMPTS} attempts: RCPT TO: 451")
    assert smtp.connections == MAX_ATTEMPTS  # one SMTP session per attempt, none after
    assert smtp.messages == []
    assert pauses.calls == []


def queue_intros(
    rt: Runtime, emails: list[str], *, due: Callable[[int], datetime] = lambda n: T0
) -> list[int]:
    """One lead per address, each with step ``intro`` queued, due at ``due(n)``: the message
    ids, in the order of ``emails``."""
    with session_scope(rt.engine) as session:
        leads = [Lead(**enrolled_lead(email, now=T0)) for email in emails]
        session.add_all(leads)
        session.flush()
        messages = [
            OutboundMessage(**step_row(lead.id or 0, lead.email, "intro", due=due(n), now=T0))
            for n, lead in enumerate(leads)
        ]
        session.add_all(messages)
        session.flush()
        return [m.id or 0 for m in messages]


def test_a_batch_of_several_chunks_records_each_outcome_on_its_own_row(
    sender: Runtime, smtp: FaultSmtpServer, pauses: Pauses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More messages than are built at a time (several chunks over one pool), with a bounce,
    a lost reply, a rejected payload and an address no message can be built for among them:
    every row gets its own outcome and every accepted message its own row."""
    chunk = 20
    monkeypatch.setattr(chunks, "CHUNK", chunk)  # fewer messages, same shape
    count = 2 * chunk + 10
    faults = {7: "code550", chunk + 5: "drop-after-data", count - 2: "data554"}
    unbuildable = chunk + 12
    emails = [
        # five domains keep every one under the per-domain daily cap
        f"{faults.get(n, f'ok{n}') if n != unbuildable else 'two words'}@d{n % 5}.example"
        for n in range(count)
    ]
    ids = queue_intros(sender, emails)

    out = deliver_batch(sender, (ids[0], ids[-1]), now=T0, transport=smtp_transport_factory(sender))

    assert (out.claimed, out.render_failed) == (count, 1)
    assert dict(out.statuses) == {"sent": count - 4, "bounced": 1, "unknown": 1, "failed": 2}
    expected = ["sent"] * count
    for n, status in ((7, "bounced"), (chunk + 5, "unknown"), (count - 2, "failed")):
        expected[n] = status
    expected[unbuildable] = "failed"
    with sender.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(OUTBOX).where(OUTBOX.c.step == "intro"))}
    assert [rows[i].status for i in ids] == expected
    assert rows[ids[unbuildable]].last_error == (
        f"render failed: to_email: invalid email address 'two words@d{unbuildable % 5}.example'"
    )
    by_message_id = {r.message_id: r for r in rows.values()}
    delivered = [(m.recipients, m.parsed()["Message-ID"]) for m in smtp.messages]
    assert len(delivered) == count - 4
    for recipients, message_id in delivered:
        assert by_message_id[message_id].status == "sent"
        assert recipients == (by_message_id[message_id].to_email,)


def test_a_batch_is_claimed_a_slice_at_a_time_in_due_order_and_each_row_sent_once(
    sender: Runtime, smtp: FaultSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first slice is claimed before the first SMTP command, the next ones while earlier
    messages are on the wire; every slice takes the next due rows (earliest first), the
    suppressed ones included, until a slice comes back short."""
    monkeypatch.setattr(batch, "FIRST_CLAIM", 4)
    monkeypatch.setattr(batch, "CLAIM_SLICE", 6)
    monkeypatch.setattr(chunks, "CHUNK", 5)
    claims: list[tuple[int | None, list[int], int]] = []
    real_claim = batch.claim_batch

    def spied(*args: Any, **kwargs: Any) -> Any:
        outcome = real_claim(*args, **kwargs)
        claims.append((kwargs["limit"], [c.id for c in outcome.claimed], outcome.suppressed))
        return outcome

    monkeypatch.setattr(batch, "claim_batch", spied)
    emails = [f"ok{n}@d{n % 5}.example" for n in range(23)]
    # the later the row, the earlier it is due: claims go by due time, not by id
    ids = queue_intros(sender, emails, due=lambda n: T0 - timedelta(minutes=n))
    with session_scope(sender.engine) as session:
        suppress_many(
            session.connection(), [(emails[3], "unsubscribed"), (emails[20], "bounced")], now=T0
        )

    out = deliver_batch(sender, (ids[0], ids[-1]), now=T0, transport=smtp_transport_factory(sender))

    in_due_order = ids[::-1]
    assert len(claims) > 1  # several slices, each the next due rows
    claimed_in_order = [i for _limit, claimed, _suppressed in claims for i in claimed]
    assert claimed_in_order == [i for i in in_due_order if i not in (ids[3], ids[20])]
    assert (out.claimed, out.suppressed, dict(out.statuses)) == (21, 2, {"sent": 21})
    with sender.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(OUTBOX).where(OUTBOX.c.step == "intro"))}
    assert sorted(r.status for r in rows.values()) == ["sent"] * 21 + ["suppressed"] * 2
    delivered = sorted(m.parsed()["Message-ID"] for m in smtp.messages)
    assert delivered == sorted(r.message_id for r in rows.values() if r.status == "sent")
    assert len(set(delivered)) == 21


def test_a_run_that_fails_mid_batch_gives_back_the_rows_it_never_tried(
    sender: Runtime, smtp: FaultSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error while building chunk 3: what was sent is recorded, what was
    claimed but never handed to SMTP is released (due now, the attempt not counted), and the
    next run sends exactly those."""
    monkeypatch.setattr(batch, "FIRST_CLAIM", 4)
    monkeypatch.setattr(batch, "CLAIM_SLICE", 6)
    monkeypatch.setattr(chunks, "CHUNK", 5)
    emails = [f"ok{n}@d{n % 5}.example" for n in range(23)]
    ids = queue_intros(sender, emails)
    compose = Composer.__call__
    broken = {"on": True}

    def bug_on_the_twelfth(self: Composer, item: Any) -> Any:
        if broken["on"] and item.to_email == emails[11]:
            raise RuntimeError("a bug")
        return compose(self, item)

    monkeypatch.setattr(Composer, "__call__", bug_on_the_twelfth)
    transport = smtp_transport_factory(sender)
    with pytest.raises(RuntimeError, match="a bug"):
        deliver_batch(sender, (ids[0], ids[-1]), now=T0, transport=transport)

    with sender.engine.connect() as conn:
        after_failure = {
            r.id: r for r in conn.execute(select(OUTBOX).where(OUTBOX.c.step == "intro"))
        }
    # chunks of 5: two sent, the third (messages 11-15) failed while being built
    assert [after_failure[i].status for i in ids[:10]] == ["sent"] * 10
    assert len(smtp.messages) == 10
    released = [after_failure[i] for i in ids[10:]]
    # claimed ones are given back; how many slices were claimed by then depends on timing
    assert {(r.status, r.attempts, r.due_at, r.claimed_at, r.defer_reason) for r in released} <= {
        ("deferred", 0, T0, None, "released: the run stopped before sending it"),
        ("pending", 0, T0, None, None),  # not claimed yet
    }
    assert [after_failure[i].status for i in ids[10:15]] == ["deferred"] * 5

    broken["on"] = False
    again = deliver_batch(sender, (ids[0], ids[-1]), now=T0, transport=transport)

    assert (again.claimed, dict(again.statuses)) == (13, {"sent": 13})
    delivered = [m.parsed()["Message-ID"] for m in smtp.messages]
    assert len(delivered) == 23 and len(set(delivered)) == 23


@pytest.mark.parametrize("total", [0, 1, 15, 50, 100, 999, 2000, 10_000])
@pytest.mark.parametrize("final", [True, False])
def test_chunks_cover_every_claimed_row_once_and_start_small(total: int, final: bool) -> None:
    """Every claimed row is in exactly one chunk, no chunk is bigger than the largest, and
    the first one is small, so the first message reaches the wire early."""
    sizes = chunks.chunk_sizes(total, final=final)

    assert sum(sizes) == total
    assert all(0 < size <= chunks.CHUNK for size in sizes)
    assert sizes[:1] == ([min(total, chunks.FIRST_CHUNK)] if total else [])


def same(transport: MemoryTransport) -> MemoryTransport:
    return transport


def test_a_big_batch_is_built_by_a_helper_process_into_the_same_messages(
    rt: Runtime, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built in a helper process (a chunk at a time, ahead of the wire) or here, the same rows
    give the same bytes, outcomes and records, render failures included."""
    monkeypatch.setattr(chunks, "CHUNK", 8)
    (tmp_path / "b").mkdir()
    other = Runtime.open(
        settings.model_copy(
            update={"home": tmp_path / "b", "database_url": database_url(tmp_path / "b")}
        )
    )
    built_here = Counter[str]()  # messages built in this process, by run (not in a helper)
    compose = Composer.__call__

    def counted(self: Composer, item: Any) -> Any:
        built_here["helper run" if self.settings is rt.settings else "in-process run"] += 1
        return compose(self, item)

    monkeypatch.setattr(Composer, "__call__", counted)
    emails = [f"{'two words' if n == 13 else f'ok{n}'}@d{n % 5}.example" for n in range(30)]
    runs = []
    try:
        for runtime, helper_min in ((rt, 10), (other, 10**9)):
            monkeypatch.setattr(helper, "HELPER_MIN", helper_min)
            queue_intros(runtime, emails)
            memory = MemoryTransport()
            out = deliver_batch(runtime, (1, 10**6), now=T0, transport=partial(same, memory))
            with runtime.engine.connect() as conn:
                rows = conn.execute(
                    select(OUTBOX.c.status, OUTBOX.c.message_id, OUTBOX.c.last_error)
                    .where(OUTBOX.c.step == "intro")
                    .order_by(OUTBOX.c.id)
                ).all()
            runs.append((out.as_dict(), [tuple(r) for r in rows], memory.sent))
    finally:
        other.close()

    (helper_out, helper_rows, helper_sent), (here_out, here_rows, here_sent) = runs
    # the helper run builds its first chunk here (nothing is on the wire to overlap with yet)
    assert built_here == Counter({"in-process run": 30, "helper run": 8})
    assert helper_out == here_out
    assert helper_out["render_failed"] == 1 and helper_out["sent"] == 29
    assert helper_rows == here_rows
    assert [(o.key, o.recipient, o.message) for o in helper_sent] == [
        (o.key, o.recipient, o.message) for o in here_sent
    ]


def die(items: Any) -> None:
    os._exit(3)


def test_a_helper_that_dies_leaves_the_building_to_this_process(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunks, "CHUNK", 8)
    monkeypatch.setattr(helper, "HELPER_MIN", 10)
    monkeypatch.setattr(helper, "compose_chunk", die)  # the helper process runs this one
    emails = [f"ok{n}@d{n % 5}.example" for n in range(20)]
    queue_intros(rt, emails)
    memory = MemoryTransport()

    out = deliver_batch(rt, (1, 10**6), now=T0, transport=partial(same, memory))

    assert (out.claimed, dict(out.statuses), out.render_failed) == (20, {"sent": 20}, 0)
    assert sorted(o.recipient for o in memory.sent) == sorted(emails)


def priority_of_builder(items: Any) -> list[str]:
    return [f"built at priority {os.getpriority(os.PRIO_PROCESS, 0)}"] * len(items)


def test_the_helper_builds_at_a_lower_cpu_priority_than_the_sender(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper works ahead of the wire, so it gives way to the SMTP conversation."""
    monkeypatch.setattr(chunks, "CHUNK", 8)
    monkeypatch.setattr(helper, "HELPER_MIN", 10)
    monkeypatch.setattr(helper, "compose_chunk", priority_of_builder)
    queue_intros(rt, [f"ok{n}@d{n % 5}.example" for n in range(24)])

    out = deliver_batch(rt, (1, 10**6), now=T0, transport=partial(same, MemoryTransport()))

    with rt.engine.connect() as conn:
        errors = conn.execute(select(OUTBOX.c.last_error).where(OUTBOX.c.step == "intro")).all()
    expected = min(os.getpriority(os.PRIO_PROCESS, 0) + helper.HELPER_NICE, 19)
    # the first chunk (8) is built and sent here; the helper "builds" the other 16
    assert (out.render_failed, out.statuses["sent"]) == (16, 8)
    assert Counter(error for (error,) in errors) == Counter(
        {f"built at priority {expected}": 16, None: 8}
    )


# --- header safety through the whole tick -------------------------------------------------


def test_lead_data_cannot_add_headers_or_template_code(
    sender: Runtime, smtp: FaultSmtpServer, add_lead: LeadFactory
) -> None:
    lead = add_lead(
        industry="saas",
        company_size=100,
        title="CTO",
        country="US",
        first_name="Eve\r\nBcc: x@evil.example",
        company="{{ 7*7 }}",
    )
    transport = smtp_transport_factory(sender)
    tick(sender, now=T0, transport=transport)
    tick(sender, now=T0 + timedelta(days=1), transport=transport)

    [received] = smtp.messages
    assert received.recipients == (f"lead{lead}@example.com",)
    message = received.parsed()
    assert message.get_all("Bcc") is None
    assert b"\r\nBcc:" not in received.data.split(b"\r\n\r\n", 1)[0]
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == (
        "Eve Bcc: x@evil.example",
        f"lead{lead}@example.com",
    )
    text = message.get_body(("plain",))
    assert text is not None
    assert "familiar at {{ 7*7 }}, " in text.get_content()
    html = message.get_body(("html",))
    assert html is not None
    assert "{{ 7*7 }}" in html.get_content()


# --- P8: a missing signing key changes nothing ------------------------------------------


def test_a_placeholder_secret_outside_demo_mode_claims_nothing(
    sender: Runtime, smtp: FaultSmtpServer
) -> None:
    production = Runtime(
        settings=sender.settings.model_copy(update={"demo": False}),
        loaded=sender.loaded,
        engine=sender.engine,
    )
    assert production.settings.secret_key.get_secret_value() == PLACEHOLDER_SECRET
    email = f"ok@{DOMAIN}"
    due = queue(production, enroll(production, email), email, "intro", T0)

    with pytest.raises(SettingsError, match="LEADFLOW_SECRET_KEY is the demo placeholder"):
        deliver(production, due, T0)

    assert (row(production, due).status, row(production, due).attempts) == ("pending", 0)
    assert smtp.connections == 0
