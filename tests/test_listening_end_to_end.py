"""The listening half end to end, in time travel over the default pipeline.

Real parts: emails go over SMTP to an aiosmtpd sink, answers are appended to a Dovecot
folder with IMAP APPEND and read by the tick's own mailbox step, and the click goes through
the web app's tracked-link route. Four medium-fit leads arrive on Tuesday 2026-11-03 and get
the intro on Wednesday 11-04 (the window is Tue-Thu 09:00-11:30); the next morning one
replies, one is out of the office until Monday 11-16, one's address bounces (5.1.1). The
fourth clicks a link in the sink's copy of its second email on 11-11. New York dates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import DEFAULT_CONFIG, TEMPLATES, database_url
from fastapi.testclient import TestClient
from imap_server import ImapAccount, account_from_env, append, delete_folder, new_folder
from seeding import intake_lead
from sqlalchemy import insert, select

from leadflow.app.web import create_app
from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.mail.sink import SmtpSink
from leadflow.pipeline import engine
from leadflow.reporting.build import build_report
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.tables import EVENTS, INBOUND, LEADS, OUTBOX, SUPPRESSIONS

NEW_YORK = ZoneInfo("America/New_York")
START = datetime(2026, 11, 3, 15, 30, tzinfo=UTC)  # Tuesday 10:30 in New York
DAYS = 21
MEDIUM = {"industry": "saas", "country": "US", "timezone": "America/New_York", "attributes": {}}
WHO = ("replier", "away", "dead", "clicker")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


def ny(at: datetime) -> date:
    return at.astimezone(NEW_YORK).date()


def parsed(data: bytes) -> Any:
    return message_from_bytes(data, policy=default_policy)


def reply_to(original: bytes, sender: str, body: str, at: datetime, **headers: str) -> bytes:
    msg = parsed(original)
    lines = [
        f"From: {sender}",
        f"To: {msg['From']}",
        f"Subject: Re: {msg['Subject']}",
        f"Date: {at.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"Message-ID: <{sender.split('@')[0]}.{at:%Y%m%d%H%M}@mail.example>",
        f"In-Reply-To: {msg['Message-ID']}",
        f"References: {msg['Message-ID']}",
        *(f"{name}: {value}" for name, value in headers.items()),
        "Content-Type: text/plain; charset=utf-8",
        "",
        body,
    ]
    return "\r\n".join(lines).encode()


def bounce_of(original: bytes, recipient: str, at: datetime) -> bytes:
    head = original.split(b"\r\n\r\n", 1)[0].decode()
    return (
        "From: MAILER-DAEMON@mx.dead.example (Mail Delivery System)\r\n"
        "To: ada@acme-analytics.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {at.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        "Message-ID: <dsn1@mx.dead.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nUser unknown\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.dead.example"
        f"\r\n\r\nFinal-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n{head}\r\n--B--\r\n"
    ).encode()


@pytest.fixture(scope="module")
def imap() -> Iterator[tuple[ImapAccount, str]]:
    account = account_from_env()
    folder = new_folder(account, "e2e")
    yield account, folder
    delete_folder(account, folder)


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, imap: tuple[ImapAccount, str]
) -> Iterator[dict[str, Any]]:
    account, folder = imap
    home = tmp_path_factory.mktemp("listening")
    with SmtpSink(None) as sink:
        settings = Settings(
            home=home,
            database_url=database_url(Path(home)),
            config=DEFAULT_CONFIG,
            templates=TEMPLATES,
            demo=True,
            smtp_port=sink.port,
            mailbox_url=f"imap+plain://{account.user}@{account.host}:{account.port}/{folder}",
            mailbox_password=account.password,
        )
        rt = Runtime.open(settings)
        ids: dict[str, int] = {}
        with rt.engine.begin() as conn:
            for name in WHO:
                lead = intake_lead(f"{name}@{name}.example", now=START, first_name=None, **MEDIUM)
                ids[name] = conn.execute(
                    insert(LEADS).values(**lead).returning(LEADS.c.id)
                ).scalar_one()
        clock = {"now": START}
        web = TestClient(create_app(rt, clock=lambda: clock["now"]))
        story: dict[str, Any] = {"rt": rt, "ids": ids, "sink": sink, "clicked_at": None}
        scores: list[tuple[date, float]] = []
        for day in range(DAYS):
            now = START + timedelta(days=day)
            morning = clock["now"] = now - timedelta(hours=2)
            if ny(now) == date(2026, 11, 5):
                answer_the_intros(sink, account, folder, morning)
            if ny(now) == date(2026, 11, 11):
                story["clicked_at"] = click_the_value_email(sink, web)
            engine.tick(rt, now=now, transport=smtp_transport_factory(rt))
            with rt.engine.connect() as conn:
                score = conn.execute(
                    select(LEADS.c.engagement_score).where(LEADS.c.id == ids["clicker"])
                ).scalar_one()
            scores.append((ny(now), score))
        story["scores"] = scores
        story["report"] = build_report_now(rt, START + timedelta(days=DAYS))
        yield story
        rt.close()


def build_report_now(rt: Runtime, until: datetime) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        return build_report(conn, rt.loaded, since=None, until=until, pipeline=None)


def delivered_to(sink: SmtpSink, address: str) -> list[bytes]:
    return [m.data for m in sink.messages if address in m.recipients]


def answer_the_intros(sink: SmtpSink, account: ImapAccount, folder: str, at: datetime) -> None:
    (intro_r,) = delivered_to(sink, "replier@replier.example")
    (intro_a,) = delivered_to(sink, "away@away.example")
    (intro_d,) = delivered_to(sink, "dead@dead.example")
    append(
        account,
        folder,
        [
            reply_to(intro_r, "replier@replier.example", "Not now, thanks.", at),
            reply_to(
                intro_a,
                "away@away.example",
                "I am out of the office and will be back on Monday, November 16, 2026.",
                at,
                **{"Auto-Submitted": "auto-replied"},
            ),
            bounce_of(intro_d, "dead@dead.example", at),
        ],
    )


def click_the_value_email(sink: SmtpSink, web: TestClient) -> str:
    value = delivered_to(sink, "clicker@clicker.example")[-1]
    html = parsed(value).get_body(preferencelist=("html",)).get_content()
    links = re.findall(r'href="(http://127\.0\.0\.1:8000/c/[^"]+)"', html)
    assert links, "no tracked link in the delivered email"
    path = links[0].removeprefix("http://127.0.0.1:8000")
    answer = web.get(path, headers={"User-Agent": BROWSER}, follow_redirects=False)
    assert answer.status_code == 302
    return str(answer.headers["location"])


def sends(story: dict[str, Any], who: str) -> list[date]:
    rt: Runtime = story["rt"]
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(OUTBOX.c.sent_at)
            .where(OUTBOX.c.lead_id == story["ids"][who], OUTBOX.c.sent_at.is_not(None))
            .order_by(OUTBOX.c.sent_at)
        ).all()
    return [ny(r.sent_at) for r in rows]


def events_of(story: dict[str, Any], who: str, source: str) -> list[tuple[str, int | None]]:
    rt: Runtime = story["rt"]
    with rt.engine.connect() as conn:
        return [
            (r.type, r.message_id)
            for r in conn.execute(
                select(EVENTS.c.type, EVENTS.c.message_id)
                .where(EVENTS.c.lead_id == story["ids"][who], EVENTS.c.source == source)
                .order_by(EVENTS.c.id)
            )
        ]


def intro_row(story: dict[str, Any], who: str) -> int:
    rt: Runtime = story["rt"]
    with rt.engine.connect() as conn:
        return int(
            conn.execute(
                select(OUTBOX.c.id).where(
                    OUTBOX.c.lead_id == story["ids"][who], OUTBOX.c.step == "intro"
                )
            ).scalar_one()
        )


def test_a_reply_read_from_the_mailbox_stops_the_cadence(run: dict[str, Any]) -> None:
    assert events_of(run, "replier", "mailbox") == [("replied", intro_row(run, "replier"))]
    assert sends(run, "replier") == [date(2026, 11, 4)]
    assert len(delivered_to(run["sink"], "replier@replier.example")) == 1


def test_an_out_of_office_delays_the_next_step_to_the_return_date(run: dict[str, Any]) -> None:
    assert events_of(run, "away", "mailbox") == [("out_of_office", intro_row(run, "away"))]
    # the others' second email went on Tuesday 11-10; hers waits for her return (Mon 11-16)
    # and then for the cadence's next send window (Tue-Thu): Tuesday 11-17
    assert sends(run, "clicker")[:2] == [date(2026, 11, 4), date(2026, 11, 10)]
    assert sends(run, "away")[:2] == [date(2026, 11, 4), date(2026, 11, 17)]


def test_a_permanent_bounce_suppresses_the_address(run: dict[str, Any]) -> None:
    rt: Runtime = run["rt"]
    with rt.engine.connect() as conn:
        reason = conn.execute(
            select(SUPPRESSIONS.c.reason).where(SUPPRESSIONS.c.email == "dead@dead.example")
        ).scalar_one()
        kinds = conn.execute(select(INBOUND.c.kind).order_by(INBOUND.c.id)).scalars().all()
    assert reason == "bounced"
    assert events_of(run, "dead", "mailbox") == [("bounced", intro_row(run, "dead"))]
    assert sends(run, "dead") == [date(2026, 11, 4)]
    assert kinds == ["replied", "out_of_office", "bounced"]


def test_a_click_on_a_tracked_link_moves_engagement_and_the_variant_click_rate(
    run: dict[str, Any],
) -> None:
    rt: Runtime = run["rt"]
    assert run["clicked_at"].startswith("https://")  # the template's own link, unchanged
    with rt.engine.connect() as conn:
        value = conn.execute(
            select(OUTBOX.c.id, OUTBOX.c.template, OUTBOX.c.variant).where(
                OUTBOX.c.lead_id == run["ids"]["clicker"], OUTBOX.c.step == "value"
            )
        ).one()
    assert events_of(run, "clicker", "tracking") == [("email_clicked", value.id)]
    before = [s for d, s in run["scores"] if d < date(2026, 11, 11)]
    after = [s for d, s in run["scores"] if d == date(2026, 11, 11)]
    assert before[-1] == 0.0
    assert after[0] > 0.0
    (pipeline,) = run["report"]["pipelines"]
    row = next(
        v
        for v in pipeline["variants"]
        if v["template"] == value.template and v["variant"] == value.variant
    )
    assert row["clicked"] == 1
