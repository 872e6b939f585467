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

import difflib
import html
import re
import traceback
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Final, NamedTuple

import css_inline
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    meta,
    nodes,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

from leadflow.mail.sandbox import MAX_LOOP_DEPTH, BoundedSandbox, render_bounded

TEMPLATE_GLOBALS: Final = frozenset({"lead", "sender", "unsubscribe_url", "message"})
LEAD_KEYS: Final = frozenset(
    {
        "email",
        "first_name",
        "last_name",
        "full_name",
        "company",
        "title",
        "industry",
        "country",
        "timezone",
        "stage",
        "score",
        "grade",
        "attributes",
    }
)
SENDER_KEYS: Final = frozenset({"name", "email", "reply_to", "company", "postal_address"})
MESSAGE_KEYS: Final = frozenset({"cadence", "step", "variant"})

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


@dataclass(frozen=True)
class TemplateProblem:
    """One finding of ``TemplateSet.check``; ``line`` is 0 when no line applies."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.message}"
            if self.line
            else f"{self.file}: {self.message}"
        )


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
    *, lead_keys: Collection[str] = LEAD_KEYS, attribute_keys: Collection[str] = ()
) -> dict[str, Any]:
    """A realistic fake context for previews and validation test renders.

    Extra ``lead_keys`` and ``attribute_keys`` get placeholder values so that a template using
    declared custom fields renders in the test.
    """
    lead: dict[str, Any] = {
        "email": "dana.whitfield@northwind-logistics.example",
        "first_name": "Dana",
        "last_name": "Whitfield",
        "full_name": "Dana Whitfield",
        "company": "Northwind Logistics",
        "title": "Head of Operations",
        "industry": "Logistics",
        "country": "US",
        "timezone": "America/Chicago",
        "stage": "contacted",
        "score": 72,
        "grade": "B",
        "attributes": {key: f"sample {key}" for key in sorted(attribute_keys)},
    }
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


# --- HTML to plain text -------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "blockquote",
        "center",
        "div",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    }
)
_SKIPPED_TAGS = frozenset({"head", "script", "style", "title", "template"})
_SPACES = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextExtractor(HTMLParser):
    """Collects readable text and link targets; links become ``text (url)``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self._skip_depth = 0
        self._anchors: list[tuple[str | None, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
        if self._skip_depth:
            return
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.parts.append(alt)
        elif tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)
            self._anchors.append((href, len(self.parts)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if self._skip_depth:
            return
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
        elif tag in {"td", "th"}:
            self.parts.append(" ")
        elif tag == "a" and self._anchors:
            href, start = self._anchors.pop()
            label = " ".join("".join(self.parts[start:]).split())
            if href and not href.startswith("#") and label != href:
                shown = href.removeprefix("mailto:") if href.startswith("mailto:") else href
                self.parts.append(f" ({shown})" if label != shown else "")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(_SPACES.sub(" ", data))

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).split("\n"))
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


# A fast reader for the markup ``css_inline`` writes (html5ever's serialiser: lower-case
# tags, attribute values in double quotes, "<" in text escaped). One ``findall`` cuts the
# document into tokens in C, and one loop does with them what ``_TextExtractor`` does with
# the calls ``HTMLParser`` would make. On anything else (a stray "<", "<?", "<![CDATA[", an
# unquoted attribute, a script or style that never ends) it gives up and ``HTMLParser`` reads the
# document instead. The tests compare both on the shipped templates and on generated markup.
# ``HTMLParser`` costs ~0.6 ms per email, most of rendering one.
_ATTRIBUTES = r"(?:\s++[^\s/>\"'=<][^\s/=>\"'<]*+(?:=\"[^\"]*+\")?+)*+"
_RAW_TEXT = frozenset(HTMLParser.CDATA_CONTENT_ELEMENTS)  # script, style: content not parsed


def _any_case(word: str) -> str:
    """A pattern for ASCII ``word`` in any case (``re.IGNORECASE`` also takes U+017F for "s")."""
    return "".join(f"[{char.lower()}{char.upper()}]" for char in word)


def _raw_text_element(tag: str) -> str:
    """``<tag ...>...</tag>``, ending where HTMLParser ends it (if that is a non-ASCII
    "</style>" with U+017F under its ``re.IGNORECASE``, this does not match: unsure)."""
    name = _any_case(tag)
    content = rf"[^<]*+(?:<(?!/\s*(?i:{tag})\s*>)[^<]*+)*+"
    return rf"<{name}(?=[\t\n\r\f />]){_ATTRIBUTES}\s*>{content}</\s*{name}\s*>"


_TOKENS = re.compile(
    r"([^<]++)"  # 1: text
    r"|</([a-zA-Z][-.a-zA-Z0-9:_]*)\s*>"  # 2: end tag
    + "".join(f"|{_raw_text_element(tag)}" for tag in sorted(_RAW_TEXT))  # skipped whole
    + r"|<([a-zA-Z][^\t\n\r\f />\x00]*+)"  # 3: start tag name (never backtracked, as HTMLParser)
    + f"({_ATTRIBUTES})"  # 4: its attributes
    + r"\s*(/?)>"  # 5: "/" if it is also an end tag
    r"|<!--.*?--\s*>"  # comment (HTMLParser ends it at the first "--", spaces, ">")
    r"|<!" + _any_case("doctype") + r"[^>]*>"  # doctype
    r"|(<)",  # 6: anything else: not sure
    re.DOTALL,
)
_ATTRIBUTE = re.compile(r"\s+([^\s/>\"'=<][^\s/=>\"'<]*)(?:(=)\"([^\"]*)\")?")
_ATTRS_USED: Final = frozenset({"a", "img"})  # the only tags whose attributes are read
# Line breaks from tags are this character until the end, so that white space in text (a
# newline too) can be squashed in one go. ``html.unescape`` never makes it (``&#xffff;`` is "").
_BREAK: Final = "\uffff"
_START_PIECES: Final = {tag: _BREAK * 2 for tag in _BLOCK_TAGS} | {
    "br": _BREAK,
    "li": _BREAK + "- ",
}
_END_PIECES: Final = {tag: _BREAK * 2 for tag in _BLOCK_TAGS} | {"td": " ", "th": " "}


class _Extracted(NamedTuple):
    text: str
    links: list[str]


def _attribute(attributes: str, wanted: str) -> str | None:
    """The last ``wanted`` attribute's value, as ``dict(attrs).get(wanted)`` in HTMLParser."""
    value: str | None = None
    for name, equals, raw in _ATTRIBUTE.findall(attributes):
        if name.lower() == wanted:
            value = (html.unescape(raw) if "&" in raw else raw) if equals else None
    return value


def _open_link_or_image(
    tag: str,
    attributes: str,
    pieces: list[str],
    links: list[str],
    anchors: list[tuple[str | None, int]],
) -> None:
    """``_TextExtractor.handle_starttag`` for ``a`` and ``img``."""
    if tag == "img":
        alt = _attribute(attributes, "alt")
        if alt:
            pieces.append(alt.replace("\n", _BREAK))
        return
    href = _attribute(attributes, "href")
    if href:
        links.append(href)
    anchors.append((href, len(pieces)))


def _close_anchor(pieces: list[str], anchor: tuple[str | None, int]) -> None:
    """``_TextExtractor.handle_endtag`` for ``a``: " (url)" unless the label is the url."""
    href, start = anchor
    if not href or href.startswith("#"):
        return
    label = " ".join("".join(pieces[start:]).replace(_BREAK, " ").split())
    shown = href.removeprefix("mailto:")
    if label != href and label != shown:
        pieces.append(f" ({shown})".replace("\n", _BREAK))


def _lines(joined: str) -> str:
    """``_TextExtractor.text()`` with ``_BREAK`` for line breaks, in whole-string operations."""
    words = " ".join(joined.split())
    lines = words.replace(" " + _BREAK, _BREAK).replace(_BREAK + " ", _BREAK)
    return _BLANK_LINES.sub("\n\n", lines.replace(_BREAK, "\n")).strip()


def _fast_extract(document: str) -> _Extracted | None:
    """What ``_TextExtractor`` makes of ``document``, or None if unsure how HTMLParser reads it.

    Text pieces keep their white space, newlines too: only ``_BREAK`` ends a line.
    """
    if _BREAK in document:
        return None
    pieces: list[str] = []
    links: list[str] = []
    anchors: list[tuple[str | None, int]] = []
    append, unescape = pieces.append, html.unescape
    skip = 0  # depth inside head, script, style, title, template
    for text, closing, opening, attributes, empty, stray in _TOKENS.findall(document):
        if text:
            if not skip:
                append(unescape(text) if "&" in text else text)
            continue
        if opening:
            tag = opening.lower()
            if tag in _SKIPPED_TAGS:
                if not empty:
                    if tag in _RAW_TEXT:
                        return None  # it never ends, or ends oddly: not sure
                    skip += 1
                continue  # "<title/>": in and straight out again
            if skip:
                continue
            piece = _START_PIECES.get(tag)
            if piece is not None:
                append(piece)
            elif tag in _ATTRS_USED:
                _open_link_or_image(tag, attributes, pieces, links, anchors)
            if not empty:
                continue
            closing = tag
        elif closing:
            closing = closing.lower()
            if closing in _SKIPPED_TAGS:
                skip = max(0, skip - 1)
                continue
            if skip:
                continue
        elif stray:
            return None
        else:
            continue  # comment, doctype, whole script or style
        piece = _END_PIECES.get(closing)
        if piece is not None:
            append(piece)
        elif closing == "a" and anchors:
            _close_anchor(pieces, anchors.pop())
    return _Extracted(_lines("".join(pieces)), links)


def _extract(document: str) -> _Extracted:
    fast = _fast_extract(document)
    if fast is not None:
        return fast
    parser = _TextExtractor()
    parser.feed(document)
    parser.close()
    return _Extracted(parser.text(), parser.links)


def html_to_text(document: str) -> str:
    """Plain text for the ``text/plain`` part: paragraphs, line breaks, ``text (url)`` links."""
    return _extract(document).text


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

        html_text, links = _extract(document)
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
            raise TemplateRenderError(name, f"template {name!r} not found{self._suggest(name)}")
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

    def _suggest(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1)
        return f"; did you mean {close[0]!r}?" if close else ""

    def check(
        self,
        name: str,
        *,
        lead_keys: Collection[str] = LEAD_KEYS,
        attribute_keys: Collection[str] = (),
    ) -> list[TemplateProblem]:
        """Every problem that would stop ``name`` from rendering for a real lead."""
        html_file = name + HTML_SUFFIX
        if not _TEMPLATE_NAME.fullmatch(name) or not self._path(html_file).is_file():
            message = f"template {name!r} not found{self._suggest(name)}"
            return [TemplateProblem(str(self._path(html_file)), 0, message)]

        checker = _SourceChecker(self._env, self.directory, lead_keys, attribute_keys)
        checker.check_file(html_file, require_subject=True)
        if self._path(name + TEXT_SUFFIX).is_file():
            checker.check_file(name + TEXT_SUFFIX, require_subject=False)
        if checker.fatal:
            return checker.problems

        try:
            self._build(name).render(
                sample_context(lead_keys=lead_keys, attribute_keys=attribute_keys)
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


# --- static checks --------------------------------------------------------------------------

_CALLABLE_LOOKUPS = frozenset({"get"})


def _did_you_mean(word: str, options: Iterable[str], prefix: str = "") -> str:
    """``; did you mean lead.first_name?`` (with a prefix) or ``; did you mean 'lead'?``."""
    close = difflib.get_close_matches(word, sorted(options), n=1)
    if not close:
        return ""
    return f"; did you mean {prefix}{close[0]}?" if prefix else f"; did you mean {close[0]!r}?"


def _lookup_key(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return node.arg.value if isinstance(node.arg.value, str) else None
    return None


class _SourceChecker:
    """Parses template files and reports problems without rendering anything."""

    def __init__(
        self,
        env: ImmutableSandboxedEnvironment,
        directory: Path,
        lead_keys: Collection[str],
        attribute_keys: Collection[str],
    ) -> None:
        self._env = env
        self._directory = directory
        self._fields: dict[str, Collection[str]] = {
            "lead": frozenset(lead_keys),
            "sender": SENDER_KEYS,
            "message": MESSAGE_KEYS,
        }
        self._attribute_keys = frozenset(attribute_keys)
        self._seen: set[str] = set()
        self.problems: list[TemplateProblem] = []
        self.fatal = False  # no point in a test render (syntax error, missing file or block)

    def _report(self, path: Path, line: int, message: str) -> None:
        self.problems.append(TemplateProblem(str(path), line, message))

    def check_file(self, filename: str, *, require_subject: bool) -> None:
        if filename in self._seen:
            return
        self._seen.add(filename)
        path = self._directory / filename
        source = path.read_text(encoding="utf-8")
        try:
            ast = self._env.parse(source, filename, str(path))
        except TemplateSyntaxError as exc:
            self.fatal = True
            self._report(path, exc.lineno, f"syntax error: {exc.message}")
            return

        if require_subject and not any(b.name == "subject" for b in ast.find_all(nodes.Block)):
            self.fatal = True
            self._report(path, 1, "template does not define {% block subject %}")
        self._check_names(path, ast)
        self._check_fields(path, ast)
        self._check_loops(path, ast)
        for ref in meta.find_referenced_templates(ast):
            if ref is None:
                self._report(path, 0, "extends/include with a computed template name")
            elif not (self._directory / ref).is_file():
                self.fatal = True
                self._report(path, 0, f"references missing template {ref!r}")
            else:
                self.check_file(ref, require_subject=False)

    def _check_loops(self, path: Path, node: nodes.Node, depth: int = 0) -> None:
        """Loops nested deeper than MAX_LOOP_DEPTH: a few loops over a lead's text already
        make millions of iterations, with or without output."""
        for child in node.iter_child_nodes():
            inner = depth + isinstance(child, nodes.For)
            if inner > MAX_LOOP_DEPTH:
                self.fatal = True
                self._report(path, child.lineno, f"loops nested deeper than {MAX_LOOP_DEPTH}")
                return
            self._check_loops(path, child, inner)

    def _check_names(self, path: Path, ast: nodes.Template) -> None:
        for name in sorted(meta.find_undeclared_variables(ast) - TEMPLATE_GLOBALS):
            line = next(
                (n.lineno for n in ast.find_all(nodes.Name) if n.name == name and n.ctx == "load"),
                0,
            )
            hint = _did_you_mean(name, TEMPLATE_GLOBALS) or (
                f"; available: {', '.join(sorted(TEMPLATE_GLOBALS))}"
            )
            self._report(path, line, f"unknown variable {name!r}{hint}")

    def _known(self, node: nodes.Node) -> tuple[str, Collection[str]] | None:
        """The dotted path and allowed keys when ``node`` is a checked mapping."""
        if isinstance(node, nodes.Name) and node.name in self._fields:
            return node.name, self._fields[node.name]
        if (
            isinstance(node, nodes.Getattr | nodes.Getitem)
            and isinstance(node.node, nodes.Name)
            and node.node.name == "lead"
            and _lookup_key(node) == "attributes"
        ):
            return "lead.attributes", self._attribute_keys
        return None

    def _check_key(
        self, path: Path, line: int, owner: str, keys: Collection[str], key: str
    ) -> None:
        if key in keys:
            return
        if owner == "lead.attributes":
            declared = ", ".join(sorted(keys)) if keys else "none"
            hint = (
                _did_you_mean(key, keys, "lead.attributes.") or f"; declared attributes: {declared}"
            )
        else:
            hint = _did_you_mean(key, keys, f"{owner}.")
        self._report(path, line, f"unknown field {owner}.{key}{hint}")

    def _check_fields(self, path: Path, ast: nodes.Template) -> None:
        method_nodes: set[int] = set()
        for call in ast.find_all(nodes.Call):
            callee = call.node
            if not isinstance(callee, nodes.Getattr) or callee.attr not in _CALLABLE_LOOKUPS:
                continue
            known = self._known(callee.node)
            if known is None:
                continue
            method_nodes.add(id(callee))
            first = call.args[0] if call.args else None
            if isinstance(first, nodes.Const) and isinstance(first.value, str):
                self._check_key(path, call.lineno, known[0], known[1], first.value)

        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            if not isinstance(node, nodes.Getattr | nodes.Getitem):
                continue
            key = _lookup_key(node)
            known = self._known(node.node)
            if key is None or known is None or id(node) in method_nodes:
                continue
            self._check_key(path, node.lineno, known[0], known[1], key)
