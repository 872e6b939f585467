"""The commands that keep running: ``serve`` the flows on their crons, the ``web`` app, and the
``demo`` (the whole job on embedded defaults against a local SMTP sink)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leadflow.app.cli.common import ConfigOpt, fail, out, runtime, settings_for
from leadflow.config import load_config

commands = typer.Typer()


@commands.command()
def serve(config: ConfigOpt = None) -> None:
    """Serve every flow as a Prefect deployment on the crons of pipeline.yaml."""
    settings = settings_for(config)
    settings.require_real_secret()  # served runs sign links: refuse before serving anything
    loaded = load_config(settings.config, templates=settings.templates)
    from flows.deployments import PrefectUnavailable, serve_all

    try:  # stops within seconds on SIGTERM/SIGINT, even with the Prefect API gone
        serve_all(settings, loaded.config)
    except PrefectUnavailable as exc:  # unreachable at start, or a stop that could not pause
        fail(str(exc))


@commands.command()
def web(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    config: ConfigOpt = None,
) -> None:
    """HTTP app: POST /leads, POST /events, one-click unsubscribe."""
    import uvicorn

    from leadflow.app.web import create_app

    settings_for(config).require_real_secret()  # unsubscribe and tracked links need the key
    with runtime(config) as rt:
        uvicorn.run(create_app(rt), host=host, port=port, log_level="info")


@commands.command()
def demo(
    days: Annotated[int, typer.Option(min=1, max=120, help="Simulated days.")] = 30,
    leads: Annotated[int, typer.Option(min=10, max=5000, help="Sample leads.")] = 300,
    home: Annotated[Path, typer.Option(help="Folder for the demo's data.")] = Path("var/demo"),
) -> None:
    """The main job on embedded defaults: sample leads, a local SMTP sink, ~30 simulated days."""
    from leadflow.app.demo import run_demo

    run_demo(home=home, days=days, lead_count=leads, console=out)
