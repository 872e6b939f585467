"""The ``leadflow`` command line (typer + rich): the root command and ``main``.

Exit codes: 0 success, 1 invalid input (bad config, bad file, unknown lead), 2 usage error.
Commands that report results take ``--json`` and then print exactly one JSON document.

Each module here is one group of commands, each command a thin parse-check-call-print over
the engine; ``common`` holds what they share. The order below is the order of ``--help``.
"""

from __future__ import annotations

import sys

import typer

from leadflow.app.cli import (
    alerts,
    config,
    db,
    intake,
    leads,
    learning,
    mailbox,
    outbox,
    report,
    running,
    sending,
    serve,
    team,
    templates,
)
from leadflow.app.cli.common import Invalid, err, styled
from leadflow.config import ConfigError
from leadflow.settings import SettingsError
from models.db import DatabaseUnavailable

app = typer.Typer(
    name="leadflow",
    help="Sales-pipeline automation: pipeline as code, scored leads, safe drip emails.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# a group added without a name puts its commands at the top level
for group in (config, intake, leads, team, running, templates, report, learning, serve, alerts):
    app.add_typer(group.commands)
app.add_typer(db.commands, name="db")
app.add_typer(outbox.commands, name="outbox")
app.add_typer(mailbox.commands, name="mailbox")
app.add_typer(sending.commands, name="sending")
app.add_typer(learning.score, name="score")


def main() -> None:
    """Entry point: bad input exits 1 with a message and no traceback; usage errors exit 2."""
    try:
        app()
    except Invalid as exc:
        err.print(styled(("error:", "red"), f" {exc}"))
        sys.exit(1)
    except ConfigError as exc:
        for issue in exc.issues:
            err.print(styled(("error", "red"), f" {issue}"), soft_wrap=True)
        err.print(f"{len(exc.issues)} error(s) in the configuration; nothing was changed.")
        sys.exit(1)
    except (SettingsError, DatabaseUnavailable) as exc:
        err.print(styled(("error:", "red"), f" {exc}"))
        sys.exit(1)
