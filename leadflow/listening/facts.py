"""What every class of inbound message shares: the classes themselves, and the message's
ids, sender, subject and date, read from its headers once (pure, no I/O)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from leadflow.listening.return_date import ReturnQuestion


class Kind(StrEnum):
    BOUNCED = "bounced"
    SOFT_BOUNCED = "soft_bounced"
    OUT_OF_OFFICE = "out_of_office"
    UNSUBSCRIBED = "unsubscribed"
    REPLIED = "replied"
    OTHER = "other"


MESSAGE_ID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class Classified:
    """A message's class and the facts it rests on (all stored as evidence)."""

    kind: Kind
    rule: str
    key: str
    message_id: str | None
    answers: tuple[str, ...]  # Message-IDs it replies to, or the bounced original's
    from_email: str | None
    subject: str
    received_at: datetime | None
    failed: tuple[str, ...] = ()  # addresses a delivery report names as failed
    status: str | None = None  # DSN status (5.1.1) or SMTP code
    return_date: date | None = None  # an out-of-office's stated return
    return_asked: ReturnQuestion | None = None  # its phrases, when not read yet (``settle``)
    snippet: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


def message_key(heads: Headers, raw: bytes) -> str:
    """The message's identity: its Message-ID, or a hash of its header block without one."""
    found = MESSAGE_ID.search(heads.get("message-id", ""))
    if found and len(found.group(0)) <= 398:
        return found.group(0)
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return "sha256:" + hashlib.sha256(head).hexdigest()


@dataclass(frozen=True)
class Facts:
    """The facts every class rests on; ``make`` adds the class and its evidence."""

    key: str
    message_id: str | None
    answers: tuple[str, ...]
    from_email: str | None
    subject: str
    received_at: datetime | None

    @classmethod
    def of(cls, heads: Headers, raw: bytes) -> Facts:
        key = message_key(heads, raw)
        answers = MESSAGE_ID.findall(
            heads.get("in-reply-to", "") + " " + heads.get("references", "")
        )
        return cls(
            key=key,
            message_id=None if key.startswith("sha256:") else key,
            answers=tuple(dict.fromkeys(answers)),
            from_email=_address(heads.get("from", "")),
            subject=" ".join(_decoded(heads.get("subject", "")).split())[:1000],
            received_at=_date(heads.get("date", "")),
        )

    def make(self, kind: Kind, rule: str, **extra: Any) -> Classified:
        evidence: dict[str, Any] = {"rule": rule}
        for name in ("status", "failed", "return_date"):
            value = extra.get(name)
            if value:
                evidence[name] = value.isoformat() if isinstance(value, date) else value
        answers = extra.pop("answers", self.answers)
        return Classified(
            kind=kind,
            rule=rule,
            key=self.key,
            message_id=self.message_id,
            answers=answers,
            from_email=self.from_email,
            subject=self.subject,
            received_at=self.received_at,
            evidence=evidence,
            **extra,
        )


Headers = dict[str, str]


def headers_of(msg: Message) -> Headers:
    """Each header's first value as text, by lower-cased name: read once, where the rules
    would otherwise scan the header list ~30 times a message."""
    found: Headers = {}
    fetch = msg.policy.header_fetch_parse
    try:  # msg.items(), where a plain ASCII value is returned as it is stored
        for name, value in msg._headers:  # type: ignore[attr-defined]  # what items() reads
            if isinstance(value, str) and value.isascii():
                found.setdefault(name.lower(), value)
            else:
                found.setdefault(name.lower(), str(fetch(name, value)))
    except Exception:  # a header the email package cannot render: read them one by one
        found = {}
        for name in msg.keys():  # noqa: SIM118 - the raw list of names
            found.setdefault(name.lower(), header(msg, name))
    return found


def report_type(msg: Message) -> str:
    """``delivery-status`` or ``disposition-notification`` for a ``multipart/report``."""
    if content_type(msg) != "multipart/report":
        return ""
    return str(msg.get_param("report-type", "") or "").lower()


# A part's type and charset, as get_content_type() and get_content_charset() read them, from
# its Content-Type read once: both are functions of that one value, and the values repeat
# ("text/plain; charset=utf-8"), so each is worked out once (get_param parses every parameter
# each time it is asked: ~15 us).


def content_type(part: Message) -> str:
    """``part.get_content_type()``."""
    value = part.get("content-type")
    if value is None:
        return part.get_default_type()
    return _type_of(str(value))


@lru_cache(maxsize=1024)
def _type_of(value: str) -> str:
    ctype = value.partition(";")[0].strip().lower()
    return ctype if ctype.count("/") == 1 else "text/plain"


def content_charset(part: Message) -> str | None:
    """``part.get_content_charset()``."""
    value = part.get("content-type")
    if value is None:
        return None
    if not isinstance(value, str):  # a value with 8-bit bytes comes back as a Header
        return part.get_content_charset()
    return _charset_of(value)


@lru_cache(maxsize=1024)
def _charset_of(value: str) -> str | None:
    probe = Message()
    probe["Content-Type"] = value
    return probe.get_content_charset()


def header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a header the email package cannot even parse is no header at all
        return ""
    return "" if value is None else str(value)


def _decoded(value: str) -> str:
    """A header's RFC 2047 encoded words decoded (``=?utf-8?q?Caf=C3=A9?=`` -> Café)."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeDecodeError):
        return value


# The two shapes nearly every From has, ``Name <local@domain>`` and ``local@domain`` (dot-atoms,
# a display name of plain words or one quoted string): read by one regex, ~20x faster than
# ``getaddresses``, which reads everything else (the same address: tests/test_mailbox.py).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_NAME_WORD = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_SIMPLE_ADDRESS = re.compile(
    rf'[ \t]*(?:(?:"[^"\\\r\n]*"|{_NAME_WORD}(?:[ \t]+{_NAME_WORD})*)?[ \t]*'
    rf"<({_DOT_ATOM}@{_DOT_ATOM})>|({_DOT_ATOM}@{_DOT_ATOM}))[ \t]*"
)


def _address(value: str) -> str | None:
    simple = _SIMPLE_ADDRESS.fullmatch(value)
    if simple is not None:
        return (simple.group(1) or simple.group(2)).lower()
    found = [addr for _, addr in getaddresses([value]) if "@" in addr]
    return found[0].strip().lower() if found else None


# RFC 5322's own form ("Mon, 07 Dec 2026 08:00:00 +0000"), what nearly every client writes: read
# by one regex, the same instant parsedate_to_datetime gives (which reads everything else).
_MONTHS = {
    m: n
    for n, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
_PLAIN_DATE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?(\d{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|"
    r"Nov|Dec) ([1-9]\d{3}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)


def _date(value: str) -> datetime | None:
    if not value:
        return None
    plain = _PLAIN_DATE.fullmatch(value)
    if plain is not None:
        day, month, year, hour, minute, second, sign, zh, zm = plain.groups()
        offset = timedelta(hours=int(zh), minutes=int(zm))
        try:
            when = datetime(
                int(year),
                _MONTHS[month],
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=timezone(-offset if sign == "-" else offset),
            )
            return when.astimezone(UTC)
        except ValueError:  # no such day or time: as the package decides
            pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)
