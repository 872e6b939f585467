"""Sending built messages and saying exactly what happened to each one.

One concept per module: ``base`` (``Outgoing``, ``SendResult``, the ``Transport`` protocol and
the reply-to-outcome table), ``smtp`` (the connection pool and batch behaviour),
``transaction`` (one MAIL/RCPT/DATA exchange and its faults), ``ratelimit`` (pacing) and
``memory`` (recording instead of sending).

The SMTP names load ``aiosmtplib`` on first use (module ``__getattr__``), so a process that
only builds ``Outgoing`` items, like the delivery helper, never imports the SMTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leadflow.lazy import lazy_names
from leadflow.mail.transport.base import Outcome, Outgoing, SendResult, Transport, classify_reply
from leadflow.mail.transport.memory import MemoryTransport
from leadflow.mail.transport.ratelimit import TokenBucket, shared_bucket

if TYPE_CHECKING:
    from leadflow.mail.transport.smtp import SmtpConfig, SmtpTransport
    from leadflow.mail.transport.transaction import smtp_path

__all__ = [
    "MemoryTransport",
    "Outcome",
    "Outgoing",
    "SendResult",
    "SmtpConfig",
    "SmtpTransport",
    "TokenBucket",
    "Transport",
    "classify_reply",
    "shared_bucket",
    "smtp_path",
]

__getattr__ = lazy_names(
    __name__,
    {
        "SmtpConfig": f"{__name__}.smtp",
        "SmtpTransport": f"{__name__}.smtp",
        "smtp_path": f"{__name__}.transaction",
    },
)
