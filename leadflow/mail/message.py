"""Build the MIME message for one rendered email, apart from sending it.

``email.message.EmailMessage`` with ``email.policy.default`` refuses CR/LF in header values;
on top of that every display name and free-text header is squashed to one line here, so lead
data from web forms can never add a header (no ``Bcc:`` smuggled in a name). Bodies are
quoted-printable, so the message is 7-bit clean for any relay.

``List-Unsubscribe`` gets a header class that folds only between its ``<...>`` items: the
stock folding turns a long URL into an RFC 2047 encoded word, which mail clients ignore.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from email import policy as email_policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from types import MappingProxyType
from typing import Final

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


def _make_policy() -> Policy:
    registry = HeaderRegistry()
    registry.map_to_type("list-unsubscribe", _ListUnsubscribeHeader)
    return email_policy.default.clone(header_factory=registry)


POLICY: Final = _make_policy()


def one_line(text: str) -> str:
    """Control characters and line breaks collapsed to single spaces, trimmed."""
    return " ".join(_CONTROL_CHARS.sub(" ", text).split())


def _address(display_name: str, addr_spec: str, *, field: str) -> Address:
    addr_spec = addr_spec.strip()
    local, at, domain = addr_spec.rpartition("@")
    if not (local and at and domain) or _ADDR_FORBIDDEN.search(addr_spec):
        raise ValueError(f"{field}: invalid email address {addr_spec!r}")
    return Address(display_name=one_line(display_name), addr_spec=addr_spec)


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

    msg = EmailMessage(policy=POLICY)
    msg["Subject"] = subject
    msg["From"] = _address(from_name, from_email, field="from_email")
    msg["To"] = _address(to_name, to_email, field="to_email")
    if reply_to:
        msg["Reply-To"] = _address("", reply_to, field="reply_to")
    msg["Date"] = date
    msg["Message-ID"] = message_id
    msg["List-Unsubscribe"] = ", ".join(f"<{uri}>" for uri in unsubscribe)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in extra_headers.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in RESERVED_HEADERS:
            raise ValueError(f"extra header {name!r} is not allowed")
        if name.lower().startswith("resent-"):
            raise ValueError(f"extra header {name!r} is not allowed")
        msg[name] = one_line(value)

    msg.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg
