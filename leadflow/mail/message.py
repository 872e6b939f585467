"""Build the MIME message for one rendered email, apart from sending it: ``build_wire``.

It is the one builder: delivery and ``send-test`` send its bytes, the same on every attempt
for the same outbox row. The bytes are those the ``email`` package would write for the same
message (``headers`` writes the header block; tests/test_message.py compares both), without
its cost.

Every display name and free-text header is squashed to one line here, so lead data from web
forms can never add a header (no ``Bcc:`` smuggled in a name), and the written header block is
checked again line by line. Bodies are quoted-printable through ``binascii`` (C) instead of
``email.quoprimime``, so the message is 7-bit clean for any relay.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, NotRequired, TypedDict, Unpack

from leadflow.mail.headers import Headers, header_block, shown_subject

if TYPE_CHECKING:  # annotations only: building a message needs no template engine
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

_QP_PART = b'; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
_TEXT_PART = b"Content-Type: text/plain" + _QP_PART
_HTML_PART = b"Content-Type: text/html" + _QP_PART


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


class HeaderFields(TypedDict):
    """What ``checked_headers`` and ``build_wire`` are told about a message besides its
    rendered text, as keyword arguments (``extra_headers`` may be left out)."""

    from_name: str
    from_email: str
    reply_to: str | None
    to_name: str
    to_email: str
    message_id: str
    date: datetime
    unsubscribe_url: str
    unsubscribe_mailto: str | None
    extra_headers: NotRequired[Mapping[str, str]]


def checked_headers(rendered: RenderedEmail, **fields: Unpack[HeaderFields]) -> Headers:
    """The header values of ``build_wire``'s message, each checked and made one line.

    Raises ``ValueError`` for an invalid address, URI, Message-ID, naive ``date``, empty
    subject or a reserved/invalid extra header name.
    """
    date, message_id = fields["date"], fields["message_id"]
    unsubscribe_mailto = fields["unsubscribe_mailto"]
    reply_to = fields["reply_to"]
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("date must be timezone-aware")
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"invalid Message-ID {message_id!r}")
    subject = one_line(rendered.subject)
    if not subject:
        raise ValueError("subject must not be empty")

    unsubscribe = [
        _uri(fields["unsubscribe_url"], schemes=("https://", "http://"), field="unsubscribe_url")
    ]
    if unsubscribe_mailto:
        mailto = unsubscribe_mailto.strip()
        if not mailto.lower().startswith("mailto:"):
            mailto = f"mailto:{mailto}"
        unsubscribe.insert(0, _uri(mailto, schemes=("mailto:",), field="unsubscribe_mailto"))

    sender = _check_address(fields["from_email"], field="from_email")
    recipient = _check_address(fields["to_email"], field="to_email")
    replies = _check_address(reply_to, field="reply_to") if reply_to else None
    extra: list[tuple[str, str]] = []
    for name, value in fields.get("extra_headers", {}).items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in RESERVED_HEADERS:
            raise ValueError(f"extra header {name!r} is not allowed")
        if name.lower().startswith("resent-"):
            raise ValueError(f"extra header {name!r} is not allowed")
        extra.append((name, one_line(value)))
    return Headers(
        subject=subject,
        from_name=one_line(fields["from_name"]),
        from_email=sender,
        to_name=one_line(fields["to_name"]),
        to_email=recipient,
        reply_to=replies,
        date=date,
        message_id=message_id,
        unsubscribe=", ".join(f"<{uri}>" for uri in unsubscribe),
        extra=tuple(extra),
    )


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


def build_wire(rendered: RenderedEmail, **fields: Unpack[HeaderFields]) -> WireMessage:
    """A multipart/alternative message (text, then HTML) as wire bytes for ``Outgoing``.

    Raises ``ValueError`` as ``checked_headers`` does, or for a header line nobody set.
    """
    h = checked_headers(rendered, **fields)
    utf8 = not (h.from_email.isascii() and h.to_email.isascii())
    block = header_block(h, utf8=utf8)
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
    return WireMessage(data=data, message_id=h.message_id, subject=shown_subject(h.subject))
