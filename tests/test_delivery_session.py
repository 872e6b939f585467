"""A tick's batches share one ``DeliverySession``: one SMTP pool whose connections stay open
from batch to batch, one event loop, one database thread, one building helper. Each batch is
still claimed and recorded by itself, and nothing is started when nothing is due."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import pytest
from conftest import T0
from smtp_faults import FaultSmtpServer
from sqlalchemy import select
from test_delivery_faults import die, queue_intros, same

from leadflow.delivery import batch as delivery_batch
from leadflow.delivery import chunks, helper
from leadflow.delivery.session import DeliverySession
from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.mail.transport import MemoryTransport, Outgoing, SendResult
from leadflow.pipeline import engine
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

    async def open(self) -> None:
        self.opened += 1
        await super().open()

    async def close(self) -> None:
        self.closed += 1
        await super().close()


def test_the_batches_of_a_tick_go_over_one_smtp_pool(rt: Runtime, smtp: FaultSmtpServer) -> None:
    sender = batched(rt, batch_size=3, port=smtp.port)
    emails = [f"pool{n}@d{n % 3}.example" for n in range(8)]
    queue_intros(sender, emails)

    out = engine.deliver_due(
        sender, now=T0, kind="cadence", transport=smtp_transport_factory(sender)
    )

    assert out.batches == 3
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
            session.deliver([r], kind="cadence")
            for r in engine.outbox_ranges(sender, now=T0, kind="cadence")
        ]
        assert (memory.opened, memory.closed) == (1, 0)

    assert (len(made), memory.opened, memory.closed) == (1, 1, 1)
    assert [o.statuses["sent"] for o in outcomes] == [2, 2, 1]
    assert sorted(o.recipient for o in memory.sent) == [f"s{n}@example.com" for n in range(5)]


def test_a_session_with_nothing_due_starts_nothing(rt: Runtime) -> None:
    def factory() -> MemoryTransport:
        raise AssertionError("no transport is needed when nothing is due")

    out = engine.deliver_due(rt, now=T0, kind="cadence", transport=factory)

    assert (out.batches, out.claimed, dict(out.statuses)) == (0, 0, {})
    with DeliverySession(rt, now=T0, transport=factory) as session:
        assert session.deliver([(1, 10**6)], kind="cadence").claimed == 0


def built_by_helper(items: Any) -> list[str]:
    """Stands in for the helper's building: each row's error names the process that built it."""
    return [f"built by process {os.getpid()}"] * len(items)


def test_one_helper_builds_for_every_batch_of_a_session(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper is started once, by the first batch, and builds for the later batches too:
    only the very first chunk is built here (nothing is on the wire yet to overlap with)."""
    monkeypatch.setattr(chunks, "CHUNK", 4)
    monkeypatch.setattr(chunks, "FIRST_CHUNK", 4)
    monkeypatch.setattr(helper, "HELPER_MIN", 4)
    monkeypatch.setattr(helper, "compose_chunk", built_by_helper)
    sender = batched(rt, batch_size=12)
    queue_intros(sender, [f"h{n}@d{n % 4}.example" for n in range(30)])
    memory = MemoryTransport()

    out = engine.deliver_due(sender, now=T0, kind="cadence", transport=partial(same, memory))

    with sender.engine.connect() as conn:
        rows = conn.execute(
            select(OUTBOX.c.status, OUTBOX.c.last_error)
            .where(OUTBOX.c.step == "intro")
            .order_by(OUTBOX.c.id)
        ).all()
    builders = {error for status, error in rows if status == "failed"}
    assert out.batches == 3
    assert (out.statuses["sent"], out.render_failed, len(memory.sent)) == (4, 26, 4)
    assert [status for status, _error in rows] == ["sent"] * 4 + ["failed"] * 26
    assert len(builders) == 1 and builders != {f"render failed: built by process {os.getpid()}"}


class ChunkSizes(MemoryTransport):
    """A memory transport that notes the size of every chunk it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    async def send_batch(self, items: Sequence[Outgoing]) -> list[SendResult]:
        self.sizes.append(len(items))
        return await super().send_batch(items)


def test_batches_follow_one_another_in_full_chunks_each_claimed_by_itself(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ramp down and up again between the batches of a session: the chunks stay full
    across the seams; every claim still takes rows of one batch only."""
    monkeypatch.setattr(chunks, "CHUNK", 4)
    monkeypatch.setattr(chunks, "FIRST_CHUNK", 4)
    monkeypatch.setattr(delivery_batch, "CLAIM_SLICE", 5)
    sender = batched(rt, batch_size=12)
    ids = queue_intros(sender, [f"c{n}@d{n % 4}.example" for n in range(30)])
    ranges = engine.outbox_ranges(sender, now=T0, kind="cadence")
    spy = ChunkSizes()

    out = engine.deliver_due(sender, now=T0, kind="cadence", transport=lambda: spy)

    assert (out.batches, out.claimed, dict(out.statuses)) == (3, 30, {"sent": 30})
    assert spy.sizes == [4] * 7 + [2]
    assert sorted(int(item.key) for item in spy.sent) == sorted(ids)
    with sender.engine.connect() as conn:
        claims = conn.execute(
            select(OUTBOX.c.claim_token, OUTBOX.c.id).where(OUTBOX.c.step == "intro")
        ).all()
    by_claim: dict[str, list[int]] = {}
    for token, row_id in claims:
        by_claim.setdefault(token, []).append(row_id)
    batch_of = {
        row_id: n for n, (low, high) in enumerate(ranges) for row_id in range(low, high + 1)
    }
    assert all(len({batch_of[row_id] for row_id in rows}) == 1 for rows in by_claim.values())
    # batches of 12, 12 and 6 rows: the first claim (FIRST_CLAIM, 256) takes all of the first
    # batch, the later claims 5 rows at most (CLAIM_SLICE)
    assert sorted(len(rows) for rows in by_claim.values()) == [1, 2, 5, 5, 5, 12]


def test_a_helper_that_died_in_one_delivery_is_not_used_by_the_next(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper dies during the session's first delivery: that delivery builds the rest
    here, and the next delivery of the same session does not hand work to the dead helper
    (a broken pool refuses new work at once, which would fail the batch)."""
    monkeypatch.setattr(chunks, "CHUNK", 4)
    monkeypatch.setattr(chunks, "FIRST_CHUNK", 4)
    monkeypatch.setattr(helper, "HELPER_MIN", 4)
    monkeypatch.setattr(helper, "compose_chunk", die)  # the helper process runs this one
    sender = batched(rt, batch_size=10)
    emails = [f"d{n}@d{n % 4}.example" for n in range(20)]
    queue_intros(sender, emails)
    first, second = engine.outbox_ranges(sender, now=T0, kind="cadence")
    memory = MemoryTransport()

    with DeliverySession(sender, now=T0, transport=partial(same, memory)) as session:
        outcomes = [session.deliver([r], kind="cadence") for r in (first, second)]

    assert [(o.claimed, dict(o.statuses), o.render_failed) for o in outcomes] == [
        (10, {"sent": 10}, 0),
        (10, {"sent": 10}, 0),
    ]
    assert sorted(o.recipient for o in memory.sent) == sorted(emails)


def test_the_building_helper_loads_no_database_smtp_or_prefect_code() -> None:
    """A helper process imports only what building needs, so it is ready while the first
    chunk is on the wire (importing the whole engine took ~3 s): what it imports, and what
    unpickling claimed rows, the sender and the settings pulls in, stays light."""
    import subprocess
    import sys

    heavy = ("sqlalchemy", "alembic", "aiosmtplib", "aiosmtpd", "prefect", "leadflow.rules")
    probe = (
        "import sys, leadflow.delivery.helper, leadflow.outbox.claimed, "
        "leadflow.config.schema, leadflow.settings\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )

    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert loaded == ""
