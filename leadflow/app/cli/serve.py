"""The commands that keep running: ``serve`` the flows on their crons, the ``web`` app, the local
SMTP ``sink``, and the ``demo`` (the whole job on embedded defaults against that sink)."""

from __future__ import annotations

import signal
import threading
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
def sink(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="Port (0: any free one); 8025 is LEADFLOW_SMTP_PORT's default."
        ),
    ] = 8025,
    folder: Annotated[
        Path, typer.Option("--dir", help="Folder the messages are written to, one .eml each.")
    ] = Path("var/sink"),
) -> None:
    """A local SMTP server that accepts every message and stores it as an .eml file, until
    Ctrl-C: where `leadflow run` and `send-test` deliver when no real relay is at hand."""
    from leadflow.mail.sink import SmtpSink

    server = SmtpSink(directory=folder, host=host, port=port)
    try:
        server.open()
    except OSError as exc:  # the port is taken, the address is not ours, the folder is not ours
        fail(f"cannot run the SMTP sink on {host}:{port} writing to {folder}: {exc}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    shown = 0

    def show_new() -> None:
        nonlocal shown
        received = server.messages
        for message in received[shown:]:
            to = ", ".join(message.recipients)
            out.print(f"stored {message.path} ({message.mail_from} -> {to})", soft_wrap=True)
        shown = len(received)

    try:
        out.print(f"SMTP sink listening on {host}:{server.port}", soft_wrap=True)
        out.print(f"writing each message to {folder.resolve()}/", soft_wrap=True)
        out.print(
            f"send to it with LEADFLOW_SMTP_HOST={host} LEADFLOW_SMTP_PORT={server.port} "
            "LEADFLOW_SMTP_TLS=none; Ctrl-C stops it",
            soft_wrap=True,
        )
        while not stop.wait(0.2):
            show_new()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    show_new()
    out.print(f"stopped; {shown} message(s) stored in {folder}", soft_wrap=True)


@commands.command()
def demo(
    days: Annotated[int, typer.Option(min=1, max=120, help="Simulated days.")] = 30,
    leads: Annotated[int, typer.Option(min=10, max=5000, help="Sample leads.")] = 300,
    home: Annotated[Path, typer.Option(help="Folder for the demo's data.")] = Path("var/demo"),
) -> None:
    """The main job on embedded defaults: sample leads, a local SMTP sink, ~30 simulated days."""
    from leadflow.app.demo import run_demo

    run_demo(home=home, days=days, lead_count=leads, console=out)
