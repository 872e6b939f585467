"""The header block of an outgoing message, written exactly as the ``email`` package writes it.

Building and flattening an ``EmailMessage`` costs ~3 ms (the ``email`` package parses and
refolds every header in pure Python), about ten times the SMTP work per message. So each
header is either produced by the ``email`` package itself (cached when it is the same for a
whole run: sender, date, extras) or, for values made only of characters that need no quoting
or encoding, written directly in the form the package produces for them (tests/test_message.py
compares both for every kind of value). The block is then checked line by line: only the
expected header names can start a line.

``List-Unsubscribe`` gets a header class that folds only between its ``<...>`` items: the
stock folding turns a long URL into an RFC 2047 encoded word, which mail clients ignore.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy as email_policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.policy import Policy
from functools import lru_cache
from typing import Final, cast


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

# ``msg[name] = value`` goes through this (it refuses CR/LF in strings); typeshed types the
# value as str only, but header objects take addresses and datetimes too.
_store_parse = cast(Callable[[str, object], tuple[str, BaseHeader]], POLICY.header_store_parse)


@dataclass(frozen=True)
class Headers:
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


def header_block(h: Headers, *, utf8: bool) -> str:
    """The headers as they go on the wire (CRLF, folded), before MIME-Version.

    ``utf8``: RFC 6532 headers, as ``Transport`` writes an ``EmailMessage`` for a non-ASCII
    envelope address. Raises ``ValueError`` if a line starts a header nobody set.
    """
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
    check_header_block(block, names, utf8=utf8)
    return block


def shown_subject(subject: str) -> str:
    """The Subject as an ``EmailMessage`` reports it: an encoded word typed into a subject is
    decoded, as mail clients will show it."""
    return str(_store_parse("Subject", subject)[1]) if "=?" in subject else subject


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


def check_header_block(block: str, names: frozenset[str], *, utf8: bool) -> None:
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
