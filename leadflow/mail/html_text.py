"""HTML to plain text for the text part of an email (and for reading inbound HTML replies).

Block elements become line breaks, links become ``text (url)``, images their alt text;
``head``, ``script``, ``style`` and templates are skipped. A regular-expression tokenizer
handles the markup leadflow's own templates produce; anything it is not sure of falls back to
``html.parser`` (the property test in tests/test_rendering.py holds the two to one answer).
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Final, NamedTuple

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


def extract(document: str) -> _Extracted:
    fast = _fast_extract(document)
    if fast is not None:
        return fast
    parser = _TextExtractor()
    parser.feed(document)
    parser.close()
    return _Extracted(parser.text(), parser.links)


def html_to_text(document: str) -> str:
    """Plain text for the ``text/plain`` part: paragraphs, line breaks, ``text (url)`` links."""
    return extract(document).text
