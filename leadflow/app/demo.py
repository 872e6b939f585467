"""``leadflow demo``: the main job on embedded defaults, end to end, in about a minute.

It resets its own folder (``var/demo`` by default), starts a local SMTP sink that stores
every delivered message as an ``.eml`` file, drops synthetic lead files into the inbox, and
runs the real Prefect ``tick`` flow twice per simulated business day (US morning and
mid-day, so every US time zone has a send window) for about 30 days, with a simulated world
replying, booking meetings and signing. It ends with the funnel and where to look.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from leadflow.app.sample_data import generate_leads, write_csv
from leadflow.settings import Settings

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari"
START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday; Thanksgiving falls inside the run
TICKS_UTC = ((14, 30), (17, 30))
ARRIVALS = {0: 0.6, 7: 0.25, 14: 0.15}  # day offset -> share of the sample leads


def _reset(home: Path) -> None:
    for name in ("leadflow.db", "leadflow.db-wal", "leadflow.db-shm"):
        (home / name).unlink(missing_ok=True)
    for folder in ("outbox", "inbox", "mailbox"):
        shutil.rmtree(home / folder, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)


def _drop_leads(settings: Settings, day: int, total: int) -> int:
    share = ARRIVALS.get(day)
    if not share:
        return 0
    offset = sum(int(total * s) for d, s in ARRIVALS.items() if d < day)
    count = int(total * share)
    rows = list(generate_leads(count, start=offset))
    if day == 0 and rows:
        # real exports are messy: a duplicate in other case, a broken address, a blank row
        dup = dict(rows[0])
        dup["E-mail"] = dup["E-mail"].upper()
        dup["Job Title"] = ""
        broken = dict(rows[1])
        broken["E-mail"] = "not-an-email"
        rows += [dup, broken]
    return write_csv(settings.inbox_dir / f"leads-day{day:02d}.csv", rows)


def run_demo(*, home: Path, days: int, lead_count: int, console: Console) -> dict[str, Any]:
    from flows.context import runtime, use_settings
    from flows.runner import where_runs_go
    from leadflow.app.web import record_hit
    from leadflow.mail.sink import SmtpSink
    from leadflow.reporting.build import build_report
    from leadflow.reporting.page import write_html
    from leadflow.reporting.tables import headline

    home = home.resolve()
    _reset(home)
    outbox_dir = home / "outbox"
    console.print(
        Text.assemble(
            ("leadflow demo", "bold"),
            f": {lead_count} synthetic leads, {days} days from {START.date()}, data in {home}",
        )
    )
    with SmtpSink(outbox_dir) as sink:
        settings = Settings(
            home=home,
            database_url=f"sqlite:///{home / 'leadflow.db'}",
            inbox=home / "inbox",
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            mailbox_url=f"maildir://{home / 'mailbox'}",
            demo=True,
        )
        use_settings(settings)
        world = _world(home, sink, settings, record_hit, runtime)
        console.print(f"SMTP sink on 127.0.0.1:{sink.port} → {outbox_dir}")
        console.print(f"the leads answer by mail into {home / 'mailbox'} (Maildir)")
        starting, watch = where_runs_go()
        console.print(starting)
        end = _simulate(settings, world, days=days, lead_count=lead_count, console=console)
        rt = runtime()
        with rt.engine.connect() as conn:
            data = build_report(conn, rt.loaded, since=None, until=end, pipeline=None)
        report_path = home / "report.html"
        write_html(data, report_path)
        delivered = len(sink.messages)
    console.print()
    _print_funnel(console, data)
    console.print(Text(headline(data), "bold"))
    console.print(_heard(rt), highlight=False)
    console.print(f"emails delivered to the local sink: {delivered} (.eml files in {outbox_dir})")
    console.print(
        f"database: {home / 'leadflow.db'}  — try: LEADFLOW_HOME={home} "
        "leadflow leads / show EMAIL / callbacks / report"
    )
    console.print(f"HTML report: {report_path}")
    console.print(f"{watch} (runs of this demo are under the 'tick' flow)")
    return {"delivered": delivered, "report": data}


def _simulate(
    settings: Settings, world: Any, *, days: int, lead_count: int, console: Console
) -> datetime:
    """Each simulated day the day's leads arrive, then twice a business day the world reacts
    and the real ``tick`` flow runs; the real ``report`` flow closes the period (returned)."""
    from flows.context import runtime
    from flows.pipeline import report_flow, tick_flow
    from flows.runner import quick_flows
    from leadflow.pipeline.events import record_events
    from models.db import session_scope

    with quick_flows():
        for day in range(days):
            date = START + timedelta(days=day)
            dropped = _drop_leads(settings, day, lead_count)
            if date.weekday() >= 5 and not dropped:
                continue
            for hour, minute in TICKS_UTC:
                now = date.replace(hour=hour, minute=minute)
                rt = runtime()
                reactions = world.react(rt.engine, now=now)
                with session_scope(rt.engine) as session:
                    conn = session.connection()
                    record_events(conn, reactions.events, stop_on=rt.stop_on, now=now)
                result = tick_flow(now=now.isoformat())
                heard = result["mailbox"].get("recorded", 0) + reactions.hits
                console.print(
                    f"{now:%a %d %b %H:%M}Z  heard {heard:3d} | "
                    f"{result['advance']['summary'][:70]} | {result['nurture']['summary']}",
                    highlight=False,
                    soft_wrap=True,
                )
        end = START + timedelta(days=days)
        report_flow(now=end.isoformat())
    return end


def _world(home: Path, sink: Any, settings: Settings, record_hit: Any, runtime: Any) -> Any:
    """The simulated leads, answering by mail and clicking through the tracked links."""
    from leadflow.app.simulation import World
    from leadflow.listening.classify import parse

    mailbox_dir = home / "mailbox"
    for sub in ("new", "cur", "tmp"):
        (mailbox_dir / sub).mkdir(parents=True, exist_ok=True)
    by_id: dict[str, bytes] = {}

    def delivered(message_id: str) -> bytes | None:
        if message_id not in by_id:
            for received in sink.messages[len(by_id) :]:
                by_id.setdefault(str(parse(received.data)["Message-ID"]), received.data)
        return by_id.get(message_id)

    def hit(outbox_id: int, kind: str, url: str | None, at: datetime) -> object:
        return record_hit(
            runtime(),
            outbox_id=outbox_id,
            kind=kind,
            url=url,
            method="GET",
            user_agent=BROWSER,
            now=at,
        )

    return World(
        maildir=mailbox_dir,
        delivered=delivered,
        record_hit=hit,
        secret=settings.require_real_secret(),
    )


def _heard(rt: Any) -> str:
    """What the listening half heard: from the mailbox and the tracked links."""
    from sqlalchemy import func, select

    from models.tables import EVENTS, INBOUND

    with rt.engine.connect() as conn:
        mail = dict(
            conn.execute(select(INBOUND.c.kind, func.count()).group_by(INBOUND.c.kind)).all()
        )
        hits = dict(
            conn.execute(
                select(EVENTS.c.type, func.count())
                .where(EVENTS.c.source == "tracking")
                .group_by(EVENTS.c.type)
            ).all()
        )
    return (
        f"heard by mail: {mail.get('replied', 0)} replies, {mail.get('out_of_office', 0)} "
        f"out-of-office, {mail.get('unsubscribed', 0)} unsubscribe requests, "
        f"{mail.get('bounced', 0)} bounces; tracked: {hits.get('email_opened', 0)} opens, "
        f"{hits.get('email_clicked', 0)} clicks"
    )


def _print_funnel(console: Console, data: dict[str, Any]) -> None:
    for pipeline in data["pipelines"]:
        funnel = pipeline["stages_now"]
        widest = max([row["leads"] for row in funnel] + [1])
        table = Table("stage", "leads", "", title=f"Where the leads are now — {pipeline['name']}")
        for row in funnel:
            table.add_row(row["name"], str(row["leads"]), "█" * round(30 * row["leads"] / widest))
        table.add_row("(callback list)", str(pipeline["leads"]["callback"]), "")
        console.print(table)
