"""Compile and render the email templates that marketing edits, without trusting them.

Structure: a ``TemplateSet`` owns one sandboxed Jinja environment over ``templates/email/``
and a cache of ``CompiledEmail`` objects, so a run compiles each template once and renders it
per lead. Each email is ``<name>.html.j2`` (extending ``base.html.j2``, defining the
``subject`` and ``content`` blocks) plus an optional ``<name>.txt.j2`` for the plain-text part.

Safety rules, each enforced here rather than left to template authors:

* Templates run in ``ImmutableSandboxedEnvironment`` with ``StrictUndefined`` and no Jinja
  globals, so the only names are ``TEMPLATE_GLOBALS``; a typo is an error, not a blank.
* Lead data is passed as data and never compiled, and HTML output is autoescaped.
* The subject is plain text on one line; an empty subject is an error.
* Every rendered email carries the CAN-SPAM footer: the HTML must link to the unsubscribe URL
  and show the postal address, and the text part gets a footer appended if it lacks one.

``TemplateSet.check`` is what ``leadflow validate`` runs before anything is sent: syntax,
unknown names and fields, and a sandboxed test render with ``sample_context()``.
"""

from __future__ import annotations

import html
import re
import traceback
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import css_inline
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
)

from leadflow.mail.context import (
    LEAD_KEYS,
    NO_LABELS,
    TEMPLATE_FILTERS,
    TEMPLATE_GLOBALS,
    Labels,
    lead_context,
)
from leadflow.mail.html_text import extract
from leadflow.mail.sandbox import BoundedSandbox, render_bounded
from leadflow.mail.template_check import SourceChecker, TemplateProblem
from leadflow.suggest import did_you_mean

HTML_SUFFIX: Final = ".html.j2"
TEXT_SUFFIX: Final = ".txt.j2"
LAYOUT: Final = "base.html.j2"

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class TemplateRenderError(Exception):
    """A template could not be loaded or rendered; carries the template file line if known."""

    def __init__(
        self, template: str, message: str, *, filename: str | None = None, lineno: int | None = None
    ) -> None:
        super().__init__(template, message)
        self.template = template
        self.message = message
        self.filename = filename
        self.lineno = lineno

    def __str__(self) -> str:
        where = f" (line {self.lineno})" if self.lineno else ""
        return f"template {self.template!r}{where}: {self.message}"


def sample_context(
    *,
    lead_keys: Collection[str] = LEAD_KEYS,
    attribute_keys: Collection[str] = (),
    labels: Labels = NO_LABELS,
) -> dict[str, Any]:
    """A realistic fake context for previews and validation test renders.

    The lead is a lead row as intake stores it (a coded industry, like imported data) made
    into what a template sees by ``lead_context``, so its labels are the config's ``labels``.
    Extra ``lead_keys`` and ``attribute_keys`` get placeholder values so that a template using
    declared custom fields renders in the test.
    """
    row: dict[str, Any] = {
        "email": "dana.whitfield@northwind-logistics.example",
        "first_name": "Dana",
        "last_name": "Whitfield",
        "company": "Northwind Logistics",
        "title": "Head of Operations",
        "industry": "logistics",
        "country": "US",
        "timezone": "America/Chicago",
        "stage": "contacted",
        "score": 72,
        "grade": "B",
        "attributes": {key: f"sample {key}" for key in sorted(attribute_keys)},
    }
    lead = lead_context(row, labels)
    for key in sorted(set(lead_keys) - set(lead)):
        lead[key] = f"sample {key}"
    return {
        "lead": lead,
        "sender": {
            "name": "Sam Rivera",
            "email": "sam@leadflow.example",
            "reply_to": "sam@leadflow.example",
            "company": "Brightpath Software",
            "postal_address": "500 Market Street, Suite 400, San Francisco, CA 94105, USA",
        },
        "unsubscribe_url": "https://leadflow.example/unsubscribe/sample-token",
        "message": {"cadence": "new_lead", "step": 1, "variant": "a"},
    }


def _squash(text: str) -> str:
    return " ".join(_CONTROL_CHARS.sub(" ", text).split())


def _shows(text: str, phrase: str) -> bool:
    """``phrase in _squash(text)`` for a squashed ``phrase``, mostly without squashing ``text``.

    A squashed phrase found in ``text`` is also in ``_squash(text)``: its characters are kept
    and its single spaces sit between characters that squashing keeps.
    """
    return phrase in text or phrase in _squash(text)


def _text_footer(sender: Mapping[str, Any], unsubscribe_url: str) -> str:
    company = _squash(str(sender.get("company") or ""))
    address = _squash(str(sender.get("postal_address") or ""))
    origin = f"{company}, {address}" if company else address
    return f"--\n{origin}\nUnsubscribe: {unsubscribe_url}"


# --- compiling and rendering ----------------------------------------------------------------


def _error_location(exc: BaseException) -> tuple[str | None, int | None]:
    """The innermost template frame of a render error (Jinja rewrites tracebacks to them)."""
    if isinstance(exc, TemplateSyntaxError):
        return exc.filename, exc.lineno
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith((HTML_SUFFIX, TEXT_SUFFIX)):
            return frame.filename, frame.lineno
    return None, None


def _render_error(name: str, exc: Exception) -> TemplateRenderError:
    filename, lineno = _error_location(exc)
    if isinstance(exc, TemplateSyntaxError):
        detail = f"syntax error: {exc.message}"
    elif isinstance(exc, TemplateNotFound):
        detail = f"missing template {exc.name!r}"
    elif type(exc).__module__.startswith("jinja2"):
        detail = str(exc)
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return TemplateRenderError(name, detail, filename=filename, lineno=lineno)


def _checked_context(name: str, context: Mapping[str, Any]) -> dict[str, Any]:
    missing = TEMPLATE_GLOBALS - set(context)
    unknown = set(context) - TEMPLATE_GLOBALS
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(sorted(missing))}")
        if unknown:
            parts.append(f"unexpected {', '.join(sorted(unknown))}")
        raise TemplateRenderError(name, f"bad template context: {'; '.join(parts)}")
    if not isinstance(context["sender"], Mapping):
        raise TemplateRenderError(name, "bad template context: sender must be a mapping")
    return {key: context[key] for key in TEMPLATE_GLOBALS}


class CompiledEmail:
    """One email's compiled templates; ``render`` is the only per-lead work."""

    def __init__(self, name: str, html_template: Template, text_template: Template | None) -> None:
        if "subject" not in html_template.blocks:
            raise TemplateRenderError(name, "template does not define {% block subject %}")
        self.name = name
        self._html = html_template
        self._text = text_template
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)

    def _render_subject(self, values: dict[str, Any]) -> str:
        try:
            return "".join(self._html.blocks["subject"](self._html.new_context(values)))
        except Exception:
            # Re-raise with the traceback pointing at template lines, as render() does.
            self._html.environment.handle_exception()

    def render(self, context: Mapping[str, Any]) -> RenderedEmail:
        values = _checked_context(self.name, context)
        sender: Mapping[str, Any] = values["sender"]
        unsubscribe_url = str(values["unsubscribe_url"])
        try:
            raw_subject = self._render_subject(values)
            document = render_bounded(self._html, values)
            text = render_bounded(self._text, values) if self._text is not None else None
        except Exception as exc:  # any template fault becomes one typed error for the caller
            raise _render_error(self.name, exc) from exc

        subject = _squash(html.unescape(raw_subject))
        if not subject:
            raise TemplateRenderError(self.name, "the subject is empty")
        try:
            document = self._inliner.inline(document)
        except css_inline.InlineError as exc:
            raise TemplateRenderError(self.name, f"CSS inlining failed: {exc}") from exc

        html_text, links = extract(document)
        address = _squash(str(sender.get("postal_address") or ""))
        if unsubscribe_url not in links:
            raise TemplateRenderError(
                self.name, "the HTML part has no link to unsubscribe_url (required by CAN-SPAM)"
            )
        if not address or not _shows(html_text, address):
            raise TemplateRenderError(
                self.name, "the HTML part does not show sender.postal_address (CAN-SPAM)"
            )

        body = (text if text is not None else html_text).strip()
        if unsubscribe_url not in body or not _shows(body, address):
            body = f"{body}\n\n{_text_footer(sender, unsubscribe_url)}"
        html_body = document if document.endswith("\n") else document + "\n"
        return RenderedEmail(subject=subject, text=body + "\n", html=html_body)


def _autoescape(template_name: str | None) -> bool:
    return template_name is None or not template_name.endswith(TEXT_SUFFIX)


class TemplateSet:
    """The email templates of one directory, compiled at most once each."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._env = BoundedSandbox(
            loader=FileSystemLoader(self.directory),
            optimized=False,  # no constant folding: "{{ 10**(10**10) }}" must not run at compile
            autoescape=_autoescape,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=False,  # a run renders one snapshot; a new TemplateSet sees edits
        )
        # Templates see exactly TEMPLATE_GLOBALS: no range/cycler/joiner/namespace/lipsum.
        self._env.globals.clear()
        self._env.filters.update(TEMPLATE_FILTERS)
        self._compiled: dict[str, CompiledEmail] = {}

    def names(self) -> list[str]:
        """Email names (files ``<name>.html.j2``), without the layout and ``_partials``."""
        if not self.directory.is_dir():
            return []
        found = (
            path.name.removesuffix(HTML_SUFFIX)
            for path in self.directory.glob(f"*{HTML_SUFFIX}")
            if path.is_file() and path.name != LAYOUT and not path.name.startswith("_")
        )
        return sorted(found)

    def compile(self, name: str) -> CompiledEmail:
        """The compiled email ``name``; raises ``TemplateRenderError`` if missing or broken."""
        compiled = self._compiled.get(name)
        if compiled is None:
            compiled = self._compiled[name] = self._build(name)
        return compiled

    def _build(self, name: str) -> CompiledEmail:
        if not _TEMPLATE_NAME.fullmatch(name) or not self._path(name + HTML_SUFFIX).is_file():
            raise TemplateRenderError(
                name, f"template {name!r} not found{did_you_mean(name, self.names())}"
            )
        try:
            html_template = self._env.get_template(name + HTML_SUFFIX)
            text_template = (
                self._env.get_template(name + TEXT_SUFFIX)
                if self._path(name + TEXT_SUFFIX).is_file()
                else None
            )
        except Exception as exc:  # syntax errors, missing parents: one typed error
            raise _render_error(name, exc) from exc
        return CompiledEmail(name, html_template, text_template)

    def _path(self, filename: str) -> Path:
        return self.directory / filename

    def check(
        self,
        name: str,
        *,
        lead_keys: Collection[str] = LEAD_KEYS,
        attribute_keys: Collection[str] = (),
        labels: Labels = NO_LABELS,
    ) -> list[TemplateProblem]:
        """Every problem that would stop ``name`` from rendering for a real lead."""
        html_file = name + HTML_SUFFIX
        if not self.directory.is_dir():
            message = (
                f"template {name!r} not found: the templates folder {self.directory} does not "
                "exist (LEADFLOW_TEMPLATES)"
            )
            return [TemplateProblem(str(self._path(html_file)), 0, message)]
        if not _TEMPLATE_NAME.fullmatch(name) or not self._path(html_file).is_file():
            message = f"template {name!r} not found{did_you_mean(name, self.names())}"
            return [TemplateProblem(str(self._path(html_file)), 0, message)]

        checker = SourceChecker(self._env, self.directory, lead_keys, attribute_keys)
        checker.check_file(html_file, require_subject=True)
        if self._path(name + TEXT_SUFFIX).is_file():
            checker.check_file(name + TEXT_SUFFIX, require_subject=False)
        if checker.fatal:
            return checker.problems

        try:
            self._build(name).render(
                sample_context(lead_keys=lead_keys, attribute_keys=attribute_keys, labels=labels)
            )
        except TemplateRenderError as exc:
            checker.problems.append(
                TemplateProblem(
                    exc.filename or str(self._path(html_file)),
                    exc.lineno or 0,
                    f"test render with sample data failed: {exc.message}",
                )
            )
        return checker.problems
