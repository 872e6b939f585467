"""``leadflow web``: web-form intake, events, and the unsubscribe endpoints.

* ``POST /leads`` and ``POST /events`` need ``Authorization: Bearer <LEADFLOW_API_TOKEN>``.
* ``POST /unsubscribe/{token}`` is the RFC 8058 one-click endpoint: no cookie, no login,
  unsubscribes at once. ``GET /unsubscribe/{token}`` only shows a page that asks — mail
  scanners follow GET links, so a GET never unsubscribes by itself.
"""

from __future__ import annotations

import hmac
import html
import json
from datetime import datetime
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from leadflow.events import KNOWN_EVENTS, EventIn, record_events
from leadflow.queries import find_lead
from leadflow.runtime import Runtime
from leadflow.suppression import suppress_many
from leadflow.timeutil import parse_instant, utcnow
from leadflow.unsubscribe import UNSUBSCRIBE_PATH, verify_token
from models.db import session_scope


class EventBody(BaseModel):
    email: str = Field(max_length=320)
    type: str = Field(max_length=64)
    at: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


def _cell(value: Any) -> str | None:
    """A JSON value as the text cell intake expects (nested values stay JSON, not repr)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="leadflow", version="0.1.0")

    def require_token(authorization: str = Header(default="")) -> None:
        expected = rt.settings.api_token.get_secret_value() if rt.settings.api_token else None
        if not expected:
            raise HTTPException(503, "LEADFLOW_API_TOKEN is not set; the API is disabled")
        supplied = authorization.removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), expected.encode()):
            raise HTTPException(401, "invalid API token")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "config": rt.loaded.short_hash}

    @app.post("/leads", dependencies=[Depends(require_token)])
    async def post_leads(request: Request) -> dict[str, Any]:
        from leadflow.intake import RawRow, import_rows

        body = await request.json()
        items = body if isinstance(body, list) else [body]
        if not all(isinstance(i, dict) for i in items) or len(items) > 1000:
            raise HTTPException(422, "expected a JSON object or a list of up to 1000 objects")
        rows = [
            RawRow(n + 1, {str(k): _cell(v) for k, v in i.items()}) for n, i in enumerate(items)
        ]
        summary = import_rows(
            rt.engine,
            rows,
            rt.loaded.config.intake,
            default_timezone=rt.loaded.config.timezone,
            now=utcnow(),
            source_label="web",
        )
        return dict(summary.as_dict())

    @app.post("/events", dependencies=[Depends(require_token)])
    def post_event(body: EventBody) -> dict[str, Any]:
        if body.type not in KNOWN_EVENTS:
            raise HTTPException(422, f"unknown event type '{body.type}'")
        try:
            when: datetime = parse_instant(body.at) if body.at else utcnow()
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
                now=utcnow(),
            )
        return {"recorded": body.type, "lead": lead.email}

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
        now = utcnow()
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

    return app
