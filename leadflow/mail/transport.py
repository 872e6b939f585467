"""Send batches of built messages over SMTP and say exactly what happened to each one.

The interface follows Django's mail backends: a ``Transport`` is an async context manager
with ``send_batch(items) -> results`` (one ``SendResult`` per item, same order). Connections
are opened lazily inside the context, pooled (at most ``concurrency``) and reused across
batches, and closed on exit. ``MemoryTransport`` records items for tests and dry runs.

Outcome classification (the outbox state machine depends on it, so it is exact):

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

Batch behaviour:

* After a failed transaction the connection is RSET and reused; a dropped or timed-out one is
  discarded and replaced. A pooled connection found dead at MAIL FROM is replaced once,
  silently (nothing was sent on it).
* If a connection cannot be opened, the items of this batch not yet started are DEFERRED
  (THROTTLED for a 421 greeting) without further attempts: a dead server costs one try.
* THROTTLED halves the number of workers for the rest of the batch (at least one) and pauses
  them all: ``throttle_pause`` seconds, doubling, at most ``max_throttle_sleep`` in total.
* ``max_per_minute`` paces MAIL FROM commands with a token bucket on a monotonic clock (one
  per transport, or one shared by every transport of the process: ``shared_bucket``).

The DATA step is driven by hand (DATA command, then the payload through the protocol) because
``aiosmtplib.SMTP.data`` cannot tell "no 354 yet" from "payload sent, reply lost"; that
difference is DEFERRED versus UNKNOWN.

Size: one concept, sending a batch over SMTP, in ~630 lines: the outcome table above, the
connection pool and the per-step fault handling are read together when a delivery is in
doubt, so they stay side by side.
"""

from __future__ import annotations

import asyncio
import copy
import io
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import EmailMessage
from enum import Enum, StrEnum
from types import TracebackType
from typing import Literal, Protocol, Self

from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.email import quote_address

# A dot-atom local part and a plain domain (ASCII letters, digits, dots, hyphens): what
# ``quote_address`` returns unchanged inside <...>. Anything else
# (display names, comments, quoted local parts, non-ASCII) goes through ``quote_address``,
# which refuses what cannot be sent safely on a command line.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


def smtp_path(address: str) -> str:
    """The ``<address>`` of a MAIL FROM or RCPT TO command (aiosmtplib's quoting, with a
    fast path for the plain addresses nearly every lead has)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return quote_address(address)


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


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: Literal["none", "starttls", "tls"] = "none"
    timeout: float = 30.0
    concurrency: int = 4
    max_per_minute: int | None = None
    throttle_pause: float = 1.0
    max_throttle_sleep: float = 5.0

    def __post_init__(self) -> None:
        if self.tls not in ("none", "starttls", "tls"):
            raise ValueError(f"tls must be none, starttls or tls, not {self.tls!r}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.max_per_minute is not None and self.max_per_minute < 1:
            raise ValueError("max_per_minute must be at least 1 (or None for no limit)")
        if self.throttle_pause < 0 or self.max_throttle_sleep < 0:
            raise ValueError("throttle pauses must not be negative")


class Transport(Protocol):
    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def send_batch(self, items: Sequence[Outgoing]) -> list[SendResult]: ...


class TokenBucket:
    """Reservation-style token bucket: ``reserve()`` takes a token, returns seconds to wait.

    Tokens may go negative, so concurrent callers queue up fairly (``reserve`` never awaits;
    a lock makes it safe from several threads' event loops). ``burst`` tokens are available
    at once; the default of one paces evenly.
    """

    def __init__(
        self, per_minute: int, *, clock: Callable[[], float] = time.monotonic, burst: int = 1
    ) -> None:
        if per_minute < 1 or burst < 1:
            raise ValueError("per_minute and burst must be at least 1")
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


_SHARED_BUCKETS: dict[tuple[str, int, int], TokenBucket] = {}
_SHARED_BUCKETS_LOCK = threading.Lock()


def shared_bucket(host: str, port: int, per_minute: int) -> TokenBucket:
    """The one bucket of this process for a relay and rate: every delivery batch (one after
    another, or at once in a flow's task threads) draws from it, so ``per_minute`` holds for
    the whole process, not per batch."""
    key = (host, port, per_minute)
    with _SHARED_BUCKETS_LOCK:
        bucket = _SHARED_BUCKETS.get(key)
        if bucket is None:
            bucket = _SHARED_BUCKETS[key] = TokenBucket(per_minute)
        return bucket


class _Phase(Enum):
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"
    PAYLOAD = "message payload"


_THROTTLE_CODES = frozenset({421, 454})


def classify_reply(code: int, phase: _Phase) -> Outcome:
    """The outcome for an SMTP reply code received at ``phase`` (see module docstring)."""
    if code in _THROTTLE_CODES:
        return Outcome.THROTTLED
    if 200 <= code < 300 and phase is _Phase.PAYLOAD:
        return Outcome.SENT
    if 400 <= code < 500:
        return Outcome.DEFERRED
    if 500 <= code < 600:
        return Outcome.BOUNCED if phase is _Phase.RCPT else Outcome.FAILED
    # A reply that makes no sense here: the session is out of step.
    return Outcome.UNKNOWN if phase is _Phase.PAYLOAD else Outcome.DEFERRED


class _ConnectFailed(Exception):
    def __init__(self, outcome: Outcome, code: int | None, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.code = code
        self.detail = detail


class _Unsendable(Exception):
    """This message can never go through this server (FAILED, before any command)."""


@dataclass
class _Batch:
    pending: deque[int]
    workers: int
    resume: asyncio.Event
    stop: _ConnectFailed | None = None
    throttles: int = 0
    slept: float = 0.0
    results: dict[int, SendResult] = field(default_factory=dict)


_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _flatten(message: EmailMessage, *, utf8: bool, eight_bit: bool) -> bytes:
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


class SmtpTransport:
    """SMTP over aiosmtplib with a small pool of persistent connections."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        local_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        bucket: TokenBucket | None = None,
    ) -> None:
        """``bucket`` paces MAIL FROM commands (e.g. a ``shared_bucket``); without one, a
        bucket of this transport's own is made from ``config.max_per_minute``, if set."""
        self._config = config
        self._sleep = sleep
        self._local_hostname = local_hostname
        self._tls_context = tls_context
        if bucket is None and config.max_per_minute:
            bucket = TokenBucket(config.max_per_minute, clock=clock)
        self._bucket = bucket
        self._idle: list[SMTP] = []
        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> Self:
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        self._lock = asyncio.Lock()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connections, self._idle = self._idle, []
        self._lock = None
        await asyncio.gather(*(self._quit(conn) for conn in connections))

    async def _quit(self, conn: SMTP) -> None:
        with suppress(Exception):
            await conn.quit(timeout=min(self._config.timeout, 5.0))
        conn.close()

    async def send_batch(self, items: Sequence[Outgoing]) -> list[SendResult]:
        if self._lock is None:
            raise RuntimeError("use SmtpTransport inside 'async with'")
        if not items:
            return []
        async with self._lock:
            batch = _Batch(
                pending=deque(range(len(items))),
                workers=min(self._config.concurrency, len(items)),
                resume=asyncio.Event(),
            )
            batch.resume.set()
            await asyncio.gather(
                *(self._worker(number, items, batch) for number in range(batch.workers))
            )
            return [batch.results[index] for index in range(len(items))]

    async def _worker(self, number: int, items: Sequence[Outgoing], batch: _Batch) -> None:
        conn: SMTP | None = None
        try:
            while batch.pending and number < batch.workers:
                await batch.resume.wait()
                if not batch.pending:
                    break
                index = batch.pending.popleft()
                item = items[index]
                if batch.stop is not None:
                    stop = batch.stop
                    batch.results[index] = SendResult(
                        item.key, stop.outcome, stop.code, f"not attempted: {stop.detail}"
                    )
                    continue
                batch.results[index], conn = await self._send_one(item, conn, batch)
        except BaseException:
            if conn is not None:
                conn.close()
                conn = None
            raise
        finally:
            if conn is not None:
                self._idle.append(conn)

    async def _send_one(
        self, item: Outgoing, conn: SMTP | None, batch: _Batch
    ) -> tuple[SendResult, SMTP | None]:
        if self._bucket is not None:
            wait = self._bucket.reserve()
            if wait > 0:
                await self._sleep(wait)
        for attempt in (1, 2):
            fresh = False
            if conn is None or not conn.is_connected:
                conn = self._take_idle()
            if conn is None:
                try:
                    conn = await self._open()
                except _ConnectFailed as failure:
                    if batch.stop is None:
                        batch.stop = failure
                    result = SendResult(item.key, failure.outcome, failure.code, failure.detail)
                    await self._after(result, batch)
                    return result, None
                fresh = True
            result, stale = await self._transact(conn, item)
            if not conn.is_connected:
                conn.close()
                conn = None
            if stale and not fresh and attempt == 1:
                continue
            await self._after(result, batch)
            return result, conn
        raise AssertionError("unreachable")  # pragma: no cover

    def _take_idle(self) -> SMTP | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.is_connected:
                return conn
            conn.close()
        return None

    async def _after(self, result: SendResult, batch: _Batch) -> None:
        """Slow the whole batch down after a throttling reply (bounded, see docstring)."""
        if result.outcome is not Outcome.THROTTLED:
            return
        batch.workers = max(1, batch.workers // 2)
        if not batch.resume.is_set():
            return  # another worker is already pausing the batch
        pause = min(
            self._config.throttle_pause * 2**batch.throttles,
            self._config.max_throttle_sleep - batch.slept,
        )
        batch.throttles += 1
        if pause <= 0:
            return
        batch.slept += pause
        batch.resume.clear()
        try:
            await self._sleep(pause)
        finally:
            batch.resume.set()

    async def _open(self) -> SMTP:
        cfg = self._config
        conn = SMTP(
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username,
            password=cfg.password,
            local_hostname=self._local_hostname,
            timeout=cfg.timeout,
            use_tls=cfg.tls == "tls",
            start_tls=cfg.tls == "starttls",
            tls_context=self._tls_context,
        )
        try:
            await conn.connect()
            if conn.is_ehlo_or_helo_needed:
                try:
                    await conn.ehlo()
                except SMTPHeloError:
                    await conn.helo()
        except SMTPResponseException as exc:
            conn.close()
            outcome = Outcome.THROTTLED if exc.code in _THROTTLE_CODES else Outcome.DEFERRED
            detail = f"connecting to {cfg.host}:{cfg.port}: {exc.code} {exc.message}"
            raise _ConnectFailed(outcome, exc.code, detail) from exc
        except Exception as exc:  # refused, timed out, TLS or auth trouble: try again later
            conn.close()
            detail = f"connecting to {cfg.host}:{cfg.port}: {_describe(exc)}"
            raise _ConnectFailed(Outcome.DEFERRED, None, detail) from exc
        return conn

    def _prepare(self, conn: SMTP, item: Outgoing) -> tuple[list[str], str, bytes]:
        utf8 = not (item.sender.isascii() and item.recipient.isascii())
        options: list[str] = []
        if utf8:
            if not conn.supports_extension("smtputf8"):
                raise _Unsendable("address needs SMTPUTF8, which the server does not offer")
            options.append("SMTPUTF8")
        eight_bit = conn.supports_extension("8bitmime")
        if isinstance(item.message, bytes):
            raw = item.message
            if not (eight_bit or utf8 or raw.isascii()):
                raise _Unsendable("message has 8-bit data; the server does not offer 8BITMIME")
        else:
            raw = _flatten(item.message, utf8=utf8, eight_bit=eight_bit)
        if eight_bit and not raw.isascii():
            options.append("BODY=8BITMIME")
        if conn.supports_extension("size"):
            options.insert(0, f"SIZE={len(raw)}")
        return options, "utf-8" if utf8 else "ascii", _data_payload(raw)

    async def _transact(self, conn: SMTP, item: Outgoing) -> tuple[SendResult, bool]:
        """One MAIL/RCPT/DATA transaction; returns the result and whether the pooled
        connection turned out to be dead before anything was sent."""
        phase = _Phase.MAIL
        try:
            options, encoding, payload = self._prepare(conn, item)
            # MAIL and RCPT as aiosmtplib's mail() and rcpt() send them (the connection said
            # EHLO when it was opened), without parsing the same sender again for each message
            reply = await conn.execute_command(
                b"MAIL",
                b"FROM:" + smtp_path(item.sender).encode(encoding),
                *[option.encode("ascii") for option in options],
            )
            if reply.code != 250:
                raise SMTPSenderRefused(reply.code, reply.message, item.sender)
            phase = _Phase.RCPT
            reply = await conn.execute_command(
                b"RCPT", b"TO:" + smtp_path(item.recipient).encode(encoding)
            )
            if reply.code not in (250, 251):
                raise SMTPRecipientRefused(reply.code, reply.message, item.recipient)
            phase = _Phase.DATA
            reply = await conn.execute_command(b"DATA")
            if reply.code != 354:
                raise SMTPDataError(reply.code, reply.message)
            protocol = conn.protocol
            if protocol is None:
                raise SMTPServerDisconnected("Connection lost")
            protocol.write(payload)
            phase = _Phase.PAYLOAD
            reply = await self._final_reply(conn)
            outcome = classify_reply(reply.code, phase)
            if outcome is not Outcome.SENT:
                raise SMTPResponseException(reply.code, reply.message)
            return SendResult(item.key, Outcome.SENT, reply.code, reply.message), False
        except SMTPResponseException as exc:
            outcome = classify_reply(exc.code, phase)
            if not 400 <= exc.code < 600:
                conn.close()  # garbled reply: the session is out of step
            await self._reset(conn)
            detail = f"{phase.value}: {exc.code} {exc.message}"
            return SendResult(item.key, outcome, exc.code, detail), False
        except (ValueError, _Unsendable) as exc:
            await self._reset(conn)
            return SendResult(item.key, Outcome.FAILED, None, f"{phase.value}: {exc}"), False
        except OSError as exc:  # disconnects and timeouts (aiosmtplib's are OSError subclasses)
            conn.close()
            stale = phase is _Phase.MAIL and isinstance(exc, SMTPServerDisconnected)
            if phase is _Phase.PAYLOAD:
                detail = f"{_describe(exc)} after the message was sent; delivery unknown"
                return SendResult(item.key, Outcome.UNKNOWN, None, detail), False
            detail = f"{phase.value}: {_describe(exc)}"
            return SendResult(item.key, Outcome.DEFERRED, None, detail), stale
        except Exception as exc:  # unexpected: never guess that a message was not delivered
            conn.close()
            outcome = Outcome.UNKNOWN if phase is _Phase.PAYLOAD else Outcome.FAILED
            return SendResult(item.key, outcome, None, f"{phase.value}: {_describe(exc)}"), False

    async def _final_reply(self, conn: SMTP) -> SMTPResponse:
        protocol = conn.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        try:
            return await protocol.read_response(timeout=self._config.timeout)
        except (SMTPServerDisconnected, SMTPTimeoutError):
            conn.close()
            raise

    async def _reset(self, conn: SMTP) -> None:
        """RSET after a failed transaction so the connection can be reused."""
        if not conn.is_connected:
            return
        try:
            await conn.rset()
        except Exception:  # a connection that cannot RSET is not worth keeping
            conn.close()


_MEMORY_CODES: dict[Outcome, int | None] = {
    Outcome.SENT: 250,
    Outcome.DEFERRED: 451,
    Outcome.THROTTLED: 421,
    Outcome.BOUNCED: 550,
    Outcome.FAILED: 554,
    Outcome.UNKNOWN: None,
}


class MemoryTransport:
    """Records items instead of sending them, for tests and dry runs.

    Outcomes come from ``decide(item)`` if given, else ``outcomes`` keyed by item key or
    recipient, else SENT. ``sent`` holds the items whose outcome was SENT, ``attempts`` every
    item, ``batches`` each ``send_batch`` call.
    """

    def __init__(
        self,
        outcomes: Mapping[str, Outcome] | None = None,
        *,
        decide: Callable[[Outgoing], Outcome] | None = None,
    ) -> None:
        self.outcomes = dict(outcomes or {})
        self.decide = decide
        self.sent: list[Outgoing] = []
        self.attempts: list[Outgoing] = []
        self.batches: list[list[Outgoing]] = []
        self.results: list[SendResult] = []
        self.is_open = False

    async def __aenter__(self) -> Self:
        self.is_open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.is_open = False

    def _outcome(self, item: Outgoing) -> Outcome:
        if self.decide is not None:
            return self.decide(item)
        return self.outcomes.get(item.key, self.outcomes.get(item.recipient, Outcome.SENT))

    async def send_batch(self, items: Sequence[Outgoing]) -> list[SendResult]:
        if not self.is_open:
            raise RuntimeError("use MemoryTransport inside 'async with'")
        self.batches.append(list(items))
        results = []
        for item in items:
            outcome = self._outcome(item)
            self.attempts.append(item)
            if outcome is Outcome.SENT:
                self.sent.append(item)
            results.append(SendResult(item.key, outcome, _MEMORY_CODES[outcome], "memory"))
        self.results.extend(results)
        return results
