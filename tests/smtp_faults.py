"""A real aiosmtpd server on 127.0.0.1 that misbehaves on request, keyed by address.

Recipient local part (the part before ``@``) selects the fault:

==========================  ===============================================================
``code<NNN>@``              reply NNN to RCPT TO (e.g. ``code421@``, ``code451@``, ``code550@``)
``data<NNN>@``              accept RCPT, read the payload, then reply NNN (``data554@``)
``drop-before-data@``       close the connection when RCPT TO arrives (nothing received)
``drop-after-data@``        read the whole payload, then close without replying
``stall-before-data@``      never reply to RCPT TO
``stall@``                  read the whole payload, never reply (past the client timeout)
anything else               accepted (250) and recorded in ``messages``
==========================  ===============================================================

A sender local part ``code<NNN>`` makes MAIL FROM fail with NNN. Payloads received without a
250 reply (``drop-after-data``, ``stall``) are recorded in ``unacknowledged``: the server has
the message, the client cannot know it. ``connections`` counts SMTP sessions opened by
clients. Use ``FaultSmtpServer`` as a context manager, or the ``fault_server`` fixture
(import it into a conftest or test module).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from leadflow.mail.sink import EphemeralPortController, LocalSmtpServer
from leadflow.mail.transport import SmtpConfig

_CODE = re.compile(r"(code|data)(\d{3})")


def local_part(address: str) -> str:
    return address.rpartition("@")[0].lower()


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes

    def parsed(self) -> EmailMessage:
        return BytesParser(policy=policy.default).parsebytes(self.data)


async def _hang_up(server: SMTP) -> str:
    """Close the connection and never answer; aiosmtpd cancels this hook on disconnect."""
    if server.transport is not None:
        server.transport.close()
    await asyncio.Event().wait()
    return "451 unreachable"  # pragma: no cover


class FaultHandler:
    """aiosmtpd handler implementing the fault grammar in the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[Received] = []
        self.unacknowledged: list[Received] = []

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        match = _CODE.fullmatch(local_part(address))
        if match and match.group(1) == "code":
            return f"{match.group(2)} sender refused by fault injection"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        local = local_part(address)
        match = _CODE.fullmatch(local)
        if match and match.group(1) == "code":
            return f"{match.group(2)} recipient refused by fault injection"
        if local == "drop-before-data":
            return await _hang_up(server)
        if local == "stall-before-data":
            await asyncio.Event().wait()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        received = Received(
            str(envelope.mail_from), tuple(envelope.rcpt_tos), envelope.original_content or b""
        )
        locals_ = {local_part(rcpt) for rcpt in envelope.rcpt_tos}
        if locals_ & {"drop-after-data", "stall"}:
            with self._lock:
                self.unacknowledged.append(received)
            if "stall" in locals_:
                await asyncio.Event().wait()
            return await _hang_up(server)
        for local in locals_:
            match = _CODE.fullmatch(local)
            if match and match.group(1) == "data":
                return f"{match.group(2)} message refused by fault injection"
        with self._lock:
            self.messages.append(received)
        return "250 OK: queued"


class _CountingController(EphemeralPortController):
    def __init__(self, owner: FaultSmtpServer, **kwargs: Any) -> None:
        super().__init__(owner.handler, **kwargs)
        self._owner = owner

    def factory(self) -> SMTP:
        smtp = SMTP(self.handler, **self.SMTP_kwargs)
        self._owner._opened(smtp)
        return smtp


class FaultSmtpServer(LocalSmtpServer):
    """A running fault-injecting server; see the module docstring for the address grammar."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.handler = FaultHandler()
        self._sessions: list[SMTP] = []
        self._counted = 0
        self._lock = threading.Lock()

    def _opened(self, smtp: SMTP) -> None:
        with self._lock:
            self._sessions.append(smtp)
            self._counted += 1

    @property
    def connections(self) -> int:
        """SMTP connections opened by clients since start (or the last ``reset``)."""
        with self._lock:
            return self._counted

    @property
    def messages(self) -> list[Received]:
        return list(self.handler.messages)

    @property
    def unacknowledged(self) -> list[Received]:
        return list(self.handler.unacknowledged)

    def delivered_to(self) -> list[str]:
        return [rcpt for message in self.messages for rcpt in message.recipients]

    def config(self, **overrides: Any) -> SmtpConfig:
        """An ``SmtpConfig`` pointing at this server (plain SMTP, short timeout)."""
        return self.config_for(self.host, self.port, **overrides)

    @staticmethod
    def config_for(host: str, port: int, **overrides: Any) -> SmtpConfig:
        settings: dict[str, Any] = {"host": host, "port": port, "timeout": 2.0}
        settings.update(overrides)
        return SmtpConfig(**settings)

    def reset(self) -> None:
        """Forget counted connections and received messages (open connections stay open)."""
        with self._lock:
            self._counted = 0
        self.handler.messages.clear()
        self.handler.unacknowledged.clear()

    def disconnect_all(self) -> None:
        """Close every client connection from the server side, as a restarting relay would."""
        controller = self._controller
        if controller is None:
            return
        done = threading.Event()

        def close_all() -> None:
            with self._lock:
                sessions = list(self._sessions)
            for smtp in sessions:
                if smtp.transport is not None:
                    smtp.transport.close()
            done.set()

        controller.loop.call_soon_threadsafe(close_all)
        done.wait(5)

    def open(self) -> None:
        super().open()
        self.reset()  # the controller's own start-up probe is not a client connection

    def _new_controller(self) -> EphemeralPortController:
        return _CountingController(self, hostname=self.host, port=0, server_hostname="faults.test")


@pytest.fixture
def fault_server() -> Iterator[FaultSmtpServer]:
    with FaultSmtpServer() as server:
        yield server
