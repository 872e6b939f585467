"""``with`` and ``async with`` for things that are opened and closed, written once.

SMTP servers, mailbox sources and transports are all used as context managers whose entry
opens (starts, logs in, connects) and whose exit closes however the block ended; each says
only what opening and closing mean.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Resource:
    """Entering calls ``open`` and returns the object; leaving calls ``close``."""

    def open(self) -> None:
        """Acquire what the object needs (nothing by default)."""

    def close(self) -> None:
        """Release it; called once per ``open``, also when the block raised."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncResource:
    """``Resource`` for ``async with``: entering awaits ``open``, leaving awaits ``close``."""

    async def open(self) -> None:
        """Acquire what the object needs (nothing by default)."""

    async def close(self) -> None:
        """Release it; awaited once per ``open``, also when the block raised."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
