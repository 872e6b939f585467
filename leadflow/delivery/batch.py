"""One batch, or several one after another: claims and records overlap the SMTP conversation."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime

from leadflow.delivery import helper as building
from leadflow.delivery.chunks import let_the_wire_move, next_chunk_size, ramp
from leadflow.delivery.compose import Composed, Composer, compose_or_error
from leadflow.delivery.helper import HELPER_AHEAD, Flat, unflatten
from leadflow.delivery.outcome import DeliveryOutcome
from leadflow.mail.transport import SendResult, Transport
from leadflow.outbox.claim import claim_batch
from leadflow.outbox.claimed import Claimed, ClaimOutcome
from leadflow.outbox.reconcile import release_claims
from leadflow.outbox.record import SmtpResult, record_results
from leadflow.pipeline.batching import IdRange
from leadflow.runtime import Runtime
from models.db import session_scope

# --- one batch: claims and records overlap the SMTP conversation ------------------------------
#
# The rows of a batch are claimed a slice at a time: a small first slice before the first SMTP
# command (so the wire starts at once), the next slices on a database thread while earlier ones
# are on the wire. Each chunk's outcomes are recorded on the same thread while the next chunk is
# sent. Claims and records stay in order on that one thread, each in its own transaction; a
# claim still commits before any message of its slice is sent.
FIRST_CLAIM = 256  # rows claimed before the first SMTP command
CLAIM_SLICE = 1000  # rows per later claim


@dataclass(frozen=True)
class Sent:
    """What is kept of a sent message until it is recorded: not the message bytes."""

    item: Claimed
    message_id: str
    subject: str
    result: SendResult


class Books:
    """The database side of one batch (claims and records), called on one thread in order."""

    def __init__(self, rt: Runtime, id_range: IdRange, *, now: datetime, kind: str | None):
        self._rt, self._range, self._now, self._kind = rt, id_range, now, kind

    def claim(self, limit: int) -> ClaimOutcome:
        with session_scope(self._rt.engine) as session:
            return claim_batch(
                session.connection(),
                self._rt,
                self._range,
                now=self._now,
                kind=self._kind,
                limit=limit,
            )

    def release(self, items: Sequence[Claimed]) -> int:
        with session_scope(self._rt.engine) as session:
            return release_claims(session.connection(), [item.id for item in items], now=self._now)

    def record(self, sent: Sequence[Sent], failed: Sequence[tuple[Claimed, str]]) -> Counter[str]:
        rows: list[SmtpResult] = [
            (str(s.result.outcome), s.result.code, s.result.detail, s.message_id, s.subject)
            for s in sent
        ]
        rows += [("failed", None, error, None, None) for _item, error in failed]
        items = [*(s.item for s in sent), *(item for item, _error in failed)]
        if not items:
            return Counter()
        with session_scope(self._rt.engine) as session:
            return record_results(session.connection(), self._rt, items, rows, now=self._now).counts


def more_may_be_due(claim: ClaimOutcome, limit: int) -> bool:
    """A claim that looked at ``limit`` rows may have left due rows behind it. (Every row it
    looked at left the due set, so asking again always makes progress.)"""
    return claim.examined == limit


class BatchRun:
    """Claim, build, send and record one batch, or several one after another, each step
    overlapping the others."""

    def __init__(
        self,
        books: Sequence[Books],
        transport: Transport,
        composer: Composer,
        helper: Executor | None,
        db: Executor,
        out: DeliveryOutcome,
    ) -> None:
        self._books, self._later = books[0], deque(books[1:])  # this batch, the ones after it
        self._transport, self._composer = transport, composer
        self.helper, self._db, self._out = helper, db, out  # helper: None once it died
        self._queue: deque[Claimed] = deque()  # claimed, not yet cut into a chunk
        self._planned: deque[tuple[list[Claimed], asyncio.Future[list[Flat | str]] | None]]
        self._planned = deque()
        self._claiming: asyncio.Future[ClaimOutcome] | None = None
        self._more = False  # the last claim may have left due rows behind: claim again
        self._records: list[asyncio.Future[Counter[str]]] = []
        self._chunks = 0

    def absorb(self, claim: ClaimOutcome, limit: int, *, claim_next: bool = True) -> None:
        """Count a claim's outcome, queue its rows, and start the next claim if more may be due
        (the first claim's successor waits until the wire has started: see ``run``)."""
        self._out.count_claim(claim)
        self._queue.extend(claim.claimed)
        self._more = more_may_be_due(claim, limit)
        if claim_next:
            self._claim_next()

    def _claim_next(self, *, next_batch: bool = False) -> None:
        """Start the next claim of this batch, if more may be due; with ``next_batch``, the
        first claim of the next batch once this one is all claimed (only when the queue runs
        short, so no more rows wait claimed than within one batch)."""
        if self._claiming is not None:
            return
        if next_batch and not self._more and self._later:
            self._books, self._more = self._later.popleft(), True
        if self._more:
            self._more = False
            loop = asyncio.get_running_loop()
            self._claiming = loop.run_in_executor(self._db, self._books.claim, CLAIM_SLICE)

    def _coming(self) -> bool:
        """More rows may still be claimed, in this batch or the ones after it."""
        return self._more or self._claiming is not None or bool(self._later)

    def _short(self) -> bool:
        """The queue cannot fill the next chunk, and a claim may fill it."""
        return self._coming() and len(self._queue) < ramp(self._chunks)

    async def _top_up(self) -> None:
        """Take the next claim when it is in; wait for it only when the queue cannot fill the
        next chunk (waiting for more, e.g. to feed the helper, would hold the first chunk of
        a batch back for a whole claim)."""
        while True:
            if self._short():
                self._claim_next(next_batch=True)  # if none is under way yet
            claiming = self._claiming
            if claiming is None or not (claiming.done() or self._short()):
                return
            self._claiming = None
            self.absorb(await claiming, CLAIM_SLICE)

    def _plan(self) -> None:
        """Cut chunks from the queue; hand them to the helper ahead of need, if there is one."""
        depth = HELPER_AHEAD + 1 if self.helper is not None else 1
        loop = asyncio.get_running_loop()
        while len(self._planned) < depth and self._queue and not self._short():
            final = not self._coming()
            size = next_chunk_size(self._chunks, len(self._queue), final=final)
            items = [self._queue.popleft() for _ in range(size)]
            self._chunks += 1
            # the first chunk is built here: nothing is on the wire yet to overlap with, and
            # a hand-over to the helper costs more than building a few messages
            future = (
                loop.run_in_executor(self.helper, building.compose_chunk, items)
                if self.helper is not None and self._chunks > 1
                else None
            )
            self._planned.append((items, future))

    async def _build(
        self,
        items: list[Claimed],
        future: asyncio.Future[list[Flat | str]] | None,
        sending: asyncio.Future[list[SendResult]] | None,
    ) -> list[Composed | str]:
        if future is not None:
            try:
                return [unflatten(flat) for flat in await future]
            except BrokenProcessPool:  # the helper died (HelperDied): build the rest here
                self.helper = None
        built: list[Composed | str] = []
        for item in items:
            built.append(compose_or_error(self._composer, item))
            if sending is not None and not sending.done():
                await let_the_wire_move()
        return built

    def _record(self, sent: list[Sent], failed: list[tuple[Claimed, str]]) -> None:
        self._out.templates.update(s.item.template for s in sent)
        if sent or failed:
            loop = asyncio.get_running_loop()
            self._records.append(loop.run_in_executor(self._db, self._books.record, sent, failed))

    async def run(self) -> None:
        in_flight: list[tuple[Claimed, Composed]] = []
        sending: asyncio.Future[list[SendResult]] | None = None
        building: list[Claimed] = []  # taken from the plan, not yet handed to the transport
        try:
            while True:
                await self._top_up()
                self._plan()
                if not self._planned:
                    break
                building, future = self._planned.popleft()
                built = await self._build(building, future, sending)
                pairs = list(zip(building, built, strict=True))
                chunk = [(i, c) for i, c in pairs if not isinstance(c, str)]
                failed = [(i, c) for i, c in pairs if isinstance(c, str)]
                self._out.render_failed += len(failed)
                if sending is not None:
                    self._record(sent_results(in_flight, await sending), [])
                    sending = None
                self._record([], failed)
                if chunk:
                    in_flight = chunk
                    outgoing = [composed.outgoing for _item, composed in chunk]
                    sending = asyncio.ensure_future(self._transport.send_batch(outgoing))
                    # claims hold the GIL for a while: the next one starts once the wire
                    # has work, not while the first chunk is being handed over
                    self._claim_next()
                building = []
            if sending is not None:
                self._record(sent_results(in_flight, await sending), [])
                sending = None
        except BaseException:
            if sending is not None:  # let the chunk on the wire end, and keep what it did
                await asyncio.wait([sending])
                if not sending.cancelled() and sending.exception() is None:
                    self._record(sent_results(in_flight, sending.result()), [])
                sending = None
            await self._release([*building, *self._unsent()])
            raise
        finally:
            self._forget_planned()
            if self._records:
                await asyncio.wait(self._records)
        for recorded in self._records:
            self._out.statuses.update(recorded.result())

    def _unsent(self) -> list[Claimed]:
        """Claimed rows no message was handed to the transport for."""
        planned = [item for items, _future in self._planned for item in items]
        return [*planned, *self._queue]

    async def _release(self, items: list[Claimed]) -> None:
        """After a failure: give back the rows this run claimed but never tried to send, so
        the next run sends them (instead of the reconciler calling them ``unknown``)."""
        claiming, self._claiming = self._claiming, None
        if claiming is not None:
            await asyncio.wait([claiming])
            if not claiming.cancelled() and claiming.exception() is None:
                items = [*items, *claiming.result().claimed]
        if items:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._db, self._books.release, items)

    def _forget_planned(self) -> None:
        for _items, future in self._planned:
            if future is not None and not future.cancel() and not future.cancelled():
                future.exception()  # retrieved, so asyncio does not log it as lost
        self._planned.clear()


def sent_results(
    chunk: list[tuple[Claimed, Composed]], results: Sequence[SendResult]
) -> list[Sent]:
    return [
        Sent(item, composed.message_id, composed.subject, result)
        for (item, composed), result in zip(chunk, results, strict=True)
    ]


def first_claim(books: deque[Books], out: DeliveryOutcome) -> ClaimOutcome | None:
    """The first claim of the first batch with something due, dropping the batches before
    it (counted in ``out``); None when nothing is due: no loop or connection is started."""
    while books:
        first = books[0].claim(FIRST_CLAIM)
        if first.claimed or more_may_be_due(first, FIRST_CLAIM):
            return first
        out.count_claim(first)
        books.popleft()
    return None
