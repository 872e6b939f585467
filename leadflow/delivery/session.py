"""What the batches of one run share, and the entry points: a session, one batch, and the
reconciler of claims a dead run left."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack, suppress
from datetime import datetime
from types import TracebackType
from typing import NamedTuple

from leadflow.delivery import batch
from leadflow.delivery.compose import Composer
from leadflow.delivery.helper import composing_helper
from leadflow.delivery.outcome import DeliveryOutcome
from leadflow.delivery.smtp import TransportFactory
from leadflow.eventloop import loop_factory
from leadflow.mail.rendering import TemplateRenderError
from leadflow.mail.transport import Transport
from leadflow.outbox.claimed import ClaimOutcome
from leadflow.outbox.reconcile import reconcile
from leadflow.pipeline.batching import IdRange
from leadflow.resource import Resource
from leadflow.runtime import Runtime
from models.db import session_scope


class _Shared(NamedTuple):
    runner: asyncio.Runner
    composer: Composer
    transport: Transport
    db: Executor


class DeliverySession(Resource):
    """What the batches of one run share: an event loop, one SMTP pool (its connections stay
    open from one batch to the next), the database thread and the building helper.

    ``deliver`` runs batches (one per id range, each with its own claims and records) as
    ``deliver_batch`` runs one; the session saves what every batch would otherwise set up
    again (measured, 5,000 messages in batches of 2,000: connections and a cold helper cost
    each batch ~30-60 ms of an idle wire). Everything is started by the first batch that has
    rows to send, so a session with nothing due costs one claim per range.
    """

    def __init__(self, rt: Runtime, *, now: datetime, transport: TransportFactory) -> None:
        rt.settings.require_real_secret()
        self._rt, self._now, self._factory = rt, now, transport
        self._resources = ExitStack()
        self._helper: Executor | None = None
        self._started: _Shared | None = None

    def close(self) -> None:
        self._resources.close()

    def deliver(self, ranges: Sequence[IdRange], *, kind: str | None = None) -> DeliveryOutcome:
        """Claim the due messages of each id range (one batch each, in order), send them,
        record the outcomes; returns the outcome of them all.

        The batches follow one another without a pause: once a batch is all claimed and its
        queue runs short, the next one's first rows are claimed and built while the last
        chunks of this one are on the wire (a pause at each batch's start and end, with few
        messages on the wire and the helper cold, cost ~5% of the send rate)."""
        out = DeliveryOutcome()
        books = deque(batch.Books(self._rt, r, now=self._now, kind=kind) for r in ranges)
        first = batch.first_claim(books, out)
        if first is None:
            return out
        more = batch.more_may_be_due(first, batch.FIRST_CLAIM) or len(books) > 1
        shared = self._started or self._start(
            first, batch.CLAIM_SLICE if more else len(first.claimed)
        )
        batch_run = batch.BatchRun(
            list(books), shared.transport, shared.composer, self._helper, shared.db, out
        )

        async def run() -> None:
            batch_run.absorb(first, batch.FIRST_CLAIM, claim_next=False)
            await batch_run.run()

        try:
            shared.runner.run(run())
        finally:
            self._helper = batch_run.helper  # None if it died: later deliveries build here
        return out

    def _start(self, first: ClaimOutcome, expected: int) -> _Shared:
        """Start the shared parts (for the first batch with rows to send, ``first`` its first
        claim, about ``expected`` messages coming)."""
        rt = self._rt
        composer = Composer.for_run(rt, now=self._now)
        names = {item.template for item in first.claimed}
        _compile_ahead(rt, names)
        self._helper = self._resources.enter_context(composing_helper(composer, expected, names))
        db = self._resources.enter_context(
            ThreadPoolExecutor(1, thread_name_prefix="leadflow-outbox")
        )
        runner = self._resources.enter_context(
            asyncio.Runner(loop_factory=loop_factory(rt.settings.event_loop))
        )
        transport = self._factory()
        runner.run(transport.__aenter__())

        def close_pool(
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None:
            runner.run(transport.__aexit__(exc_type, exc, tb))

        self._resources.push(close_pool)
        self._started = _Shared(runner, composer, transport, db)
        return self._started


def _compile_ahead(rt: Runtime, names: set[str]) -> None:
    """Compile the templates of the first claim before the first chunk is built (they stay
    compiled for the rest of the run). Broken templates are left for building to report,
    message by message."""
    for name in names:
        with suppress(TemplateRenderError):
            rt.templates.compile(name)


def reconcile_stale(rt: Runtime, *, now: datetime) -> list[int]:
    with session_scope(rt.engine) as session:
        return reconcile(session.connection(), now=now)


def deliver_batch(
    rt: Runtime,
    id_range: IdRange,
    *,
    now: datetime,
    transport: TransportFactory,
    kind: str | None = None,
) -> DeliveryOutcome:
    """Claim the due messages of ``id_range``, send them over one pool, record the outcomes.

    A missing signing key raises ``SettingsError`` before anything is claimed: it is a
    deployment problem, and caught per message it would fail every due row for good.
    """
    with DeliverySession(rt, now=now, transport=transport) as session:
        return session.deliver([id_range], kind=kind)
