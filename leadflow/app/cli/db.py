"""``leadflow db``: database maintenance by hand (every run also migrates on its own)."""

from __future__ import annotations

import typer

from leadflow.app.cli.common import out
from leadflow.settings import load_settings

commands = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@commands.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done automatically on every run)."""
    from models.db import make_engine, upgrade

    settings = load_settings()
    engine = make_engine(settings.db_url)
    applied = upgrade(engine)
    out.print("database upgraded" if applied else "database already up to date")
