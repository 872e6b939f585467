"""A tick's batches share one ``DeliverySession``: one SMTP pool whose connections stay open
from batch to batch, one event loop, one database thread, one building helper. Each batch is
still claimed and recorded by itself, and nothing is started when nothing is due."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from functools import partial
from types import TracebackType
from typing import Any

import pytest
from conftest import T0
from smtp_faults import FaultSmtpServer
from sqlalchemy import select
from test_delivery_faults import queue_intros, same

from leadflow import delivery, engine
from leadflow.delivery import DeliverySession, smtp_transport_factory
from leadflow.mail.transport import MemoryTransport
from leadflow.runtime import Runtime
from models.tables import OUTBOX


@pytest.fixture
def smtp() -> Iterator[FaultSmtpServer]:
    with FaultSmtpServer() as server:
        yield server


def batched(rt: Runtime, *, batch_size: int, port: int | None = None) -> Runtime:
    update: dict[str, Any] = {"batch_size": batch_size}
    if port is not None:
        update |= {"smtp_host": "127.0.0.1", "smtp_port": port}
    return Runtime(
        settings=rt.settings.model_copy(update=update), loaded=rt.loaded, engine=rt.engine
    )


class CountingTransport(MemoryTransport):
    """A memory transport that counts how often it is opened and closed."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = self.closed = 0

    async def __aenter__(self) -> CountingTransport:
        self.opened += 1
        await super().__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.closed += 1
        await super().__aexit__(exc_type, exc, tb)


def test_the_batches_of_a_tick_go_over_one_smtp_pool(rt: Runtime, smtp: FaultSmtpServer) -> None:
    sender = batched(rt, batch_size=3, port=smtp.port)
    emails = [f"pool{n}@d{n % 3}.example" for n in range(8)]
    queue_intros(sender, emails)

    out, batches = engine.deliver_all(
        sender, now=T0, kind="cadence", transport=smtp_transport_factory(sender)
    )

    assert batches == 3
    assert (out.claimed, dict(out.statuses)) == (8, {"sent": 8})
    assert sorted(smtp.delivered_to()) == sorted(emails)
    # one pool for the three batches: at most smtp_concurrency (4) connections, not 4 per batch
    assert 1 <= smtp.connections <= sender.settings.smtp_concurrency
    with sender.engine.connect() as conn:
        statuses = conn.execute(select(OUTBOX.c.status).where(OUTBOX.c.step == "intro")).all()
    assert Counter(status for (status,) in statuses) == Counter({"sent": 8})


def test_a_session_opens_its_transport_once_and_closes_it_at_the_end(rt: Runtime) -> None:
    sender = batched(rt, batch_size=2)
    queue_intros(sender, [f"s{n}@example.com" for n in range(5)])
    memory = CountingTransport()
    made: list[CountingTransport] = []

    def factory() -> CountingTransport:
        made.append(memory)
        return memory

    with DeliverySession(sender, now=T0, transport=factory) as session:
        outcomes = [
            session.deliver(r, kind="cadence")
            for r in engine.outbox_ranges(sender, now=T0, kind="cadence")
        ]
        assert (memory.opened, memory.closed) == (1, 0)

    assert (len(made), memory.opened, memory.closed) == (1, 1, 1)
    assert [o.statuses["sent"] for o in outcomes] == [2, 2, 1]
    assert sorted(o.recipient for o in memory.sent) == [f"s{n}@example.com" for n in range(5)]


def test_a_session_with_nothing_due_starts_nothing(rt: Runtime) -> None:
    def factory() -> MemoryTransport:
        raise AssertionError("no transport is needed when nothing is due")

    out, batches = engine.deliver_all(rt, now=T0, kind="cadence", transport=factory)

    assert (batches, out.claimed, dict(out.statuses)) == (0, 0, {})
    with DeliverySession(rt, now=T0, transport=factory) as session:
        assert session.deliver((1, 10**6), kind="cadence").claimed == 0


def built_by_helper(items: Any) -> list[str]:
    """Stands in for the helper's building: each row's error names the process that built it."""
    return [f"built by process {os.getpid()}"] * len(items)


def test_one_helper_builds_for_every_batch_of_a_session(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper is forked once, by the first batch, and serves the later batches too (each
    batch builds its first chunk here: nothing is on the wire yet to overlap with)."""
    if threading.active_count() != 1:
        pytest.skip("a helper is forked only from a process without other threads")
    monkeypatch.setattr(delivery, "CHUNK", 4)
    monkeypatch.setattr(delivery, "FIRST_CHUNK", 4)
    monkeypatch.setattr(delivery, "HELPER_MIN", 4)
    monkeypatch.setattr(delivery, "_compose_chunk", built_by_helper)
    sender = batched(rt, batch_size=12)
    queue_intros(sender, [f"h{n}@d{n % 4}.example" for n in range(30)])
    memory = MemoryTransport()

    out, batches = engine.deliver_all(
        sender, now=T0, kind="cadence", transport=partial(same, memory)
    )

    with sender.engine.connect() as conn:
        rows = conn.execute(
            select(OUTBOX.c.id, OUTBOX.c.status, OUTBOX.c.last_error)
            .where(OUTBOX.c.step == "intro")
            .order_by(OUTBOX.c.id)
        ).all()
    helpers = {error for _id, status, error in rows if status == "failed"}
    assert batches == 3
    # chunks of 4: batch 1 and 2 build 4 here and 8 in the helper, batch 3 (6 rows) 4 and 2
    assert (out.statuses["sent"], out.render_failed, len(memory.sent)) == (12, 18, 12)
    assert len(helpers) == 1 and helpers != {f"render failed: built by process {os.getpid()}"}
    assert [status for _id, status, _error in rows] == (["sent"] * 4 + ["failed"] * 8) * 2 + [
        "sent"
    ] * 4 + ["failed"] * 2
