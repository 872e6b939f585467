"""One message per channel and kind: composed from the claimed alerts, then posted or mailed.

========  ================================================================================
channel   what is sent
========  ================================================================================
webhook   POST, ``Content-Type: application/json``: ``{"source": "leadflow", "event",
          "title", "text", "alerts": [{"subject", "title", "detail", "data", "raised_at"}]}``
slack     POST ``{"text": "*title*\\n• line ..."}`` (Slack incoming webhooks)
email     a plain-text email from the YAML sender to ``to``, through the SMTP settings
========  ================================================================================

URLs come from the environment variable the channel names (``url_env``) at send time; an
unset one fails that delivery with a message naming the variable. Errors name the channel
and the host, never the URL (a webhook URL is a secret: its path is the credential).

A POST never follows a redirect (urllib would turn a 301/302/303 into a bodyless GET to any
host, and its 200 would count as delivered): a 3xx is a failure, ``answered HTTP 302``. The
answer's body is read up to ``MAX_ANSWER`` bytes, and the whole request (connect, send,
answer) has ``timeout_seconds`` in all, not per socket operation. An email to several
addresses is sent when any of them accepted it: the refused ones are named in the delivery's
``last_error`` and never retried, so nobody who accepted gets it twice.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any
from urllib.parse import urlsplit

from leadflow.config.alerts import EmailChannel, SlackChannel, WebhookChannel
from leadflow.config.schema import Sender
from leadflow.delivery.smtp import TransportFactory
from leadflow.eventloop import run_async
from leadflow.mail.transport import Outcome, Outgoing

LISTED = 20  # alerts listed in one message; the rest are counted
MAX_ANSWER = 64 * 1024  # bytes of a webhook's answer read (and dropped)
_PLURAL = {
    "sla_flagged": "deals over their stage SLA",
    "flow_failed": "failed flow runs",
    "sending_guard": "sending pauses",
}


class NotifyError(RuntimeError):
    """A delivery failed; the message is safe to log and store (no URL, no secret)."""


@dataclass(frozen=True)
class Notice:
    event: str
    title: str
    lines: list[str]
    alerts: list[dict[str, Any]]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def compose(event: str, alerts: Sequence[Any]) -> Notice:
    """The message for claimed alerts of one kind (``store.Claimed``)."""
    if len(alerts) == 1:
        title = alerts[0].title
        lines = [alerts[0].detail] if alerts[0].detail else []
    else:
        title = f"{len(alerts)} {_PLURAL.get(event, event)}"
        lines = [f"{a.title}" + (f": {a.detail}" if a.detail else "") for a in alerts[:LISTED]]
        if len(alerts) > LISTED:
            lines.append(f"and {len(alerts) - LISTED} more")
    body = [
        {
            "subject": a.subject,
            "title": a.title,
            "detail": a.detail,
            "data": a.data,
            "raised_at": a.raised_at.isoformat(),
        }
        for a in alerts
    ]
    return Notice(event, title, lines, body)


def channel_url(name: str, channel: WebhookChannel | SlackChannel, env: Mapping[str, str]) -> str:
    url = env.get(channel.url_env, "").strip()
    if not url:
        raise NotifyError(f"channel '{name}': {channel.url_env} is not set")
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise NotifyError(f"channel '{name}': {channel.url_env} is not an http(s) URL")
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: the 3xx answer becomes an ``HTTPError`` (a failed delivery)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _timed_out(name: str, host: str | None, timeout: float) -> NotifyError:
    return NotifyError(f"channel '{name}': {host} gave no full answer within {timeout:g} s")


def post_json(name: str, url: str, body: dict[str, Any], timeout: float) -> None:
    """POST ``body``; a non-2xx answer (a redirect too), a refused connection or no full
    answer within ``timeout`` seconds in all is a NotifyError."""
    host = urlsplit(url).hostname
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked: http(s) only
        url,
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json", "User-Agent": "leadflow-alerts"},
        method="POST",
    )
    deadline = time.monotonic() + timeout
    failure: list[NotifyError] = []

    def attempt() -> None:
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                read = 0
                while read < MAX_ANSWER:  # the answer is dropped: a few chunks at most
                    if time.monotonic() > deadline:
                        failure.append(_timed_out(name, host, timeout))
                        return
                    chunk = response.read1(min(8192, MAX_ANSWER - read))
                    if not chunk:
                        break
                    read += len(chunk)
        except urllib.error.HTTPError as exc:
            failure.append(NotifyError(f"channel '{name}': {host} answered HTTP {exc.code}"))
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            failure.append(NotifyError(f"channel '{name}': {host} unreachable ({reason})"))
        except Exception as exc:  # a malformed answer (http.client.HTTPException, ...)
            failure.append(NotifyError(f"channel '{name}': {host}: {type(exc).__name__}"))

    # the request runs in a daemon thread so that the whole of it has one deadline; a
    # server still trickling its answer then is left to the thread's socket timeout
    worker = threading.Thread(target=attempt, name="leadflow-alert-post", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise _timed_out(name, host, timeout)
    if failure:
        raise failure[0]


def webhook_body(notice: Notice) -> dict[str, Any]:
    return {
        "source": "leadflow",
        "event": notice.event,
        "title": notice.title,
        "text": notice.text,
        "alerts": notice.alerts,
    }


def slack_escape(text: str) -> str:
    """Slack's control characters as its entities: lead data (an email, a company) can then
    neither ping (``<!channel>``) nor render as a link (``<https://evil|Invoice>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(notice: Notice) -> dict[str, Any]:
    lines = [f"*{slack_escape(notice.title)}*"]
    lines += [f"• {slack_escape(line)}" for line in notice.lines]
    return {"text": "\n".join(lines)}


def email_message(
    channel: EmailChannel, notice: Notice, sender: Sender, now: datetime
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = formataddr((sender.from_name, sender.from_email))
    message["To"] = ", ".join(channel.to)
    message["Subject"] = f"{channel.subject_prefix} {notice.title}".strip()
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("alert", domain=sender.from_email.rsplit("@", 1)[1])
    message.set_content(notice.text + "\n" if notice.lines else notice.title + "\n")
    return message


def send_email(
    name: str,
    channel: EmailChannel,
    notice: Notice,
    *,
    sender: Sender,
    transport: TransportFactory,
    now: datetime,
) -> str | None:
    """One email to every address of the channel, through the project's SMTP transport; the
    addresses that refused it when others accepted it (a NotifyError when none did)."""
    message = email_message(channel, notice, sender, now)
    items = [
        Outgoing(key=f"alert-{n}", sender=sender.from_email, recipient=to, message=message)
        for n, to in enumerate(channel.to)
    ]

    async def send() -> list[Any]:
        async with transport() as smtp:
            return list(await smtp.send_batch(items))

    results = run_async(send())
    refused = [
        f"{item.recipient}: {r.outcome} {r.code or ''} {r.detail}".strip()
        for item, r in zip(items, results, strict=True)
        if r.outcome != Outcome.SENT
    ]
    if not refused:
        return None
    told = f"channel '{name}': refused by " + "; ".join(refused)[:500]
    if len(refused) == len(items):
        raise NotifyError(told)
    return told


def send(
    name: str,
    channel: WebhookChannel | SlackChannel | EmailChannel,
    notice: Notice,
    *,
    sender: Sender,
    transport: TransportFactory,
    env: Mapping[str, str],
    now: datetime,
) -> str | None:
    """Send ``notice`` on the channel: None, or what part of it was refused (an email some of
    whose addresses refused it; the delivery is sent all the same)."""
    if isinstance(channel, EmailChannel):
        return send_email(name, channel, notice, sender=sender, transport=transport, now=now)
    url = channel_url(name, channel, env)
    body = slack_body(notice) if isinstance(channel, SlackChannel) else webhook_body(notice)
    post_json(name, url, body, channel.timeout_seconds)
    return None
