"""The studio's rate limit on test sends: at most ``SEND_LIMIT`` per ``SEND_WINDOW_SECONDS``
per studio process (past that a send is refused with 429)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

SEND_LIMIT: Final = 10  # test sends per window per studio process
SEND_WINDOW_SECONDS: Final = 60.0


class SendLimit:
    """At most ``limit`` takes in any ``window`` seconds (a sliding window); thread-safe."""

    def __init__(
        self,
        limit: int = SEND_LIMIT,
        window: float = SEND_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._taken: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0.0 when one more is allowed (and counts it), else the seconds until one is."""
        with self._lock:
            now = self._clock()
            while self._taken and now - self._taken[0] >= self.window:
                self._taken.popleft()
            if len(self._taken) >= self.limit:
                return self.window - (now - self._taken[0])
            self._taken.append(now)
            return 0.0
