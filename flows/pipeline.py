"""The flows ops watch in the Prefect UI. Every flow is the same three lines: fix the
instant and load the config as it is on disk, walk the engine's steps for it
(``leadflow.pipeline.engine.FLOWS``) as task runs, publish what happened."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import Flow, flow, get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.client.schemas.objects import FlowRun, State
from prefect.logging import get_logger
from prefect.runtime import flow_run

from flows.context import current_settings, reload, runtime
from flows.tasks import PrefectRunner
from leadflow.alerts.outlet import Outlet, flow_failed, from_files
from leadflow.config import ConfigError
from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.pipeline import engine
from leadflow.pipeline.run_record import record_run
from leadflow.pipeline.summaries import tick_markdown
from leadflow.reporting.markdown import artifact_tables, report_markdown, table_rows
from leadflow.reporting.page import write_html
from leadflow.timeutil import parse_instant, utcnow


def _scheduled_for() -> datetime:
    """When this run was due: its cron instant, or when it was triggered."""
    due: datetime = flow_run.scheduled_start_time
    return due.astimezone(UTC)


def _run_name() -> str:
    """Runs are named after the instant they act at, to the second; a cron-fired run (no
    ``now``) after the minute it was scheduled for, a run started from the UI after when it
    was started, so the UI lists ``tick @ 2026-11-23T19:00:00+00:00``."""
    now = flow_run.parameters.get("now")
    try:
        at = parse_instant(now) if now else _scheduled_for()
    except ValueError:  # the run itself fails on it, under this name
        return f"{flow_run.flow_name} @ {now}"
    return f"{flow_run.flow_name} @ {at.isoformat(timespec='seconds')}"


def _start(now: str | None) -> str:
    """Validate the config as it is on disk now and fix the instant this run acts at."""
    reload()
    if now:
        return parse_instant(now).isoformat()
    # the runner starts a cron-fired run up to a few seconds early; never act before the
    # scheduled instant (a 09:00 run must see the 09:00 send window open). To the second:
    # the instant is the run's heading, log line and record
    return max(utcnow(), _scheduled_for()).replace(microsecond=0).isoformat()


def _publish(kind: str, now: str, summary: dict[str, Any], line: str) -> None:
    logger = get_run_logger()
    logger.info("%s at %s: %s", kind, now, line)
    if "report" in summary:
        markdown = _publish_report(now, summary["report"])
    else:
        markdown = tick_markdown(kind, now, summary)
    create_markdown_artifact(
        key=f"{kind}-summary",
        markdown=markdown,
        description=f"What the {kind} run at {now} did",
    )
    record_run(runtime(), kind, now=parse_instant(now), summary=summary)


def _publish_report(now: str, data: dict[str, Any]) -> str:
    """The report as the UI shows it: the whole report as an HTML file under
    ``$LEADFLOW_HOME/reports/`` (linked), the funnel, conversion, stuck leads and A/B variants
    as table artifacts; returns the summary markdown (headline, key figures, the link)."""
    at = parse_instant(now)
    html = runtime().settings.home.resolve() / "reports" / f"report-{at:%Y-%m-%dT%H%M%SZ}.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    write_html(data, html)
    create_link_artifact(
        key="report-html",
        link=html.as_uri(),
        link_text=html.name,
        description=f"The whole report at {now} (every table, with charts): {html}",
    )
    for key, table in artifact_tables(data):
        create_table_artifact(key=key, table=table_rows(table), description=table.title)
    return report_markdown(data, html)


def _run(name: str, now: str | None) -> dict[str, Any]:
    """Every flow: fix the instant, walk the engine's steps for ``name`` as task runs,
    publish what happened."""
    at = _start(now)
    outcome = engine.run(runtime(), name, now=parse_instant(at), runner=PrefectRunner())
    result = outcome.as_dict()
    _publish(name, at, result, outcome.one_line())
    return result


@flow(name="intake", flow_run_name=_run_name, timeout_seconds=3600)
def intake_flow(now: str | None = None) -> dict[str, Any]:
    """Import files dropped into the inbox folder."""
    return _run("intake", now)


@flow(name="score", flow_run_name=_run_name, timeout_seconds=3600)
def score_flow(now: str | None = None) -> dict[str, Any]:
    """Rescore leads with new data or events, and refresh decay."""
    return _run("score", now)


@flow(name="advance", flow_run_name=_run_name, timeout_seconds=3600)
def advance_flow(now: str | None = None) -> dict[str, Any]:
    """Move due leads between stages, apply SLAs and cadence outcomes."""
    return _run("advance", now)


@flow(name="nurture", flow_run_name=_run_name, timeout_seconds=3600)
def nurture_flow(now: str | None = None) -> dict[str, Any]:
    """Send due cadence emails."""
    return _run("nurture", now)


@flow(name="callbacks", flow_run_name=_run_name, timeout_seconds=3600)
def callbacks_flow(now: str | None = None) -> dict[str, Any]:
    """Revive leads whose callback date has come."""
    return _run("callbacks", now)


@flow(name="checkins", flow_run_name=_run_name, timeout_seconds=3600)
def checkins_flow(now: str | None = None) -> dict[str, Any]:
    """Send due post-sale check-ins and renewal reminders."""
    return _run("checkins", now)


@flow(name="mailbox", flow_run_name=_run_name, timeout_seconds=3600)
def mailbox_flow(now: str | None = None) -> dict[str, Any]:
    """Read replies, out-of-office answers and bounces from the mailbox."""
    return _run("mailbox", now)


@flow(name="report", flow_run_name=_run_name, timeout_seconds=3600)
def report_flow(now: str | None = None) -> dict[str, Any]:
    """Pipeline metrics, published as an artifact."""
    return _run("report", now)


@flow(name="learn", flow_run_name=_run_name, timeout_seconds=3600)
def learn_flow(now: str | None = None) -> dict[str, Any]:
    """Judge today's fit rules on the closed leads and show what learning would propose."""
    return _run("learn", now)


@flow(name="tick", flow_run_name=_run_name, timeout_seconds=3600)
def tick_flow(now: str | None = None) -> dict[str, Any]:
    """One heartbeat of the pipeline: every step in order, in one flow run."""
    return _run("tick", now)


FLOWS = {
    "intake": intake_flow,
    "score": score_flow,
    "advance": advance_flow,
    "nurture": nurture_flow,
    "callbacks": callbacks_flow,
    "checkins": checkins_flow,
    "report": report_flow,
    "mailbox": mailbox_flow,
    "learn": learn_flow,
    "tick": tick_flow,
}


def _alert_failure(
    flow: Flow[[str | None], dict[str, Any]], flow_run: FlowRun, state: State[Any]
) -> None:
    """Every flow's ``on_failure`` and ``on_crashed`` hook: the ``flow_failed`` alert, raised
    once per flow run and sent on the channels the YAML names (``leadflow/alerts/``). A config
    that fails validation still routes it by its own ``alerts:`` and ``sender:`` sections. A
    hook never raises: what kept the alert from going out is logged instead."""
    logger = get_logger("leadflow.alerts")
    fallback = None
    try:
        try:
            rt = runtime()
            outlet, transport = Outlet.of(rt), smtp_transport_factory(rt)
        except ConfigError:
            fallback = from_files(current_settings())
            if fallback is None:
                logger.error(
                    "no alert for the failed flow run %s: no valid alerts: section", flow_run.name
                )
                return
            outlet, transport = fallback
        flow_failed(
            outlet,
            flow=flow.name,
            run_id=str(flow_run.id),
            run_name=flow_run.name,
            state=state.name or state.type.value,
            message=state.message or "",
            now=utcnow(),
            transport=transport,
        )
    except Exception as exc:
        logger.error(
            "no alert for the failed flow run %s: %s: %s", flow_run.name, type(exc).__name__, exc
        )
    finally:
        if fallback is not None:
            fallback[0].engine.dispose()


for _flow in FLOWS.values():
    _flow.on_failure(_alert_failure)
    _flow.on_crashed(_alert_failure)
