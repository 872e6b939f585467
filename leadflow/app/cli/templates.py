"""The template commands: ``preview`` renders an email, ``send-test`` sends one to a person,
so marketing sees an email before a lead does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leadflow.app.cli.common import (
    ConfigOpt,
    check_writable,
    err,
    fail,
    out,
    runtime,
    settings_for,
    styled,
)
from leadflow.runtime import Runtime

commands = typer.Typer()


@commands.command()
def preview(
    template: str,
    lead: Annotated[str | None, typer.Option("--lead", help="Render for this lead.")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Render with sample data.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write the HTML here.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Render a template's subject, text and HTML (sample data unless --lead)."""
    from leadflow.app.preview import render_preview
    from leadflow.mail.rendering import TemplateRenderError

    if html is not None:
        check_writable(html, "--html")
    with runtime(config) as rt:
        _known_template(rt, template)
        try:
            rendered = render_preview(rt, template, lead_email=None if sample else lead)
        except (TemplateRenderError, ValueError) as exc:
            fail(" ".join(str(exc).split()))
    out.print(styled(("Subject:", "bold"), f" {rendered.subject}"))
    out.rule("text")
    out.print(rendered.text, highlight=False, markup=False)
    if html is not None:
        html.write_text(rendered.html, encoding="utf-8")
        out.print(f"HTML written to {html}")
    else:
        out.rule("html")
        out.print(rendered.html, highlight=False, markup=False)


def _known_template(rt: Runtime, name: str) -> None:
    from leadflow.suggest import did_you_mean

    names = rt.templates.names()
    if name not in names:
        fail(f"unknown template '{name}'{did_you_mean(name, names)}; templates: {', '.join(names)}")


@commands.command("send-test")
def send_test(
    template: str,
    to: Annotated[str, typer.Option("--to", help="Recipient of the test email.")],
    config: ConfigOpt = None,
) -> None:
    """Send one rendered template (sample data) through the configured SMTP server."""
    from leadflow.app.preview import check_test_address, send_test_email
    from leadflow.mail.rendering import TemplateRenderError

    try:
        check_test_address(to)
    except ValueError as exc:
        fail(str(exc))
    with runtime(config) as rt:
        _known_template(rt, template)
        try:
            result = send_test_email(rt, template, to)
        except (TemplateRenderError, ValueError) as exc:
            fail(" ".join(str(exc).split()))
    out.print(f"{to}: {result.outcome} {result.code or ''} {result.detail}")
    if str(result.outcome) != "sent":
        raise typer.Exit(1)


@commands.command()
def studio(
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            metavar="NAME",
            help="Also answer this Host name (repeatable): the name a browser on another "
            "machine uses to reach it. Loopback names and the --host address always work.",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """A local page: every template rendered (sample or real lead) as you save, with
    validate errors, the variables, and test sends."""
    from leadflow.app.studio import Studio, allowed_hosts, is_loopback, serve_studio

    try:
        names = allowed_hosts(host, allow_host or ())
    except ValueError as exc:
        fail(str(exc))
    studio = Studio.open(settings_for(config))
    if not is_loopback(host):
        err.print(
            styled(
                ("warning:", "yellow"),
                f" --host {host}: the studio has no login; anyone "
                "who reaches it can read leads and send test emails",
            )
        )
        err.print(f"it answers only these Host names: {', '.join(names)} (add one: --allow-host)")
    shown = f"[{host}]" if ":" in host else host
    out.print(f"leadflow studio on http://{shown}:{port}/ (Ctrl-C stops it)")
    out.print(f"templates: {studio.directory} ({len(studio.templates())} emails)")
    serve_studio(studio, host=host, port=port, allow_hosts=allow_host or ())
