"""A real headless browser for the tests: Debian's chromium driven by Playwright.

A pytest plugin: a browser test module names it (``pytest_plugins = ["browser"]``) and gets
the ``chromium`` fixture, one browser for the whole session, and a new page (in a context of
its own: no cookies or storage shared) for each ``chromium.open(...)``; ``screenshot``; and
``prefect_ui``, a real ``prefect server start`` (API and UI) for the session.

Playwright cannot download its own browsers on these machines; ``scripts/ensure-chromium``
(run by ``make unit``) installs Debian's ``chromium`` and Playwright launches that binary.

Playwright's sync API leaves its event loop marked as running in the thread that started it
for as long as it lives, so ``asyncio.run`` would fail there. The browser therefore lives in
a thread of its own, and a test hands it the work to do with a page (``chromium.open``); the
tests' own thread (and every other test of the session) keeps a clean asyncio state.

Screenshots go to ``var/test-artifacts/browser/`` (git-ignored with the rest of ``var/``), or
under ``$LEADFLOW_TEST_ARTIFACTS`` when set; each test's files are named after the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
DESKTOP = (1280, 800)
PHONE = (390, 844)
START_TIMEOUT = 90.0  # the first launch on a loaded 2-core machine
SERVER_TIMEOUT = 180.0  # a new Prefect database migrates in 15-40 s on a loaded 2-core machine
WORK_TIMEOUT = 120.0


def artifacts_dir() -> Path:
    """Where the browser tests keep their screenshots (made if missing)."""
    base = os.environ.get("LEADFLOW_TEST_ARTIFACTS")
    folder = (Path(base) if base else ROOT / "var" / "test-artifacts") / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None:
        raise RuntimeError(
            "no chromium on PATH: run scripts/ensure-chromium (make unit does), which installs "
            "Debian's chromium package"
        )
    return found


class Chromium:
    """One headless chromium, driven from a thread of its own (see the module's docstring)."""

    DESKTOP = DESKTOP
    PHONE = PHONE

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        try:
            self._thread.submit(self._start).result(START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=chromium_path(), args=ARGS)

    def open(
        self,
        url: str,
        work: Callable[[Page], T],
        *,
        viewport: tuple[int, int] = DESKTOP,
        timeout: float = WORK_TIMEOUT,
    ) -> T:
        """``work(page)`` on a new page at ``viewport`` (width, height) that has loaded
        ``url``; its result, or what it raised. The page and its context are closed after."""

        def run() -> T:
            assert self._browser is not None
            width, height = viewport
            context = self._browser.new_context(viewport={"width": width, "height": height})
            try:
                page = context.new_page()
                page.set_default_timeout(30_000)
                page.goto(url)
                return work(page)
            finally:
                context.close()

        return self._thread.submit(run).result(timeout)

    def close(self) -> None:
        def stop() -> None:
            if self._browser is not None:
                self._browser.close()
            if self._playwright is not None:
                self._playwright.stop()

        try:
            self._thread.submit(stop).result(60)
        finally:
            self._thread.shutdown(wait=True)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chromium]:
    """The session's headless chromium (started on first use, ~3 s)."""
    browser = Chromium()
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    """``screenshot(page, "phone")``: a full-page PNG named after the test, kept after the run."""
    folder = artifacts_dir()
    test = request.node.name.replace("/", "_")

    def take(page: Page, label: str) -> Path:
        path = folder / f"{test}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def prefect_ui() -> Iterator[str]:
    """A Prefect server with its UI on a free loopback port, for the session: its base URL
    (the API under ``/api``). The temporary server of ``prefect_test_harness`` serves no UI.

    ``prefect server start --port`` does not tell the UI where the API is (it asks for
    ``server.api.port``, 4200 by default): PREFECT_SERVER_API_PORT says it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    home = Path(tempfile.mkdtemp(prefix="leadflow-test-prefect-ui-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEADFLOW_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
    )
    prefect = Path(sys.executable).parent / "prefect"
    log = home / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with all it started
        )
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the Prefect server at {url} did not start:\n{tail}")
            time.sleep(0.25)
        yield url
    finally:
        _stop_group(server)
        shutil.rmtree(home, ignore_errors=True)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group it leads; SIGKILL to what is left after 30 s."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever the leader left behind
    proc.wait(30)
