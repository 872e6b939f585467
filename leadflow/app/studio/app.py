"""The studio's web app (FastAPI): the page, the JSON API over a ``Studio``, and ``/events``,
Server-Sent Events telling the page a file changed so it asks for a new render.

A foreign Host is refused (``TrustedHostMiddleware`` over ``allowed_hosts``), a request with
an ``Origin`` is served only when ``origin_allowed``, and every POST needs such an Origin (or
``Sec-Fetch-Site: same-origin``).

Lead data is untrusted: the API returns it as JSON, the page only ever sets it as text, and
the rendered HTML is shown in an ``<iframe sandbox>`` (no scripts, an opaque origin) under a
Content-Security-Policy without inline scripts (``CSP``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from leadflow.app.studio.guard import allowed_hosts, origin_allowed
from leadflow.app.studio.model import Studio, StudioError
from leadflow.app.studio.page import PAGE, SCRIPT, STYLE

ADDRESS_MAX: Final = 320  # the longest an email address can be (64 + 1 + 255)
EVENT_POLL_SECONDS: Final = 0.02  # how soon an event stream sees a change (or the stop)
_KEEPALIVE_SECONDS: Final = 15.0
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https: http:; font-src 'self' data: https:; connect-src 'self'; "
    "frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class SendTest(BaseModel):
    template: str = Field(max_length=200)
    to: str = Field(max_length=ADDRESS_MAX)
    lead: str | None = Field(default=None, max_length=ADDRESS_MAX)


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
        response.headers["Content-Security-Policy"] = CSP
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
        await asyncio.sleep(EVENT_POLL_SECONDS)
        quiet += EVENT_POLL_SECONDS
