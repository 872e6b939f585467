"""One SMTP transaction on an open connection: MAIL FROM, RCPT TO, DATA and the payload, and
what each fault at each step means for the message (the table in ``base``).

The DATA step is driven by hand (DATA command, then the payload through the protocol) because
``aiosmtplib.SMTP.data`` cannot tell "no 354 yet" from "payload sent, reply lost"; that
difference is DEFERRED versus UNKNOWN.
"""

from __future__ import annotations

import copy
import io
import re
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import EmailMessage

from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.email import quote_address

from leadflow.mail.transport.base import Outcome, Outgoing, Phase, SendResult, classify_reply

# A dot-atom local part and a plain domain (ASCII letters, digits, dots, hyphens): what
# ``quote_address`` returns unchanged inside <...>. Anything else
# (display names, comments, quoted local parts, non-ASCII) goes through ``quote_address``,
# which refuses what cannot be sent safely on a command line.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")


def smtp_path(address: str) -> str:
    """The ``<address>`` of a MAIL FROM or RCPT TO command (aiosmtplib's quoting, with a
    fast path for the plain addresses nearly every lead has)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return quote_address(address)


class Unsendable(Exception):
    """This message can never go through this server (FAILED, before any command)."""


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def flatten(message: EmailMessage, *, utf8: bool, eight_bit: bool) -> bytes:
    """Serialise as it goes on the wire: CRLF, no Bcc, 7-bit unless the server takes 8-bit."""
    policy = email_policy.SMTPUTF8 if utf8 else email_policy.SMTP
    if not eight_bit:
        policy = policy.clone(cte_type="7bit")
    wire = copy.copy(message)
    del wire["Bcc"]
    del wire["Resent-Bcc"]
    buffer = io.BytesIO()
    BytesGenerator(buffer, policy=policy).flatten(wire)
    return buffer.getvalue()


def _data_payload(raw: bytes) -> bytes:
    """CRLF line endings, dot-stuffing and the terminating ``.`` line (RFC 5321 4.5.2)."""
    crlf_only = raw.count(b"\n") == raw.count(b"\r") == raw.count(b"\r\n")  # C-speed scans
    data = raw if crlf_only else _LINE_ENDINGS.sub(b"\r\n", raw)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\n.", b"\n..") + b".\r\n"  # every line ends with LF by now


def _prepare(conn: SMTP, item: Outgoing) -> tuple[list[str], str, bytes]:
    """The MAIL FROM options, the command encoding and the DATA payload for ``item``."""
    utf8 = not (item.sender.isascii() and item.recipient.isascii())
    options: list[str] = []
    if utf8:
        if not conn.supports_extension("smtputf8"):
            raise Unsendable("address needs SMTPUTF8, which the server does not offer")
        options.append("SMTPUTF8")
    eight_bit = conn.supports_extension("8bitmime")
    if isinstance(item.message, bytes):
        raw = item.message
        if not (eight_bit or utf8 or raw.isascii()):
            raise Unsendable("message has 8-bit data; the server does not offer 8BITMIME")
    else:
        raw = flatten(item.message, utf8=utf8, eight_bit=eight_bit)
    if eight_bit and not raw.isascii():
        options.append("BODY=8BITMIME")
    if conn.supports_extension("size"):
        options.insert(0, f"SIZE={len(raw)}")
    return options, "utf-8" if utf8 else "ascii", _data_payload(raw)


async def transact(conn: SMTP, item: Outgoing, *, timeout: float) -> tuple[SendResult, bool]:
    """One MAIL/RCPT/DATA transaction; returns the result and whether the pooled
    connection turned out to be dead before anything was sent."""
    phase = Phase.MAIL
    try:
        options, encoding, payload = _prepare(conn, item)
        # MAIL and RCPT as aiosmtplib's mail() and rcpt() send them (the connection said
        # EHLO when it was opened), without parsing the same sender again for each message
        reply = await conn.execute_command(
            b"MAIL",
            b"FROM:" + smtp_path(item.sender).encode(encoding),
            *[option.encode("ascii") for option in options],
        )
        if reply.code != 250:
            raise SMTPSenderRefused(reply.code, reply.message, item.sender)
        phase = Phase.RCPT
        reply = await conn.execute_command(
            b"RCPT", b"TO:" + smtp_path(item.recipient).encode(encoding)
        )
        if reply.code not in (250, 251):
            raise SMTPRecipientRefused(reply.code, reply.message, item.recipient)
        phase = Phase.DATA
        reply = await conn.execute_command(b"DATA")
        if reply.code != 354:
            raise SMTPDataError(reply.code, reply.message)
        protocol = conn.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        protocol.write(payload)
        phase = Phase.PAYLOAD
        reply = await _final_reply(conn, timeout)
        outcome = classify_reply(reply.code, phase)
        if outcome is not Outcome.SENT:
            raise SMTPResponseException(reply.code, reply.message)
        return SendResult(item.key, Outcome.SENT, reply.code, reply.message), False
    except SMTPResponseException as exc:
        outcome = classify_reply(exc.code, phase)
        if not 400 <= exc.code < 600:
            conn.close()  # garbled reply: the session is out of step
        await _reset(conn)
        detail = f"{phase.value}: {exc.code} {exc.message}"
        return SendResult(item.key, outcome, exc.code, detail), False
    except (ValueError, Unsendable) as exc:
        await _reset(conn)
        return SendResult(item.key, Outcome.FAILED, None, f"{phase.value}: {exc}"), False
    except OSError as exc:  # disconnects and timeouts (aiosmtplib's are OSError subclasses)
        conn.close()
        stale = phase is Phase.MAIL and isinstance(exc, SMTPServerDisconnected)
        if phase is Phase.PAYLOAD:
            detail = f"{describe(exc)} after the message was sent; delivery unknown"
            return SendResult(item.key, Outcome.UNKNOWN, None, detail), False
        detail = f"{phase.value}: {describe(exc)}"
        return SendResult(item.key, Outcome.DEFERRED, None, detail), stale
    except Exception as exc:  # unexpected: never guess that a message was not delivered
        conn.close()
        outcome = Outcome.UNKNOWN if phase is Phase.PAYLOAD else Outcome.FAILED
        return SendResult(item.key, outcome, None, f"{phase.value}: {describe(exc)}"), False


async def _final_reply(conn: SMTP, timeout: float) -> SMTPResponse:
    protocol = conn.protocol
    if protocol is None:
        raise SMTPServerDisconnected("Connection lost")
    try:
        return await protocol.read_response(timeout=timeout)
    except (SMTPServerDisconnected, SMTPTimeoutError):
        conn.close()
        raise


async def _reset(conn: SMTP) -> None:
    """RSET after a failed transaction so the connection can be reused."""
    if not conn.is_connected:
        return
    try:
        await conn.rset()
    except Exception:  # a connection that cannot RSET is not worth keeping
        conn.close()
