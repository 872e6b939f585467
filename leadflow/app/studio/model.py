"""The studio's warm state: config, database engine and a ``TemplateSet`` over the templates
folder, replaced when the watcher sees a save (``Studio.generation`` counts the saves).

Nothing here is a second copy of the rules: a render is ``TemplateSet.check`` (the static
checker and sample test render that ``leadflow validate`` runs) plus the renderer's own
compliance checks, with the context ``leadflow preview`` uses (``preview_context``); the
variables come from ``mail/context.py``; a test send goes through ``send_test_email`` (the
pipeline's ``build_wire``, the configured SMTP settings).

A test send may go to any address, so it carries no working link: the unsubscribe link is
the ``example.invalid`` placeholder (``context_for_test_send``), in the body as in the
header. It does carry a chosen lead's data (that is what the marketer wants to see), and the
page says so. Test sends are rate limited (``send_limit``).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from leadflow.app.preview import (
    check_test_address,
    context_for_test_send,
    preview_context,
    send_test_email,
)
from leadflow.app.studio.send_limit import SendLimit
from leadflow.app.studio.watcher import FolderWatcher
from leadflow.mail.context import (
    LEAD_KEYS,
    MESSAGE_KEYS,
    SENDER_KEYS,
    TEMPLATE_FILTERS,
    TEMPLATE_GLOBALS,
)
from leadflow.mail.rendering import (
    HTML_SUFFIX,
    RenderedEmail,
    TemplateRenderError,
    TemplateSet,
)
from leadflow.runtime import Runtime
from leadflow.settings import Settings

TEST_PREFIX: Final = "[test] "
_KEYS_OF: Final[Mapping[str, frozenset[str]]] = {
    "lead": LEAD_KEYS,
    "sender": SENDER_KEYS,
    "message": MESSAGE_KEYS,
}


class StudioError(Exception):
    """A request the studio cannot serve: an unknown template or lead, a bad address."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclasses.dataclass(frozen=True)
class Problem:
    """A validate error shown beside the render: the file (in the templates folder), its line
    (0 when none applies), the message and that line's text."""

    file: str
    line: int
    message: str
    source: str


class Studio:
    """The warm state behind the page: config, database, templates; thread-safe."""

    def __init__(self, rt: Runtime, *, watch: bool = True) -> None:
        self.rt = rt
        self.directory = rt.settings.templates
        self._lock = threading.Lock()
        self._templates = TemplateSet(self.directory)
        self._checked: dict[tuple[int, str], list[Problem]] = {}  # (generation, name)
        self.generation = 0
        self.closed = False
        self.send_limit = SendLimit()
        self._watcher = FolderWatcher(self.directory, self.reload) if watch else None

    @classmethod
    def open(cls, settings: Settings, *, watch: bool = True) -> Studio:
        """The config is validated without its templates: a broken template is what the
        studio is for, so it shows it instead of refusing to start."""
        return cls(Runtime.open(settings, check_templates=False), watch=watch)

    @property
    def watch_method(self) -> str:
        return self._watcher.method if self._watcher is not None else "off"

    def start(self) -> None:
        if self._watcher is not None:
            self._watcher.start()

    def close(self) -> None:
        self.closed = True
        if self._watcher is not None:
            self._watcher.stop()
        self.rt.close()

    def reload(self) -> None:
        """Forget every compiled template (a fresh ``TemplateSet`` reads the files again)."""
        with self._lock:
            self._templates = TemplateSet(self.directory)
            self._checked.clear()
            self.generation += 1

    def templates(self) -> list[str]:
        return self._templates.names()

    def _known(self, templates: TemplateSet, name: str) -> None:
        from leadflow.suggest import did_you_mean

        names = templates.names()
        if name not in names:
            raise StudioError(f"unknown template '{name}'{did_you_mean(name, names)}", 404)

    def render(self, name: str, lead_email: str | None = None) -> dict[str, Any]:
        """Subject, text and HTML of ``name`` for the sample lead or ``lead_email``, with
        every problem ``leadflow validate`` finds in it and any the render itself hit."""
        started = time.perf_counter()
        with self._lock:
            templates, generation = self._templates, self.generation
        self._known(templates, name)
        config = self.rt.loaded.config
        try:
            context = preview_context(self.rt, lead_email or None)
        except ValueError as exc:
            raise StudioError(str(exc), 404) from None
        checked = self._checked.get((generation, name))
        if checked is None:  # the files' problems, the same for every lead until a save
            found = templates.check(
                name, attribute_keys=list(config.intake.attributes), labels=config.labels
            )
            checked = [self._problem(p.file, p.line, p.message) for p in found]
            with self._lock:
                if generation == self.generation:
                    self._checked[(generation, name)] = checked
        problems = list(checked)
        rendered: RenderedEmail | None = None
        try:
            rendered = templates.compile(name).render(context)
        except TemplateRenderError as exc:
            problem = self._problem(exc.filename or name + HTML_SUFFIX, exc.lineno or 0, "")
            said = [p for p in problems if p.file == problem.file and p.line == problem.line]
            if not any(p.message.endswith(exc.message) for p in said):
                problems.append(dataclasses.replace(problem, message=exc.message))
        return {
            "template": name,
            "lead": lead_email or None,
            "subject": rendered.subject if rendered else None,
            "text": rendered.text if rendered else None,
            "html": rendered.html if rendered else None,
            "problems": [dataclasses.asdict(p) for p in problems],
            "generation": generation,
            "render_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    def _problem(self, file: str, line: int, message: str) -> Problem:
        path = Path(file)
        if not path.is_absolute():
            path = self.directory / path
        try:
            shown = str(path.relative_to(self.directory))
        except ValueError:
            shown = path.name
        source = ""
        if line > 0:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
                source = lines[line - 1] if line <= len(lines) else ""
            except (OSError, UnicodeDecodeError):
                source = ""
        return Problem(shown, line, message, source)

    def variables(self) -> dict[str, Any]:
        """What a template may use (``mail/context.py``), each with its sample value."""
        context = preview_context(self.rt, None)
        rows: list[dict[str, Any]] = []
        for name in sorted(TEMPLATE_GLOBALS):
            value = context[name]
            keys = _KEYS_OF.get(name)
            if keys is None:
                rows.append({"name": name, "sample": _shown(value)})
                continue
            assert isinstance(value, Mapping)
            for key in sorted(keys):
                if name == "lead" and key == "attributes":
                    attributes = value.get(key) or {}
                    for attr in sorted(self.rt.loaded.config.intake.attributes):
                        rows.append(
                            {
                                "name": f"lead.attributes.{attr}",
                                "sample": _shown(attributes.get(attr)),
                            }
                        )
                    continue
                rows.append({"name": f"{name}.{key}", "sample": _shown(value.get(key))})
        filters = [
            {"name": name, "doc": (function.__doc__ or "").replace("``", "").split("\n\n")[0]}
            for name, function in sorted(TEMPLATE_FILTERS.items())
        ]
        return {"variables": rows, "filters": filters}

    def send_test(self, name: str, to: str, lead_email: str | None = None) -> dict[str, Any]:
        """What the page shows, sent to ``to`` with the subject marked ``[test]``: the chosen
        lead's data, but the placeholder in place of every signed link (``to`` may be
        anyone); refused (429) past ``send_limit``."""
        to = to.strip()
        try:
            check_test_address(to, label="the address")
        except ValueError as exc:
            raise StudioError(str(exc), 400) from None
        with self._lock:
            templates = self._templates
        self._known(templates, name)
        try:
            context = context_for_test_send(self.rt, lead_email or None)
        except ValueError as exc:
            raise StudioError(str(exc), 404) from None
        try:
            rendered = templates.compile(name).render(context)
        except TemplateRenderError as exc:
            raise StudioError(f"not sent: {exc}", 422) from None
        wait = self.send_limit.take()
        if wait:
            limit = self.send_limit
            raise StudioError(
                f"not sent: at most {limit.limit} test sends per {limit.window:g} seconds; "
                f"try again in {math.ceil(wait)} s",
                429,
            )
        marked = dataclasses.replace(rendered, subject=TEST_PREFIX + rendered.subject)
        result = send_test_email(self.rt, name, to, rendered=marked)
        return {
            "to": to,
            "subject": marked.subject,
            "outcome": str(result.outcome),
            "code": result.code,
            "detail": result.detail,
        }


def _shown(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
