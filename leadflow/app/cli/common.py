"""What every command shares: the two consoles, the common options, and one-line failures.

A command is a thin parse-check-call-print over the engine; the helpers here keep the check
and the print the same in every command (a bad input is ``fail(message)``, exit code 1).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from leadflow.runtime import Runtime
from leadflow.settings import Settings, load_settings
from leadflow.timeutil import parse_instant

# Lead data, file contents and YAML keys are printed on these consoles: no rich markup and no
# highlighting is ever read from what they print ("[/bold]" in a company name is text).
# Emphasis is given with ``style=`` or ``Text`` objects, never with markup in a string.
out = Console(emoji=False, markup=False, highlight=False)
err = Console(stderr=True, emoji=False, markup=False, highlight=False, soft_wrap=True)


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line of text with some styled pieces: ``styled(("error", "red"), " ", message)``."""
    return Text.assemble(*parts)


NowOpt = Annotated[
    str | None,
    typer.Option("--now", help="Act as if the clock said this ISO 8601 instant (time travel)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Pipeline YAML (default: LEADFLOW_CONFIG).")
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")]


class Invalid(Exception):
    """Bad input from the user: printed without a traceback, exit code 1."""


def fail(message: str) -> NoReturn:
    raise Invalid(message)


def require_reason(reason: str, kept: str = "in the audit trail") -> str:
    """An audited command's ``--reason``, on one line; a blank one is refused."""
    text = " ".join(reason.split())
    if not text:
        fail(f"--reason must say why (it is kept {kept})")
    return text


def settings_for(config: Path | None = None) -> Settings:
    """The environment's settings, with ``--config`` in place of LEADFLOW_CONFIG if given
    (templates are then found from that file's folder)."""
    return load_settings() if config is None else load_settings(config=config)


def instant(value: str | None) -> datetime:
    """``--now``/``--at``/``--since`` as an instant (None is now); a bad value fails."""
    try:
        return parse_instant(value)
    except ValueError as exc:
        fail(str(exc))


@contextmanager
def runtime(config: Path | None = None) -> Iterator[Runtime]:
    rt = Runtime.open(settings_for(config))
    try:
        yield rt
    finally:
        rt.close()


def check_writable(path: Path, option: str) -> None:
    """Fail now, not after the work, if ``path`` cannot be written. A file the check had to
    make is removed again, so a run that fails later leaves nothing behind."""
    try:
        if path.is_dir():
            fail(f"{option} {path}: is a folder")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            fail(f"{option} {path}: the folder {folder} does not exist")
        made = not path.exists()
        with path.open("a", encoding="utf-8"):
            pass
        if made:
            path.unlink()
    except OSError as exc:  # also from is_dir: a name too long, a loop of links
        fail(f"{option} {path}: cannot write ({exc.strerror})")


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str, ensure_ascii=False) + "\n")
