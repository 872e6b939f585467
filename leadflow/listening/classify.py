"""What an inbound message is, decided from the message alone (pure, no I/O).

The rules run in this order; the first that applies wins, and its name is the evidence:

| order | class | recognised by |
|---|---|---|
| 1 | ``other`` | a read receipt (``report-type=disposition-notification``) |
| 2 | ``bounced`` | a delivery-status report with a permanent failure (status 5.x.x) |
| 2 | ``soft_bounced`` | one with a transient failure (4.x.x, or ``Action: delayed``) |
| 3 | ``other`` | list mail (``List-Id``/``List-Unsubscribe``) answering nothing of ours |
| 4 | ``out_of_office`` | RFC 3834 ``Auto-Submitted`` (not ``no``), ``X-Autoreply``, |
|   |                   | ``X-Autorespond``, ``Precedence: auto_reply/bulk/junk``, or an |
|   |                   | out-of-office subject (English, German, French, Spanish) |
| 5 | ``unsubscribed`` | a reply whose new text holds one of ``mailbox.unsubscribe_phrases`` |
| 6 | ``replied`` | anything else (``other`` when it matches no lead: see sync) |

Delivery reports are RFC 3464 ``multipart/report`` messages (their ``Status:`` and ``Action:``
per recipient), or the non-standard ones mailer daemons send, read by flufl.bounce (its
permanent/temporary verdict, else the status or SMTP code in the text). An auto-reply's
return date is read from its new text (dateparser) when it states one.

Only the new text of a reply counts: our own footer ("Not interested? Unsubscribe") is
usually quoted below a reply, and must not turn "yes, let's talk" into an unsubscribe.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from flufl.bounce import all_failures

from leadflow.listening.message_text import (
    all_text,
    new_text,
    report_text,
    snip,
    text_of,
)
from leadflow.listening.return_date import return_date


class Kind(StrEnum):
    BOUNCED = "bounced"
    SOFT_BOUNCED = "soft_bounced"
    OUT_OF_OFFICE = "out_of_office"
    UNSUBSCRIBED = "unsubscribed"
    REPLIED = "replied"
    OTHER = "other"


_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_DSN_STATUS = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"(?<![\d.#])([45])[0-5]\d(?=[\s:-])")
_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon|noreply-dmarc)", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification|mail delivery (failed|failure|subsystem)|"
    r"returned mail|failure notice|delivery has failed|delivery failure|"
    r"could not be delivered|delivery incomplete|message not delivered|"
    r"warning: message .* delayed|delayed mail|nondeliverable|non-delivery",
    re.I,
)
_OOO_SUBJECT = re.compile(
    r"automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|out of (the )?office|"
    r"\booo\b|away from (the )?office|on vacation|on leave|"
    r"abwesenheit|automatische antwort|nicht im b(ü|ue)ro|"
    r"r(é|e)ponse automatique|absence|absent du bureau|"
    r"respuesta autom(á|a)tica|fuera de la oficina|ausente|"
    r"risposta automatica|fuori ufficio",
    re.I,
)


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
    snippet: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


def parse(raw: bytes) -> Message:
    """A message as the ``email`` package reads it, with its fast compat32 policy (the modern
    policy parses every header into objects: ~1.5 ms a message against ~0.13). Headers are
    read as text here; only the subject's encoded words are decoded."""
    return email.message_from_bytes(raw)


def classify_raw(
    raw: bytes, *, unsubscribe_phrases: Sequence[str], sent_by_us: Iterable[str] = ()
) -> Classified:
    """Parse and classify one message; one that cannot be read at all is ``other`` with the
    reason as evidence, so a single malformed message can never stop a folder's sync."""
    try:
        return classify(
            parse(raw), raw, unsubscribe_phrases=unsubscribe_phrases, sent_by_us=sent_by_us
        )
    except Exception as exc:  # any parser fault: keep it as evidence, go on
        key = "sha256:" + hashlib.sha256(raw).hexdigest()
        rule = f"unreadable: {type(exc).__name__}: {exc}"[:300]
        return Classified(
            kind=Kind.OTHER,
            rule=rule,
            key=key,
            message_id=None,
            answers=(),
            from_email=None,
            subject="",
            received_at=None,
            evidence={"rule": rule},
        )


def classify_many(
    raws: Sequence[bytes], unsubscribe_phrases: Sequence[str], sent_by_us: Sequence[str]
) -> list[Classified]:
    """``classify_raw`` over a batch: what a sync hands to a helper process."""
    return [
        classify_raw(raw, unsubscribe_phrases=unsubscribe_phrases, sent_by_us=sent_by_us)
        for raw in raws
    ]


def message_key(heads: Headers, raw: bytes) -> str:
    """The message's identity: its Message-ID, or a hash of its header block without one."""
    found = _MESSAGE_ID.search(heads.get("message-id", ""))
    if found and len(found.group(0)) <= 398:
        return found.group(0)
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return "sha256:" + hashlib.sha256(head).hexdigest()


def classify(
    msg: Message,
    raw: bytes,
    *,
    unsubscribe_phrases: Sequence[str],
    sent_by_us: Iterable[str] = (),
) -> Classified:
    """Classify one message (see the module docstring for the rules and their order).

    ``sent_by_us`` are our own addresses: a message from one of them is ``other`` (a copy
    of our own mail, or a colleague's note), never a reply by a lead.
    """
    heads = headers_of(msg)
    base = _Facts.of(heads, raw)
    report = _report_type(msg)
    if report == "disposition-notification":
        return base.make(Kind.OTHER, "read receipt")
    if base.from_email and base.from_email in {a.lower() for a in sent_by_us}:
        return base.make(Kind.OTHER, "sent by us")
    dsn = _delivery_report(msg, heads, base, standard=report == "delivery-status")
    if dsn is not None:
        return dsn
    if _is_list_mail(heads) and not base.answers:
        return base.make(Kind.OTHER, "mailing list")
    auto = _auto_reply_rule(heads, base.subject)
    text = new_text(msg)
    if auto is not None:
        returning = return_date(text, base.received_at) if text else None
        return base.make(Kind.OUT_OF_OFFICE, auto, return_date=returning, snippet=snip(text))
    phrase = _unsubscribe_phrase(text, unsubscribe_phrases)
    if phrase is not None:
        return base.make(Kind.UNSUBSCRIBED, f"asks to unsubscribe: {phrase!r}", snippet=snip(text))
    return base.make(Kind.REPLIED, "human reply", snippet=snip(text))


# --- facts every class shares -----------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    key: str
    message_id: str | None
    answers: tuple[str, ...]
    from_email: str | None
    subject: str
    received_at: datetime | None

    @classmethod
    def of(cls, heads: Headers, raw: bytes) -> _Facts:
        key = message_key(heads, raw)
        answers = _MESSAGE_ID.findall(
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
    try:
        for name, value in msg.items():
            found.setdefault(name.lower(), str(value))
    except Exception:  # a header the email package cannot render: read them one by one
        for name in msg.keys():  # noqa: SIM118 - the raw list of names
            found.setdefault(name.lower(), _header(msg, name))
    return found


def _report_type(msg: Message) -> str:
    """``delivery-status`` or ``disposition-notification`` for a ``multipart/report``."""
    if msg.get_content_type() != "multipart/report":
        return ""
    return str(msg.get_param("report-type", "") or "").lower()


def _header(msg: Message, name: str) -> str:
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


def _address(value: str) -> str | None:
    found = [addr for _, addr in getaddresses([value]) if "@" in addr]
    return found[0].strip().lower() if found else None


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


# --- 2. delivery-status reports ----------------------------------------------------------------


def _delivery_report(
    msg: Message, heads: Headers, base: _Facts, *, standard: bool
) -> Classified | None:
    if not standard and not _looks_like_bounce(heads, base):
        return None
    recipients = _dsn_recipients(msg) if standard else []
    original = _original_ids(msg)
    answers = tuple(dict.fromkeys(original + list(base.answers)))
    if recipients:
        failed = [r for r in recipients if r["action"] in {"failed", "delayed"}]
        if not failed:  # "delivered", "relayed", "expanded": a notice, not a failure
            return base.make(Kind.OTHER, "delivery notice")
        permanent = [r for r in failed if r["status"].startswith("5") and r["action"] != "delayed"]
        chosen = permanent or failed
        status = chosen[0]["status"] or None
        addresses = tuple(dict.fromkeys(r["address"] for r in chosen if r["address"]))
        kind = Kind.BOUNCED if permanent else Kind.SOFT_BOUNCED
        return base.make(
            kind, "RFC 3464 delivery-status", failed=addresses, status=status, answers=answers
        )
    hard, soft = _flufl_failures(msg)
    status = _status_in(report_text(msg))
    addresses = hard or soft
    if status is not None:  # the server's own code says permanent or transient
        kind = Kind.BOUNCED if status.startswith("5") else Kind.SOFT_BOUNCED
    elif hard or soft:
        kind = Kind.BOUNCED if hard else Kind.SOFT_BOUNCED
        status = "5.0.0" if hard else "4.0.0"
    else:
        return None  # from a daemon, but not about a failed delivery
    return base.make(kind, "non-standard bounce", failed=addresses, status=status, answers=answers)


def _looks_like_bounce(heads: Headers, base: _Facts) -> bool:
    sender = base.from_email or ""
    return bool(
        _DAEMON.match(sender)
        or _BOUNCE_SUBJECT.search(base.subject)
        or heads.get("x-failed-recipients")
    )


def _dsn_recipients(msg: Message) -> list[dict[str, str]]:
    """The per-recipient blocks of the ``message/delivery-status`` part."""
    found: list[dict[str, str]] = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _status_blocks(part):
            address = _recipient(block.get("Final-Recipient") or block.get("Original-Recipient"))
            if not address:
                continue
            status = _DSN_STATUS.search(str(block.get("Status", "")))
            found.append(
                {
                    "address": address,
                    "action": str(block.get("Action", "")).strip().lower(),
                    "status": ".".join(status.groups()) if status else "",
                }
            )
    return found


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    blocks = re.split(r"\r?\n\s*\r?\n", text.strip())
    return [email.message_from_string(b, policy=email.policy.compat32) for b in blocks]


def _recipient(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    address = text.split(";", 1)[1] if ";" in text else text
    address = address.strip().strip("<>").strip().lower()
    return address if "@" in address else None


def _original_ids(msg: Message) -> list[str]:
    """Message-IDs of the original message a report carries (attached, or its headers)."""
    ids: list[str] = []
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if isinstance(inner, Message):
                ids += _MESSAGE_ID.findall(_header(inner, "Message-ID"))
        elif kind == "text/rfc822-headers":
            body = text_of(part)
            ids += re.findall(r"(?im)^message-id:\s*(<[^<>\s]+>)", body)
    if not ids:  # non-standard bounces often quote the original's headers in the text
        ids += re.findall(r"(?im)^\s*message-id:\s*(<[^<>\s]+>)", all_text(msg))
    return list(dict.fromkeys(ids))


def _flufl_failures(msg: Message) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        temporary, permanent = all_failures(msg)  # flufl's order: temporary first
    except Exception:  # a detector tripping on a malformed part is not a reason to fail
        return (), ()

    def clean(found: Iterable[bytes | str]) -> tuple[str, ...]:
        out = []
        for item in found:
            text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            text = text.strip().strip("<>").lower()
            if "@" in text:
                out.append(text)
        return tuple(sorted(set(out)))

    return clean(permanent), clean(temporary)


def _status_in(text: str) -> str | None:
    found = _DSN_STATUS.search(text)
    if found:
        return ".".join(found.groups())
    code = _SMTP_CODE.search(text)
    if code:
        return f"{code.group(1)}.0.0"
    return None


# --- 3 and 4. lists and auto-replies -----------------------------------------------------------


def _is_list_mail(heads: Headers) -> bool:
    precedence = heads.get("precedence", "").strip().lower()
    listed = bool(heads.get("list-id") or heads.get("list-unsubscribe"))
    return listed and precedence in {"bulk", "list", "junk", ""}


def _auto_reply_rule(heads: Headers, subject: str) -> str | None:
    submitted = heads.get("auto-submitted", "").strip().lower()
    if submitted and submitted != "no":
        return f"Auto-Submitted: {submitted.split(';')[0]}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autorespond-Info"):
        if heads.get(name.lower(), "").strip():
            return f"{name} header"
    precedence = heads.get("precedence", "").strip().lower()
    if precedence in {"auto_reply", "bulk", "junk"}:
        return f"Precedence: {precedence}"
    if _OOO_SUBJECT.search(subject):
        return "out-of-office subject"
    return None


# --- 5 and 6. human replies --------------------------------------------------------------------


def _unsubscribe_phrase(text: str, phrases: Sequence[str]) -> str | None:
    if not text:
        return None
    pattern = _phrase_pattern(tuple(p.lower() for p in phrases if p.strip()))
    found = pattern.search(text.lower()) if pattern is not None else None
    return found.group(0) if found else None


@lru_cache(maxsize=8)
def _phrase_pattern(phrases: tuple[str, ...]) -> re.Pattern[str] | None:
    if not phrases:
        return None
    alternatives = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
