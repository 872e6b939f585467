"""The demo's simulated world: how synthetic leads react to emails and sales calls.

Deterministic (seeded per lead and day), so two demo runs tell the same story. Reactions to
email reach leadflow the way real ones do: replies, out-of-office answers, unsubscribe
requests and delivery-status reports are written as real messages into a Maildir (which the
``mailbox`` step of the next tick reads), and opens and clicks go through the tracking
tokens in the delivered email, recorded by the same function the web app's ``/o`` and ``/c``
routes call. Only what a sales rep would log by hand (meetings, proposals, wins and losses,
web visits) is written as events directly.
"""

from __future__ import annotations

import hashlib
import mailbox
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, select

from leadflow.listening.tracking import CLICK_PATH, OPEN_PATH, read_click_token, read_open_token
from leadflow.pipeline.events import EventIn
from models.tables import LEADS, OUTBOX, LeadStatus, MessageStatus

SEED = 20261102
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
_TRACKED = re.compile(r'(?:href|src)="([^"]+/(?:c|o)/[^"]+)"')

# A hit on a tracking URL: (outbox id, "open" | "click", url or None, at) -> event recorded
HitRecorder = Callable[[int, str, str | None, datetime], object]


def parse(raw: bytes) -> EmailMessage:
    """A delivered email, read with the modern policy (``get_body``)."""
    msg = message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


def _rng(lead_id: int, day: datetime, salt: str) -> random.Random:
    return random.Random(f"{SEED}:{lead_id}:{day.date().isoformat()}:{salt}")


@dataclass
class Reactions:
    """What the world did on one day: events a rep logs, messages mailed back, link hits."""

    events: list[EventIn] = field(default_factory=list)
    mailed: int = 0
    hits: int = 0


@dataclass
class World:
    """The leads' side of the conversation. ``delivered`` finds a delivered email's bytes by
    its Message-ID (the SMTP sink's copy); ``record_hit`` is the web app's hit recorder."""

    maildir: Path
    delivered: Callable[[str], bytes | None]
    record_hit: HitRecorder
    secret: str
    _box: mailbox.Maildir | None = None

    def box(self) -> mailbox.Maildir:
        if self._box is None:
            self._box = mailbox.Maildir(self.maildir, create=True)
        return self._box

    def react(self, db: Engine, *, now: datetime) -> Reactions:
        """Reactions that happened during the day before ``now``. The database is only read
        here; link hits are recorded in transactions of their own, as the web app does."""
        out = Reactions()
        at = now - timedelta(minutes=30)
        with db.connect() as conn:
            sent = self._sent(conn, now=now)
            out.events += _sales_events(conn, now=now, at=at)
        for row in sent:
            self._answer(row, at, out)
        return out

    def _sent(self, conn: Connection, *, now: datetime) -> Sequence[Any]:
        since = now - timedelta(days=1)
        return conn.execute(
            select(
                OUTBOX.c.id,
                OUTBOX.c.lead_id,
                OUTBOX.c.kind,
                OUTBOX.c.message_id,
                OUTBOX.c.to_email,
                LEADS.c.fit_score,
                LEADS.c.first_name,
            )
            .join(LEADS, LEADS.c.id == OUTBOX.c.lead_id)
            .where(
                OUTBOX.c.status == MessageStatus.SENT,
                OUTBOX.c.sent_at >= since,
                OUTBOX.c.sent_at < now,
            )
            .order_by(OUTBOX.c.id)
        ).all()

    def _answer(self, row: Any, at: datetime, out: Reactions) -> None:
        outbox_id, lead_id, kind, message_id, to_email, fit, first_name = row
        rng = _rng(lead_id, at, f"mail{outbox_id}")
        original = self.delivered(message_id) if message_id else None
        if original is None:
            return
        if rng.random() < 0.02:  # the address is dead: the receiving server says so
            self._mail(_bounce(to_email, original, at))
            out.mailed += 1
            return
        keen = min(max((fit or 0) / 60.0, 0.0), 1.0)
        if rng.random() >= 0.35 + 0.3 * keen:
            return
        links = _TRACKED.findall(_html_of(original))
        self._hit(links, OPEN_PATH, at, out)
        if rng.random() < 0.25 + 0.2 * keen:
            self._hit(links, CLICK_PATH, at + timedelta(minutes=2), out)
        roll = rng.random()
        if kind == "cadence" and roll < 0.03:
            self._mail(_out_of_office(to_email, first_name, original, at))
        elif kind == "cadence" and roll < 0.08 + 0.12 * keen:
            self._mail(_reply(to_email, first_name, original, at, rng))
        elif roll > 0.99:
            self._mail(_reply(to_email, first_name, original, at, rng, text=_UNSUBSCRIBE))
        else:
            return
        out.mailed += 1

    def _hit(self, links: list[str], path: str, at: datetime, out: Reactions) -> None:
        for link in links:
            token = link.rsplit("/", 1)[-1]
            if f"{path}/" not in link:
                continue
            if path == OPEN_PATH:
                outbox_id = read_open_token(token.removesuffix(".gif"), self.secret)
                if outbox_id is not None:
                    self.record_hit(outbox_id, "open", None, at)
                    out.hits += 1
            else:
                clicked = read_click_token(token, self.secret)
                if clicked is not None:
                    self.record_hit(clicked[0], "click", clicked[1], at)
                    out.hits += 1
            return

    def _mail(self, message: EmailMessage | bytes) -> None:
        data = message if isinstance(message, bytes) else message.as_bytes(policy=default_policy)
        self.box().add(data)


def _html_of(original: bytes) -> str:
    msg = parse(original)
    body = msg.get_body(preferencelist=("html",))
    return str(body.get_content()) if body is not None else ""


_REPLIES = (
    "Thanks for reaching out. This is timely: can we talk on Thursday afternoon?",
    "Interesting. Could you send me pricing for a team of about 40?",
    "Not interested at the moment, thanks.",
    "Please loop in my colleague, she owns analytics here.",
)
_UNSUBSCRIBE = "Please remove me from your list."


def _quoted(original: bytes) -> tuple[str, str, str, str]:
    msg = parse(original)
    body = msg.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    quote = "\n".join("> " + line for line in str(text).splitlines()[:12])
    return str(msg["Message-ID"]), str(msg["Subject"]), str(msg["From"]), quote


def _answering(
    original: bytes, to_email: str, first_name: str | None, at: datetime, prefix: str
) -> tuple[EmailMessage, str, str]:
    """A message from the lead that answers ``original`` (threaded by its Message-ID); also
    the original's sender and its text quoted."""
    message_id, subject, sender, quote = _quoted(original)
    message = EmailMessage(policy=default_policy)
    message["From"] = f"{first_name or ''} <{to_email}>".strip()
    message["To"] = sender
    message["Subject"] = f"{prefix}{subject}"
    message["Date"] = format_datetime(at)
    message["Message-ID"] = make_msgid(domain=to_email.rsplit("@", 1)[-1])
    message["In-Reply-To"] = message_id
    message["References"] = message_id
    return message, sender, quote


def _reply(
    to_email: str,
    first_name: str | None,
    original: bytes,
    at: datetime,
    rng: random.Random,
    *,
    text: str | None = None,
) -> EmailMessage:
    message, sender, quote = _answering(original, to_email, first_name, at, "Re: ")
    said = text or rng.choice(_REPLIES)
    when = format_datetime(at - timedelta(hours=3))
    message.set_content(f"{said}\n\n{first_name or ''}\n\nOn {when}, {sender} wrote:\n{quote}\n")
    return message


def _out_of_office(
    to_email: str, first_name: str | None, original: bytes, at: datetime
) -> EmailMessage:
    message, _sender, _quote = _answering(original, to_email, first_name, at, "Automatic reply: ")
    message["Auto-Submitted"] = "auto-replied"
    message["X-Auto-Response-Suppress"] = "All"
    back = at + timedelta(days=8)
    message.set_content(
        f"Thank you for your message. I am out of the office and will be back on "
        f"{back:%A, %B} {back.day}, {back.year}, with limited access to email.\n"
    )
    return message


def _bounce(to_email: str, original: bytes, at: datetime) -> bytes:
    """A Postfix-style RFC 3464 report: 5.1.1, with the original's headers attached."""
    headers = original.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    host = to_email.rsplit("@", 1)[-1]
    sender = str(parse(original)["From"])
    boundary = "bounce-" + hashlib.sha256(f"{to_email}{at}".encode()).hexdigest()[:16]
    return f"""From: MAILER-DAEMON@mx.{host} (Mail Delivery System)
To: {sender}
Subject: Undelivered Mail Returned to Sender
Date: {format_datetime(at)}
Message-ID: {make_msgid(domain=f"mx.{host}")}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.{host}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{to_email}>: host mx.{host} said: 550 5.1.1 <{to_email}>:
    Recipient address rejected: User unknown in local recipient table

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.{host}
Arrival-Date: {format_datetime(at)}

Final-Recipient: rfc822; {to_email}
Original-Recipient: rfc822;{to_email}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{to_email}>: Recipient address rejected

--{boundary}
Content-Type: text/rfc822-headers

{headers}

--{boundary}--
""".replace("\n", "\r\n").encode("utf-8")


def _sales_events(conn: Connection, *, now: datetime, at: datetime) -> list[EventIn]:
    """What reps log after calls and meetings (not email: that arrives by mail)."""
    events: list[EventIn] = []
    active = conn.execute(
        select(LEADS.c.id, LEADS.c.stage, LEADS.c.stage_entered_at).where(
            and_(LEADS.c.status == LeadStatus.ACTIVE, LEADS.c.stage.is_not(None))
        )
    ).all()
    for lead_id, stage, entered in active:
        rng = _rng(lead_id, now, "sales")
        days_in = (now - entered).total_seconds() / 86400 if entered else 0
        roll = rng.random()
        if (stage == "qualified" and roll < 0.2) or (stage == "prospect" and roll < 0.02):
            events.append(EventIn(lead_id, "meeting_booked", at))
        elif stage == "meeting" and days_in >= 2:
            if roll < 0.45:
                events.append(EventIn(lead_id, "proposal_sent", at))
            elif roll < 0.5:
                events.append(EventIn(lead_id, "lost", at, data={"reason": "no budget"}))
        elif stage == "proposal" and days_in >= 1:
            if roll < 0.05:
                events.append(EventIn(lead_id, "won", at))
            elif roll < 0.1:
                events.append(EventIn(lead_id, "lost", at, data={"reason": "competitor"}))
            elif roll < 0.25:
                events.append(EventIn(lead_id, "replied", at))
        elif stage == "negotiation" and days_in >= 1:
            if roll < 0.12:
                events.append(EventIn(lead_id, "won", at))
            elif roll < 0.18:
                events.append(EventIn(lead_id, "lost", at, data={"reason": "price"}))
        elif stage == "lead" and roll < 0.04:
            events.append(EventIn(lead_id, "web_visit", at))
        elif stage == "lead" and roll < 0.05:
            events.append(EventIn(lead_id, "form_filled", at))
    return events
