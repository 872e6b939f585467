"""The daily caps a claim enforces: sends per sender day, in total and per recipient domain.

A day is the sender's (``config.timezone``) calendar day. What counts is every message claimed
that day and not given back (``sent``, ``sending``, ``unknown``): claims run one at a time
(see ``claim.CLAIM_LOCK``), so each one counts the sends of the claims before it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, func, select
from sqlalchemy.sql.elements import ColumnElement

from leadflow.config.schema import PipelineConfig
from models.tables import OUTBOX, MessageStatus


def recipient_domain(address: str) -> str:
    """What the per-domain cap counts by: everything after the first "@" (as the SQL below)."""
    return address.partition("@")[2]


def _domain_sql(conn: Connection) -> ColumnElement[str]:
    email = OUTBOX.c.to_email
    if conn.dialect.name == "postgresql":
        return func.split_part(email, "@", 2)
    return func.substr(email, func.instr(email, "@") + 1)


def sent_today(
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


@dataclass
class DailyCaps:
    """Today's sends so far, counted up as a claim takes rows."""

    cap: int
    domain_cap: int | None
    sent: int
    per_domain: Counter[str]
    tomorrow: datetime  # when the sender's next day starts: where capped rows are deferred to

    @classmethod
    def today(cls, conn: Connection, config: PipelineConfig, now: datetime) -> DailyCaps:
        sender_tz = ZoneInfo(config.timezone)
        day_start = datetime.combine(now.astimezone(sender_tz).date(), time(0), sender_tz)
        domain_cap = config.sender.per_domain_daily_cap
        sent, per_domain = sent_today(conn, day_start, by_domain=domain_cap is not None)
        return cls(
            cap=config.sender.daily_cap,
            domain_cap=domain_cap,
            sent=sent,
            per_domain=per_domain,
            tomorrow=day_start + timedelta(days=1),
        )

    def refusal(self, address: str) -> str | None:
        """The cap that keeps a message to ``address`` for tomorrow, if one does."""
        if self.sent >= self.cap:
            return "daily cap"
        domain = recipient_domain(address)
        if self.domain_cap is not None and self.per_domain[domain] >= self.domain_cap:
            return "domain cap"
        return None

    def take(self, address: str) -> None:
        """Count a message to ``address`` as sent today."""
        self.sent += 1
        self.per_domain[recipient_domain(address)] += 1
