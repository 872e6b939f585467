"""Pacing MAIL FROM commands: a token bucket on a monotonic clock, one per transport or one
shared by every transport of the process (``shared_bucket``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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
