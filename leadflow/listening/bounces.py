"""Rule 2 of ``classify``: delivery-status reports, RFC 3464 ``multipart/report`` ones (their
``Status:`` and ``Action:`` per recipient) or the non-standard ones mailer daemons send, read by
flufl.bounce (its permanent/temporary verdict, else the status or SMTP code in the text)."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterable
from email.message import Message

from flufl.bounce import all_failures

from leadflow.listening.facts import MESSAGE_ID, Classified, Facts, Headers, Kind, header
from leadflow.listening.message_text import all_text, report_text, text_of

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


def delivery_report(
    msg: Message, heads: Headers, base: Facts, *, standard: bool
) -> Classified | None:
    """The report's class, or None when the message is no delivery report."""
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


def _looks_like_bounce(heads: Headers, base: Facts) -> bool:
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
                ids += MESSAGE_ID.findall(header(inner, "Message-ID"))
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
