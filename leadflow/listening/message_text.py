"""The text of an inbound message: its body, and the part its writer typed.

Only the writer's own text decides anything: quoted text ("On ... wrote:" and its German,
French and Spanish forms, Outlook's separator and From/Sent block, ``>`` lines, HTML
``<blockquote>`` and Gmail/Outlook quote containers) and the signature (``-- ``) are cut.
Our own footer ("Not interested? Unsubscribe") is quoted below most replies and must not
turn "yes, let's talk" into an unsubscribe. Bodies are read up to MAX_TEXT characters.
"""

from __future__ import annotations

import re
from email.message import Message

from leadflow.listening.facts import content_charset, content_type
from leadflow.mail.html_text import html_to_text

MAX_SNIPPET = 500  # characters of a reply's new text kept as evidence
MAX_TEXT = 200_000  # characters of a body looked at; the rest of a huge message is ignored

_SIGNATURE = re.compile(r"^(-- ?|--|__+|Sent from my .*|Von meinem .* gesendet.*)$", re.M)


# Where a quoted original starts, in the clients and languages of the corpus: "On ... wrote:",
# "Am ... schrieb ...:", "Le ... a écrit :", "El ... escribió:", Outlook's separator line and
# its "From:/Sent:" (Von:/Gesendet:, De :/Envoyé :, De:/Enviado:) header block, a line of
# underscores, or the first ">" line.
_QUOTE_START = re.compile(
    r"^[ \t]*(?:"
    r"on\b.{0,200}?\bwrote:|am\b.{0,200}?\bschrieb\b.{0,200}?:|le\b.{0,200}?\ba écrit ?:|"
    r"el\b.{0,200}?\bescribió:|-{2,}\s*(?:original message|ursprüngliche nachricht|"
    r"message d'origine|mensaje original)\s*-{2,}|_{10,}|"
    r"(?:from|von|de|da) ?:.*\n[ \t]*(?:sent|gesendet|envoyé|enviado|date|datum|inviato) ?:|"
    r">)",
    re.I | re.M,
)
_QUOTE_HEADER = re.compile(
    r"^\s*(on .{5,200} wrote:|am .{5,200} schrieb .{0,200}:|le .{5,200} a écrit ?:|"
    r"el .{5,200} escribió:)\s*$",
    re.I,
)
_HTML_QUOTE = re.compile(
    r"<blockquote|<div[^>]+(gmail_quote|divRplyFwdMsg|appendonsend|moz-cite-prefix)",
    re.I,
)


def new_text(msg: Message) -> str:
    """The text its writer typed: the first text part (or the HTML one as text), without
    quoted replies and signature."""
    body = body_text(msg)
    if not body:
        return ""
    cut = _QUOTE_START.search(body)
    if cut and body[: cut.start()].strip():  # top-posted: everything below is the quote
        body = body[: cut.start()]
    # inline answers between quoted lines: the writer's are the lines that are not quoted
    body = "\n".join(
        line
        for line in body.splitlines()
        if not line.lstrip().startswith(">") and not _QUOTE_HEADER.match(line)
    )
    cut = _SIGNATURE.search(body)
    if cut:
        body = body[: cut.start()]
    return body.strip()


def body_text(msg: Message) -> str:
    plain = html = None
    for part in msg.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = content_type(part)
        if kind == "text/plain" and plain is None:
            plain = text_of(part)
            if plain.strip():
                break  # the typed text: the HTML alternative is not needed
        elif kind == "text/html" and html is None:
            html = text_of(part)
        if kind == "message/rfc822":
            break
    if plain and plain.strip():
        return plain[:MAX_TEXT]
    if html:
        html = _HTML_QUOTE.split(html[:MAX_TEXT], maxsplit=1)[0]  # top-posted: quote below
        try:
            return html_to_text(html)
        except Exception:  # broken HTML: its raw text is still better than nothing
            return re.sub(r"<[^>]*>", " ", html[:MAX_TEXT])
    return ""


def text_of(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    charset = content_charset(part) or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def report_text(msg: Message) -> str:
    """A report's own text parts, not those of the original message it carries."""
    pieces: list[str] = []
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "text/rfc822-headers"):
            break
        if part.get_content_maintype() == "text":
            pieces.append(text_of(part))
    return "\n".join(pieces)[:MAX_TEXT]


def all_text(msg: Message) -> str:
    pieces: list[str] = []
    size = 0
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        text = text_of(part)
        pieces.append(text)
        size += len(text)
        if size > MAX_TEXT:
            break
    return "\n".join(pieces)[:MAX_TEXT]


def snip(text: str) -> str:
    squashed = " ".join(text.split())
    return squashed[:MAX_SNIPPET]
