"""Waiting for something another process or thread does: one polling loop for every test.

A test that waits must fail by saying what it waited for (a bare "timed out" hides which of
several waits gave up), and must not wait forever. ``tests/`` is on ``sys.path`` for the tests
(pytest's rootdir conftest) and for the scripts in it that run as subprocesses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL = 0.005  # short: most waits here are for a file or a row that appears within ms


def poll_until(
    condition: Callable[[], T | None], *, timeout: float, interval: float = INTERVAL
) -> T | None:
    """The first truthy value ``condition`` returns, or None once ``timeout`` seconds passed
    (for a wait whose end is not a failure). ``condition`` runs at least once."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = INTERVAL,
    details: Callable[[], str] | None = None,
) -> T:
    """The first truthy value ``condition`` returns; AssertionError naming ``what`` (and
    ``details()``, e.g. a server's log, read only then) once ``timeout`` seconds passed."""
    found = poll_until(condition, timeout=timeout, interval=interval)
    if found is None:
        message = f"timed out after {timeout:g} s waiting for {what}"
        raise AssertionError(f"{message}\n{details()}" if details is not None else message)
    return found
