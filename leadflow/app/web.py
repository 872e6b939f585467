"""``leadflow web``: web-form intake, events, the unsubscribe endpoints and tracking.

* ``POST /leads`` and ``POST /events`` need ``Authorization: Bearer <LEADFLOW_API_TOKEN>``.
* ``POST /unsubscribe/{token}`` is the RFC 8058 one-click endpoint: no cookie, no login,
  unsubscribes at once. ``GET /unsubscribe/{token}`` only shows a page that asks — mail
  scanners follow GET links, so a GET never unsubscribes by itself.
* ``GET``/``HEAD /c/{token}`` records a click and redirects (302) to the URL signed inside the
  token, and only there: a tracked link is never an open redirect. A bad token is a 404.
* ``GET``/``HEAD /o/{token}.gif`` records an open and answers a 1x1 GIF, even for a bad
  token (a mail client must not show a broken image).

Opens and clicks by link scanners and mail proxies are recorded as ``machine_opened`` and
``machine_clicked`` (``leadflow/listening/tracking.py`` has the rules). When the database
cannot be reached the click still redirects and the pixel is still served: losing one hit is
better than a broken link in a prospect's inbox.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import re
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from leadflow.intake.readers import NotJson, lone_surrogate, strict_json
from leadflow.listening.tracking import (
    CLICK_PATH,
    OPEN_PATH,
    PIXEL_GIF,
    machine_reason,
    read_click_token,
    read_open_token,
)
from leadflow.pipeline.events import KNOWN_EVENTS, EventIn, record_events
from leadflow.pipeline.suppression import suppress_many
from leadflow.queries import find_lead
from leadflow.runtime import Runtime
from leadflow.timeutil import parse_instant, utcnow
from leadflow.unsubscribe import UNSUBSCRIBE_PATH, verify_token
from models.db import WRITE, session_scope
from models.tables import OUTBOX

log = logging.getLogger(__name__)

HitKind = Literal["open", "click"]
# (human, machine) event type per kind of hit
_HIT_EVENTS: Final[dict[HitKind, tuple[str, str]]] = {
    "open": ("email_opened", "machine_opened"),
    "click": ("email_clicked", "machine_clicked"),
}
_NO_STORE: Final = {"Cache-Control": "no-store, private"}


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class EventBody(BaseModel):
    email: str = Field(max_length=320)
    type: str = Field(max_length=64)
    at: str | None = Field(default=None, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("email", "type", "at")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("must not contain control characters")  # PostgreSQL refuses NUL
        return value


_HIT_ROW = select(OUTBOX.c.lead_id, OUTBOX.c.sent_at, OUTBOX.c.claimed_at).where(
    OUTBOX.c.id == bindparam("outbox_id")
)


_WRITERS: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def _writer(engine: Engine) -> Engine:
    """``engine`` with the write option, made once (making it per hit was a tenth of one)."""
    found = _WRITERS.get(engine)
    if found is None:
        found = _WRITERS[engine] = engine.execution_options(**WRITE)
    return found


def record_hit(
    rt: Runtime,
    *,
    outbox_id: int,
    kind: HitKind,
    url: str | None,
    method: str,
    user_agent: str | None,
    now: datetime,
) -> str | None:
    """Record an open or a click of outbox row ``outbox_id`` for its lead, in one transaction.

    Returns the event type recorded (``email_clicked``, ``machine_clicked``, ...), or None
    when there is no such row. The row's ``sent_at`` (its ``claimed_at`` while the send is
    not recorded yet: scanners at the recipient's gateway can be that quick) decides whether
    the hit came too soon to be a person.
    """
    with _writer(rt.engine).begin() as conn:  # Core: no ORM session per hit
        row = conn.execute(_HIT_ROW, {"outbox_id": outbox_id}).one_or_none()
        if row is None:
            return None
        reason = machine_reason(
            kind=kind,
            method=method,
            user_agent=user_agent,
            sent_at=row.sent_at or row.claimed_at,
            now=now,
            human_after_seconds=rt.loaded.config.tracking.human_after_seconds,
        )
        human, machine = _HIT_EVENTS[kind]
        data: dict[str, Any] = {} if url is None else {"url": url}
        if reason is not None:
            data["machine"] = reason
        event = human if reason is None else machine
        record_events(
            conn,
            [EventIn(row.lead_id, event, now, data, source="tracking", message_id=outbox_id)],
            stop_on=rt.stop_on,
            now=now,
        )
    return event


MAX_EVENT_DATA = 10_000  # characters of an event's JSON data posted to /events


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes, announced or streamed."""
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise HTTPException(413, f"request body larger than {limit:,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body larger than {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(raw: bytes) -> Any:
    """A JSON body, or 400 saying why not (not UTF-8, not JSON, nested too deep, text that is
    not Unicode). Parsed as strictly as JSON Lines files (``strict_json``): no NaN or
    Infinity, no number longer than 100 characters."""
    try:
        body = strict_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise HTTPException(400, "request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"request body is not JSON: {exc.msg} at {exc.pos}") from None
    except NotJson as exc:
        raise HTTPException(400, f"request body is not JSON: {exc}") from None
    except RecursionError:
        raise HTTPException(400, "request body is nested too deeply") from None
    bad = lone_surrogate(body)
    if bad is not None:
        raise HTTPException(400, f"request body is not valid Unicode: a lone surrogate {bad}")
    return body


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


def create_app(rt: Runtime, *, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """The app over one runtime. ``clock`` is when requests happen (time travel in tests and
    the demo: a click then lands at the simulated instant, not the wall clock's)."""
    app = FastAPI(title="leadflow", version="0.1.0")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "config": rt.loaded.short_hash}

    _add_api(app, rt, clock)
    _add_unsubscribe(app, rt, clock)
    _add_tracking(app, rt, clock)
    return app


def _add_api(app: FastAPI, rt: Runtime, clock: Callable[[], datetime]) -> None:
    """``POST /leads`` and ``POST /events``, behind the API token."""
    guarded = [Depends(_token_check(rt))]
    _add_post_leads(app, rt, clock, guarded)
    _add_post_event(app, rt, clock, guarded)


def _token_check(rt: Runtime) -> Callable[[str], None]:
    """The API's dependency: 503 while no token is configured, 401 for a wrong one."""

    def require_token(authorization: str = Header(default="")) -> None:
        expected = rt.settings.api_token.get_secret_value() if rt.settings.api_token else None
        if not expected:
            raise HTTPException(503, "LEADFLOW_API_TOKEN is not set; the API is disabled")
        supplied = authorization.removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), expected.encode()):
            raise HTTPException(401, "invalid API token")

    return require_token


def _add_post_leads(
    app: FastAPI, rt: Runtime, clock: Callable[[], datetime], guarded: list[Any]
) -> None:
    @app.post("/leads", dependencies=guarded)
    async def post_leads(request: Request) -> dict[str, Any]:
        from leadflow.intake import import_rows
        from leadflow.intake.readers import json_record

        body = _json(await _bounded_body(request, rt.settings.max_body_bytes))
        items = body if isinstance(body, list) else [body]
        if not all(isinstance(i, dict) for i in items) or len(items) > 1000:
            raise HTTPException(422, "expected a JSON object or a list of up to 1000 objects")
        # the same cells as a JSON Lines file: an object or array is JSON text, never a field
        rows = [json_record(n + 1, item) for n, item in enumerate(items)]
        summary = import_rows(
            rt.engine,
            rows,
            rt.loaded.config.intake,
            default_timezone=rt.loaded.config.timezone,
            now=clock(),
            source_label="web",
        )
        return dict(summary.as_dict())


def _add_post_event(
    app: FastAPI, rt: Runtime, clock: Callable[[], datetime], guarded: list[Any]
) -> None:
    @app.post("/events", dependencies=guarded)
    async def post_event(request: Request) -> dict[str, Any]:
        raw = _json(await _bounded_body(request, rt.settings.max_body_bytes))
        try:
            body = EventBody.model_validate(raw)
        except ValidationError as exc:
            raise HTTPException(422, _first_error(exc)) from None
        if len(json.dumps(body.data)) > MAX_EVENT_DATA:
            raise HTTPException(422, f"event data is larger than {MAX_EVENT_DATA:,} characters")
        return await run_in_threadpool(_record_posted_event, rt, clock, body)


def _record_posted_event(
    rt: Runtime, clock: Callable[[], datetime], body: EventBody
) -> dict[str, Any]:
    """The event for the lead it names (blocking: run in the thread pool)."""
    if body.type not in KNOWN_EVENTS:
        raise HTTPException(422, f"unknown event type '{body.type}'")
    try:
        when: datetime = parse_instant(body.at) if body.at else clock()
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    with session_scope(rt.engine) as session:
        conn = session.connection()
        lead = find_lead(conn, body.email)
        if lead is None:
            raise HTTPException(404, "no such lead")
        record_events(
            conn,
            [EventIn(lead.id, body.type, when, body.data, source="api")],
            stop_on=rt.stop_on,
            now=clock(),
        )
    return {"recorded": body.type, "lead": lead.email}


def _add_unsubscribe(app: FastAPI, rt: Runtime, clock: Callable[[], datetime]) -> None:
    """The unsubscribe page (GET asks) and the RFC 8058 one-click endpoint (POST does it)."""

    def _email(token: str) -> str:
        email = verify_token(token, rt.settings.require_real_secret())
        if email is None:
            raise HTTPException(404, "this unsubscribe link is not valid")
        return email

    @app.get(UNSUBSCRIBE_PATH + "/{token}", response_class=HTMLResponse)
    def unsubscribe_page(token: str) -> str:
        email = html.escape(_email(token))
        action = html.escape(f"/unsubscribe/{token}")
        return (
            f"<!doctype html><meta charset=utf-8><title>Unsubscribe</title>"
            f"<p>Stop all emails to <b>{email}</b>?</p>"
            f"<form method=post action='{action}'><button>Unsubscribe</button></form>"
        )

    @app.post(UNSUBSCRIBE_PATH + "/{token}", response_class=HTMLResponse)
    def unsubscribe(token: str) -> str:
        email = _email(token)
        now = clock()
        with session_scope(rt.engine) as session:
            conn = session.connection()
            suppress_many(conn, [(email, "unsubscribed")], now=now, detail="one-click link")
            lead = find_lead(conn, email)
            if lead is not None:
                record_events(
                    conn,
                    [EventIn(lead.id, "unsubscribed", now, source="link")],
                    stop_on=rt.stop_on,
                    now=now,
                )
        return f"<!doctype html><p>{html.escape(email)} is unsubscribed. Sorry to see you go.</p>"


def _add_tracking(app: FastAPI, rt: Runtime, clock: Callable[[], datetime]) -> None:
    """The tracked link (``/c/{token}``, a redirect) and the open pixel (``/o/{token}.gif``)."""

    def _hit(request: Request, *, outbox_id: int, kind: HitKind, url: str | None) -> bool:
        """``record_hit`` for a request: False if the row is unknown. A database failure is
        logged and reads as True, so the reader still gets the page or the pixel."""
        try:
            recorded = record_hit(
                rt,
                outbox_id=outbox_id,
                kind=kind,
                url=url,
                method=request.method,
                user_agent=request.headers.get("user-agent"),
                now=clock(),
            )
        except SQLAlchemyError:
            log.exception("could not record a tracked %s of outbox row %d", kind, outbox_id)
            return True
        return recorded is not None

    @app.api_route(CLICK_PATH + "/{token}", methods=["GET", "HEAD"])
    def tracked_click(token: str, request: Request) -> Response:
        found = read_click_token(token, rt.settings.require_real_secret())
        if found is None:
            raise HTTPException(404, "this link is not valid")
        outbox_id, url = found
        if not _hit(request, outbox_id=outbox_id, kind="click", url=url):
            raise HTTPException(404, "this link is not valid")
        return RedirectResponse(url, status_code=302, headers=_NO_STORE)

    @app.api_route(OPEN_PATH + "/{token}.gif", methods=["GET", "HEAD"])
    def tracked_open(token: str, request: Request) -> Response:
        outbox_id = read_open_token(token, rt.settings.require_real_secret())
        if outbox_id is not None:
            _hit(request, outbox_id=outbox_id, kind="open", url=None)
        return Response(PIXEL_GIF, media_type="image/gif", headers=_NO_STORE)
