"""Which Prefect server ``leadflow run`` uses: a configured one, else a warm ``make ui`` server
that answers ``/api/health``, else a temporary one it starts itself (``flows/server.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import DEFAULT_CONFIG, ROOT, TEMPLATES

import flows  # noqa: F401  (its Prefect settings are in place before prefect is imported)
from flows.server import TEMPORARY_ENV, Server, _command, choose

NOTHING = "http://127.0.0.1:9/api"  # the discard port: nothing answers HTTP there


class _Health(BaseHTTPRequestHandler):
    """Answers like a Prefect server: ``GET /api/health`` is 200 ``true``."""

    body = b"true"
    status = 200

    def do_GET(self) -> None:
        if self.path != "/api/health":
            self.send_error(404)
            return
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _OtherApp(_Health):
    """Some other web app on the port: no Prefect health route."""

    status = 404
    body = b"not found"


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A tiny local HTTP server; its URL as an API URL (``http://127.0.0.1:PORT/api``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_server_answering_health_at_the_make_ui_address_is_used() -> None:
    with http_server(_Health) as url:
        server = choose(None, url)
    assert (server.kind, server.api_url, server.process) == ("ui", url, None)
    assert server.describe() == f"Prefect: runs go to the `make ui` server at {url}"


def test_nothing_at_the_make_ui_address_means_a_temporary_server() -> None:
    assert (choose(None, NOTHING).kind, choose(None, NOTHING).api_url) == ("temporary", None)


def test_another_app_on_the_make_ui_port_is_not_taken_for_prefect() -> None:
    with http_server(_OtherApp) as url:
        assert choose(None, url).kind == "temporary"


def test_a_configured_api_url_wins_over_a_warm_make_ui_server() -> None:
    with http_server(_Health) as url:
        server = choose("http://prefect.internal:4200/api", url)
    assert (server.kind, server.api_url) == ("configured", "http://prefect.internal:4200/api")
    assert server.describe() == (
        "Prefect: runs go to the server at http://prefect.internal:4200/api (PREFECT_API_URL)"
    )


def test_no_probe_address_means_never_looking_for_a_make_ui_server() -> None:
    with http_server(_Health):
        assert choose(None, None).kind == "temporary"


def test_the_temporary_server_is_started_as_prefect_starts_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same command and the same Prefect-only variables as Prefect's own temporary server
    (``SubprocessASGIServer``), so a Prefect upgrade that changes them fails here."""
    from prefect.server.api import server as prefect_server

    seen: dict[str, Any] = {}

    def popen(args: list[str], env: dict[str, str], **_: Any) -> None:
        seen.update(args=args, env=env)

    monkeypatch.setattr(prefect_server.subprocess, "Popen", popen)
    try:
        prefect_server.SubprocessASGIServer(port=54321)._run_uvicorn_command()
    finally:
        prefect_server.SubprocessASGIServer._instances.pop(54321, None)
    assert seen["args"] == _command(54321)
    prefect_only = {k: v for k, v in seen["env"].items() if k not in os.environ}
    assert {k: v for k, v in prefect_only.items() if k.startswith("PREFECT__")} == {
        k: v for k, v in TEMPORARY_ENV.items() if k.startswith("PREFECT__")
    }
    assert seen["env"]["PREFECT_UI_ENABLED"] == TEMPORARY_ENV["PREFECT_UI_ENABLED"]


def _choose_in_a_fresh_process(env: dict[str, str]) -> tuple[str | None, bool]:
    """What ``configured_api_url`` finds in a new process, and whether it imported prefect."""
    script = (
        "import json, sys; from flows.server import configured_api_url; "
        "print(json.dumps([configured_api_url(), 'prefect' in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    url, imported = json.loads(done.stdout)
    return url, imported


def test_the_choice_reads_the_environment_and_the_prefect_profile_without_importing_prefect(
    tmp_path: Path,
) -> None:
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    home = tmp_path / "prefect"
    home.mkdir()
    base["PREFECT_HOME"] = str(home)
    assert _choose_in_a_fresh_process(base) == (None, False)

    (home / "profiles.toml").write_text(
        'active = "local"\n\n[profiles.local]\nPREFECT_API_URL = "http://127.0.0.1:4300/api"\n'
        '\n[profiles.other]\nPREFECT_API_URL = "http://10.0.0.9:4200/api"\n',
        encoding="utf-8",
    )
    assert _choose_in_a_fresh_process(base) == ("http://127.0.0.1:4300/api", False)
    assert _choose_in_a_fresh_process({**base, "PREFECT_PROFILE": "other"}) == (
        "http://10.0.0.9:4200/api",
        False,
    )
    environment = {**base, "PREFECT_API_URL": "http://127.0.0.1:4400/api"}
    assert _choose_in_a_fresh_process(environment) == ("http://127.0.0.1:4400/api", False)


# --- whole runs: `leadflow run` in a process of its own ---------------------------------------


def _run_env(tmp_path: Path, prefect_home: Path, **values: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PREFECT_API_URL" and not k.startswith("LEADFLOW_")
    }
    env.update(
        LEADFLOW_HOME=str(tmp_path / "home"),
        LEADFLOW_DATABASE_URL=f"sqlite:///{tmp_path / 'leadflow.db'}",
        LEADFLOW_CONFIG=str(DEFAULT_CONFIG),
        LEADFLOW_TEMPLATES=str(TEMPLATES),
        LEADFLOW_DEMO="true",
        PREFECT_HOME=str(prefect_home),
    )
    env.update(values)
    return env


def _leadflow_run(env: dict[str, str], now: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "leadflow.app.cli", "run", "score", "--now", now, "--json"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def _flow_runs_named(name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )


@pytest.mark.flow
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_leadflow_run_sends_its_runs_to_a_warm_server_it_finds(tmp_path: Path) -> None:
    """No PREFECT_API_URL, a Prefect server answering at the ``make ui`` address (here the
    session's server): the run is recorded there, with its task runs, and no temporary
    server was started (none would have recorded it there)."""
    from prefect.settings import get_current_settings

    warm = get_current_settings().api.url
    assert warm is not None
    env = _run_env(tmp_path, tmp_path / "prefect", LEADFLOW_PREFECT_UI_URL=warm)
    result = _leadflow_run(env, "2026-11-03T14:31:07Z")
    assert result["score"]["score"]["summary"] == "rescored 0, 0 with a new score or grade"
    (run,) = asyncio.run(_flow_runs_named("score @ 2026-11-03T14:31:07+00:00"))
    assert run.state.is_completed()
    assert not (tmp_path / "prefect" / "prefect.db").exists()


def _copy_database(source: str, target: Path) -> None:
    """A consistent copy of a live SQLite database (the session server keeps writing)."""
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)
    copy.close()
    live.close()


def _processes_with(variable: str) -> list[int]:
    """The processes (Linux) whose environment holds exactly ``variable``."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if variable.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.flow
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_leadflow_run_starts_and_stops_a_temporary_server_when_none_answers(
    tmp_path: Path,
) -> None:
    """Nothing configured, nothing at the ``make ui`` address: the run starts its own server
    on the Prefect home (a migrated copy of the session's database here, to spare the
    migrations), records the run there, and leaves no server process behind."""
    from prefect.settings import get_current_settings

    home = tmp_path / "prefect"
    home.mkdir()
    url = get_current_settings().server.database.connection_url
    assert url is not None
    _copy_database(url.get_secret_value().partition(":///")[2], home / "prefect.db")
    env = _run_env(tmp_path, home, LEADFLOW_PREFECT_UI_URL=NOTHING)
    result = _leadflow_run(env, "2026-11-03T14:32:09Z")
    assert result["score"]["score"]["summary"] == "rescored 0, 0 with a new score or grade"
    with sqlite3.connect(home / "prefect.db") as db:
        rows = db.execute(
            "SELECT state_type FROM flow_run WHERE name = 'score @ 2026-11-03T14:32:09+00:00'"
        ).fetchall()
        tasks = db.execute(
            "SELECT count(*) FROM task_run JOIN flow_run ON flow_run.id = task_run.flow_run_id"
            " WHERE flow_run.name = 'score @ 2026-11-03T14:32:09+00:00'"
        ).fetchone()
    db.close()
    assert rows == [("COMPLETED",)]
    assert tasks == (1,)  # the config check (no leads: no score batch)
    assert _processes_with(f"PREFECT_HOME={home}") == []
    assert asyncio.run(_flow_runs_named("score @ 2026-11-03T14:32:09+00:00")) == []


@pytest.mark.flow
def test_a_terminal_is_told_which_server_the_runs_go_to(
    cli: Any, monkeypatch: pytest.MonkeyPatch, prefect_server: None
) -> None:
    import io

    from prefect.settings import get_current_settings
    from rich.console import Console

    from leadflow.app.cli import running

    screen = io.StringIO()
    monkeypatch.setattr(running, "err", Console(file=screen, force_terminal=True, width=200))
    code, _, _ = cli("run", "score", "--now", "2026-11-03T14:33:00Z")
    assert code == 0
    url = get_current_settings().api.url
    assert f"Prefect: runs go to the server at {url} (PREFECT_API_URL)" in screen.getvalue()


def test_a_temporary_server_says_where_its_database_is_and_how_long_it_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFECT_HOME", "/srv/leadflow/var/prefect")
    server = Server("temporary", "http://127.0.0.1:40001/api", ready_after=6.42)
    assert server.describe() == (
        "Prefect: runs go to a temporary server (database in /srv/leadflow/var/prefect, "
        "started in 6.4 s); `make ui` in another terminal keeps one warm"
    )
