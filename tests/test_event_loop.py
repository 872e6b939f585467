"""Deliveries run on the event loop the settings pick: uvloop by default where it is installed,
asyncio's own loop when asked (to rule uvloop out), and a missing uvloop that was asked for is
a settings error before anything is claimed. The SMTP fault matrix in
``test_delivery_faults.py`` runs on both loops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import uvloop
from conftest import T0
from pydantic import ValidationError
from test_delivery_faults import queue_intros

from leadflow import eventloop
from leadflow.delivery.session import deliver_batch
from leadflow.mail.transport import MemoryTransport, Outgoing, SendResult
from leadflow.runtime import Runtime
from leadflow.settings import Settings


class LoopSpy(MemoryTransport):
    """Sends nothing; notes the class of the loop each batch ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.loops: list[type[asyncio.AbstractEventLoop]] = []

    async def send_batch(self, items: Sequence[Outgoing]) -> list[SendResult]:
        self.loops.append(type(asyncio.get_running_loop()))
        return await super().send_batch(items)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", uvloop.Loop), ("uvloop", uvloop.Loop), ("asyncio", asyncio.SelectorEventLoop)],
)
def test_a_delivery_runs_on_the_event_loop_the_settings_pick(
    rt: Runtime, choice: str, expected: type[asyncio.AbstractEventLoop]
) -> None:
    runtime = Runtime(
        settings=rt.settings.model_copy(update={"event_loop": choice}),
        loaded=rt.loaded,
        engine=rt.engine,
    )
    ids = queue_intros(runtime, [f"loop{n}@example.com" for n in range(3)])
    spy = LoopSpy()

    out = deliver_batch(runtime, (ids[0], ids[-1]), now=T0, transport=lambda: spy)

    assert out.statuses == {"sent": 3}
    assert spy.loops == [expected]
    assert sorted(item.recipient for item in spy.sent) == [
        "loop0@example.com",
        "loop1@example.com",
        "loop2@example.com",
    ]


def test_auto_falls_back_to_asyncio_where_uvloop_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(eventloop, "find_spec", lambda name: None)

    assert eventloop.loop_factory("auto") is None
    assert eventloop.run_async(_loop_class(), "auto") is asyncio.SelectorEventLoop


def test_asking_for_uvloop_where_it_is_missing_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(eventloop, "find_spec", lambda name: None)

    with pytest.raises(ValidationError) as error:
        Settings(event_loop="uvloop")

    assert "LEADFLOW_EVENT_LOOP=uvloop, but uvloop is not installed" in str(error.value)


def test_the_event_loop_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADFLOW_EVENT_LOOP", "asyncio")

    assert Settings().event_loop == "asyncio"
    assert eventloop.run_async(_loop_class(), Settings().event_loop) is asyncio.SelectorEventLoop


async def _loop_class() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())
