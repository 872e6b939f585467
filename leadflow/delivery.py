"""One delivery batch end to end: claim, render, send over one SMTP pool, record.

The steps are the listmonk/Mautic split — who is due (``outbox``), do it (transport), record
it (``outbox``) — with each claim committed before the first SMTP command of its rows, and
templates compiled once per run (``TemplateSet`` caches them). The steps overlap: rows are
claimed a slice at a time and outcomes recorded a chunk at a time on a database thread, and
messages are built straight to wire bytes (``build_wire``) chunk by chunk, each chunk while
the previous one is on the wire: in a forked helper process for big batches when that is
safe, else here between the SMTP steps.

Size (~790 lines): this module still holds several concepts (the outcome, transport wiring,
composing, chunk sizing, the forked helper, the batch run, the session). Splitting it into a
``delivery/`` package goes with making the fast path the Prefect path (issue 17, items 2-3),
which changes the same code.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

from leadflow.batching import IdRange
from leadflow.config.schema import Sender, Tracking
from leadflow.eventloop import loop_factory
from leadflow.listening.tracking import rewrite_html
from leadflow.mail.message import build_wire, make_message_id
from leadflow.mail.rendering import RenderedEmail, TemplateRenderError, TemplateSet
from leadflow.mail.transport import (
    Outgoing,
    SendResult,
    SmtpConfig,
    SmtpTransport,
    Transport,
    shared_bucket,
)
from leadflow.offload import Offload
from leadflow.outbox import (
    Claimed,
    ClaimOutcome,
    claim_batch,
    reconcile,
    record_results,
    release_claims,
)
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from leadflow.unsubscribe import link_for
from models.db import session_scope

TransportFactory = Callable[[], Transport]


@dataclass
class DeliveryOutcome:
    claimed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    deferred: Counter[str] = field(default_factory=Counter)
    cancelled: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    render_failed: int = 0
    templates: Counter[str] = field(default_factory=Counter)
    reconciled: list[int] = field(default_factory=list)  # claims a dead run left: now unknown
    batches: int = 0

    def merge(self, other: DeliveryOutcome) -> None:
        self.reconciled += other.reconciled
        self.batches += other.batches
        self.claimed += other.claimed
        self.statuses.update(other.statuses)
        self.deferred.update(other.deferred)
        self.cancelled.update(other.cancelled)
        self.suppressed += other.suppressed
        self.render_failed += other.render_failed
        self.templates.update(other.templates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "sent": self.statuses.get("sent", 0),
            "statuses": dict(self.statuses),
            "deferred": dict(self.deferred),
            "cancelled": dict(self.cancelled),
            "suppressed": self.suppressed,
            "render_failed": self.render_failed,
            "templates": dict(self.templates),
            "unknown_reconciled": len(self.reconciled),
        }

    def summary(self) -> str:
        parts = [f"sent {self.statuses.get('sent', 0)}"]
        for reason, n in sorted(self.deferred.items()):
            parts.append(f"deferred {n} ({reason})")
        for status in ("deferred", "bounced", "failed", "unknown"):
            if self.statuses.get(status):
                parts.append(f"{status} {self.statuses[status]} (smtp)")
        if self.suppressed:
            parts.append(f"suppressed {self.suppressed}")
        if sum(self.cancelled.values()):
            parts.append(f"cancelled {sum(self.cancelled.values())}")
        if self.reconciled:
            parts.append(f"{len(self.reconciled)} earlier send(s) marked unknown")
        return ", ".join(parts)


def smtp_transport_factory(rt: Runtime) -> TransportFactory:
    s = rt.settings

    per_minute = rt.loaded.config.sender.per_minute

    def make() -> Transport:
        return SmtpTransport(
            SmtpConfig(
                host=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                tls=s.smtp_tls,
                timeout=s.smtp_timeout,
                concurrency=s.smtp_concurrency,
                max_per_minute=per_minute,
            ),
            # one rate for the whole process: batches one after another or side by side
            bucket=shared_bucket(s.smtp_host, s.smtp_port, per_minute) if per_minute else None,
        )

    return make


def lead_context(lead: dict[str, Any]) -> dict[str, Any]:
    first, last = lead.get("first_name") or "", lead.get("last_name") or ""
    return {
        "email": lead["email"],
        "first_name": lead.get("first_name"),
        "last_name": lead.get("last_name"),
        "full_name": f"{first} {last}".strip() or None,
        "company": lead.get("company"),
        "title": lead.get("title"),
        "industry": lead.get("industry"),
        "country": lead.get("country"),
        "timezone": lead.get("timezone"),
        "stage": lead.get("stage"),
        "score": lead.get("score"),
        "grade": lead.get("grade"),
        "attributes": dict(lead.get("attributes") or {}),
    }


@dataclass(frozen=True)
class Composed:
    """One claimed row made ready to send: the wire bytes plus the headers the outbox records."""

    outgoing: Outgoing
    message_id: str
    subject: str


class Composer:
    """Renders and builds the message of each claimed row of one run (pure, no I/O but
    templates). What is the same for every row (sender, secret, domain) is looked up once.
    It is made of picklable parts, so a helper process can make the same one."""

    def __init__(
        self,
        settings: Settings,
        sender: Sender,
        tracking: Tracking,
        templates: TemplateSet,
        *,
        now: datetime,
    ) -> None:
        self.settings, self.sender, self.tracking, self.templates = (
            settings,
            sender,
            tracking,
            templates,
        )
        self.now = now
        self._secret = settings.require_real_secret()
        self._public_url = settings.public_url
        self._sender = sender
        self._tracking = tracking
        self._domain = sender.from_email.rsplit("@", 1)[-1]
        self._sender_context = {
            "name": sender.from_name,
            "email": sender.from_email,
            "reply_to": sender.reply_to,
            "company": sender.company,
            "postal_address": sender.postal_address,
        }

    @classmethod
    def for_run(cls, rt: Runtime, *, now: datetime) -> Composer:
        config = rt.loaded.config
        return cls(rt.settings, config.sender, config.tracking, rt.templates, now=now)

    def __call__(self, item: Claimed) -> Composed:
        sender = self._sender
        unsubscribe = link_for(self._public_url, item.to_email, self._secret)
        lead = lead_context(item.lead)
        context = {
            "lead": lead,
            "sender": dict(self._sender_context),
            "unsubscribe_url": unsubscribe,
            "message": {"cadence": item.cadence, "step": item.step, "variant": item.variant},
        }
        rendered = self.templates.compile(item.template).render(context)
        tracking = self._tracking
        if tracking.clicks or tracking.opens:
            # links and pixel signed for this outbox row; the unsubscribe link stays as it is
            html = rewrite_html(
                rendered.html,
                outbox_id=item.id,
                base_url=self._public_url,
                secret=self._secret,
                clicks=tracking.clicks,
                opens=tracking.opens,
                keep=(unsubscribe,),
            )
            rendered = RenderedEmail(rendered.subject, rendered.text, html)
        message_id = make_message_id(
            f"lf{item.id}.{item.lead_id}.{item.cadence}.{item.step}.{item.round}", self._domain
        )
        wire = build_wire(
            rendered,
            from_name=sender.from_name,
            from_email=sender.from_email,
            reply_to=sender.reply_to,
            to_name=lead["full_name"] or "",
            to_email=item.to_email,
            message_id=message_id,
            date=self.now,
            unsubscribe_url=unsubscribe,
            unsubscribe_mailto=sender.unsubscribe_mailto,
            extra_headers={"X-Leadflow-Cadence": f"{item.cadence}/{item.step}"},
        )
        outgoing = Outgoing(
            key=str(item.id), sender=sender.from_email, recipient=item.to_email, message=wire.data
        )
        return Composed(outgoing, wire.message_id, wire.subject)


def compose(rt: Runtime, item: Claimed, *, now: datetime) -> Composed:
    """Render and build the message for one claimed row (see ``Composer``)."""
    return Composer.for_run(rt, now=now)(item)


# --- building, chunk by chunk ---------------------------------------------------------------
#
# Messages are built, then sent, a chunk at a time over the batch's one pool. The next chunk is
# built while the previous one is on the wire (the relay works while this process renders), and
# only a few chunks of built messages are alive at once. The first chunks are smaller, so the
# wire starts early, and so are the last, so it is not left to work alone for long at the end.
# (Measured with the batches of a session following one another: 5,000 messages took a median
# of 3.20 s in chunks of 200, 3.13 s in chunks of 300, 3.11-3.13 s in chunks of 400 or 500;
# 300 also keeps the records a crash can lose small.)
CHUNK = 300
FIRST_CHUNK = 16
# Event-loop turns given to the SMTP workers after each message built: a reply the server sent
# meanwhile takes three turns (aiosmtplib's read, then ``asyncio.wait_for``'s two hand-offs)
# to become the next command; with one turn, building would hold each SMTP step back for
# three messages' worth of rendering.
YIELDS = 4


async def _let_the_wire_move() -> None:
    for _turn in range(YIELDS):
        await asyncio.sleep(0)


def next_chunk_size(index: int, available: int, *, final: bool) -> int:
    """How many of ``available`` built-to-be messages make chunk number ``index``: doubling
    from ``FIRST_CHUNK`` up to ``CHUNK``; once no more rows are coming (``final``), halving
    down again over the last ones."""
    size = _ramp(index)
    if final:
        if available < 2 * size:
            size = max(FIRST_CHUNK, available // 2)
        if available - size < FIRST_CHUNK:  # no runt chunk at the very end
            size = min(available, CHUNK)
    return min(size, available)


def _ramp(index: int) -> int:
    """The size of chunk number ``index`` while more rows are coming."""
    return min(CHUNK, FIRST_CHUNK << min(index, 20))


def chunk_sizes(total: int, *, final: bool = True) -> list[int]:
    """The chunk sizes ``total`` rows claimed at once are sent in (see ``next_chunk_size``)."""
    sizes: list[int] = []
    while total:
        sizes.append(next_chunk_size(len(sizes), total, final=final))
        total -= sizes[-1]
    return sizes


@dataclass(frozen=True)
class _Sent:
    """What is kept of a sent message until it is recorded: not the message bytes."""

    item: Claimed
    message_id: str
    subject: str
    result: SendResult


def _compose_or_error(composer: Composer, item: Claimed) -> Composed | str:
    try:
        return composer(item)
    except (TemplateRenderError, ValueError, KeyError) as exc:
        return f"render failed: {exc}"


# --- a helper process for building ---------------------------------------------------------
#
# Building a message costs about as much CPU as sending it. A big run's messages are built by
# a helper process on another core while this one talks SMTP: a fresh interpreter
# (``leadflow.offload``, never a fork, so it is as safe inside a Prefect flow run, beside its
# threads, as on the direct path) that makes the same Composer from the run's settings,
# sender and tracking, compiles the templates the first claim needs, and is kept for the
# whole delivery session.
HELPER_MIN = 400  # messages; below this the helper costs more than it saves
HELPER_AHEAD = 2  # chunks handed to the helper ahead of the one awaited
# The helper works ahead of the wire, so it yields the CPU to whatever the wire waits on: this
# process's SMTP conversation and, on a shared box, the relay (measured: send ratio median
# 0.62 at nice 0, 0.67 at nice 10, 0.68 at 19, two cores, relay on loopback). Only the
# helper's own priority changes.
HELPER_NICE = 19

_helper_composer: Composer | None = None  # set in the helper process only


def _start_helper(
    settings: Settings,
    sender: Sender,
    tracking: Tracking,
    templates: Path,
    now: datetime,
    first: Sequence[str],
) -> None:
    """Runs in the helper, first: step back in CPU priority, make the run's composer and
    compile the templates the first claim needs (broken ones are reported per message)."""
    global _helper_composer
    with suppress(OSError):  # not allowed here: build at the normal priority
        os.nice(HELPER_NICE)
    compiled = TemplateSet(templates)
    for name in first:
        with suppress(TemplateRenderError):
            compiled.compile(name)
    _helper_composer = Composer(settings, sender, tracking, compiled, now=now)


# What the helper hands back for one message: plain values, because unpickling them costs
# the sending process a tenth of what the dataclasses cost (measured: 1.4 against 14 µs per
# message, a 200-message chunk being ~0.9 MB).
_Flat = tuple[str, str, str, EmailMessage | bytes, str, str]


def _flatten(built: Composed | str) -> _Flat | str:
    if isinstance(built, str):
        return built
    out = built.outgoing
    return (out.key, out.sender, out.recipient, out.message, built.message_id, built.subject)


def _unflatten(flat: _Flat | str) -> Composed | str:
    if isinstance(flat, str):
        return flat
    key, sender, recipient, message, message_id, subject = flat
    return Composed(Outgoing(key, sender, recipient, message), message_id, subject)


def _compose_chunk(items: Sequence[Claimed]) -> list[_Flat | str]:
    """Runs in the helper: each item's message, or why it could not be built."""
    if _helper_composer is None:
        raise RuntimeError("not a composing helper process")
    return [_flatten(_compose_or_error(_helper_composer, item)) for item in items]


@contextmanager
def _composing_helper(
    composer: Composer, expected: int, first: set[str]
) -> Iterator[Offload | None]:
    """A helper process for about ``expected`` messages, or None when it would not pay off
    (or no process can be started here)."""
    if expected < HELPER_MIN or _cores() < 2:
        yield None
        return
    helper = Offload(1, preload=("leadflow.delivery",))
    if not helper.helpers:
        yield None
        return
    try:
        helper.submit(
            _start_helper,
            composer.settings,
            composer.sender,
            composer.tracking,
            Path(composer.templates.directory),
            composer.now,
            sorted(first),
        )
        yield helper
    finally:
        helper.shutdown()


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --- one batch: claims and records overlap the SMTP conversation ------------------------------
#
# The rows of a batch are claimed a slice at a time: a small first slice before the first SMTP
# command (so the wire starts at once), the next slices on a database thread while earlier ones
# are on the wire. Each chunk's outcomes are recorded on the same thread while the next chunk is
# sent. Claims and records stay in order on that one thread, each in its own transaction; a
# claim still commits before any message of its slice is sent.
FIRST_CLAIM = 256  # rows claimed before the first SMTP command
CLAIM_SLICE = 1000  # rows per later claim

_Row = tuple[str, int | None, str, str | None, str | None]


class _Books:
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

    def record(self, sent: Sequence[_Sent], failed: Sequence[tuple[Claimed, str]]) -> Counter[str]:
        rows: list[_Row] = [
            (str(s.result.outcome), s.result.code, s.result.detail, s.message_id, s.subject)
            for s in sent
        ]
        rows += [("failed", None, error, None, None) for _item, error in failed]
        items = [*(s.item for s in sent), *(item for item, _error in failed)]
        if not items:
            return Counter()
        with session_scope(self._rt.engine) as session:
            return record_results(session.connection(), self._rt, items, rows, now=self._now).counts


def _more_may_be_due(claim: ClaimOutcome, limit: int) -> bool:
    """A claim that looked at ``limit`` rows may have left due rows behind it. (Every row it
    looked at left the due set, so asking again always makes progress.)"""
    return claim.examined == limit


def _count_claim(out: DeliveryOutcome, claim: ClaimOutcome) -> None:
    out.claimed += len(claim.claimed)
    out.deferred.update(claim.deferred)
    out.cancelled.update(claim.cancelled)
    out.suppressed += claim.suppressed


class _BatchRun:
    """Claim, build, send and record one batch, or several one after another, each step
    overlapping the others."""

    def __init__(
        self,
        books: Sequence[_Books],
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
        self._planned: deque[tuple[list[Claimed], asyncio.Future[list[_Flat | str]] | None]]
        self._planned = deque()
        self._claiming: asyncio.Future[ClaimOutcome] | None = None
        self._more = False  # the last claim may have left due rows behind: claim again
        self._records: list[asyncio.Future[Counter[str]]] = []
        self._chunks = 0

    def absorb(self, claim: ClaimOutcome, limit: int, *, claim_next: bool = True) -> None:
        """Count a claim's outcome, queue its rows, and start the next claim if more may be due
        (the first claim's successor waits until the wire has started: see ``run``)."""
        _count_claim(self._out, claim)
        self._queue.extend(claim.claimed)
        self._more = _more_may_be_due(claim, limit)
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
        return self._coming() and len(self._queue) < _ramp(self._chunks)

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
                loop.run_in_executor(self.helper, _compose_chunk, items)
                if self.helper is not None and self._chunks > 1
                else None
            )
            self._planned.append((items, future))

    async def _build(
        self,
        items: list[Claimed],
        future: asyncio.Future[list[_Flat | str]] | None,
        sending: asyncio.Future[list[SendResult]] | None,
    ) -> list[Composed | str]:
        if future is not None:
            try:
                return [_unflatten(flat) for flat in await future]
            except BrokenProcessPool:  # the helper died (HelperDied): build the rest here
                self.helper = None
        built: list[Composed | str] = []
        for item in items:
            built.append(_compose_or_error(self._composer, item))
            if sending is not None and not sending.done():
                await _let_the_wire_move()
        return built

    def _record(self, sent: list[_Sent], failed: list[tuple[Claimed, str]]) -> None:
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
                    self._record(_sent(in_flight, await sending), [])
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
                self._record(_sent(in_flight, await sending), [])
                sending = None
        except BaseException:
            if sending is not None:  # let the chunk on the wire end, and keep what it did
                await asyncio.wait([sending])
                if not sending.cancelled() and sending.exception() is None:
                    self._record(_sent(in_flight, sending.result()), [])
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


def _sent(chunk: list[tuple[Claimed, Composed]], results: Sequence[SendResult]) -> list[_Sent]:
    return [
        _Sent(item, composed.message_id, composed.subject, result)
        for (item, composed), result in zip(chunk, results, strict=True)
    ]


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


def _first_claim(books: deque[_Books], out: DeliveryOutcome) -> ClaimOutcome | None:
    """The first claim of the first batch with something due, dropping the batches before
    it (counted in ``out``); None when nothing is due: no loop or connection is started."""
    while books:
        first = books[0].claim(FIRST_CLAIM)
        if first.claimed or _more_may_be_due(first, FIRST_CLAIM):
            return first
        _count_claim(out, first)
        books.popleft()
    return None


class _Shared(NamedTuple):
    runner: asyncio.Runner
    composer: Composer
    transport: Transport
    db: Executor


class DeliverySession:
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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._resources.__exit__(exc_type, exc, tb)

    def deliver(self, ranges: Sequence[IdRange], *, kind: str | None = None) -> DeliveryOutcome:
        """Claim the due messages of each id range (one batch each, in order), send them,
        record the outcomes; returns the outcome of them all.

        The batches follow one another without a pause: once a batch is all claimed and its
        queue runs short, the next one's first rows are claimed and built while the last
        chunks of this one are on the wire (a pause at each batch's start and end, with few
        messages on the wire and the helper cold, cost ~5% of the send rate)."""
        out = DeliveryOutcome()
        books = deque(_Books(self._rt, r, now=self._now, kind=kind) for r in ranges)
        first = _first_claim(books, out)
        if first is None:
            return out
        more = _more_may_be_due(first, FIRST_CLAIM) or len(books) > 1
        shared = self._started or self._start(first, CLAIM_SLICE if more else len(first.claimed))
        batch = _BatchRun(
            list(books), shared.transport, shared.composer, self._helper, shared.db, out
        )

        async def run() -> None:
            batch.absorb(first, FIRST_CLAIM, claim_next=False)
            await batch.run()

        try:
            shared.runner.run(run())
        finally:
            self._helper = batch.helper  # None if it died: later deliveries build here
        return out

    def _start(self, first: ClaimOutcome, expected: int) -> _Shared:
        """Start the shared parts (for the first batch with rows to send, ``first`` its first
        claim, about ``expected`` messages coming)."""
        rt = self._rt
        composer = Composer.for_run(rt, now=self._now)
        names = {item.template for item in first.claimed}
        _compile_ahead(rt, names)
        self._helper = self._resources.enter_context(_composing_helper(composer, expected, names))
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
