"""The flows ops watch in the Prefect UI. Each body reads like a table of contents:
load the config, plan batches, act on them (one task per batch), publish what happened."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows import tasks
from flows.context import reload, runtime
from leadflow import engine
from leadflow.engine import record_run
from leadflow.summaries import merge_advance, merge_delivery, one_line, tick_markdown
from leadflow.timeutil import parse_instant, utcnow


def _scheduled_for() -> datetime:
    """When this run was due: its cron instant, or when it was triggered."""
    due: datetime = flow_run.scheduled_start_time
    return due.astimezone(UTC)


def _run_name() -> str:
    """Runs are named after the instant they act at; a cron-fired run (no ``now``) after the
    minute it was scheduled for, so the UI lists ``tick @ 2026-11-23T19:00:00+00:00``."""
    now = flow_run.parameters.get("now")
    at = now or _scheduled_for().isoformat()
    return f"{flow_run.flow_name} @ {at}"


def _start(now: str | None) -> str:
    """Validate the config as it is on disk now and fix the instant this run acts at."""
    reload()
    if now:
        return parse_instant(now).isoformat()
    # the runner starts a cron-fired run up to a few seconds early; never act before the
    # scheduled instant (a 09:00 run must see the 09:00 send window open)
    return max(utcnow(), _scheduled_for()).isoformat()


def step_intake(now: str) -> dict[str, Any]:
    return tasks.import_inbox(now)


# Planning (which id ranges are due) is one indexed read, done in the flow body; only the
# work on each batch is a task, so task runs grow with batches, not with leads.


def _at(now: str) -> datetime:
    return parse_instant(now)


def step_config(now: str) -> dict[str, Any]:
    """A changed config makes every open lead due once (new rules must reach idle leads) and
    moves the leads of removed stages (``moved_stages``)."""
    change = tasks.apply_config_change(now)
    return {
        "config_hash": runtime().loaded.short_hash,
        "leads_made_due": change.reevaluated,
        **change.as_dict(),
        "summary": change.summary(),
    }


def step_score(now: str) -> dict[str, Any]:
    ranges = engine.score_ranges(runtime(), now=_at(now))
    results = tasks.score_batch.map(ranges, unmapped(now)).result()
    rescored = sum(r["rescored"] for r in results)
    changed = sum(r["changed"] for r in results)
    return {
        "batches": len(ranges),
        "rescored": rescored,
        "changed": changed,
        "summary": f"rescored {rescored}, {changed} with a new score or grade",
    }


def step_callbacks(now: str) -> dict[str, Any]:
    ranges = engine.callback_ranges(runtime(), now=_at(now))
    return merge_advance(tasks.revive_batch.map(ranges, unmapped(now)).result(), len(ranges))


def step_advance(now: str) -> dict[str, Any]:
    ranges = engine.advance_ranges(runtime(), now=_at(now))
    return merge_advance(tasks.advance_batch.map(ranges, unmapped(now)).result(), len(ranges))


def step_deliver(now: str, kind: str) -> dict[str, Any]:
    unknown = tasks.reconcile(now)
    ranges = engine.outbox_ranges(runtime(), now=_at(now), kind=kind)
    results = tasks.deliver_batch.map(ranges, unmapped(now), unmapped(kind)).result()
    merged = merge_delivery(results, len(ranges))
    merged["unknown_reconciled"] = len(unknown)
    return merged


def step_mailbox(now: str) -> dict[str, Any]:
    """Replies, auto-replies and bounces, before anything is scored or sent."""
    if not runtime().settings.mailbox_url:
        return {"summary": ""}
    return tasks.sync_mailbox(now)


def step_report(now: str) -> dict[str, Any]:
    return tasks.compute_report(now)


def _publish(kind: str, now: str, summary: dict[str, Any]) -> None:
    logger = get_run_logger()
    logger.info("%s at %s: %s", kind, now, one_line(summary))
    create_markdown_artifact(
        key=f"{kind}-summary",
        markdown=tick_markdown(kind, now, summary),
        description=f"What the {kind} run at {now} did",
    )
    record_run(runtime(), kind, now=parse_instant(now), summary=summary)


@flow(name="intake", flow_run_name=_run_name, timeout_seconds=3600)
def intake_flow(now: str | None = None) -> dict[str, Any]:
    """Import files dropped into the inbox folder."""
    at = _start(now)
    result = {"intake": step_intake(at)}
    _publish("intake", at, result)
    return result


@flow(name="score", flow_run_name=_run_name, timeout_seconds=3600)
def score_flow(now: str | None = None) -> dict[str, Any]:
    """Rescore leads with new data or events, and refresh decay."""
    at = _start(now)
    result = {"config": step_config(at), "score": step_score(at)}
    _publish("score", at, result)
    return result


@flow(name="advance", flow_run_name=_run_name, timeout_seconds=3600)
def advance_flow(now: str | None = None) -> dict[str, Any]:
    """Move due leads between stages, apply SLAs and cadence outcomes."""
    at = _start(now)
    result = {"config": step_config(at), "advance": step_advance(at)}
    _publish("advance", at, result)
    return result


@flow(name="nurture", flow_run_name=_run_name, timeout_seconds=3600)
def nurture_flow(now: str | None = None) -> dict[str, Any]:
    """Send due cadence emails."""
    at = _start(now)
    result = {"nurture": step_deliver(at, "cadence")}
    _publish("nurture", at, result)
    return result


@flow(name="callbacks", flow_run_name=_run_name, timeout_seconds=3600)
def callbacks_flow(now: str | None = None) -> dict[str, Any]:
    """Revive leads whose callback date has come."""
    at = _start(now)
    result = {"callbacks": step_callbacks(at)}
    _publish("callbacks", at, result)
    return result


@flow(name="checkins", flow_run_name=_run_name, timeout_seconds=3600)
def checkins_flow(now: str | None = None) -> dict[str, Any]:
    """Send due post-sale check-ins and renewal reminders."""
    at = _start(now)
    result = {"checkins": step_deliver(at, "checkin")}
    _publish("checkins", at, result)
    return result


@flow(name="mailbox", flow_run_name=_run_name, timeout_seconds=3600)
def mailbox_flow(now: str | None = None) -> dict[str, Any]:
    """Read replies, out-of-office answers and bounces from the mailbox."""
    at = _start(now)
    result = {"mailbox": step_mailbox(at)}
    _publish("mailbox", at, result)
    return result


@flow(name="report", flow_run_name=_run_name, timeout_seconds=3600)
def report_flow(now: str | None = None) -> dict[str, Any]:
    """Pipeline metrics, published as an artifact."""
    at = _start(now)
    result = {"report": step_report(at)}
    _publish("report", at, result)
    return result


@flow(name="tick", flow_run_name=_run_name, timeout_seconds=3600)
def tick_flow(now: str | None = None) -> dict[str, Any]:
    """One heartbeat of the pipeline: every step in order, in one flow run."""
    at = _start(now)
    result = {
        "config": step_config(at),
        "intake": step_intake(at),
        "mailbox": step_mailbox(at),
        "score": step_score(at),
        "callbacks": step_callbacks(at),
        "advance": step_advance(at),
        "nurture": step_deliver(at, "cadence"),
        "checkins": step_deliver(at, "checkin"),
    }
    _publish("tick", at, result)
    return result


FLOWS = {
    "intake": intake_flow,
    "score": score_flow,
    "advance": advance_flow,
    "nurture": nurture_flow,
    "callbacks": callbacks_flow,
    "checkins": checkins_flow,
    "report": report_flow,
    "mailbox": mailbox_flow,
    "tick": tick_flow,
}
