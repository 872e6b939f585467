"""What a transport is and what it reports: ``Outgoing`` in, one ``SendResult`` out, and the
exact rule that turns an SMTP reply into an ``Outcome`` (the outbox state machine depends on it).

==============================================================  ==========
What the transport saw                                          Outcome
==============================================================  ==========
2xx reply to the message payload                                SENT
421 or 454 at any step (greeting, MAIL, RCPT, DATA, payload)    THROTTLED
other 4xx reply to MAIL FROM, RCPT TO, DATA or the payload      DEFERRED
5xx reply to RCPT TO                                            BOUNCED
5xx reply to MAIL FROM, DATA or the payload                     FAILED
refused/failed connection (greeting, EHLO, STARTTLS, login)     DEFERRED
dropped connection, timeout or garbled reply before the         DEFERRED
payload was written (the server cannot have the message)
dropped connection, timeout or garbled reply after the          UNKNOWN
payload was written (it may have been delivered: an UNKNOWN
message must never be retried automatically)
address unusable on an SMTP command line, or needing            FAILED
SMTPUTF8 that the server does not offer; 8-bit message bytes
for a server offering neither 8BITMIME nor SMTPUTF8
==============================================================  ==========

Reply codes are classified here (``classify_reply``); connection faults where they happen
(``smtp`` for opening a connection, ``transaction`` for one message).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from enum import Enum, StrEnum
from types import TracebackType
from typing import Protocol, Self


class Outcome(StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"
    THROTTLED = "throttled"
    BOUNCED = "bounced"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Outgoing:
    """One message to send; ``sender``/``recipient`` are the envelope (MAIL FROM, RCPT TO).

    ``message`` is an ``EmailMessage`` (flattened when sent) or bytes already in wire form
    (``leadflow.mail.message.build_wire``): CRLF line endings, no Bcc, sent as they are.
    Bytes that are not 7-bit need a server that offers 8BITMIME (or SMTPUTF8, for a message
    to or from a non-ASCII address).
    """

    key: str
    sender: str
    recipient: str
    message: EmailMessage | bytes


@dataclass(frozen=True)
class SendResult:
    key: str
    outcome: Outcome
    code: int | None
    detail: str


class Transport(Protocol):
    """Django's mail backend shape: an async context manager whose ``send_batch`` returns one
    ``SendResult`` per item, in the same order."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def send_batch(self, items: Sequence[Outgoing]) -> list[SendResult]: ...


class Phase(Enum):
    """The step of one SMTP transaction a reply or fault belongs to."""

    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"
    PAYLOAD = "message payload"


THROTTLE_CODES = frozenset({421, 454})


def classify_reply(code: int, phase: Phase) -> Outcome:
    """The outcome for an SMTP reply code received at ``phase`` (see module docstring)."""
    if code in THROTTLE_CODES:
        return Outcome.THROTTLED
    if 200 <= code < 300 and phase is Phase.PAYLOAD:
        return Outcome.SENT
    if 400 <= code < 500:
        return Outcome.DEFERRED
    if 500 <= code < 600:
        return Outcome.BOUNCED if phase is Phase.RCPT else Outcome.FAILED
    # A reply that makes no sense here: the session is out of step.
    return Outcome.UNKNOWN if phase is Phase.PAYLOAD else Outcome.DEFERRED
