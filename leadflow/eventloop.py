"""The event loop SMTP conversations run on: uvloop where it is installed, else asyncio's.

Sending is event-loop work: each message is a handful of commands and replies on one of a few
connections, and on the way the loop polls, schedules callbacks and arms timeouts. uvloop
(libuv, in C) does that bookkeeping for a fraction of the CPU of the pure-Python loop, which
matters because the sender shares the machine with whatever builds the messages and, often,
with the relay. Measured (``benchmarks/bench_send``, 5,000 messages, two cores): the sending
process used 1.72 s of CPU on asyncio's loop and 1.38 s on uvloop, and the send ratio went from
a median of 0.67 to 0.71.

``LEADFLOW_EVENT_LOOP`` picks the loop: ``auto`` (uvloop if importable: it does not exist on
Windows), ``uvloop`` (required: a missing uvloop is a settings error), or ``asyncio``, to rule
the loop out when chasing a problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from importlib.util import find_spec
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoopChoice = Literal["auto", "uvloop", "asyncio"]


def uvloop_installed() -> bool:
    return find_spec("uvloop") is not None


def loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the loop for ``choice``; None for asyncio's default loop."""
    if choice == "asyncio" or (choice == "auto" and not uvloop_installed()):
        return None
    import uvloop  # imported here: optional, and absent on Windows

    return uvloop.new_event_loop


def run_async(coroutine: Coroutine[Any, Any, T], choice: EventLoopChoice = "auto") -> T:
    """``asyncio.run(coroutine)`` on the chosen loop (a new one, closed afterwards)."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(coroutine)
