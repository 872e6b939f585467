"""`leadflow sink`: the local SMTP sink as a command, started as a person starts it (a
subprocess), sent to by a real SMTP client, stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
from conftest import Cli
from waiting import wait_until

LEADFLOW = Path(sys.executable).parent / "leadflow"
STARTUP_TIMEOUT = 60.0  # importing the command line takes seconds on a loaded 2-core machine


class _Lines:
    """A subprocess's output, read line by line in a thread, so a wait can give up."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        self._stdout = proc.stdout
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stdout:
            self._queue.put(line)

    def close(self) -> None:
        """After the process exited: the reader has met the end of its output."""
        self._reader.join(10)
        self._stdout.close()

    def until(self, pattern: str, timeout: float) -> re.Match[str]:
        def matched() -> re.Match[str] | None:
            while not self._queue.empty():
                self.seen.append(self._queue.get_nowait().rstrip("\n"))
            return next((m for line in self.seen if (m := re.search(pattern, line))), None)

        return wait_until(
            matched,
            timeout=timeout,
            what=f"a line matching {pattern!r}",
            interval=0.05,
            details=lambda: "\n".join(self.seen),
        )


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Ada Byron <ada@acme-analytics.example>"
    message["To"] = "Zoë Ångström <zoe@example.com>"
    message["Subject"] = "Grüße aus dem Sink"
    message["Message-ID"] = "<sink-test-1@acme-analytics.example>"
    message.set_content("Hallo Zoë,\n\nüber den Sink.\n")
    return message


def test_leadflow_sink_stores_each_message_as_an_eml_file_until_ctrl_c(tmp_path: Path) -> None:
    folder = tmp_path / "sink"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADFLOW_")}
    proc = subprocess.Popen(
        [str(LEADFLOW), "sink", "--port", "0", "--dir", str(folder)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = _Lines(proc)
    try:
        port = int(lines.until(r"^SMTP sink listening on 127\.0\.0\.1:(\d+)$", STARTUP_TIMEOUT)[1])
        lines.until(rf"^writing each message to {re.escape(str(folder))}/$", 5)
        lines.until(rf"LEADFLOW_SMTP_HOST=127\.0\.0\.1 LEADFLOW_SMTP_PORT={port} ", 5)

        errors, response = asyncio.run(
            aiosmtplib.send(_message(), hostname="127.0.0.1", port=port, timeout=10)
        )
        assert errors == {}
        assert response.startswith("OK")
        stored = lines.until(r"^stored (\S+\.eml) \((.*)\)$", 10)
        assert stored[2] == "ada@acme-analytics.example -> zoe@example.com"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        lines.until(rf"^stopped; 1 message\(s\) stored in {re.escape(str(folder))}$", 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lines.close()

    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [Path(stored[1]).name]
    assert files[0].name.endswith("-0001-sink-test-1@acme-analytics.example.eml")
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert parsed["From"] == "Ada Byron <ada@acme-analytics.example>"
    assert parsed["To"] == "Zoë Ångström <zoe@example.com>"
    assert parsed["Subject"] == "Grüße aus dem Sink"
    assert parsed["Message-ID"] == "<sink-test-1@acme-analytics.example>"
    assert parsed.get_content() == "Hallo Zoë,\r\n\r\nüber den Sink.\r\n"  # as sent: CRLF


def test_leadflow_sink_on_a_port_in_use_says_so_and_exits_1(cli: Cli, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = cli("sink", "--port", str(port), "--dir", str(tmp_path / "sink"))
    assert code == 1, out + err
    assert f"cannot run the SMTP sink on 127.0.0.1:{port}" in err
    assert "SMTP sink listening" not in out
