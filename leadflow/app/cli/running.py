"""A tick by hand: ``run`` flows once as real Prefect flow runs, or ``plan`` what the next tick
would do without changing anything."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer

from leadflow.app.cli.common import (
    ConfigOpt,
    JsonOpt,
    NowOpt,
    emit_json,
    err,
    fail,
    instant,
    out,
    settings_for,
    styled,
)
from leadflow.runtime import Runtime
from leadflow.settings import Settings, load_settings

commands = typer.Typer()


@commands.command()
def run(
    flows: Annotated[list[str] | None, typer.Argument(help="Flows to run (default: tick).")] = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Run flows once as real Prefect flow runs (intake, score, advance, nurture, callbacks,
    checkins, report, or tick = all in order)."""
    from leadflow.config.schema import FLOWS
    from leadflow.suggest import did_you_mean

    names = flows or ["tick"]
    for name in names:
        if name not in FLOWS:
            fail(f"unknown flow '{name}'{did_you_mean(name, FLOWS)}; flows: {', '.join(FLOWS)}")
    when = instant(now) if now else instant(None).replace(microsecond=0)  # runs act to the second
    settings = settings_for(config)
    settings.require_real_secret()  # before anything starts or commits: links are signed
    Runtime.open(settings).close()  # a bad config or database fails before Prefect starts
    results = _run_on_a_server(names, when, settings, show=not as_json)
    from leadflow.pipeline.run_outcome import one_line

    if as_json:
        emit_json(results)
        return
    for name, result in results.items():  # the line each flow run logged to the Prefect UI
        line = f" at {when.isoformat(timespec='seconds')}: {one_line(result)}"
        out.print(styled((name, "bold"), line), soft_wrap=True)


def _run_on_a_server(
    names: list[str], when: datetime, settings: Settings, *, show: bool
) -> dict[str, Any]:
    """The flows run on a configured Prefect server, else on the `make ui` one, else on a
    temporary one started before Prefect is imported, so that it starts while this process
    imports Prefect and the flows (``flows/server.py``). A terminal is told which."""
    from flows.server import ServerUnavailable, chosen_server

    try:
        with chosen_server() as server, _progress(show=show) as on_step:
            from flows.runner import run_flows, sending_to

            with sending_to(server):  # a temporary server: once it answers
                if show and err.is_terminal:
                    err.print(styled(server.describe()))  # a URL as text, not highlighted
                return run_flows(names, now=when, settings=settings, settle=True, on_step=on_step)
    except ServerUnavailable as exc:
        fail(str(exc))


@contextmanager
def _progress(*, show: bool) -> Iterator[Callable[[str], None] | None]:
    """A spinner naming the flow that runs, on a terminal only (never in a pipe or a log)."""
    if not show or not err.is_terminal:
        yield None
        return
    with err.status("starting Prefect", spinner="dots") as status:
        yield status.update


@commands.command()
def plan(
    now: NowOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Dry run of the next tick: who would move, what would be sent. Changes nothing.

    With --config PROPOSED.yaml it also shows the difference from the current config."""
    from leadflow.pipeline.planning import plan_tick, render_plan

    when = instant(now)
    settings = load_settings()
    current = Runtime.open(settings)
    try:
        proposed = None
        if config is not None:
            from leadflow.config import load_config

            proposed = Runtime(
                settings=settings,
                loaded=load_config(config, templates=settings.templates),
                engine=current.engine,
            )
        result = plan_tick(current, now=when, proposed=proposed)
    finally:
        current.close()
    if as_json:
        emit_json(result)
        return
    render_plan(result, out)
