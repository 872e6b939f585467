"""One delivery batch end to end: claim, render, send over one SMTP pool, record.

The steps are the listmonk/Mautic split — who is due (``outbox``), do it (transport), record
it (``outbox``) — with the claim committed before the first SMTP command, and templates
compiled once per run (``TemplateSet`` caches them). Messages are built straight to wire bytes
(``build_wire``), chunk by chunk, each chunk while the previous one is on the wire: in a forked
helper process for big batches when that is safe, else here between the SMTP steps.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from leadflow.batching import IdRange
from leadflow.mail.message import build_wire, make_message_id
from leadflow.mail.rendering import TemplateRenderError
from leadflow.mail.transport import Outgoing, SendResult, SmtpConfig, SmtpTransport, Transport
from leadflow.outbox import Claimed, claim_batch, reconcile, record_results
from leadflow.runtime import Runtime
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

    def merge(self, other: DeliveryOutcome) -> None:
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
        return ", ".join(parts)


def smtp_transport_factory(rt: Runtime) -> TransportFactory:
    s = rt.settings

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
                max_per_minute=rt.loaded.config.sender.per_minute,
            )
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
    templates). What is the same for every row (sender, secret, domain) is looked up once."""

    def __init__(self, rt: Runtime, *, now: datetime) -> None:
        sender = rt.loaded.config.sender
        self._rt = rt
        self._now = now
        self._secret = rt.settings.require_real_secret()
        self._public_url = rt.settings.public_url
        self._sender = sender
        self._domain = sender.from_email.rsplit("@", 1)[-1]
        self._sender_context = {
            "name": sender.from_name,
            "email": sender.from_email,
            "reply_to": sender.reply_to,
            "company": sender.company,
            "postal_address": sender.postal_address,
        }

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
        rendered = self._rt.templates.compile(item.template).render(context)
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
            date=self._now,
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
    return Composer(rt, now=now)(item)


# Most messages built, then sent, at a time over the batch's one pool. The next chunk is built
# while the previous one is on the wire (the relay works while this process renders), and only
# two chunks of built messages are alive at once. The first chunks are smaller, so the wire
# starts early, and so are the last, so it is not left to work alone for long at the end.
CHUNK = 200
FIRST_CHUNK = 16
# Event-loop turns given to the SMTP workers after each message built: a reply the server sent
# meanwhile takes three turns (aiosmtplib's read, then ``asyncio.wait_for``'s two hand-offs)
# to become the next command; with one turn, building would hold each SMTP step back for
# three messages' worth of rendering.
YIELDS = 4


async def _let_the_wire_move() -> None:
    for _turn in range(YIELDS):
        await asyncio.sleep(0)


def chunk_sizes(total: int, largest: int) -> list[int]:
    """Sizes (summing to ``total``, none above ``largest``): doubling from ``FIRST_CHUNK`` up
    to ``largest``, then even chunks of at most ``largest``, then the same ramp down."""
    ramp: list[int] = []
    size = FIRST_CHUNK
    while size < largest and total - 2 * sum(ramp) >= 4 * size:
        ramp.append(size)
        size *= 2
    middle = total - 2 * sum(ramp)
    pieces = -(-middle // largest)  # ceiling division
    even = [middle // pieces + (1 if n < middle % pieces else 0) for n in range(pieces)]
    return [*ramp, *even, *reversed(ramp)]


@dataclass(frozen=True)
class _Sent:
    """What is kept of a sent message until it is recorded: not the message bytes."""

    item: Claimed
    message_id: str
    subject: str
    result: SendResult


_Chunk = list[tuple[Claimed, Composed]]


def _collect(chunk: _Chunk, results: Sequence[SendResult], sent: list[_Sent]) -> None:
    for (item, composed), result in zip(chunk, results, strict=True):
        sent.append(_Sent(item, composed.message_id, composed.subject, result))


def _compose_or_error(composer: Composer, item: Claimed) -> Composed | str:
    try:
        return composer(item)
    except (TemplateRenderError, ValueError, KeyError) as exc:
        return f"render failed: {exc}"


# --- a helper process for building ---------------------------------------------------------
#
# Building a message costs about as much CPU as sending it. A big batch is built by a helper
# process on another core while this one talks SMTP. The helper is forked (it starts at once,
# with the compiled templates) and only from a process with no other thread, so no lock can
# be copied in a held state; otherwise (e.g. under Prefect's task threads) the batch is built
# here, between the SMTP steps. Each helper serves one batch.
HELPER_MIN = 400  # messages; below this the helper costs more than it saves
HELPER_AHEAD = 2  # chunks handed to the helper ahead of the one awaited

_helper_composer: Composer | None = None  # set in the helper process only


def _can_fork() -> bool:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        (cores or 1) > 1
        and sys.platform.startswith("linux")  # fork is unsafe on macOS, absent on Windows
        and threading.active_count() == 1
    )


def _adopt(composer: Composer, engine: Engine) -> None:
    """Helper start: keep the composer; never touch the parent's database connections; keep
    the garbage collector off the objects inherited from the parent (walking them would copy
    every page of the parent's heap into the helper)."""
    global _helper_composer
    engine.dispose(close=False)
    gc.freeze()
    _helper_composer = composer


def _compose_chunk(items: Sequence[Claimed]) -> list[Composed | str]:
    """Runs in the helper: each item's message, or why it could not be built."""
    if _helper_composer is None:
        raise RuntimeError("not a composing helper process")
    return [_compose_or_error(_helper_composer, item) for item in items]


@contextmanager
def _composing_helper(
    rt: Runtime, composer: Composer, count: int
) -> Iterator[ProcessPoolExecutor | None]:
    """A started helper process for ``count`` messages, or None when it would not pay off or
    this process cannot fork safely."""
    if count < HELPER_MIN or not _can_fork():
        yield None
        return
    pool = ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_adopt,
        initargs=(composer, rt.engine),
    )
    started = True
    try:
        pool.submit(int).result()  # fork now, while this process still has one thread
    except Exception:  # cannot fork here (limits, a daemonic process...): build in-process
        started = False
    try:
        yield pool if started else None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _split(claimed: Sequence[Claimed]) -> list[Sequence[Claimed]]:
    chunks, start = [], 0
    for size in chunk_sizes(len(claimed), CHUNK):
        chunks.append(claimed[start : start + size])
        start += size
    return chunks


async def _compose_and_send(
    rt: Runtime,
    factory: TransportFactory,
    claimed: Sequence[Claimed],
    *,
    now: datetime,
    composer: Composer | None = None,
    helper: Executor | None = None,
) -> tuple[list[_Sent], list[tuple[Claimed, str]]]:
    """Build and send ``claimed`` chunk by chunk over one transport (one pool), building each
    chunk while the one before it is being sent: in ``helper`` if given, else here."""
    sent: list[_Sent] = []
    failed: list[tuple[Claimed, str]] = []
    composer = composer if composer is not None else Composer(rt, now=now)
    chunks = _split(claimed)
    loop = asyncio.get_running_loop()
    ahead: deque[asyncio.Future[list[Composed | str]]] = deque()
    handed = 0  # chunks handed to the helper so far
    async with factory() as transport:
        in_flight: _Chunk = []
        sending: asyncio.Future[list[SendResult]] | None = None
        try:
            for index, items in enumerate(chunks):
                built: list[Composed | str] | None = None
                if helper is not None:
                    while handed < len(chunks) and handed <= index + HELPER_AHEAD:
                        ahead.append(loop.run_in_executor(helper, _compose_chunk, chunks[handed]))
                        handed += 1
                    try:
                        built = await ahead.popleft()
                    except BrokenProcessPool:  # the helper died: build the rest here
                        helper = None
                        _drop(ahead)
                if built is None:
                    built = []
                    for item in items:
                        built.append(_compose_or_error(composer, item))
                        if sending is not None and not sending.done():
                            await _let_the_wire_move()
                chunk: _Chunk = []
                for item, composed in zip(items, built, strict=True):
                    if isinstance(composed, str):
                        failed.append((item, composed))
                    else:
                        chunk.append((item, composed))
                if sending is not None:
                    _collect(in_flight, await sending, sent)
                    sending = None
                if chunk:
                    in_flight = chunk
                    outgoing = [composed.outgoing for _item, composed in chunk]
                    sending = asyncio.ensure_future(transport.send_batch(outgoing))
            if sending is not None:
                _collect(in_flight, await sending, sent)
                sending = None
        finally:
            _drop(ahead)
            if sending is not None:  # building failed unexpectedly: let the chunk on the wire end
                await asyncio.wait([sending])
    return sent, failed


def _drop(futures: deque[asyncio.Future[list[Composed | str]]]) -> None:
    """Forget chunks handed to the helper: cancel them, or take their error if they failed."""
    while futures:
        future = futures.popleft()
        if not future.cancel() and not future.cancelled():
            future.exception()  # retrieved, so asyncio does not log it as lost


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
    rt.settings.require_real_secret()
    out = DeliveryOutcome()
    with session_scope(rt.engine) as session:
        claim = claim_batch(session.connection(), rt, id_range, now=now, kind=kind)
    out.claimed = len(claim.claimed)
    out.deferred.update(claim.deferred)
    out.cancelled.update(claim.cancelled)
    out.suppressed = claim.suppressed
    if not claim.claimed:
        return out
    composer = Composer(rt, now=now)
    with _composing_helper(rt, composer, len(claim.claimed)) as helper:
        sent, failed = asyncio.run(
            _compose_and_send(
                rt, transport, claim.claimed, now=now, composer=composer, helper=helper
            )
        )
    rows: list[tuple[str, int | None, str, str | None, str | None]] = []
    for done in sent:
        result = done.result
        rows.append(
            (str(result.outcome), result.code, result.detail, done.message_id, done.subject)
        )
        out.templates[done.item.template] += 1
    rows += [("failed", None, error, None, None) for _item, error in failed]
    out.render_failed = len(failed)
    with session_scope(rt.engine) as session:
        recorded = record_results(
            session.connection(),
            rt,
            [*(done.item for done in sent), *(f[0] for f in failed)],
            rows,
            now=now,
        )
    out.statuses.update(recorded.counts)
    return out


def reconcile_stale(rt: Runtime, *, now: datetime) -> list[int]:
    with session_scope(rt.engine) as session:
        return reconcile(session.connection(), now=now)
