"""The outbox state machine: who is due, claim before sending, record what SMTP said.

Promises (see docs/delivery.md):
* at most one email per (lead, cadence, step, round): the unique constraint makes a second
  row impossible, and a row is claimed (``pending|deferred -> sending``) in a committed
  transaction before any SMTP call, so a crashed or overlapping run can never send it again;
* suppression always wins: the claim itself refuses rows whose address is suppressed, so an
  unsubscribe committed a millisecond before the claim is honoured;
* every message ends in a known state: rows left in ``sending`` by a crash become
  ``unknown`` after ``CLAIM_TTL`` and are reported, never resent automatically.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from leadflow.batching import IdRange
from leadflow.business_time import SendWindow, in_window, next_window_start
from leadflow.cadence import choose_variant, following_step, step_due, step_index
from leadflow.events import EventIn, record_events
from leadflow.mail.context import LEAD_COLUMNS
from leadflow.moves import CHECKIN_WINDOW, REEVALUATE_AFTER
from leadflow.outbox.claimed import Claimed, ClaimOutcome
from leadflow.runtime import Runtime
from leadflow.suppression import suppress_many
from models.db import insert_ignore
from models.tables import (
    LEADS,
    OPEN_MESSAGE_STATES,
    OUTBOX,
    SUPPRESSIONS,
    LeadStatus,
    MessageStatus,
)

CLAIM_TTL = timedelta(minutes=15)
# cancellations that leave the lead's cadence with nothing left to send
ORPHANING = frozenset({"step removed from config", "cadence removed from config"})
MAX_ATTEMPTS = 6
BACKOFF = (
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=8),
)
THROTTLE_BACKOFF = timedelta(minutes=30)
# PostgreSQL advisory lock taken by every claim transaction until it commits: claims run one
# at a time, so each counts the sends of the claims before it against the daily caps. (On
# SQLite, BEGIN IMMEDIATE already serializes every writer.) Sending stays parallel.
CLAIM_LOCK = 0x6C66_636C_6169_6D  # "lfclaim"


def due_condition(now: datetime, kind: str | None = None) -> ColumnElement[bool]:
    outbox = OUTBOX
    condition = and_(outbox.c.status.in_(list(OPEN_MESSAGE_STATES)), outbox.c.due_at <= now)
    if kind is not None:
        condition = and_(condition, outbox.c.kind == kind)
    return condition


# what a claim reads of its lead: what a template sees (mail.context), plus what the claim
# policy checks
LEAD_FIELDS = (*LEAD_COLUMNS, "pipeline", "status", "cadence")
_lead_values = attrgetter(*(f"lead_{f}" for f in LEAD_FIELDS))  # a claim row's lead columns


def reconcile(conn: Connection, *, now: datetime) -> list[int]:
    """Rows stuck in ``sending`` past the claim TTL become ``unknown`` (never resent)."""
    outbox = OUTBOX
    stale = and_(outbox.c.status == MessageStatus.SENDING, outbox.c.claimed_at < now - CLAIM_TTL)
    ids = [r[0] for r in conn.execute(select(outbox.c.id).where(stale)).all()]
    if ids:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids), outbox.c.status == MessageStatus.SENDING)
            .values(
                status=MessageStatus.UNKNOWN,
                updated_at=now,
                last_error="claim expired: the sender stopped mid-send; delivery unknown",
            )
        )
    return ids


def release_claims(conn: Connection, ids: Sequence[int], *, now: datetime) -> int:
    """Give claimed rows back, due now, when no message was handed to SMTP for them (the run
    failed before): the claim's attempt is not counted and the caps no longer count them."""
    if not ids:
        return 0
    outbox = OUTBOX
    released = conn.execute(
        update(outbox)
        .where(outbox.c.id.in_(list(ids)), outbox.c.status == MessageStatus.SENDING)
        .values(
            status=MessageStatus.DEFERRED,
            due_at=now,
            defer_reason="released: the run stopped before sending it",
            attempts=outbox.c.attempts - 1,
            claim_token=None,
            claimed_at=None,
            updated_at=now,
        )
    )
    return int(released.rowcount or 0)


def recipient_domain(address: str) -> str:
    """What the per-domain cap counts by: everything after the first "@" (as the SQL below)."""
    return address.partition("@")[2]


def _domain_sql(conn: Connection) -> ColumnElement[str]:
    email = OUTBOX.c.to_email
    if conn.dialect.name == "postgresql":
        return func.split_part(email, "@", 2)
    return func.substr(email, func.instr(email, "@") + 1)


def _sent_today(
    conn: Connection, day_start: datetime, *, by_domain: bool
) -> tuple[int, Counter[str]]:
    """Messages claimed since ``day_start`` that count against the caps: in total, and per
    recipient domain if ``by_domain``. Aggregated in the database over the ``claimed_at``
    index: each claim of a busy day would otherwise fetch every address sent that day."""
    outbox = OUTBOX
    today = and_(
        outbox.c.status.in_([MessageStatus.SENT, MessageStatus.SENDING, MessageStatus.UNKNOWN]),
        outbox.c.claimed_at >= day_start,
    )
    if not by_domain:
        total = conn.execute(select(func.count()).select_from(outbox).where(today)).scalar_one()
        return int(total), Counter()
    domain = _domain_sql(conn)
    counts = Counter(
        {
            d: int(n)
            for d, n in conn.execute(select(domain, func.count()).where(today).group_by(domain))
        }
    )
    return sum(counts.values()), counts


def claim_batch(
    conn: Connection,
    rt: Runtime,
    id_range: IdRange,
    *,
    now: datetime,
    kind: str | None = None,
    limit: int | None = None,
) -> ClaimOutcome:
    """Decide the fate of the due rows in ``id_range`` (the first ``limit`` of them, in due
    order, if given) and claim the sendable ones.

    Call inside a transaction and commit before sending. Every row looked at leaves the due
    set (claimed, deferred, cancelled or suppressed), so calling again takes the next ones.
    """
    config = rt.loaded.config
    outbox = OUTBOX
    lead = LEADS
    supp = SUPPRESSIONS
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
    query = (
        select(
            outbox.c.id,
            outbox.c.lead_id,
            outbox.c.cadence,
            outbox.c.step,
            outbox.c.round,
            outbox.c.kind,
            outbox.c.stage,
            outbox.c.to_email,
            outbox.c.attempts,
            *[lead.c[f].label(f"lead_{f}") for f in LEAD_FIELDS],
            exists().where(supp.c.email == outbox.c.to_email).label("suppressed"),
        )
        .join(lead, lead.c.id == outbox.c.lead_id)
        .where(outbox.c.id >= id_range[0], outbox.c.id <= id_range[1], due_condition(now, kind))
        .order_by(outbox.c.due_at, outbox.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=outbox)
    rows = conn.execute(query).all()
    result = ClaimOutcome(token=uuid.uuid4().hex, examined=len(rows))
    sender_tz = ZoneInfo(config.timezone)
    local_now = now.astimezone(sender_tz)
    day_start = datetime.combine(local_now.date(), time(0), sender_tz)
    tomorrow = day_start + timedelta(days=1)
    domain_cap = config.sender.per_domain_daily_cap
    sent_count, per_domain = _sent_today(conn, day_start, by_domain=domain_cap is not None)
    cap = config.sender.daily_cap
    cancel: list[dict[str, Any]] = []
    defer: list[dict[str, Any]] = []
    suppressed: list[int] = []
    to_claim: defaultdict[tuple[str, str | None], list[int]] = defaultdict(list)
    orphaned: list[dict[str, Any]] = []
    window_opens: dict[tuple[SendWindow, ZoneInfo], datetime | None] = {}  # None: open now
    for row in rows:
        if row.suppressed:
            suppressed.append(row.id)
            continue
        plan = _resolve(rt, row)
        if isinstance(plan, str):
            cancel.append({"b_id": row.id, "error": plan})
            result.cancelled[plan] += 1
            if plan in ORPHANING and row.lead_cadence == row.cadence:
                orphaned.append({"b_id": row.lead_id, "b_cadence": row.cadence})
            continue
        template, variant, window = plan
        tz = rt.send_zone(
            row.cadence if row.kind == "cadence" else None, row.lead_timezone, row.lead_pipeline
        )
        # the same for every row with this window and zone: worked out once per claim
        if (window, tz) not in window_opens:
            window_opens[(window, tz)] = (
                None
                if in_window(now, window, tz=tz, holidays=rt.holidays)
                else next_window_start(now, window, tz=tz, holidays=rt.holidays)
            )
        opens = window_opens[(window, tz)]
        if opens is not None:
            defer.append({"b_id": row.id, "due": opens, "reason": "send window"})
            result.deferred["send window"] += 1
            continue
        domain = recipient_domain(row.to_email)
        if sent_count >= cap:
            defer.append(
                {
                    "b_id": row.id,
                    "due": next_window_start(tomorrow, window, tz=tz, holidays=rt.holidays),
                    "reason": "daily cap",
                }
            )
            result.deferred["daily cap"] += 1
            continue
        if domain_cap is not None and per_domain[domain] >= domain_cap:
            defer.append(
                {
                    "b_id": row.id,
                    "due": next_window_start(tomorrow, window, tz=tz, holidays=rt.holidays),
                    "reason": "domain cap",
                }
            )
            result.deferred["domain cap"] += 1
            continue
        sent_count += 1
        per_domain[domain] += 1
        to_claim[(template, variant)].append(row.id)
        result.claimed.append(
            Claimed(
                id=row.id,
                lead_id=row.lead_id,
                cadence=row.cadence,
                step=row.step,
                round=row.round,
                kind=row.kind,
                template=template,
                variant=variant,
                to_email=row.to_email,
                attempts=row.attempts + 1,
                lead=dict(zip(LEAD_FIELDS, _lead_values(row), strict=True)),
            )
        )
    # Every write below re-checks that the row is still open: a rival run may have claimed
    # (even sent) it since our SELECT, and turning its row back into deferred would send the
    # message twice. Only the PostgreSQL row locks make that impossible; SQLite needs the guard.
    # (``or_`` rather than ``in_``: expanding IN cannot be used with executemany.)
    still_open = or_(*[outbox.c.status == state for state in OPEN_MESSAGE_STATES])
    if suppressed:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(suppressed), still_open)
            .values(
                status=MessageStatus.SUPPRESSED,
                updated_at=now,
                last_error="address is on the suppression list",
            )
        )
        result.suppressed = len(suppressed)
    if cancel:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == bindparam("b_id"), still_open)
            .values(status=MessageStatus.CANCELLED, last_error=bindparam("error"), updated_at=now),
            cancel,
        )
    if orphaned:
        # The step the lead was waiting on is gone from the config: its cadence counts as
        # complete, so the stage engine applies ``on_complete`` instead of waiting forever.
        done = now + REEVALUATE_AFTER
        conn.execute(
            update(LEADS)
            .where(LEADS.c.id == bindparam("b_id"), LEADS.c.cadence == bindparam("b_cadence"))
            .values(cadence_done_at=done, next_action_at=done, updated_at=now),
            orphaned,
        )
    if defer:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == bindparam("b_id"), still_open)
            .values(
                status=MessageStatus.DEFERRED,
                due_at=bindparam("due"),
                defer_reason=bindparam("reason"),
                updated_at=now,
            ),
            defer,
        )
    # One UPDATE per (template, variant), usually a handful per claim: cheaper than a
    # statement per row, and the claim holds the interpreter for less time beside the sending.
    for (template, variant), claim_ids in to_claim.items():
        # The guard: only rows still open and not suppressed are taken, whatever another
        # process did since we read them.
        conn.execute(
            update(outbox)
            .where(
                outbox.c.id.in_(claim_ids),
                still_open,
                ~exists().where(supp.c.email == outbox.c.to_email),
            )
            .values(
                status=MessageStatus.SENDING,
                claim_token=result.token,
                claimed_at=now,
                attempts=outbox.c.attempts + 1,
                template=template,
                variant=variant,
                updated_at=now,
            )
        )
    if to_claim:
        won = set(
            conn.execute(
                select(outbox.c.id).where(
                    outbox.c.claim_token == result.token, outbox.c.status == MessageStatus.SENDING
                )
            )
            .scalars()
            .all()
        )
        result.claimed = [c for c in result.claimed if c.id in won]
    return result


def _resolve(rt: Runtime, row: Any) -> tuple[str, str | None, Any] | str:
    """(template, variant, window) for a row under the current config, or why it is cancelled."""
    config = rt.loaded.config
    if row.kind == "checkin":
        plan = config.checkins.get(row.cadence)
        if row.lead_status == LeadStatus.CLOSED:
            return "stopped: lead closed"
        if plan is None:
            return "check-in plan removed from config"
        templates = {c.id: c.template for c in plan.checkins}
        templates.update({r.id: r.template for r in plan.renewals})
        if row.step not in templates:
            return "check-in removed from config"
        return templates[row.step], None, CHECKIN_WINDOW
    if row.lead_status != LeadStatus.ACTIVE or row.lead_stage != row.stage:
        return "stopped: stage changed"
    if row.lead_cadence != row.cadence:
        return "stopped: cadence ended"
    cadence = config.cadences.get(row.cadence)
    if cadence is None:
        return "cadence removed from config"
    index = step_index(cadence, row.step)
    if index is None:
        return "step removed from config"
    variant, template = choose_variant(row.lead_id, row.cadence, cadence.steps[index])
    return template, variant, rt.send_windows[row.cadence]


@dataclass
class RecordOutcome:
    counts: Counter[str] = field(default_factory=Counter)
    next_steps: int = 0
    completed: int = 0


def record_results(
    conn: Connection,
    rt: Runtime,
    claimed: Sequence[Claimed],
    results: Sequence[tuple[str, int | None, str, str | None, str | None]],
    *,
    now: datetime,
) -> RecordOutcome:
    """Store SMTP outcomes: ``results[i] = (outcome, code, detail, message_id, subject)``.

    Only rows still claimed by us (``status = 'sending'``) are touched.
    """
    outbox = OUTBOX
    lead = LEADS
    out = RecordOutcome()
    updates: list[dict[str, Any]] = []
    next_rows: list[dict[str, Any]] = []
    completions: list[dict[str, Any]] = []
    bounces: list[Claimed] = []
    due_at: dict[tuple[str, str, ZoneInfo], datetime] = {}
    for item, (outcome, code, detail, message_id, subject) in zip(claimed, results, strict=True):
        values: dict[str, Any] = {
            "b_id": item.id,
            "code": code,
            "error": None,
            "message_id": message_id,
            "subject": subject,
            "sent_at": None,
            "due": None,
            "reason": None,
        }
        attempts_used = item.attempts
        if outcome == "sent":
            values.update(status=MessageStatus.SENT, sent_at=now)
            if item.kind == "cadence":
                nxt = _schedule_next(rt, item, now, due_at)
                if isinstance(nxt, dict):
                    next_rows.append(nxt)
                    out.next_steps += 1
                elif nxt is not None:
                    # Due for the stage engine no earlier than a moved lead would be: at
                    # ``now`` itself a repeated tick would act on the completion.
                    next_check = max(nxt, now + REEVALUATE_AFTER)
                    completions.append(
                        {
                            "b_id": item.lead_id,
                            "b_done": nxt,
                            "b_next": next_check,
                            "b_cadence": item.cadence,
                        }
                    )
                    out.completed += 1
        elif outcome in ("deferred", "throttled") and attempts_used < MAX_ATTEMPTS:
            wait = (
                THROTTLE_BACKOFF
                if outcome == "throttled"
                else BACKOFF[min(attempts_used - 1, len(BACKOFF) - 1)]
            )
            values.update(
                status=MessageStatus.DEFERRED,
                due=now + wait,
                reason=f"smtp {code}" if code else "smtp temporary failure",
                error=detail[:1000],
            )
        elif outcome in ("deferred", "throttled"):
            values.update(
                status=MessageStatus.FAILED,
                error=f"gave up after {attempts_used} attempts: {detail}"[:1000],
            )
        elif outcome == "bounced":
            values.update(status=MessageStatus.BOUNCED, error=detail[:1000])
            bounces.append(item)
        elif outcome == "failed":
            values.update(status=MessageStatus.FAILED, error=detail[:1000])
        else:
            values.update(status=MessageStatus.UNKNOWN, error=detail[:1000])
        out.counts[str(values["status"])] += 1
        updates.append(values)
    if updates:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == bindparam("b_id"), outbox.c.status == MessageStatus.SENDING)
            .values(
                status=bindparam("status"),
                smtp_code=bindparam("code"),
                last_error=bindparam("error"),
                message_id=bindparam("message_id"),
                subject=bindparam("subject"),
                sent_at=bindparam("sent_at"),
                due_at=_coalesce_due(),
                defer_reason=bindparam("reason"),
                updated_at=now,
            ),
            updates,
        )
    insert_ignore(conn, outbox, next_rows)
    if completions:
        conn.execute(
            update(lead)
            .where(lead.c.id == bindparam("b_id"), lead.c.cadence == bindparam("b_cadence"))
            .values(
                cadence_done_at=bindparam("b_done"),
                next_action_at=bindparam("b_next"),
                updated_at=now,
            ),
            completions,
        )
    if bounces:
        suppress_many(conn, [(b.to_email, "bounced") for b in bounces], now=now)
        record_events(
            conn,
            [EventIn(b.lead_id, "bounced", now, message_id=b.id, source="smtp") for b in bounces],
            stop_on=rt.stop_on,
            now=now,
            due_at=now + REEVALUATE_AFTER,
        )
    return out


def _coalesce_due() -> Any:
    return func.coalesce(
        bindparam("due", type_=OUTBOX.c.due_at.type),
        OUTBOX.c.due_at,
    )


def _schedule_next(
    rt: Runtime, item: Claimed, now: datetime, due_at: dict[tuple[str, str, ZoneInfo], datetime]
) -> dict[str, Any] | datetime | None:
    """The next step's outbox row, or when the cadence counts as complete. ``due_at`` keeps
    the due times worked out in this batch: they depend only on the step and the zone."""
    cadence = rt.loaded.config.cadences.get(item.cadence)
    if cadence is None:
        return None
    nxt = following_step(cadence, item.step)
    if nxt is None:
        return now + timedelta(days=cadence.on_complete.after_days)
    tz = rt.send_zone(item.cadence, item.lead.get("timezone"), item.lead.get("pipeline"))
    key = (item.cadence, nxt.id, tz)
    due = due_at.get(key)
    if due is None:
        window = rt.send_windows[item.cadence]
        due = due_at[key] = step_due(now, nxt, window=window, tz=tz, holidays=rt.holidays)
    return {
        "lead_id": item.lead_id,
        "cadence": item.cadence,
        "step": nxt.id,
        "round": item.round,
        "kind": "cadence",
        "stage": item.lead.get("stage"),
        "to_email": item.to_email,
        "status": MessageStatus.PENDING,
        "due_at": due,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
