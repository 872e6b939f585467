"""Build the MIME message for one rendered email, apart from sending it.

``email.message.EmailMessage`` with ``email.policy.default`` refuses CR/LF in header values;
on top of that every display name and free-text header is squashed to one line here, so lead
data from web forms can never add a header (no ``Bcc:`` smuggled in a name). Bodies are
quoted-printable, so the message is 7-bit clean for any relay.

``List-Unsubscribe`` gets a header class that folds only between its ``<...>`` items: the
stock folding turns a long URL into an RFC 2047 encoded word, which mail clients ignore.

Two builders share one set of checks. ``build_message`` returns the ``EmailMessage`` (previews,
test sends). ``build_wire`` returns the bytes that go on the wire, for the send path: building
and flattening an ``EmailMessage`` costs ~3 ms (the ``email`` package parses and refolds every
header in pure Python), about ten times the SMTP work per message. Its headers are exactly
what the ``email`` package writes for the same message: a header is either produced by the
``email`` package itself (cached when it is the same for a whole run: sender, date, extras) or,
for values made only of characters that need no quoting or encoding, written directly in the
form the package produces for them (the tests compare both for every kind of value). Every
header block is then checked line by line: only the expected header names can start a line.
Bodies are quoted-printable through ``binascii`` (C) instead of ``email.quoprimime``.

Size: one concept, the outgoing MIME message (~500 lines): both builders and the header
checks they share are here so that the two can never drift apart.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy as email_policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from functools import lru_cache
from types import MappingProxyType
from typing import Final, cast

from leadflow.mail.rendering import RenderedEmail

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ADDR_FORBIDDEN = re.compile(r"[\s<>(),;:\"\\\x00-\x1f\x7f]")
_URI_FORBIDDEN = re.compile(r"[\s<>\"\x00-\x1f\x7f]")
_MESSAGE_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_DOMAIN = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_ID_LEFT = 120
_MAX_URI = 900  # keeps every folded List-Unsubscribe line under the 998-octet limit

# Headers this module sets itself, or that must never come from a caller.
RESERVED_HEADERS: Final = frozenset(
    {
        "bcc",
        "cc",
        "content-transfer-encoding",
        "content-type",
        "date",
        "from",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "message-id",
        "mime-version",
        "reply-to",
        "return-path",
        "sender",
        "subject",
        "to",
    }
)


class _ListUnsubscribeHeader(UnstructuredHeader, BaseHeader):
    """Folds between ``<uri>`` items only, never inside a URI."""

    def fold(self, *, policy: Policy) -> str:
        items = re.findall(r"<[^<>]*>", str(self))
        if not items:
            return super().fold(policy=policy)
        return f"{self.name}: {(',' + policy.linesep + ' ').join(items)}{policy.linesep}"


class _HeaderClasses(HeaderRegistry):
    """Makes each header class once: the stock registry builds a new class per header set."""

    _LIMIT = 256  # header names seen; past that, classes are made per call as in the stdlib

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._made.clear()

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = super().__getitem__(name)
            if len(self._made) < self._LIMIT:
                self._made[key] = made
        return made


def _make_policy() -> Policy:
    registry = _HeaderClasses()
    registry.map_to_type("list-unsubscribe", _ListUnsubscribeHeader)
    return email_policy.default.clone(header_factory=registry)


POLICY: Final = _make_policy()


def one_line(text: str) -> str:
    """Control characters and line breaks collapsed to single spaces, trimmed."""
    return " ".join(_CONTROL_CHARS.sub(" ", text).split())


def _check_address(addr_spec: str, *, field: str) -> str:
    addr_spec = addr_spec.strip()
    local, at, domain = addr_spec.rpartition("@")
    if not (local and at and domain) or _ADDR_FORBIDDEN.search(addr_spec):
        raise ValueError(f"{field}: invalid email address {addr_spec!r}")
    return addr_spec


def _uri(value: str, *, schemes: tuple[str, ...], field: str) -> str:
    value = value.strip()
    if (
        not value.lower().startswith(schemes)
        or _URI_FORBIDDEN.search(value)
        or len(value) > _MAX_URI
    ):
        raise ValueError(f"{field}: unusable URI {value!r}")
    return value


def make_message_id(key: str, domain: str) -> str:
    """``<key@domain>``, the same for the same outbox row on every attempt.

    A key that is not already made of safe characters is cleaned and suffixed with a short
    hash of the original, so two different keys can never share a Message-ID.
    """
    if not key:
        raise ValueError("message id key must not be empty")
    host = domain.strip().lower().rstrip(".")
    if not _DOMAIN.fullmatch(host):
        raise ValueError(f"invalid message id domain {domain!r}")
    safe = re.sub(r"\.{2,}", ".", _ID_UNSAFE.sub("-", key)).strip(".")
    if safe != key or len(safe) > _MAX_ID_LEFT:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        safe = f"{safe[:_MAX_ID_LEFT]}.{digest}" if safe else digest
    return f"<{safe}@{host}>"


@dataclass(frozen=True)
class _Headers:
    """The checked header values of one message, in the order they are written."""

    subject: str
    from_name: str
    from_email: str
    to_name: str
    to_email: str
    reply_to: str | None
    date: datetime
    message_id: str
    unsubscribe: str  # the List-Unsubscribe value: "<uri>, <uri>"
    extra: tuple[tuple[str, str], ...]


def _check(
    rendered: RenderedEmail,
    *,
    from_name: str,
    from_email: str,
    reply_to: str | None,
    to_name: str,
    to_email: str,
    message_id: str,
    date: datetime,
    unsubscribe_url: str,
    unsubscribe_mailto: str | None,
    extra_headers: Mapping[str, str],
) -> _Headers:
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("date must be timezone-aware")
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"invalid Message-ID {message_id!r}")
    subject = one_line(rendered.subject)
    if not subject:
        raise ValueError("subject must not be empty")

    unsubscribe = [_uri(unsubscribe_url, schemes=("https://", "http://"), field="unsubscribe_url")]
    if unsubscribe_mailto:
        mailto = unsubscribe_mailto.strip()
        if not mailto.lower().startswith("mailto:"):
            mailto = f"mailto:{mailto}"
        unsubscribe.insert(0, _uri(mailto, schemes=("mailto:",), field="unsubscribe_mailto"))

    sender = _check_address(from_email, field="from_email")
    recipient = _check_address(to_email, field="to_email")
    replies = _check_address(reply_to, field="reply_to") if reply_to else None
    extra: list[tuple[str, str]] = []
    for name, value in extra_headers.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in RESERVED_HEADERS:
            raise ValueError(f"extra header {name!r} is not allowed")
        if name.lower().startswith("resent-"):
            raise ValueError(f"extra header {name!r} is not allowed")
        extra.append((name, one_line(value)))
    return _Headers(
        subject=subject,
        from_name=one_line(from_name),
        from_email=sender,
        to_name=one_line(to_name),
        to_email=recipient,
        reply_to=replies,
        date=date,
        message_id=message_id,
        unsubscribe=", ".join(f"<{uri}>" for uri in unsubscribe),
        extra=tuple(extra),
    )


def build_message(
    rendered: RenderedEmail,
    *,
    from_name: str,
    from_email: str,
    reply_to: str | None,
    to_name: str,
    to_email: str,
    message_id: str,
    date: datetime,
    unsubscribe_url: str,
    unsubscribe_mailto: str | None,
    extra_headers: Mapping[str, str] = MappingProxyType({}),
) -> EmailMessage:
    """A multipart/alternative message (text, then HTML) ready for ``Transport.send_batch``.

    Raises ``ValueError`` for an invalid address, URI, Message-ID, naive ``date``, empty
    subject or a reserved/invalid extra header name.
    """
    h = _check(
        rendered,
        from_name=from_name,
        from_email=from_email,
        reply_to=reply_to,
        to_name=to_name,
        to_email=to_email,
        message_id=message_id,
        date=date,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=unsubscribe_mailto,
        extra_headers=extra_headers,
    )
    msg = EmailMessage(policy=POLICY)
    msg["Subject"] = h.subject
    msg["From"] = Address(display_name=h.from_name, addr_spec=h.from_email)
    msg["To"] = Address(display_name=h.to_name, addr_spec=h.to_email)
    if h.reply_to:
        msg["Reply-To"] = Address(display_name="", addr_spec=h.reply_to)
    msg["Date"] = h.date
    msg["Message-ID"] = h.message_id
    msg["List-Unsubscribe"] = h.unsubscribe
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in h.extra:
        msg[name] = value
    msg.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


# --- the wire form ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WireMessage:
    """A built message as it goes on the wire (CRLF line endings, no Bcc), plus the two
    header values the outbox records, so nothing has to parse the bytes again.

    7-bit unless an envelope address is not ASCII: then the headers are UTF-8 (RFC 6532), as
    ``Transport`` writes an ``EmailMessage`` for such an address, and it needs SMTPUTF8.
    """

    data: bytes
    message_id: str
    subject: str


_MAX_LINE = 78  # email.policy.default.max_line_length: where the email package folds
# Characters that are written as they are in a phrase, an unstructured text or a msg-id: atext
# without "=" and "?" (which could start an RFC 2047 encoded word).
_ATOM = r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_PHRASE = re.compile(rf"{_ATOM}(?: {_ATOM})*")
_PLAIN_ADDR = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
_PLAIN_MSG_ID = re.compile(rf"<{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*>")
_PLAIN_TEXT = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_PLAIN_URIS = re.compile(r"<[\x21-\x3b=\x3f-\x7e]+>(?:, <[\x21-\x3b=\x3f-\x7e]+>)*")

# What ``Transport`` flattens an ``EmailMessage`` with, for ASCII and non-ASCII envelopes
# (headers fold the same for 7-bit and 8-bit relays).
_WIRE_POLICIES: Final = {False: email_policy.SMTP, True: email_policy.SMTPUTF8}
_HEADER_NAMES: Final = frozenset(
    {
        "subject",
        "from",
        "to",
        "reply-to",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    }
)
_QP_PART = b'; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
_TEXT_PART = b"Content-Type: text/plain" + _QP_PART
_HTML_PART = b"Content-Type: text/html" + _QP_PART

# ``msg[name] = value`` goes through this (it refuses CR/LF in strings); typeshed types the
# value as str only, but header objects take addresses and datetimes too.
_store_parse = cast(Callable[[str, object], tuple[str, BaseHeader]], POLICY.header_store_parse)


def _stdlib_line(name: str, value: str | Address | datetime, utf8: bool) -> str:
    """The header exactly as the ``email`` package writes it (policy checks included)."""
    name, header = _store_parse(name, value)
    return header.fold(policy=_WIRE_POLICIES[utf8])


# The fast paths below take only printable ASCII that needs no quoting, no encoding and no
# folding; for such values the ``email`` package writes "Name: value" (the tests check it).


@lru_cache(maxsize=1024)
def _run_line(name: str, value: str, utf8: bool) -> str:
    """``_stdlib_line`` for values that stay the same for a whole run (extra headers)."""
    return _stdlib_line(name, value, utf8)


@lru_cache(maxsize=64)
def _date_line(date: datetime, offset: timedelta | None, utf8: bool) -> str:
    """The Date header; one per run. Keyed by the offset too: equal instants in different
    offsets compare (and hash) equal, but are written differently."""
    return _stdlib_line("Date", date, utf8)


@lru_cache(maxsize=1024)
def _address_line(name: str, display_name: str, addr_spec: str, utf8: bool) -> str:
    """From and Reply-To: the same for a whole run."""
    if not display_name and _PLAIN_ADDR.fullmatch(addr_spec):
        line = f"{name}: {addr_spec}\r\n"
        if len(line) <= _MAX_LINE + 2:
            return line
    return _stdlib_line(name, Address(display_name=display_name, addr_spec=addr_spec), utf8)


def _to_line(display_name: str, addr_spec: str, utf8: bool) -> str:
    if _PLAIN_ADDR.fullmatch(addr_spec) and (
        not display_name or _PLAIN_PHRASE.fullmatch(display_name)
    ):
        line = f"To: {display_name} <{addr_spec}>\r\n" if display_name else f"To: {addr_spec}\r\n"
        if len(line) <= _MAX_LINE + 2:
            return line
    return _stdlib_line("To", Address(display_name=display_name, addr_spec=addr_spec), utf8)


@lru_cache(maxsize=4096)
def _subject_line(subject: str, utf8: bool) -> str:
    """Cached: most subjects vary only with a first name or a company."""
    line = f"Subject: {subject}\r\n"
    if len(line) <= _MAX_LINE + 2 and _PLAIN_TEXT.fullmatch(subject) and "=?" not in subject:
        return line
    return _stdlib_line("Subject", subject, utf8)


def _message_id_line(message_id: str, utf8: bool) -> str:
    line = f"Message-ID: {message_id}\r\n"
    if len(line) <= _MAX_LINE + 2 and _PLAIN_MSG_ID.fullmatch(message_id):
        return line
    return _stdlib_line("Message-ID", message_id, utf8)


def _unsubscribe_line(value: str, utf8: bool) -> str:
    """``_ListUnsubscribeHeader.fold``: one ``<uri>`` per line, whatever the length."""
    if _PLAIN_URIS.fullmatch(value) and "=?" not in value:
        return "List-Unsubscribe: " + value.replace(", ", ",\r\n ") + "\r\n"
    return _stdlib_line("List-Unsubscribe", value, utf8)


def _check_header_block(block: str, names: frozenset[str], *, utf8: bool) -> None:
    """Every line of ``block`` continues a header or starts one of ``names``: nothing a lead
    typed can have started a header of its own. Raises ``ValueError`` otherwise."""
    lines = block.split("\r\n")
    if lines.pop() != "" or not (utf8 or block.isascii()):
        raise ValueError("header block is not CRLF-terminated ASCII")
    for line in lines:
        if "\r" in line or "\n" in line or len(line.encode("utf-8")) > 998:
            raise ValueError(f"malformed header line {line[:60]!r}")
        if line[:1] in (" ", "\t"):
            continue
        name, colon, _value = line.partition(":")
        if not colon or name.lower() not in names:
            raise ValueError(f"unexpected header line {line[:60]!r}")


def _qp_body(text: str) -> bytes:
    """Quoted-printable UTF-8 with CRLF line breaks, ending with one (as ``set_content``).

    ``binascii.b2a_qp`` (C) instead of ``email.quoprimime`` (Python, ~1 ms per email); both
    are RFC 2045 quoted-printable, ``binascii`` breaks lines at 76 characters instead of 78.
    """
    data = text.encode("utf-8")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not data.endswith(b"\n"):
        data += b"\n"
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    return encoded.replace(b"\n", b"\r\n")


def _boundary(message_id: str) -> str:
    """In the ``email`` package's shape, derived from the Message-ID so a message is the same
    bytes on every attempt. Quoted-printable bodies cannot contain it: a body line holds "="
    only as "=XX" or a final soft break, never "==="."""
    digest = hashlib.sha256(message_id.encode("utf-8")).digest()
    return f"{'=' * 15}{int.from_bytes(digest[:8], 'big') % 10**19:019d}=="


def build_wire(
    rendered: RenderedEmail,
    *,
    from_name: str,
    from_email: str,
    reply_to: str | None,
    to_name: str,
    to_email: str,
    message_id: str,
    date: datetime,
    unsubscribe_url: str,
    unsubscribe_mailto: str | None,
    extra_headers: Mapping[str, str] = MappingProxyType({}),
) -> WireMessage:
    """``build_message`` as wire bytes for ``Outgoing``: same checks, same headers, same parts.

    Raises ``ValueError`` as ``build_message`` does.
    """
    h = _check(
        rendered,
        from_name=from_name,
        from_email=from_email,
        reply_to=reply_to,
        to_name=to_name,
        to_email=to_email,
        message_id=message_id,
        date=date,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=unsubscribe_mailto,
        extra_headers=extra_headers,
    )
    utf8 = not (h.from_email.isascii() and h.to_email.isascii())
    lines = [
        _subject_line(h.subject, utf8),
        _address_line("From", h.from_name, h.from_email, utf8),
        _to_line(h.to_name, h.to_email, utf8),
    ]
    if h.reply_to:
        lines.append(_address_line("Reply-To", "", h.reply_to, utf8))
    lines += [
        _date_line(h.date, h.date.utcoffset(), utf8),
        _message_id_line(h.message_id, utf8),
        _unsubscribe_line(h.unsubscribe, utf8),
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
    ]
    lines += [_run_line(name, value, utf8) for name, value in h.extra]
    block = "".join(lines)
    names = _HEADER_NAMES.union(name.lower() for name, _value in h.extra)
    _check_header_block(block, names, utf8=utf8)
    boundary = _boundary(h.message_id).encode("ascii")
    data = b"".join(
        (
            block.encode("utf-8"),
            b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="',
            boundary,
            b'"\r\n\r\n--',
            boundary,
            b"\r\n",
            _TEXT_PART,
            _qp_body(rendered.text),
            b"\r\n--",
            boundary,
            b"\r\n",
            _HTML_PART,
            _qp_body(rendered.html),
            b"\r\n--",
            boundary,
            b"--\r\n",
        )
    )
    # The Subject as an EmailMessage reports it: an encoded word typed into a subject is
    # decoded, as mail clients will show it.
    subject = str(_store_parse("Subject", h.subject)[1]) if "=?" in h.subject else h.subject
    return WireMessage(data=data, message_id=h.message_id, subject=subject)
