"""The email layer: render templates, build MIME messages, send them over SMTP.

The outbox (database) decides *what* to send and records outcomes; this package only turns a
template plus a context into a message and a message into a ``SendResult``.
"""

from leadflow.mail.context import LEAD_KEYS, MESSAGE_KEYS, SENDER_KEYS, TEMPLATE_GLOBALS
from leadflow.mail.html_text import html_to_text
from leadflow.mail.message import build_message, make_message_id
from leadflow.mail.rendering import (
    CompiledEmail,
    RenderedEmail,
    TemplateRenderError,
    TemplateSet,
    sample_context,
)
from leadflow.mail.sink import ReceivedMessage, SmtpSink
from leadflow.mail.template_check import TemplateProblem
from leadflow.mail.transport import (
    MemoryTransport,
    Outcome,
    Outgoing,
    SendResult,
    SmtpConfig,
    SmtpTransport,
    TokenBucket,
    Transport,
)

__all__ = [
    "LEAD_KEYS",
    "MESSAGE_KEYS",
    "SENDER_KEYS",
    "TEMPLATE_GLOBALS",
    "CompiledEmail",
    "MemoryTransport",
    "Outcome",
    "Outgoing",
    "ReceivedMessage",
    "RenderedEmail",
    "SendResult",
    "SmtpConfig",
    "SmtpSink",
    "SmtpTransport",
    "TemplateProblem",
    "TemplateRenderError",
    "TemplateSet",
    "TokenBucket",
    "Transport",
    "build_message",
    "html_to_text",
    "make_message_id",
    "sample_context",
]
