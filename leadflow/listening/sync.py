"""Mailbox sync: read what is new, classify it, tie it to a lead, record it once, act on it.

One batch of messages is one transaction: the ``inbound_message`` rows (unique on the
message's key), the events they cause, and the folder's checkpoint move together. A crash
mid-batch leaves the checkpoint where it was, the next sync fetches the batch again, and the
keys already recorded are skipped; two syncs at once insert each key once (``ON CONFLICT DO
NOTHING ... RETURNING`` tells each which rows are its own to act on).

Matching, in order: ``In-Reply-To``/``References`` (or a bounce's attached original) against
the Message-IDs leadflow sends (``<lf{outbox id}....@domain>``, checked against the stored
value) gives the exact outbox row, step and variant; else the failed recipient of a bounce, or
the sender of anything else, normalized as intake normalizes addresses; else unmatched.

What each class does to its lead (through ``record_events``, like any event):

| class | event | effect |
|---|---|---|
| bounced | ``bounced`` | suppressed; cadences with ``bounced`` in ``stop_on`` end |
| soft_bounced | ``soft_bounced`` | after ``mailbox.soft_bounce_limit`` in a row: as bounced |
| out_of_office | ``out_of_office`` | open emails wait for the return date; not a reply |
| unsubscribed | ``unsubscribed`` | suppressed; cadences stop |
| replied | ``replied`` | cadences with ``replied`` in ``stop_on`` end; rules see it |

An out-of-office with no readable return date pauses ``mailbox.out_of_office_business_days``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from leadflow.business_time import add_business_days, resolve_zone
from leadflow.events import EventIn, record_events
from leadflow.intake.normalize import InvalidValue, normalize_email
from leadflow.listening.classify import Classified, Kind, classify, parse
from leadflow.listening.sources import (
    Fetched,
    FolderReader,
    MailboxError,
    MailSource,
    open_source,
    parse_mailbox_url,
)
from leadflow.runtime import Runtime
from leadflow.suppression import suppress_many
from models.db import session_scope
from models.tables import (
    EVENTS,
    INBOUND,
    LEADS,
    MAILBOX_CHECKPOINTS,
    OUTBOX,
    MessageStatus,
)

EVENT_OF = {
    Kind.BOUNCED: "bounced",
    Kind.SOFT_BOUNCED: "soft_bounced",
    Kind.OUT_OF_OFFICE: "out_of_office",
    Kind.UNSUBSCRIBED: "unsubscribed",
    Kind.REPLIED: "replied",
}
_OUR_ID = re.compile(r"^<lf(\d+)\.")
# events after which soft bounces no longer count "in a row": the address works
_ALIVE = ("replied", "email_opened", "email_clicked", "out_of_office")


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


def sync_mailbox(rt: Runtime, *, now: datetime, source: MailSource | None = None) -> SyncOutcome:
    """Read every configured folder from its checkpoint on and record what is new.

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
                _sync_folder(rt, src.location.label, src.folder(name), now=now, out=outcome)
            except MailboxError as exc:
                outcome.errors.append(str(exc))
    return outcome


def _sync_folder(
    rt: Runtime, label: str, reader: FolderReader, *, now: datetime, out: SyncOutcome
) -> None:
    cfg = rt.loaded.config.mailbox
    with rt.engine.connect() as conn:
        last = conn.execute(
            select(MAILBOX_CHECKPOINTS.c.last_uid).where(
                MAILBOX_CHECKPOINTS.c.mailbox == label,
                MAILBOX_CHECKPOINTS.c.folder == reader.name,
                MAILBOX_CHECKPOINTS.c.uidvalidity == reader.uidvalidity,
            )
        ).scalar()
    for batch in reader.after(int(last or 0), batch=cfg.batch_size):
        if not batch:
            continue
        classified = [_classify(rt, f) for f in batch]
        with session_scope(rt.engine) as session:
            conn = session.connection()
            record_batch(rt, conn, label, reader.name, batch, classified, now=now, out=out)
            _advance_checkpoint(conn, label, reader, batch, now=now)
        out.fetched += len(batch)
        reader.finish([f.uid for f in batch], cfg.after)


def _classify(rt: Runtime, fetched: Fetched) -> Classified:
    """Classify one message; one that cannot be read at all is recorded as ``other`` with
    the reason, so a single malformed message can never stop the folder's sync for good."""
    sender = rt.loaded.config.sender
    ours = [a for a in (sender.from_email, sender.reply_to, sender.unsubscribe_mailto) if a]
    try:
        return classify(
            parse(fetched.raw),
            fetched.raw,
            unsubscribe_phrases=rt.loaded.config.mailbox.unsubscribe_phrases,
            sent_by_us=ours,
        )
    except Exception as exc:  # any parser fault: keep it as evidence, go on
        key = "sha256:" + hashlib.sha256(fetched.raw).hexdigest()
        rule = f"unreadable: {type(exc).__name__}: {exc}"[:300]
        return Classified(
            kind=Kind.OTHER,
            rule=rule,
            key=key,
            message_id=None,
            answers=(),
            from_email=None,
            subject="",
            received_at=None,
            evidence={"rule": rule},
        )


@dataclass(frozen=True)
class _Match:
    lead_id: int | None
    outbox_id: int | None
    by: str | None


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
    matches = _match(conn, classified, domain=_our_domain(rt))
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
    _act(rt, conn, fresh, now=now, out=out)


_PERSONAL = (Kind.REPLIED, Kind.UNSUBSCRIBED, Kind.OUT_OF_OFFICE)
_NUL_AND_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _text(value: str) -> str:
    """Text as both databases store it: no NUL (PostgreSQL refuses it), no other control
    characters, no lone surrogates."""
    return _NUL_AND_CONTROLS.sub("", value)


def _our_domain(rt: Runtime) -> str:
    return rt.loaded.config.sender.from_email.rsplit("@", 1)[-1].lower()


def _match(conn: Connection, items: Sequence[Classified], *, domain: str) -> list[_Match]:
    """Each message's lead and outbox row: by thread, then by address (two queries a batch)."""
    wanted: dict[int, str] = {}
    for item in items:
        for mid in item.answers:
            found = _OUR_ID.match(mid)
            if found and mid.lower().endswith(f"@{domain}>"):
                wanted[int(found.group(1))] = mid
    rows = {}
    if wanted:
        rows = {
            r.id: r
            for r in conn.execute(
                select(OUTBOX.c.id, OUTBOX.c.lead_id, OUTBOX.c.message_id).where(
                    OUTBOX.c.id.in_(sorted(wanted))
                )
            )
        }
    addresses = {a for item in items for a in _addresses(item)}
    leads = {}
    if addresses:
        leads = dict(
            conn.execute(
                select(LEADS.c.email, LEADS.c.id).where(LEADS.c.email.in_(sorted(addresses)))
            ).all()
        )
    matches = []
    for item in items:
        match = _Match(None, None, None)
        for mid in item.answers:
            found = _OUR_ID.match(mid)
            row = rows.get(int(found.group(1))) if found else None
            if row is not None and row.message_id == mid:
                by = "dsn" if item.kind in (Kind.BOUNCED, Kind.SOFT_BOUNCED) else "thread"
                match = _Match(row.lead_id, row.id, by)
                break
        if match.lead_id is None:
            for address in _addresses(item):
                if address in leads:
                    match = _Match(leads[address], None, "address")
                    break
        matches.append(match)
    return matches


def _addresses(item: Classified) -> list[str]:
    bounced = item.kind in (Kind.BOUNCED, Kind.SOFT_BOUNCED)
    raw = list(item.failed) if bounced else ([item.from_email] if item.from_email else [])
    out = []
    for address in raw:
        plain = address.strip().lower()
        if _PLAIN_ADDRESS.fullmatch(plain):  # what intake stores for it: lower-cased as is
            out.append(plain)
            continue
        try:
            out.append(normalize_email(address))
        except InvalidValue:
            out.append(plain)
    return out


# An ASCII address that email-validator would only lower-case; anything else (Unicode, quotes,
# comments) goes through intake's own normalization. Used for matching only.
_PLAIN_ADDRESS = re.compile(r"[a-z0-9][a-z0-9._+-]*@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}")


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
    conn: Connection, label: str, reader: FolderReader, batch: Sequence[Fetched], *, now: datetime
) -> None:
    top = max(f.uid for f in batch)
    table = MAILBOX_CHECKPOINTS
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = module.insert(table).values(
        mailbox=label[:300],
        folder=reader.name[:200],
        uidvalidity=reader.uidvalidity,
        last_uid=top,
        messages=len(batch),
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


# --- acting on what was recorded -------------------------------------------------------------


def _act(
    rt: Runtime, conn: Connection, rows: list[dict[str, Any]], *, now: datetime, out: SyncOutcome
) -> None:
    events = []
    for row in rows:
        kind = row["kind"]
        if row["lead_id"] is None or kind not in EVENT_OF:
            continue
        data = {"inbound": row["key"], "rule": row["evidence"].get("rule")}
        for name in ("status", "return_date"):
            if row["evidence"].get(name):
                data[name] = row["evidence"][name]
        if row["snippet"]:
            data["snippet"] = row["snippet"][:300]
        events.append(
            EventIn(
                row["lead_id"],
                EVENT_OF[Kind(kind)],
                _occurred(row["received_at"], now),
                data,
                source="mailbox",
                message_id=row["outbox_id"],
            )
        )
    if not events:
        return
    record_events(conn, events, stop_on=rt.stop_on, now=now)
    out.suppressed += sum(1 for e in events if e.type in ("bounced", "unsubscribed"))
    out.paused += _pause_for_out_of_office(rt, conn, rows, now=now)
    _suppress_repeated_soft_bounces(rt, conn, rows, now=now, out=out)


def _occurred(received: datetime, now: datetime) -> datetime:
    """When it happened: the message's Date, unless that is in the future or far past."""
    if now - timedelta(days=30) <= received <= now:
        return received
    return now


def _pause_for_out_of_office(
    rt: Runtime, conn: Connection, rows: list[dict[str, Any]], *, now: datetime
) -> int:
    cfg = rt.loaded.config.mailbox
    resume: dict[int, datetime] = {}
    away = [r for r in rows if r["kind"] == Kind.OUT_OF_OFFICE and r["lead_id"] is not None]
    if not away:
        return 0
    zones = dict(
        conn.execute(
            select(LEADS.c.id, LEADS.c.timezone).where(
                LEADS.c.id.in_(sorted({r["lead_id"] for r in away}))
            )
        ).all()
    )
    for row in away:
        tz = resolve_zone(zones.get(row["lead_id"]), rt.loaded.config.timezone)
        stated = row["evidence"].get("return_date")
        if stated:
            back = datetime.combine(datetime.fromisoformat(stated).date(), time(9), tzinfo=tz)
            until = min(back.astimezone(UTC), now + timedelta(days=cfg.max_pause_days))
        else:
            until = add_business_days(
                now, cfg.out_of_office_business_days, tz=tz, holidays=rt.holidays
            )
        if until > now:
            resume[row["lead_id"]] = max(until, resume.get(row["lead_id"], until))
    if resume:  # one statement, executed for every paused lead
        conn.execute(
            update(OUTBOX)
            .where(
                OUTBOX.c.lead_id == bindparam("paused_lead"),
                OUTBOX.c.kind == "cadence",
                or_(
                    OUTBOX.c.status == MessageStatus.PENDING,
                    OUTBOX.c.status == MessageStatus.DEFERRED,
                ),  # not IN (...): an expanding list cannot be executed for many rows
                OUTBOX.c.due_at < bindparam("until"),
            )
            .values(due_at=bindparam("until"), defer_reason="out of office", updated_at=now),
            [{"paused_lead": lead_id, "until": until} for lead_id, until in resume.items()],
        )
    return len(resume)


def _suppress_repeated_soft_bounces(
    rt: Runtime, conn: Connection, rows: list[dict[str, Any]], *, now: datetime, out: SyncOutcome
) -> None:
    limit = rt.loaded.config.mailbox.soft_bounce_limit
    leads = sorted({r["lead_id"] for r in rows if r["kind"] == Kind.SOFT_BOUNCED and r["lead_id"]})
    if not leads:
        return
    alive = (
        select(EVENTS.c.lead_id, func.max(EVENTS.c.occurred_at).label("at"))
        .where(EVENTS.c.lead_id.in_(leads), EVENTS.c.type.in_(_ALIVE))
        .group_by(EVENTS.c.lead_id)
        .subquery()
    )
    soft = conn.execute(
        select(EVENTS.c.lead_id, func.count())
        .select_from(EVENTS.outerjoin(alive, alive.c.lead_id == EVENTS.c.lead_id))
        .where(
            EVENTS.c.lead_id.in_(leads),
            EVENTS.c.type == "soft_bounced",
            or_(alive.c.at.is_(None), EVENTS.c.occurred_at > alive.c.at),
        )
        .group_by(EVENTS.c.lead_id)
    ).all()
    over = [lead_id for lead_id, n in soft if n >= limit]
    if not over:
        return
    emails = dict(conn.execute(select(LEADS.c.id, LEADS.c.email).where(LEADS.c.id.in_(over))).all())
    suppress_many(
        conn,
        [(emails[i], "bounced") for i in over],
        now=now,
        detail=f"{limit} soft bounces in a row",
    )
    record_events(
        conn,
        [EventIn(i, "bounced", now, {"after_soft_bounces": limit}, source="mailbox") for i in over],
        stop_on=rt.stop_on,
        now=now,
    )
    out.suppressed += len(over)
