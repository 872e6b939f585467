"""Send batches over SMTP through a small pool of persistent connections.

Connections are opened lazily inside ``async with``, pooled (at most ``concurrency``) and
reused across batches, and closed on exit. Each message is one ``transaction``; this module
decides which connection carries it and how the batch reacts to what happened:

* After a failed transaction the connection is RSET and reused; a dropped or timed-out one is
  discarded and replaced. A pooled connection found dead at MAIL FROM is replaced once,
  silently (nothing was sent on it).
* If a connection cannot be opened, the items of this batch not yet started are DEFERRED
  (THROTTLED for a 421 greeting) without further attempts: a dead server costs one try.
* THROTTLED halves the number of workers for the rest of the batch (at least one) and pauses
  them all: ``throttle_pause`` seconds, doubling, at most ``max_throttle_sleep`` in total.
* ``max_per_minute`` paces MAIL FROM commands with a token bucket (``ratelimit``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal

from aiosmtplib import SMTP, SMTPHeloError, SMTPResponseException

from leadflow.mail.transport.base import THROTTLE_CODES, Outcome, Outgoing, SendResult
from leadflow.mail.transport.ratelimit import TokenBucket
from leadflow.mail.transport.transaction import describe, transact
from leadflow.resource import AsyncResource


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


class _ConnectFailed(Exception):
    def __init__(self, outcome: Outcome, code: int | None, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.code = code
        self.detail = detail


@dataclass
class _Batch:
    pending: deque[int]
    workers: int
    resume: asyncio.Event
    stop: _ConnectFailed | None = None
    throttles: int = 0
    slept: float = 0.0
    results: dict[int, SendResult] = field(default_factory=dict)


class SmtpTransport(AsyncResource):
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

    async def open(self) -> None:
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        self._lock = asyncio.Lock()

    async def close(self) -> None:
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
            result, stale = await transact(conn, item, timeout=self._config.timeout)
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
            outcome = Outcome.THROTTLED if exc.code in THROTTLE_CODES else Outcome.DEFERRED
            detail = f"connecting to {cfg.host}:{cfg.port}: {exc.code} {exc.message}"
            raise _ConnectFailed(outcome, exc.code, detail) from exc
        except Exception as exc:  # refused, timed out, TLS or auth trouble: try again later
            conn.close()
            detail = f"connecting to {cfg.host}:{cfg.port}: {describe(exc)}"
            raise _ConnectFailed(Outcome.DEFERRED, None, detail) from exc
        return conn
