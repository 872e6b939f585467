"""Mailbox sync: read what is new, classify it, tie it to a lead, record it once, act on it.

One batch of messages is one transaction: the ``inbound_message`` rows (unique on the
message's key), the events they cause, and the folder's checkpoint move together. A crash
mid-batch leaves the checkpoint where it was, the next sync fetches the batch again, and the
keys already recorded are skipped; two syncs at once insert each key once (``ON CONFLICT DO
NOTHING ... RETURNING`` tells each which rows are its own to act on).

The steps live apart: what a message is (``classify``), whose it is (``match``), and what it
does to its lead (``effects``). This module reads, records and moves the checkpoint.
"""

from __future__ import annotations

import os
import re
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, select
from sqlalchemy.dialects import postgresql, sqlite

from leadflow.config.schema import Mailbox
from leadflow.listening.classify import Classified, Kind, classify_many, settle_return_dates
from leadflow.listening.effects import apply_effects
from leadflow.listening.match import match_batch
from leadflow.listening.sources import (
    Fetched,
    FolderReader,
    MailboxError,
    MailSource,
    open_source,
    parse_mailbox_url,
)
from leadflow.offload import HelperDied, Offload
from leadflow.runtime import Runtime
from models.db import session_scope
from models.tables import (
    INBOUND,
    MAILBOX_CHECKPOINTS,
)


@dataclass
class SyncOutcome:
    """What one sync did; ``as_dict`` is the flow's artifact and the CLI's ``--json``."""

    fetched: int = 0
    recorded: int = 0
    already_known: int = 0
    unmatched: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    paused: int = 0
    suppressed: int = 0
    folders: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fetched": self.fetched,
            "recorded": self.recorded,
            "already_known": self.already_known,
            "unmatched": self.unmatched,
            "kinds": dict(sorted(self.kinds.items())),
            "paused": self.paused,
            "suppressed": self.suppressed,
            "folders": self.folders,
            "errors": self.errors,
            "summary": self.summary(),
        }

    def summary(self) -> str:
        if self.errors and not self.fetched:
            return "mailbox not read: " + "; ".join(self.errors)
        parts = [f"read {self.fetched} new message(s)"]
        parts += [f"{kind} {n}" for kind, n in sorted(self.kinds.items())]
        if self.unmatched:
            parts.append(f"unmatched {self.unmatched}")
        if self.already_known:
            parts.append(f"already recorded {self.already_known}")
        if self.paused:
            parts.append(f"cadence paused for {self.paused}")
        if self.errors:
            parts.append("errors: " + "; ".join(self.errors))
        return ", ".join(parts)


def sync_mailbox(
    rt: Runtime, *, now: datetime, source: MailSource | None = None, helpers: int | None = None
) -> SyncOutcome:
    """Read every configured folder from its checkpoint on and record what is new.

    ``helpers``: processes that classify while this one fetches and records; by default
    one when there is enough mail to pay for it and a core free to run it (see
    ``_helpers_for``), else none.

    Without ``source`` the mailbox is ``LEADFLOW_MAILBOX_URL``; a mailbox that cannot be
    read ends the sync with the error in the outcome (a flow then fails loudly), having
    recorded every batch it completed.
    """
    outcome = SyncOutcome()
    if source is None:
        url = rt.settings.mailbox_url
        if not url:
            return outcome
        location = parse_mailbox_url(url)
        password = rt.settings.mailbox_password
        source = open_source(location, password=password.get_secret_value() if password else None)
    with source as src:
        for name in src.location.folders:
            outcome.folders.append(name or src.location.label)
            try:
                folder = src.folder(name)
                _sync_folder(rt, src.location.label, folder, now=now, out=outcome, helpers=helpers)
            except MailboxError as exc:
                outcome.errors.append(str(exc))
    return outcome


def _sync_folder(
    rt: Runtime,
    label: str,
    reader: FolderReader,
    *,
    now: datetime,
    out: SyncOutcome,
    helpers: int | None,
) -> None:
    """Fetch, classify and record batch after batch. With a helper process, batch k is
    classified there while this process fetches batch k+1 and records batch k-1; batches are
    recorded (and the checkpoint moved) strictly in order either way."""
    cfg = rt.loaded.config.mailbox
    sender = rt.loaded.config.sender
    ours = tuple(a for a in (sender.from_email, sender.reply_to, sender.unsubscribe_mailto) if a)
    phrases = tuple(cfg.unsubscribe_phrases)
    with rt.engine.connect() as conn:
        last = conn.execute(
            select(MAILBOX_CHECKPOINTS.c.last_uid).where(
                MAILBOX_CHECKPOINTS.c.mailbox == label,
                MAILBOX_CHECKPOINTS.c.folder == reader.name,
                MAILBOX_CHECKPOINTS.c.uidvalidity == reader.uidvalidity,
            )
        ).scalar()
    offload: Offload | None = None
    pending: deque[tuple[list[Fetched], list[Future[list[Classified]]]]] = deque()
    try:
        failure: MailboxError | None = None
        try:
            for batch in reader.after(int(last or 0), batch=cfg.batch_size):
                if not batch:
                    continue
                if offload is None:  # the first batch tells how much there is to read
                    wanted = helpers if helpers is not None else _helpers_for(len(batch))
                    offload = Offload(wanted, preload=_HELPER_PRELOAD)
                pending.append((batch, _submit(offload, batch, phrases, ours)))
                if len(pending) > offload.helpers:
                    _record(rt, label, reader, offload, pending, cfg=cfg, now=now, out=out)
        except MailboxError as exc:  # what was read before the failure is still recorded
            failure = exc
        while pending and offload is not None:
            _record(rt, label, reader, offload, pending, cfg=cfg, now=now, out=out)
        if failure is not None:
            raise failure
    finally:
        if offload is not None:
            offload.close()


# A helper pays for its start (a fresh interpreter importing the classifier, ~0.15 s of CPU) and
# its pickling (~0.15 s for 10,000 messages) from a few hundred messages on, when a core is free
# to run it: a first batch that big says there is at least that much to read, and a 1-minute
# load average below the cores less one half says a core is mostly idle. On cores busy with
# other work a helper only adds its own CPU and waits: 10,000 messages at load 7-10 on 2 cores
# took 10.8 s (4.1 s of CPU) with one against 6.5 s (3.5 s of CPU) without (docs/mailbox.md).
HELPER_MIN_MESSAGES = 200
_HELPER_PRELOAD = ("leadflow.listening.classify",)


def _helpers_for(first_batch: int) -> int:
    if first_batch < HELPER_MIN_MESSAGES:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average here (Windows): assume a free core
        busy = 0.0
    return 1 if (cores or 1) >= 2 and busy < (cores or 1) - 0.5 else 0


# Messages per classification job: small enough that the recording process can take the jobs
# the helper has not started yet while it would otherwise wait (the two then finish a batch
# together), big enough that a job's trip through the pipes costs little beside its work.
CHUNK = 100


def _submit(
    offload: Offload, batch: list[Fetched], phrases: Sequence[str], ours: Sequence[str]
) -> list[Future[list[Classified]]]:
    """The batch's classification, as jobs of ``CHUNK`` messages."""
    raws = [f.raw for f in batch]
    return [
        offload.submit(classify_many, raws[start : start + CHUNK], phrases, ours, False)
        for start in range(0, len(raws), CHUNK)
    ]


def _classified(
    rt: Runtime,
    offload: Offload,
    batch: list[Fetched],
    jobs: list[Future[list[Classified]]],
    later: list[Future[list[Classified]]],
    cfg: Mailbox,
) -> list[Classified]:
    """The batch's classes, in order. Jobs no helper has started yet are run here, the last
    first (the helper works from the first), then, while the helper still works on this
    batch, those of the ``later`` batches: the helper is the slower side of a sync, and this
    process would otherwise wait idle for it."""
    for job in reversed(jobs):
        offload.help_with(job)
    for job in reversed(later):
        if all(j.done() for j in jobs):
            break
        offload.help_with(job)
    classified: list[Classified] = []
    for start, job in zip(range(0, len(batch), CHUNK), jobs, strict=True):
        try:
            classified += job.result()
        except HelperDied:  # the helper died (killed, out of memory): classify here
            sender = rt.loaded.config.sender
            ours = [a for a in (sender.from_email, sender.reply_to, sender.unsubscribe_mailto) if a]
            raws = [f.raw for f in batch[start : start + CHUNK]]
            classified += classify_many(raws, cfg.unsubscribe_phrases, ours, False)
    return settle_return_dates(classified)


def _record(
    rt: Runtime,
    label: str,
    reader: FolderReader,
    offload: Offload,
    pending: deque[tuple[list[Fetched], list[Future[list[Classified]]]]],
    *,
    cfg: Mailbox,
    now: datetime,
    out: SyncOutcome,
) -> None:
    """Record the oldest pending batch with its checkpoint in one transaction, then apply
    ``mailbox.after`` to its messages."""
    batch, jobs = pending.popleft()
    later = [job for _, waiting in pending for job in waiting]
    classified = _classified(rt, offload, batch, jobs, later, cfg)
    with session_scope(rt.engine) as session:
        conn = session.connection()
        before = out.recorded
        record_batch(rt, conn, label, reader.name, batch, classified, now=now, out=out)
        _advance_checkpoint(conn, label, reader, batch, out.recorded - before, now=now)
    out.fetched += len(batch)
    reader.finish([f.uid for f in batch], cfg.after)


def record_batch(
    rt: Runtime,
    conn: Connection,
    label: str,
    folder: str,
    batch: Sequence[Fetched],
    classified: Sequence[Classified],
    *,
    now: datetime,
    out: SyncOutcome,
) -> None:
    """Match, insert (once per key) and act on one batch, in the caller's transaction."""
    matches = match_batch(conn, classified, domain=_our_domain(rt))
    rows = []
    seen: set[str] = set()
    for fetched, item, match in zip(batch, classified, matches, strict=True):
        if _text(item.key) in seen:  # the same message twice in one batch (copied between folders)
            continue
        seen.add(_text(item.key))
        kind = item.kind
        evidence = dict(item.evidence)
        if match.lead_id is None and kind in _PERSONAL and not item.answers:
            kind = Kind.OTHER
            evidence["rule"] = f"{evidence['rule']}, not from a lead"
        evidence["matched_by"] = match.by
        evidence = {k: _text(v) if isinstance(v, str) else v for k, v in evidence.items()}
        rows.append(
            {
                "key": _text(item.key),
                "mailbox": label[:300],
                "folder": folder[:200],
                "uid": fetched.uid,
                "received_at": item.received_at or now,
                "synced_at": now,
                "kind": str(kind),
                "lead_id": match.lead_id,
                "outbox_id": match.outbox_id,
                "matched_by": match.by,
                "from_email": _text(item.from_email or "")[:320] or None,
                "subject": _text(item.subject)[:1000] or None,
                "snippet": _text(item.snippet)[:2000] or None,
                "evidence": evidence,
            }
        )
    new_keys = _insert_new(conn, rows)
    out.already_known += len(batch) - len(new_keys)
    fresh = [r for r in rows if r["key"] in new_keys]
    out.recorded += len(fresh)
    for row in fresh:
        out.kinds[str(row["kind"])] += 1
        if row["lead_id"] is None and row["kind"] != Kind.OTHER:
            out.unmatched += 1
    suppressed, paused = apply_effects(rt, conn, fresh, now=now)
    out.suppressed += suppressed
    out.paused += paused


_PERSONAL = (Kind.REPLIED, Kind.UNSUBSCRIBED, Kind.OUT_OF_OFFICE)
_NUL_AND_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _text(value: str) -> str:
    """Text as both databases store it: no NUL (PostgreSQL refuses it), no other control
    characters, no lone surrogates."""
    if value.isascii() and value.isprintable():  # nothing to remove: the usual case
        return value
    return _NUL_AND_CONTROLS.sub("", value)


def _our_domain(rt: Runtime) -> str:
    return rt.loaded.config.sender.from_email.rsplit("@", 1)[-1].lower()


def _insert_new(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the rows whose key is new; the keys this transaction inserted."""
    if not rows:
        return set()
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        module.insert(INBOUND)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(INBOUND.c.key)
    )
    return {key for (key,) in conn.execute(stmt, rows).all()}


def _advance_checkpoint(
    conn: Connection,
    label: str,
    reader: FolderReader,
    batch: Sequence[Fetched],
    recorded: int,
    *,
    now: datetime,
) -> None:
    """Move the folder's checkpoint past ``batch``; ``messages`` counts the messages recorded
    under it (a Maildir offers its newest file again: that one is not counted twice)."""
    top = max(f.uid for f in batch)
    table = MAILBOX_CHECKPOINTS
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = module.insert(table).values(
        mailbox=label[:300],
        folder=reader.name[:200],
        uidvalidity=reader.uidvalidity,
        last_uid=top,
        messages=recorded,
        synced_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["mailbox", "folder", "uidvalidity"],
        set_={
            # two syncs side by side: the checkpoint only ever moves forward
            "last_uid": case(
                (stmt.excluded.last_uid > table.c.last_uid, stmt.excluded.last_uid),
                else_=table.c.last_uid,
            ),
            "messages": table.c.messages + stmt.excluded.messages,
            "synced_at": stmt.excluded.synced_at,
        },
    )
    conn.execute(stmt)
