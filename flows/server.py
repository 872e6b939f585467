"""Which Prefect server ``leadflow run`` sends its runs to, chosen before Prefect is imported.

| Prefect's API URL (environment, profile) | the ``make ui`` server       | runs go to             |
|------------------------------------------|------------------------------|------------------------|
| set                                      | not asked                    | that server            |
| unset                                    | answers ``/health`` in 0.5 s | the ``make ui`` server |
| unset                                    | does not answer              | a temporary server     |

The ``make ui`` server is looked for at ``LEADFLOW_PREFECT_UI_URL`` (default
``http://127.0.0.1:4200/api``, where ``make ui`` serves; empty: never look).

Why start the temporary server here rather than let Prefect do it: Prefect starts its
temporary server on the first flow call, after the caller has imported Prefect *and* its whole
server package (the REST API, ~3 s of CPU on a quiet 2-core machine, 10 s loaded), then waits
for the server process to import the same package and migrate its database. Here the server
process is started first, with the same command Prefect 3.9 uses (``_command``; a test checks
they agree), and the caller imports Prefect and the flows while it starts, on the other core;
the caller never imports the server package. Nothing in this module imports Prefect.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

UI_URL_ENV = "LEADFLOW_PREFECT_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:4200/api"  # the Makefile's `ui` target (UI_PORT 4200)
PROBE_SECONDS = 0.5  # how long the `make ui` server may take to answer /health
STARTUP_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"  # flows/__init__: 90 s
PORT_IN_USE = 3  # uvicorn's exit code when its port was taken meanwhile

Kind = Literal["configured", "ui", "temporary"]


class ServerUnavailable(Exception):
    """The temporary server did not start: one line saying why."""


def healthy(api_url: str, timeout: float) -> bool:
    """True when ``{api_url}/health`` answers 200 ``true`` (Prefect's health route) in time."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:  # noqa: S310
            return bool(response.status == 200 and response.read().strip() == b"true")
    except (OSError, ValueError):  # refused, timed out, not HTTP, a bad URL
        return False


def ui_url() -> str | None:
    """Where to look for the ``make ui`` server; None when ``LEADFLOW_PREFECT_UI_URL`` is
    set empty."""
    return os.environ.get(UI_URL_ENV, DEFAULT_UI_URL).rstrip("/") or None


def configured_api_url() -> str | None:
    """PREFECT_API_URL as far as it can be known without importing Prefect: the environment,
    the active profile of ``profiles.toml``, or (when this process has imported Prefect
    already: tests, the demo) Prefect's current settings. ``flows.runner.api_url`` gives the
    complete answer once Prefect is imported (a ``.env`` or ``prefect.toml`` may set it too)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if "prefect.settings" in sys.modules:
        from prefect.settings import get_current_settings

        return get_current_settings().api.url or None
    return _profile_api_url()


def _profile_api_url() -> str | None:
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    url = profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
    return str(url) if url else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(port: int) -> list[str]:
    """Prefect 3.9's temporary server (``SubprocessASGIServer._run_uvicorn_command``)."""
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.submodule_search_locations is not None
    app_dir = str(Path(next(iter(spec.submodule_search_locations))).parent)
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        app_dir,
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]


# Prefect's own temporary server runs with these: no UI, only the services a temporary server
# needs (those that record task runs and events, not the scheduler), the final app instance.
TEMPORARY_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}


@dataclass
class Server:
    """Where this process's flow runs go. ``api_url`` is None for a configured one (Prefect
    reads it as usual); a temporary server is ``process``, stopped by ``stop``."""

    kind: Kind
    api_url: str | None
    process: subprocess.Popen[bytes] | None = None
    started: float = field(default_factory=time.monotonic)
    ready_after: float | None = None  # seconds from start to /health answering

    @classmethod
    def start_temporary(cls) -> Server:
        server = cls("temporary", None)
        server._spawn()
        return server

    def _spawn(self) -> None:
        port = _free_port()
        self.api_url = f"http://127.0.0.1:{port}/api"
        command, env = _command(port), {**os.environ, **TEMPORARY_ENV}
        self.process = subprocess.Popen(command, env=env)  # noqa: S603 (our own interpreter)

    def wait_until_ready(self) -> None:
        """Until a temporary server answers ``/health`` (a port taken meanwhile: another
        port), at most PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS."""
        if self.process is None or self.ready_after is not None:
            return
        limit = float(os.environ.get(STARTUP_ENV) or 90)
        deadline = self.started + limit
        while time.monotonic() < deadline:
            assert self.api_url is not None
            if healthy(self.api_url, timeout=1.0):
                self.ready_after = time.monotonic() - self.started
                return
            code = self.process.poll()
            if code == PORT_IN_USE:
                self._spawn()
            elif code is not None:
                self.process = None
                raise ServerUnavailable(
                    f"the temporary Prefect server exited with code {code} while starting "
                    "(its error is above)"
                )
            time.sleep(0.1)
        self.stop()
        raise ServerUnavailable(
            f"the temporary Prefect server did not answer within {limit:g} s "
            f"({STARTUP_ENV}); start one with `make ui` or set PREFECT_API_URL"
        )

    def describe(self) -> str:
        """The line ``leadflow run`` shows on a terminal."""
        match self.kind:
            case "configured":
                return f"Prefect: runs go to the server at {self.api_url} (PREFECT_API_URL)"
            case "ui":
                return f"Prefect: runs go to the `make ui` server at {self.api_url}"
            case "temporary":
                home = os.environ.get("PREFECT_HOME", "~/.prefect")
                took = "" if self.ready_after is None else f", started in {self.ready_after:.1f} s"
                return (
                    f"Prefect: runs go to a temporary server (database in {home}{took}); "
                    "`make ui` in another terminal keeps one warm"
                )

    def stop(self) -> None:
        """Stop a temporary server (SIGTERM, then SIGKILL after 5 s, as Prefect does)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def choose(
    configured: str | None, probe: str | None, probe_seconds: float = PROBE_SECONDS
) -> Server:
    """The server by the table above, without starting one: the ``configured`` URL, else the
    ``make ui`` server at ``probe`` if it answers, else a temporary server still to start
    (``kind`` "temporary", ``api_url`` None)."""
    if configured is not None:
        return Server("configured", configured)
    if probe is not None and healthy(probe, timeout=probe_seconds):
        return Server("ui", probe)
    return Server("temporary", None)


@contextmanager
def chosen_server() -> Iterator[Server]:
    """The server for this process's runs (a temporary one started now and stopped at the
    end, whatever happens)."""
    server = choose(configured_api_url(), ui_url())
    if server.kind != "temporary":
        yield server
        return
    server = Server.start_temporary()
    try:
        yield server
    finally:
        with suppress(OSError):
            server.stop()
