"""``leadflow studio``: the marketer's loop, a local web page over the templates folder.

One process keeps everything warm: the config (loaded once), the database engine and a
``TemplateSet`` over the templates folder. A watcher (``watchfiles`` when installed, else
polling the folder's file times every ``POLL_SECONDS``) replaces the ``TemplateSet`` when a
file changes and bumps ``Studio.generation``; the page listens on ``/events`` (Server-Sent
Events) and asks for a new render, which costs milliseconds (no imports, no config load).

Nothing here is a second copy of the rules: a render is ``TemplateSet.check`` (the static
checker and sample test render that ``leadflow validate`` runs) plus the renderer's own
compliance checks, with the context ``leadflow preview`` uses (``preview_context``); the
variables come from ``mail/context.py``; a test send goes through ``send_test_email`` (the
pipeline's ``build_wire``, the configured SMTP settings).

A test send may go to any address, so it carries no working link: the unsubscribe link is
the ``example.invalid`` placeholder (``context_for_test_send``), in the body as in the
header. It does carry a chosen lead's data (that is what the marketer wants to see), and the
page says so. At most ``SEND_LIMIT`` test sends go out per ``SEND_WINDOW_SECONDS`` per studio
process; past that a send is refused with 429.

It answers only the Host names it was given (``allowed_hosts``: the loopback names, the
address it is bound to, each ``--allow-host``; never any name), so a page on another site
cannot reach it through DNS rebinding; a request with an ``Origin`` is served only when that
Origin is ``http://`` one of those names on the studio's own port (never compared with the
request's own Host header, which the other site controls), and every POST needs such an
Origin (or ``Sec-Fetch-Site: same-origin``).

Lead data is untrusted: the API returns it as JSON, the page only ever sets it as text, and
the rendered HTML is shown in an ``<iframe sandbox>`` (no scripts, an opaque origin) under a
Content-Security-Policy without inline scripts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import ipaddress
import math
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from leadflow.app.preview import (
    check_test_address,
    context_for_test_send,
    preview_context,
    send_test_email,
)
from leadflow.app.studio_page import PAGE, SCRIPT, STYLE
from leadflow.mail.context import (
    LEAD_KEYS,
    MESSAGE_KEYS,
    SENDER_KEYS,
    TEMPLATE_FILTERS,
    TEMPLATE_GLOBALS,
)
from leadflow.mail.rendering import (
    HTML_SUFFIX,
    RenderedEmail,
    TemplateRenderError,
    TemplateSet,
)
from leadflow.runtime import Runtime
from leadflow.settings import Settings

POLL_SECONDS: Final = 0.05  # the fallback watcher's period: a save is seen within 50 ms
TEST_PREFIX: Final = "[test] "
SEND_LIMIT: Final = 10  # test sends per window per studio process
SEND_WINDOW_SECONDS: Final = 60.0
ADDRESS_MAX: Final = 320  # the longest an email address can be (64 + 1 + 255)
_KEEPALIVE_SECONDS: Final = 15.0
_EVENT_POLL_SECONDS: Final = 0.02
_LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "::1", "[::1]")
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https: http:; font-src 'self' data: https:; connect-src 'self'; "
    "frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_KEYS_OF: Final[Mapping[str, frozenset[str]]] = {
    "lead": LEAD_KEYS,
    "sender": SENDER_KEYS,
    "message": MESSAGE_KEYS,
}


class StudioError(Exception):
    """A request the studio cannot serve: an unknown template or lead, a bad address."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- watching the folder --------------------------------------------------------------------


def folder_state(directory: Path) -> frozenset[tuple[str, int, int, int]]:
    """Every file under ``directory`` as (path, inode, size, mtime in ns): a save, a rename
    into place, a new or a removed file each change it."""
    found: set[tuple[str, int, int, int]] = set()
    pending = [str(directory)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:  # the folder (or a subfolder) vanished: that is a state too
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif not entry.name.startswith("."):  # editors' swap and backup files
                    st = entry.stat()
                    found.add((entry.path, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                continue
    return frozenset(found)


class FolderWatcher:
    """Calls ``on_change`` from a thread of its own whenever a file under ``directory``
    changes: through ``watchfiles`` (inotify) if it is installed, else by polling
    ``folder_state`` every ``interval`` seconds."""

    def __init__(
        self,
        directory: Path,
        on_change: Callable[[], None],
        *,
        interval: float = POLL_SECONDS,
        use_watchfiles: bool | None = None,
    ) -> None:
        self.directory = directory
        self._on_change = on_change
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.method = "polling"
        if use_watchfiles is not False:
            try:
                self._watchfiles: Any = importlib.import_module("watchfiles")
                self.method = "watchfiles"
            except ImportError:
                if use_watchfiles:
                    raise
        if self.method == "polling":
            self._watchfiles = None

    def start(self) -> None:
        target = self._watch if self._watchfiles is not None else self._poll
        self._thread = threading.Thread(target=target, name="studio-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _poll(self) -> None:
        state = folder_state(self.directory)
        while not self._stop.wait(self._interval):
            now = folder_state(self.directory)
            if now != state:
                state = now
                self._on_change()

    def _watch(self) -> None:
        for _changes in self._watchfiles.watch(
            self.directory, stop_event=self._stop, debounce=200, step=20, rust_timeout=500
        ):
            self._on_change()


# --- the studio -----------------------------------------------------------------------------


class SendLimit:
    """At most ``limit`` takes in any ``window`` seconds (a sliding window); thread-safe."""

    def __init__(
        self,
        limit: int = SEND_LIMIT,
        window: float = SEND_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._taken: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0.0 when one more is allowed (and counts it), else the seconds until one is."""
        with self._lock:
            now = self._clock()
            while self._taken and now - self._taken[0] >= self.window:
                self._taken.popleft()
            if len(self._taken) >= self.limit:
                return self.window - (now - self._taken[0])
            self._taken.append(now)
            return 0.0


@dataclasses.dataclass(frozen=True)
class Problem:
    """A validate error shown beside the render: the file (in the templates folder), its line
    (0 when none applies), the message and that line's text."""

    file: str
    line: int
    message: str
    source: str


class Studio:
    """The warm state behind the page: config, database, templates; thread-safe."""

    def __init__(self, rt: Runtime, *, watch: bool = True) -> None:
        self.rt = rt
        self.directory = rt.settings.templates
        self._lock = threading.Lock()
        self._templates = TemplateSet(self.directory)
        self._checked: dict[tuple[int, str], list[Problem]] = {}  # (generation, name)
        self.generation = 0
        self.closed = False
        self.send_limit = SendLimit()
        self._watcher = FolderWatcher(self.directory, self.reload) if watch else None

    @classmethod
    def open(cls, settings: Settings, *, watch: bool = True) -> Studio:
        """The config is validated without its templates: a broken template is what the
        studio is for, so it shows it instead of refusing to start."""
        return cls(Runtime.open(settings, check_templates=False), watch=watch)

    @property
    def watch_method(self) -> str:
        return self._watcher.method if self._watcher is not None else "off"

    def start(self) -> None:
        if self._watcher is not None:
            self._watcher.start()

    def close(self) -> None:
        self.closed = True
        if self._watcher is not None:
            self._watcher.stop()
        self.rt.close()

    def reload(self) -> None:
        """Forget every compiled template (a fresh ``TemplateSet`` reads the files again)."""
        with self._lock:
            self._templates = TemplateSet(self.directory)
            self._checked.clear()
            self.generation += 1

    def templates(self) -> list[str]:
        return self._templates.names()

    def _known(self, templates: TemplateSet, name: str) -> None:
        from leadflow.suggest import did_you_mean

        names = templates.names()
        if name not in names:
            raise StudioError(f"unknown template '{name}'{did_you_mean(name, names)}", 404)

    def render(self, name: str, lead_email: str | None = None) -> dict[str, Any]:
        """Subject, text and HTML of ``name`` for the sample lead or ``lead_email``, with
        every problem ``leadflow validate`` finds in it and any the render itself hit."""
        started = time.perf_counter()
        with self._lock:
            templates, generation = self._templates, self.generation
        self._known(templates, name)
        config = self.rt.loaded.config
        try:
            context = preview_context(self.rt, lead_email or None)
        except ValueError as exc:
            raise StudioError(str(exc), 404) from None
        checked = self._checked.get((generation, name))
        if checked is None:  # the files' problems, the same for every lead until a save
            found = templates.check(
                name, attribute_keys=list(config.intake.attributes), labels=config.labels
            )
            checked = [self._problem(p.file, p.line, p.message) for p in found]
            with self._lock:
                if generation == self.generation:
                    self._checked[(generation, name)] = checked
        problems = list(checked)
        rendered: RenderedEmail | None = None
        try:
            rendered = templates.compile(name).render(context)
        except TemplateRenderError as exc:
            problem = self._problem(exc.filename or name + HTML_SUFFIX, exc.lineno or 0, "")
            said = [p for p in problems if p.file == problem.file and p.line == problem.line]
            if not any(p.message.endswith(exc.message) for p in said):
                problems.append(dataclasses.replace(problem, message=exc.message))
        return {
            "template": name,
            "lead": lead_email or None,
            "subject": rendered.subject if rendered else None,
            "text": rendered.text if rendered else None,
            "html": rendered.html if rendered else None,
            "problems": [dataclasses.asdict(p) for p in problems],
            "generation": generation,
            "render_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    def _problem(self, file: str, line: int, message: str) -> Problem:
        path = Path(file)
        if not path.is_absolute():
            path = self.directory / path
        try:
            shown = str(path.relative_to(self.directory))
        except ValueError:
            shown = path.name
        source = ""
        if line > 0:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
                source = lines[line - 1] if line <= len(lines) else ""
            except (OSError, UnicodeDecodeError):
                source = ""
        return Problem(shown, line, message, source)

    def variables(self) -> dict[str, Any]:
        """What a template may use (``mail/context.py``), each with its sample value."""
        context = preview_context(self.rt, None)
        rows: list[dict[str, Any]] = []
        for name in sorted(TEMPLATE_GLOBALS):
            value = context[name]
            keys = _KEYS_OF.get(name)
            if keys is None:
                rows.append({"name": name, "sample": _shown(value)})
                continue
            assert isinstance(value, Mapping)
            for key in sorted(keys):
                if name == "lead" and key == "attributes":
                    attributes = value.get(key) or {}
                    for attr in sorted(self.rt.loaded.config.intake.attributes):
                        rows.append(
                            {
                                "name": f"lead.attributes.{attr}",
                                "sample": _shown(attributes.get(attr)),
                            }
                        )
                    continue
                rows.append({"name": f"{name}.{key}", "sample": _shown(value.get(key))})
        filters = [
            {"name": name, "doc": (function.__doc__ or "").replace("``", "").split("\n\n")[0]}
            for name, function in sorted(TEMPLATE_FILTERS.items())
        ]
        return {"variables": rows, "filters": filters}

    def send_test(self, name: str, to: str, lead_email: str | None = None) -> dict[str, Any]:
        """What the page shows, sent to ``to`` with the subject marked ``[test]``: the chosen
        lead's data, but the placeholder in place of every signed link (``to`` may be
        anyone); refused (429) past ``send_limit``."""
        to = to.strip()
        try:
            check_test_address(to, label="the address")
        except ValueError as exc:
            raise StudioError(str(exc), 400) from None
        with self._lock:
            templates = self._templates
        self._known(templates, name)
        try:
            context = context_for_test_send(self.rt, lead_email or None)
        except ValueError as exc:
            raise StudioError(str(exc), 404) from None
        try:
            rendered = templates.compile(name).render(context)
        except TemplateRenderError as exc:
            raise StudioError(f"not sent: {exc}", 422) from None
        wait = self.send_limit.take()
        if wait:
            limit = self.send_limit
            raise StudioError(
                f"not sent: at most {limit.limit} test sends per {limit.window:g} seconds; "
                f"try again in {math.ceil(wait)} s",
                429,
            )
        marked = dataclasses.replace(rendered, subject=TEST_PREFIX + rendered.subject)
        result = send_test_email(self.rt, name, to, rendered=marked)
        return {
            "to": to,
            "subject": marked.subject,
            "outcome": str(result.outcome),
            "code": result.code,
            "detail": result.detail,
        }


def _shown(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# --- the web app ----------------------------------------------------------------------------


class SendTest(BaseModel):
    template: str = Field(max_length=200)
    to: str = Field(max_length=ADDRESS_MAX)
    lead: str | None = Field(default=None, max_length=ADDRESS_MAX)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_host_name(name: str) -> str:
    """``name`` as an allowed Host name (lowercase, no brackets); ValueError unless it is a
    plain host name or address: no wildcard, port, scheme or path."""
    bare = name.strip().lower()
    bare = bare[1:-1] if bare.startswith("[") and bare.endswith("]") else bare
    if _address(bare) is None and (
        not bare or any(not (ch.isalnum() or ch in ".-_") for ch in bare)
    ):
        raise ValueError(
            f"--allow-host {name!r}: give one host name or address (no '*', port or scheme)"
        )
    return bare


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """Host names the studio answers (in the Host header and the Origin alike): the loopback
    names, the address it is bound to (unless that is every interface, ``0.0.0.0`` or
    ``::``, which no browser asks for) and each of ``extra`` (``--allow-host``). Never
    ``*``: any other name is refused, so a page on another site cannot reach the studio
    through DNS rebinding."""
    names = {*_LOOPBACK_NAMES, *(check_host_name(name) for name in extra)}
    address = _address(host)
    if host and not (address is not None and address.is_unspecified):
        names.add(check_host_name(host))
    for name in list(names):  # an IPv6 address as the Host header writes it, too
        address = _address(name)
        if address is not None and address.version == 6:
            names.update({str(address), f"[{address}]"})
    return sorted(names)


def origin_allowed(origin: str, hosts: Iterable[str], port: int) -> bool:
    """Whether ``origin`` is the studio's own: ``http``, a host of ``hosts``, port ``port``."""
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or (80 if parts.scheme == "http" else None)
    except ValueError:
        return False
    names = {name.strip("[]").lower() for name in hosts}
    return (
        parts.scheme == "http"
        and (parts.hostname or "") in names
        and origin_port == port
        and parts.path in ("", "/")
        and not parts.query
        and parts.username is None
    )


def is_loopback(host: str) -> bool:
    address = _address(host)
    return host == "localhost" or (address is not None and address.is_loopback)


def create_studio_app(
    studio: Studio, *, hosts: list[str] | None = None, port: int | None = None
) -> FastAPI:
    """The studio's page and API over ``studio`` (started and closed with the app), answering
    the Host names ``hosts`` (``allowed_hosts("127.0.0.1")`` when not given) and Origins of
    those names on ``port`` (when not given, the port the request came in on: the
    server's socket, never the request's Host header)."""
    answered = hosts or allowed_hosts("127.0.0.1")
    if "*" in answered:
        raise ValueError("the studio never answers every Host name ('*')")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        studio.start()
        try:
            yield
        finally:
            studio.close()

    app = FastAPI(title="leadflow studio", docs_url=None, redoc_url=None, lifespan=lifespan)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        origin = request.headers.get("origin")
        studio_port = port
        if studio_port is None:
            server = request.scope.get("server")
            studio_port = server[1] if server else None
        if origin is not None:
            if studio_port is None or not origin_allowed(origin, answered, studio_port):
                response: Response = JSONResponse(
                    {"error": "cross-origin request refused"}, status_code=403
                )
            else:
                response = await call_next(request)
        elif request.method not in ("GET", "HEAD") and (
            request.headers.get("sec-fetch-site") != "same-origin"
        ):
            response = JSONResponse(
                {"error": "refused: a POST needs the Origin of the studio's own page"},
                status_code=403,
            )
        else:
            response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(StudioError)
    async def studio_error(_request: Request, exc: StudioError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/studio.js")
    def script() -> Response:
        return Response(SCRIPT, media_type="text/javascript; charset=utf-8")

    @app.get("/studio.css")
    def style() -> Response:
        return Response(STYLE, media_type="text/css; charset=utf-8")

    @app.get("/api/templates")
    def templates() -> dict[str, Any]:
        return {
            "templates": studio.templates(),
            "folder": str(studio.directory),
            "generation": studio.generation,
            "watch": studio.watch_method,
        }

    @app.get("/api/render")
    def render(
        template: str, lead: str | None = Query(default=None, max_length=ADDRESS_MAX)
    ) -> dict[str, Any]:
        return studio.render(template, lead)

    @app.get("/api/variables")
    def variables() -> dict[str, Any]:
        return studio.variables()

    @app.post("/api/send-test")
    def send(body: SendTest) -> dict[str, Any]:  # the Origin is checked above, for all
        return studio.send_test(body.template, body.to, body.lead)

    @app.get("/events")
    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(
            _changes(studio, request), media_type="text/event-stream; charset=utf-8"
        )

    # added last, so it runs first: a foreign Host is refused before anything else
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=answered)
    return app


async def _changes(studio: Studio, request: Request) -> AsyncIterator[str]:
    """``change`` with the new generation each time the folder changes, as Server-Sent
    Events; a comment now and then keeps proxies and the browser from timing out."""
    last = studio.generation
    yield f"retry: 1000\nevent: hello\ndata: {last}\n\n"
    quiet = 0.0
    while not studio.closed:
        if studio.generation != last:
            last = studio.generation
            quiet = 0.0
            yield f"event: change\ndata: {last}\n\n"
        elif quiet >= _KEEPALIVE_SECONDS:
            quiet = 0.0
            if await request.is_disconnected():
                return
            yield ": keepalive\n\n"
        await asyncio.sleep(_EVENT_POLL_SECONDS)
        quiet += _EVENT_POLL_SECONDS


def serve_studio(studio: Studio, *, host: str, port: int, allow_hosts: Iterable[str] = ()) -> None:
    """Serve the studio until Ctrl-C or SIGTERM, then return; open pages' event streams end
    first, so the server stops at once and cleanly."""
    import uvicorn

    class StudioServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            studio.closed = True  # ends every /events stream within _EVENT_POLL_SECONDS
            super().handle_exit(sig, frame)
            # A stop the user asked for is a clean exit (0): uvicorn would raise the signal
            # again once stopped (death by SIGTERM, or KeyboardInterrupt and "Aborted!").
            self._captured_signals.clear()

    app = create_studio_app(studio, hosts=allowed_hosts(host, allow_hosts), port=port)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    StudioServer(config).run()
