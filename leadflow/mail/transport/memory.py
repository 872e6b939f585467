"""A transport that records instead of sending, for tests and dry runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from leadflow.mail.transport.base import Outcome, Outgoing, SendResult
from leadflow.resource import AsyncResource

_MEMORY_CODES: dict[Outcome, int | None] = {
    Outcome.SENT: 250,
    Outcome.DEFERRED: 451,
    Outcome.THROTTLED: 421,
    Outcome.BOUNCED: 550,
    Outcome.FAILED: 554,
    Outcome.UNKNOWN: None,
}


class MemoryTransport(AsyncResource):
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

    async def open(self) -> None:
        self.is_open = True

    async def close(self) -> None:
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
