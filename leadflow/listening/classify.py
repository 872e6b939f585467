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

Delivery reports (bounces.py) are RFC 3464 ``multipart/report`` messages (their ``Status:`` and
``Action:`` per recipient), or the non-standard ones mailer daemons send, read by flufl.bounce (its
permanent/temporary verdict, else the status or SMTP code in the text). An auto-reply's
return date is read from its new text (dateparser) when it states one.

Only the new text of a reply counts: our own footer ("Not interested? Unsubscribe") is
usually quoted below a reply, and must not turn "yes, let's talk" into an unsubscribe.
"""

from __future__ import annotations

import email
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from email.message import Message
from functools import lru_cache

from leadflow.listening.bounces import delivery_report
from leadflow.listening.facts import Classified, Facts, Headers, Kind, headers_of, report_type
from leadflow.listening.message_text import new_text, snip
from leadflow.listening.mime import read_message
from leadflow.listening.return_date import answer, return_question

__all__ = [
    "Classified",
    "Kind",
    "classify",
    "classify_many",
    "classify_raw",
    "parse",
    "settle_return_dates",
]

_OOO_SUBJECT = re.compile(
    r"automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|out of (the )?office|"
    r"\booo\b|away from (the )?office|on vacation|on leave|"
    r"abwesenheit|automatische antwort|nicht im b(ü|ue)ro|"
    r"r(é|e)ponse automatique|absence|absent du bureau|"
    r"respuesta autom(á|a)tica|fuera de la oficina|ausente|"
    r"risposta automatica|fuori ufficio",
    re.I,
)


def parse(raw: bytes) -> Message:
    """A message as the ``email`` package reads it, with its fast compat32 policy (the modern
    policy parses every header into objects: ~1.5 ms a message against ~0.13). Headers are
    read as text here; only the subject's encoded words are decoded. The common shapes are
    read by ``mime.read_message`` (the same tree, ~2x faster), the rest by the package."""
    msg = read_message(raw)
    return msg if msg is not None else email.message_from_bytes(raw)


def classify_raw(
    raw: bytes,
    *,
    unsubscribe_phrases: Sequence[str],
    sent_by_us: Iterable[str] = (),
    read_dates: bool = True,
) -> Classified:
    """Parse and classify one message; one that cannot be read at all is ``other`` with the
    reason as evidence, so a single malformed message can never stop a folder's sync."""
    try:
        return classify(
            parse(raw),
            raw,
            unsubscribe_phrases=unsubscribe_phrases,
            sent_by_us=sent_by_us,
            read_dates=read_dates,
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
    raws: Sequence[bytes],
    unsubscribe_phrases: Sequence[str],
    sent_by_us: Sequence[str],
    read_dates: bool = True,
) -> list[Classified]:
    """``classify_raw`` over a batch: what a sync hands to a helper process (which leaves
    the return dates to ``settle_return_dates`` in the sync's own process)."""
    return [
        classify_raw(
            raw,
            unsubscribe_phrases=unsubscribe_phrases,
            sent_by_us=sent_by_us,
            read_dates=read_dates,
        )
        for raw in raws
    ]


def settle_return_dates(items: Sequence[Classified]) -> list[Classified]:
    """Read the return dates ``classify(..., read_dates=False)`` left asked: here, where
    dateparser stays loaded from sync to sync, not in each sync's fresh helper process."""
    return [_settled(item) if item.return_asked is not None else item for item in items]


def _settled(item: Classified) -> Classified:
    assert item.return_asked is not None
    found = answer(item.return_asked)
    evidence = {**item.evidence, "return_date": found.isoformat()} if found else item.evidence
    return replace(item, return_date=found, return_asked=None, evidence=evidence)


def classify(
    msg: Message,
    raw: bytes,
    *,
    unsubscribe_phrases: Sequence[str],
    sent_by_us: Iterable[str] = (),
    read_dates: bool = True,
) -> Classified:
    """Classify one message (see the module docstring for the rules and their order).

    ``sent_by_us`` are our own addresses: a message from one of them is ``other`` (a copy
    of our own mail, or a colleague's note), never a reply by a lead. Without
    ``read_dates``, an auto-reply's return date is left asked (``settle_return_dates``).
    """
    heads = headers_of(msg)
    base = Facts.of(heads, raw)
    report = report_type(msg)
    if report == "disposition-notification":
        return base.make(Kind.OTHER, "read receipt")
    if base.from_email and base.from_email in {a.lower() for a in sent_by_us}:
        return base.make(Kind.OTHER, "sent by us")
    dsn = delivery_report(msg, heads, base, standard=report == "delivery-status")
    if dsn is not None:
        return dsn
    if _is_list_mail(heads) and not base.answers:
        return base.make(Kind.OTHER, "mailing list")
    auto = _auto_reply_rule(heads, base.subject)
    text = new_text(msg)
    if auto is not None:
        asked = return_question(text, base.received_at) if text else None
        if asked is not None and not read_dates:
            return base.make(Kind.OUT_OF_OFFICE, auto, return_asked=asked, snippet=snip(text))
        returning = answer(asked) if asked is not None else None
        return base.make(Kind.OUT_OF_OFFICE, auto, return_date=returning, snippet=snip(text))
    phrase = _unsubscribe_phrase(text, unsubscribe_phrases)
    if phrase is not None:
        return base.make(Kind.UNSUBSCRIBED, f"asks to unsubscribe: {phrase!r}", snippet=snip(text))
    return base.make(Kind.REPLIED, "human reply", snippet=snip(text))


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
    pattern = _phrase_pattern(tuple(phrases))
    found = pattern.search(text.lower()) if pattern is not None else None
    return found.group(0) if found else None


@lru_cache(maxsize=8)
def _phrase_pattern(configured: tuple[str, ...]) -> re.Pattern[str] | None:
    phrases = tuple(p.lower() for p in configured if p.strip())
    if not phrases:
        return None
    alternatives = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
