"""Sending built messages and saying exactly what happened to each one.

One concept per module: ``base`` (``Outgoing``, ``SendResult``, the ``Transport`` protocol and
the reply-to-outcome table), ``smtp`` (the connection pool and batch behaviour),
``transaction`` (one MAIL/RCPT/DATA exchange and its faults), ``ratelimit`` (pacing) and
``memory`` (recording instead of sending).

The SMTP names load ``aiosmtplib`` on first use (module ``__getattr__``), so a process that
only builds ``Outgoing`` items, like the delivery helper, never imports the SMTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from leadflow.mail.transport.base import Outcome, Outgoing, SendResult, Transport, classify_reply
from leadflow.mail.transport.memory import MemoryTransport
from leadflow.mail.transport.ratelimit import TokenBucket, shared_bucket

if TYPE_CHECKING:
    from leadflow.mail.transport.smtp import SmtpConfig, SmtpTransport
    from leadflow.mail.transport.transaction import smtp_path

_LAZY = {"SmtpConfig": "smtp", "SmtpTransport": "smtp", "smtp_path": "transaction"}

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


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
