"""A local SMTP server that accepts everything and keeps it: the demo's "outbox" and a test aid.

It runs aiosmtpd in its own thread (``aiosmtpd.controller.Controller``), so synchronous and
asynchronous callers can both use it. With a ``directory``, each message is also written as
``<YYYYmmdd-HHMMSS>-<n>-<message-id>.eml`` (atomically, so a watcher never sees half a file).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from leadflow.resource import Resource

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._@-]+")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class EphemeralPortController(Controller):
    """A Controller that can bind port 0 and report the port the OS picked.

    aiosmtpd 1.4 probes ``self.port`` after binding, which fails for port 0; the real port is
    read from the listening socket first.
    """

    def _trigger_server(self) -> None:
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class LocalSmtpServer(Resource):
    """An aiosmtpd server running in its own thread while open: the sink and the tests' fault
    server differ only in the controller they run (``_new_controller``)."""

    _label = "the SMTP server"  # how errors name it
    _controller: EphemeralPortController | None = None

    def _new_controller(self) -> EphemeralPortController:
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The port it listens on (the one the OS picked, if asked for port 0)."""
        if self._controller is None:
            raise RuntimeError(f"{self._label} is not running")
        port: int = self._controller.port
        return port

    def open(self) -> None:
        if self._controller is not None:
            raise RuntimeError(f"{self._label} is already running")
        controller = self._new_controller()
        try:
            controller.start()
        except BaseException:
            # aiosmtpd made an event loop for the server; a failed start (a port in use)
            # leaves it, and its self-pipe sockets, open.
            if not controller.loop.is_running() and not controller.loop.is_closed():
                controller.loop.close()
            raise
        self._controller = controller

    def close(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    path: Path | None = None


def _message_id_part(data: bytes) -> str:
    headers = BytesHeaderParser(policy=default_policy).parsebytes(data)
    raw = str(headers.get("Message-ID") or "").strip().strip("<>")
    return _UNSAFE_FILENAME.sub("_", raw)[:80].strip("._") or "no-message-id"


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        self._sink._store(str(envelope.mail_from), tuple(envelope.rcpt_tos), data)
        return "250 OK: message stored"


class SmtpSink(LocalSmtpServer):
    """Accepts every message on ``host:port`` (port 0: any free port, see ``.port``)."""

    _label = "the SMTP sink"

    def __init__(
        self,
        directory: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.host = host
        self._requested_port = port
        self._clock = clock
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    def open(self) -> None:
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        super().open()

    def _new_controller(self) -> EphemeralPortController:
        return EphemeralPortController(
            _SinkHandler(self),
            hostname=self.host,
            port=self._requested_port,
            server_hostname="leadflow-sink",
        )

    def _store(self, mail_from: str, recipients: tuple[str, ...], data: bytes) -> None:
        with self._lock:
            number = len(self._messages) + 1
            path = None if self.directory is None else self._write(self.directory, number, data)
            self._messages.append(ReceivedMessage(mail_from, recipients, data, path))

    def _write(self, directory: Path, number: int, data: bytes) -> Path:
        stamp = self._clock().strftime("%Y%m%d-%H%M%S")
        path = directory / f"{stamp}-{number:04d}-{_message_id_part(data)}.eml"
        partial = path.with_name(f".{path.name}.part")
        partial.write_bytes(data)
        os.replace(partial, path)
        return path
