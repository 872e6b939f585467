"""SMTP transport against a real aiosmtpd server on 127.0.0.1 (see smtp_faults.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from aiosmtplib.email import quote_address
from conftest import run_in_threads
from hypothesis import given
from hypothesis import strategies as st
from smtp_faults import FaultSmtpServer

from leadflow.mail.message import build_wire, make_message_id
from leadflow.mail.rendering import TemplateSet, sample_context
from leadflow.mail.sink import EphemeralPortController, SmtpSink
from leadflow.mail.transport import (
    MemoryTransport,
    Outcome,
    Outgoing,
    SendResult,
    SmtpConfig,
    SmtpTransport,
    TokenBucket,
    Transport,
    shared_bucket,
    smtp_path,
)

TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "email"
SENDER = "sam@leadflow.example"
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class Sleeps:
    """Stands in for asyncio.sleep: records the pauses instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def server() -> Iterator[FaultSmtpServer]:
    with FaultSmtpServer() as running:
        yield running


def plain(recipient: str, subject: str = "Hello") -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = recipient
    message["Subject"] = subject
    message.set_content("Hello there.\n.A line starting with a dot survives.\n")
    return message


def outgoing(recipient: str, key: str | None = None, sender: str = SENDER) -> Outgoing:
    return Outgoing(key or recipient, sender, recipient, plain(recipient))


def send(transport: SmtpTransport, items: list[Outgoing]) -> list[SendResult]:
    async def go() -> list[SendResult]:
        async with transport:
            return await transport.send_batch(items)

    return run(go())


def outcomes(results: list[SendResult]) -> list[tuple[str, Outcome, int | None]]:
    return [(result.key, result.outcome, result.code) for result in results]


def test_each_smtp_reply_maps_to_its_exact_outcome(server: FaultSmtpServer) -> None:
    items = [
        outgoing("alice@example.com"),
        outgoing("code421@example.com"),
        outgoing("code451@example.com"),
        outgoing("code452@example.com"),
        outgoing("code454@example.com"),
        outgoing("code550@example.com"),
        outgoing("drop-before-data@example.com"),
        outgoing("drop-after-data@example.com"),
        outgoing("data451@example.com"),
        outgoing("data554@example.com"),
        outgoing("bob@example.com"),
        outgoing("carol@example.com", key="mail-553", sender="code553@leadflow.example"),
        outgoing("dave@example.com", key="mail-451", sender="code451@leadflow.example"),
    ]
    transport = SmtpTransport(server.config(concurrency=3), sleep=Sleeps())

    results = send(transport, items)

    assert outcomes(results) == [
        ("alice@example.com", Outcome.SENT, 250),
        ("code421@example.com", Outcome.THROTTLED, 421),
        ("code451@example.com", Outcome.DEFERRED, 451),
        ("code452@example.com", Outcome.DEFERRED, 452),
        ("code454@example.com", Outcome.THROTTLED, 454),
        ("code550@example.com", Outcome.BOUNCED, 550),
        ("drop-before-data@example.com", Outcome.DEFERRED, None),
        ("drop-after-data@example.com", Outcome.UNKNOWN, None),
        ("data451@example.com", Outcome.DEFERRED, 451),
        ("data554@example.com", Outcome.FAILED, 554),
        ("bob@example.com", Outcome.SENT, 250),
        ("mail-553", Outcome.FAILED, 553),
        ("mail-451", Outcome.DEFERRED, 451),
    ]
    assert results[5].detail == "RCPT TO: 550 recipient refused by fault injection"
    assert results[9].detail == "message payload: 554 message refused by fault injection"
    assert sorted(server.delivered_to()) == ["alice@example.com", "bob@example.com"]
    assert [m.recipients for m in server.unacknowledged] == [("drop-after-data@example.com",)]


def test_timeout_after_the_payload_is_unknown_and_before_it_deferred(
    server: FaultSmtpServer,
) -> None:
    items = [outgoing("stall@example.com"), outgoing("stall-before-data@example.com")]
    transport = SmtpTransport(server.config(timeout=0.5, concurrency=2))

    results = send(transport, items)

    assert outcomes(results) == [
        ("stall@example.com", Outcome.UNKNOWN, None),
        ("stall-before-data@example.com", Outcome.DEFERRED, None),
    ]
    assert results[0].detail == (
        "SMTPReadTimeoutError: Timed out waiting for server response after the message was "
        "sent; delivery unknown"
    )
    assert [m.recipients for m in server.unacknowledged] == [("stall@example.com",)]


def test_connections_are_pooled_and_reused_across_batches(server: FaultSmtpServer) -> None:
    first = [outgoing(f"lead{n}@example.com") for n in range(50)]
    second = [outgoing(f"later{n}@example.com") for n in range(10)]
    transport = SmtpTransport(server.config(concurrency=4))

    async def go() -> tuple[list[SendResult], int, list[SendResult]]:
        async with transport:
            one = await transport.send_batch(first)
            opened = server.connections
            two = await transport.send_batch(second)
            return one, opened, two

    one, opened_after_first, two = run(go())

    assert {r.outcome for r in one + two} == {Outcome.SENT}
    assert opened_after_first == 4
    assert server.connections == 4
    assert len(server.messages) == 60


def test_a_fault_mid_batch_does_not_stop_the_rest(server: FaultSmtpServer) -> None:
    items = [
        outgoing("a@example.com"),
        outgoing("drop-before-data@example.com"),
        outgoing("b@example.com"),
        outgoing("code550@example.com"),
        outgoing("drop-after-data@example.com"),
        outgoing("c@example.com"),
    ]
    transport = SmtpTransport(server.config(concurrency=1))

    results = send(transport, items)

    assert [r.outcome for r in results] == [
        Outcome.SENT,
        Outcome.DEFERRED,
        Outcome.SENT,
        Outcome.BOUNCED,
        Outcome.UNKNOWN,
        Outcome.SENT,
    ]
    assert server.delivered_to() == ["a@example.com", "b@example.com", "c@example.com"]
    # One connection at the start, one after each dropped connection; RSET keeps the rest.
    assert server.connections == 3


def test_pooled_connection_closed_by_the_server_is_replaced(server: FaultSmtpServer) -> None:
    transport = SmtpTransport(server.config(concurrency=1))

    async def go() -> list[SendResult]:
        async with transport:
            await transport.send_batch([outgoing("a@example.com")])
            server.disconnect_all()
            return await transport.send_batch([outgoing("b@example.com")])

    results = run(go())

    assert outcomes(results) == [("b@example.com", Outcome.SENT, 250)]
    assert server.delivered_to() == ["a@example.com", "b@example.com"]


def test_delivered_message_parses_back(server: FaultSmtpServer) -> None:
    context = sample_context()
    rendered = TemplateSet(TEMPLATES).compile("welcome").render(context)
    message = build_wire(
        rendered,
        from_name="Zoë Ångström",
        from_email=SENDER,
        reply_to="replies@leadflow.example",
        to_name="Dana Müller",
        to_email="dana@example.com",
        message_id=make_message_id("outbox-7", "leadflow.example"),
        date=datetime(2025, 3, 4, 9, 30, tzinfo=UTC),
        unsubscribe_url=context["unsubscribe_url"],
        unsubscribe_mailto="unsubscribe@leadflow.example",
    )

    results = send(
        SmtpTransport(server.config()),
        [Outgoing("outbox-7", SENDER, "dana@example.com", message.data)],
    )

    assert outcomes(results) == [("outbox-7", Outcome.SENT, 250)]
    [received] = server.messages
    assert received.mail_from == SENDER
    assert received.recipients == ("dana@example.com",)
    parsed = received.parsed()
    assert str(parsed["From"]) == "Zoë Ångström <sam@leadflow.example>"
    assert str(parsed["To"]) == "Dana Müller <dana@example.com>"
    assert str(parsed["Subject"]) == rendered.subject
    assert str(parsed["Date"]) == "Tue, 04 Mar 2025 09:30:00 +0000"
    assert str(parsed["Message-ID"]) == "<outbox-7@leadflow.example>"
    assert parsed.get_content_type() == "multipart/alternative"
    text_part = parsed.get_body(("plain",))
    html_part = parsed.get_body(("html",))
    assert text_part is not None and html_part is not None
    # Line endings are CRLF on the wire; the content is otherwise byte-for-byte the same.
    assert text_part.get_content().replace("\r\n", "\n") == rendered.text
    assert html_part.get_content().replace("\r\n", "\n") == rendered.html


def test_wire_bytes_are_delivered_exactly_as_built(server: FaultSmtpServer) -> None:
    """``build_wire`` bytes go out as they are: same bytes at the server (dot-stuffing undone),
    one serialisation, and they parse back to the rendered parts."""
    context = sample_context()
    rendered = TemplateSet(TEMPLATES).compile("welcome").render(context)
    rendered = replace(rendered, text=rendered.text + ".\n. a line starting with a dot\n")
    wire = build_wire(
        rendered,
        from_name="Zoë Ångström",
        from_email=SENDER,
        reply_to=None,
        to_name="Dana Müller",
        to_email="dana@example.com",
        message_id=make_message_id("outbox-8", "leadflow.example"),
        date=datetime(2025, 3, 4, 9, 30, tzinfo=UTC),
        unsubscribe_url=context["unsubscribe_url"],
        unsubscribe_mailto=None,
    )

    results = send(
        SmtpTransport(server.config()),
        [Outgoing("outbox-8", SENDER, "dana@example.com", wire.data)],
    )

    assert outcomes(results) == [("outbox-8", Outcome.SENT, 250)]
    [received] = server.messages
    assert received.data == wire.data
    parsed = received.parsed()
    assert str(parsed["Message-ID"]) == wire.message_id == "<outbox-8@leadflow.example>"
    assert str(parsed["Subject"]) == wire.subject == rendered.subject
    text_part, html_part = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert text_part is not None and html_part is not None
    assert text_part.get_content().replace("\r\n", "\n") == rendered.text
    assert html_part.get_content().replace("\r\n", "\n") == rendered.html


class _EnvelopeRecorder:
    """aiosmtpd handler keeping the MAIL FROM options and payload of each message."""

    def __init__(self) -> None:
        self.mail_options: list[list[str]] = []
        self.payloads: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.mail_options.append(list(envelope.mail_options))
        self.payloads.append(envelope.original_content or b"")
        return "250 OK"


@pytest.mark.parametrize("eight_bit_mime", [True, False], ids=["8bitmime", "7bit-only"])
def test_eight_bit_wire_bytes_need_8bitmime(eight_bit_mime: bool) -> None:
    """Bytes are never re-encoded: 8-bit ones go with BODY=8BITMIME, or FAIL before MAIL FROM
    when the server cannot take them (aiosmtpd offers 8BITMIME unless it decodes data)."""
    eight_bit, seven_bit = "Subject: é\r\n\r\nçà\r\n".encode(), b"Subject: e\r\n\r\n.ca\r\n"
    recorder = _EnvelopeRecorder()
    controller = EphemeralPortController(
        recorder, hostname="127.0.0.1", port=0, decode_data=not eight_bit_mime
    )
    controller.start()
    try:
        config = SmtpConfig(host="127.0.0.1", port=controller.port, timeout=2.0, concurrency=1)
        items = [
            Outgoing("8bit", SENDER, "a@example.com", eight_bit),
            Outgoing("7bit", SENDER, "b@example.com", seven_bit),
        ]
        results = send(SmtpTransport(config, local_hostname="localhost"), items)
    finally:
        controller.stop()

    if eight_bit_mime:
        assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT]
        assert [sorted(options) for options in recorder.mail_options] == [
            ["BODY=8BITMIME", f"SIZE={len(eight_bit)}"],
            [f"SIZE={len(seven_bit)}"],
        ]
        assert recorder.payloads == [eight_bit, seven_bit]
    else:
        assert [(r.outcome, r.code) for r in results] == [
            (Outcome.FAILED, None),
            (Outcome.SENT, 250),
        ]
        assert results[0].detail == (
            "MAIL FROM: message has 8-bit data; the server does not offer 8BITMIME"
        )
        assert recorder.payloads == [seven_bit]


def test_throttling_pauses_the_batch_within_a_bounded_budget(server: FaultSmtpServer) -> None:
    sleeps = Sleeps()
    config = server.config(concurrency=1, throttle_pause=0.1, max_throttle_sleep=0.25)
    items = [
        outgoing("code421@example.com"),
        outgoing("code454@example.com"),
        outgoing("code421@example.com", key="third"),
        outgoing("alice@example.com"),
    ]

    results = send(SmtpTransport(config, sleep=sleeps), items)

    assert [r.outcome for r in results] == [
        Outcome.THROTTLED,
        Outcome.THROTTLED,
        Outcome.THROTTLED,
        Outcome.SENT,
    ]
    # 0.1 s, then doubled but capped by what is left of the 0.25 s budget, then nothing.
    assert sleeps.calls == [pytest.approx(0.1), pytest.approx(0.15)]


def test_unreachable_server_defers_the_whole_batch_after_one_attempt() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    config = FaultSmtpServer.config_for("127.0.0.1", free_port, concurrency=1)
    items = [outgoing("a@example.com"), outgoing("b@example.com")]

    results = send(SmtpTransport(config), items)

    assert [r.outcome for r in results] == [Outcome.DEFERRED, Outcome.DEFERRED]
    assert results[0].detail.startswith(f"connecting to 127.0.0.1:{free_port}: ")
    assert results[1].detail.startswith("not attempted: connecting to 127.0.0.1:")


def test_starttls_required_but_not_offered_defers(server: FaultSmtpServer) -> None:
    results = send(SmtpTransport(server.config(tls="starttls")), [outgoing("a@example.com")])

    assert results[0].outcome is Outcome.DEFERRED
    assert "STARTTLS" in results[0].detail
    assert server.messages == []


def test_rate_limit_paces_each_message_with_a_token_bucket(server: FaultSmtpServer) -> None:
    sleeps = Sleeps()
    config = server.config(concurrency=1, max_per_minute=60)
    items = [outgoing(f"lead{n}@example.com") for n in range(4)]

    # A frozen clock: every reservation queues behind the previous one.
    results = send(SmtpTransport(config, clock=lambda: 100.0, sleep=sleeps), items)

    assert {r.outcome for r in results} == {Outcome.SENT}
    assert sleeps.calls == [1.0, 2.0, 3.0]


def test_batches_sharing_a_bucket_keep_one_rate_between_them(server: FaultSmtpServer) -> None:
    """One bucket for every batch of the process: a second batch (one after the other, or
    side by side in another task thread) queues behind the first instead of starting over."""
    sleeps = Sleeps()
    config = server.config(concurrency=1, max_per_minute=60)
    bucket = TokenBucket(60, clock=lambda: 100.0)  # a frozen clock: every token is queued
    first = [outgoing(f"a{n}@example.com") for n in range(2)]
    second = [outgoing(f"b{n}@example.com") for n in range(2)]

    send(SmtpTransport(config, sleep=sleeps, bucket=bucket), first)
    send(SmtpTransport(config, sleep=sleeps, bucket=bucket), second)

    assert sleeps.calls == [1.0, 2.0, 3.0]  # a bucket per batch would give [1.0, 1.0]
    assert len(server.messages) == 4


def test_the_process_shares_one_bucket_per_relay_and_rate_across_threads() -> None:
    bucket = shared_bucket("relay.example", 2525, 600)
    assert shared_bucket("relay.example", 2525, 600) is bucket
    assert shared_bucket("relay.example", 2525, 601) is not bucket
    assert shared_bucket("other.example", 2525, 600) is not bucket

    waits: list[float] = []
    lock = threading.Lock()

    def reserve_many() -> None:
        got = [bucket.reserve() for _ in range(250)]
        with lock:
            waits.extend(got)

    run_in_threads(reserve_many, 4)
    # 1,000 reservations at 10 per second, made within moments: every one has its own slot
    assert len(waits) == 1000
    assert 99.0 < max(waits) < 100.1


def test_token_bucket_refills_with_time_up_to_its_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(120, clock=lambda: now[0])

    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.5, 1.0]
    now[0] = 10.0
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == 0.5


def test_send_batch_outside_the_context_is_refused(server: FaultSmtpServer) -> None:
    transport = SmtpTransport(server.config())

    with pytest.raises(RuntimeError, match="async with"):
        run(transport.send_batch([outgoing("a@example.com")]))


def test_memory_transport_records_and_returns_scripted_outcomes() -> None:
    transport = MemoryTransport({"k2": Outcome.DEFERRED, "bounce@example.com": Outcome.BOUNCED})
    items = [
        outgoing("a@example.com", key="k1"),
        outgoing("b@example.com", key="k2"),
        outgoing("bounce@example.com", key="k3"),
    ]

    async def go() -> list[SendResult]:
        async with transport:
            return await transport.send_batch(items)

    results = run(go())

    assert outcomes(results) == [
        ("k1", Outcome.SENT, 250),
        ("k2", Outcome.DEFERRED, 451),
        ("k3", Outcome.BOUNCED, 550),
    ]
    assert transport.sent == items[:1]
    assert transport.attempts == items
    assert transport.batches == [items]
    assert not transport.is_open


def test_local_sink_keeps_every_message_as_an_eml_file(tmp_path: Path) -> None:
    message = plain("a@example.com")
    message["Message-ID"] = "<outbox-1@leadflow.example>"
    first = Outgoing("outbox-1", SENDER, "a@example.com", message)
    second = outgoing("b@example.com")
    outbox = tmp_path / "outbox"

    with SmtpSink(outbox, clock=lambda: datetime(2025, 3, 4, 9, 30, 5, tzinfo=UTC)) as sink:
        config = SmtpConfig(host="127.0.0.1", port=sink.port, timeout=2.0, concurrency=1)
        results = send(SmtpTransport(config, local_hostname="localhost"), [first, second])

    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT]
    assert sorted(path.name for path in outbox.iterdir()) == [
        "20250304-093005-0001-outbox-1@leadflow.example.eml",
        "20250304-093005-0002-no-message-id.eml",
    ]
    assert [(m.mail_from, m.recipients) for m in sink.messages] == [
        (SENDER, ("a@example.com",)),
        (SENDER, ("b@example.com",)),
    ]
    stored = sink.messages[0]
    assert stored.path is not None and stored.path.read_bytes() == stored.data
    assert b"Message-ID: <outbox-1@leadflow.example>" in stored.data


def test_smtp_and_memory_transports_share_one_interface() -> None:
    transports: list[Transport] = [SmtpTransport(SmtpConfig("127.0.0.1", 25)), MemoryTransport()]

    assert [type(t).__name__ for t in transports] == ["SmtpTransport", "MemoryTransport"]


ADDRESS_CHARS = st.sampled_from(list("aZ09.!#$%&'*+/=?^_`{|}~-@ <>\"\\[]()ä,;:\r\n\t"))


@given(st.text(ADDRESS_CHARS, min_size=1, max_size=12))
def test_envelope_addresses_are_quoted_exactly_as_aiosmtplib_quotes_them(address: str) -> None:
    """The fast path for plain addresses gives aiosmtplib's own result, and whatever
    aiosmtplib refuses (spaces, line breaks) is still refused."""
    try:
        expected: str | None = quote_address(address)
    except ValueError:
        expected = None
    try:
        got: str | None = smtp_path(address)
    except ValueError:
        got = None
    assert got == expected
    if got is not None:
        assert "\r" not in got and "\n" not in got
