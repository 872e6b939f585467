"""``leadflow mailbox``: read the replies, out-of-office answers and bounces now, or show where
each folder's reading stands."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from leadflow.app.cli.common import (
    ConfigOpt,
    JsonOpt,
    NowOpt,
    emit_json,
    fail,
    instant,
    out,
    runtime,
)

commands = typer.Typer(
    help="Replies, out-of-office answers and bounces (LEADFLOW_MAILBOX_URL).", no_args_is_help=True
)


@commands.command("sync")
def mailbox_sync(now: NowOpt = None, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Read what is new in the mailbox now: record replies, auto-replies and bounces once."""
    from leadflow.listening.sources import MailboxError
    from leadflow.pipeline import engine
    from leadflow.pipeline.run_record import record_run

    when = instant(now)
    with runtime(config) as rt:
        if not rt.settings.mailbox_url:
            fail("LEADFLOW_MAILBOX_URL is not set (see docs/mailbox.md)")
        try:
            outcome = engine.listen(rt, now=when)
        except (MailboxError, engine.MailboxUnreadable) as exc:
            fail(str(exc))
        record_run(rt, "mailbox", now=when, summary={"mailbox": outcome.as_dict()})
    if as_json:
        emit_json(outcome.as_dict())
    else:
        out.print(outcome.summary(), markup=False, highlight=False)
    if outcome.errors:
        raise typer.Exit(1)


@commands.command("status")
def mailbox_status(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Checkpoint per folder, messages per class, and the last sync's result or error."""
    from leadflow.listening.status import mailbox_status as status_of

    with runtime(config) as rt, rt.engine.connect() as conn:
        status = status_of(conn)
    if as_json:
        emit_json(status)
        return
    table = Table("mailbox", "folder", "uidvalidity", "last uid", "messages", "synced at")
    for c in status["checkpoints"]:
        table.add_row(
            *(
                Text(str(c[k]))
                for k in ("mailbox", "folder", "uidvalidity", "last_uid", "messages", "synced_at")
            )
        )
    out.print(table)
    classes = Table("class", "matched", "unmatched")
    for kind, n in status["classes"].items():
        classes.add_row(Text(kind), str(n["matched"]), str(n["unmatched"]))
    out.print(classes)
    last = status["last_sync"]
    if last is None:
        out.print("never synced")
    else:
        out.print(f"last sync at {last['now']}: {last['summary']}", markup=False, highlight=False)
