"""Building in a helper process while this one talks SMTP."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from email.message import EmailMessage

from leadflow.delivery.compose import Composed, ComposeParts, Composer, compose_or_error
from leadflow.mail.rendering import TemplateRenderError
from leadflow.mail.transport import Outgoing
from leadflow.offload import Offload
from leadflow.outbox.claimed import Claimed

#
# Building a message costs about as much CPU as sending it. A big run's messages are built by
# a helper process on another core while this one talks SMTP: a fresh interpreter
# (``leadflow.offload``, never a fork, so it is as safe inside a Prefect flow run, beside its
# threads, as on the direct path) that makes the same Composer from the run's ``ComposeParts``
# (plain values: it imports no config, settings or pydantic code, ~0.3 s of CPU instead of
# ~1 s before it is ready), compiles the templates the first claim needs, and is kept for the
# whole delivery session.
HELPER_MIN = 400  # messages; below this the helper costs more than it saves
HELPER_AHEAD = 2  # chunks handed to the helper ahead of the one awaited
# The helper works ahead of the wire, so it yields the CPU to whatever the wire waits on: this
# process's SMTP conversation and, on a shared box, the relay (measured: send ratio median
# 0.62 at nice 0, 0.67 at nice 10, 0.68 at 19, two cores, relay on loopback). Only the
# helper's own priority changes.
HELPER_NICE = 19

_helper_composer: Composer | None = None  # set in the helper process only


def start_helper(parts: ComposeParts, first: Sequence[str]) -> None:
    """Runs in the helper, first: step back in CPU priority, make the run's composer and
    compile the templates the first claim needs (broken ones are reported per message)."""
    global _helper_composer
    with suppress(OSError):  # not allowed here: build at the normal priority
        os.nice(HELPER_NICE)
    composer = parts.composer()
    for name in first:
        with suppress(TemplateRenderError):
            composer.templates.compile(name)
    _helper_composer = composer


# What the helper hands back for one message: plain values, because unpickling them costs
# the sending process a tenth of what the dataclasses cost (measured: 1.4 against 14 µs per
# message, a 200-message chunk being ~0.9 MB).
Flat = tuple[str, str, str, EmailMessage | bytes, str, str]


def flatten(built: Composed | str) -> Flat | str:
    if isinstance(built, str):
        return built
    out = built.outgoing
    return (out.key, out.sender, out.recipient, out.message, built.message_id, built.subject)


def unflatten(flat: Flat | str) -> Composed | str:
    if isinstance(flat, str):
        return flat
    key, sender, recipient, message, message_id, subject = flat
    return Composed(Outgoing(key, sender, recipient, message), message_id, subject)


def compose_chunk(items: Sequence[Claimed]) -> list[Flat | str]:
    """Runs in the helper: each item's message, or why it could not be built."""
    if _helper_composer is None:
        raise RuntimeError("not a composing helper process")
    return [flatten(compose_or_error(_helper_composer, item)) for item in items]


@contextmanager
def composing_helper(
    composer: Composer, expected: int, first: set[str]
) -> Iterator[Offload | None]:
    """A helper process for about ``expected`` messages, or None when it would not pay off
    (or no process can be started here)."""
    if expected < HELPER_MIN or cores() < 2:
        yield None
        return
    helper = Offload(1, preload=("leadflow.delivery.helper",))
    if not helper.helpers:
        yield None
        return
    try:
        helper.submit(start_helper, composer.parts(), sorted(first))
        yield helper
    finally:
        helper.shutdown()


def cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
