"""The web app: token-protected intake and events, RFC 8058 one-click unsubscribe."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from leadflow.app.web import create_app
from leadflow.runtime import Runtime
from leadflow.unsubscribe import sign_token
from models.tables import EVENTS, LEADS, SUPPRESSIONS

SECRET = "a-test-secret-that-is-long-enough"
TOKEN = "api-token-for-tests"


@pytest.fixture
def client(rt: Runtime) -> TestClient:
    rt.settings = rt.settings.model_copy(
        update={"secret_key": SecretStr(SECRET), "api_token": SecretStr(TOKEN), "demo": False}
    )
    return TestClient(create_app(rt))


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_post_leads_requires_the_api_token(client: TestClient) -> None:
    response = client.post("/leads", json={"email": "ada@example.com"})
    assert response.status_code == 401
    response = client.post(
        "/leads", json={"email": "ada@example.com"}, headers={"Authorization": "Bearer wrong"}
    )
    assert response.status_code == 401


def test_web_form_lead_is_imported_with_json_attributes(client: TestClient, rt: Runtime) -> None:
    response = client.post(
        "/leads",
        json={
            "email": " Ada@Example.com ",
            "first_name": "Ada",
            "Employees": "120",
            "interests": ["analytics", "ml"],
        },
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.json()["created"] == 1
    with rt.engine.connect() as conn:
        row = conn.execute(select(LEADS.c.email, LEADS.c.company_size, LEADS.c.attributes)).one()
    assert row.email == "ada@example.com"
    assert row.company_size == 120
    assert row.attributes == {"interests": '["analytics", "ml"]'}


def test_events_endpoint_records_an_event(client: TestClient, rt: Runtime) -> None:
    client.post("/leads", json={"email": "ada@example.com"}, headers=AUTH)
    response = client.post(
        "/events",
        json={"email": "ADA@example.com", "type": "replied", "at": "2026-11-03T10:00:00Z"},
        headers=AUTH,
    )
    assert response.status_code == 200
    bad = client.post("/events", json={"email": "ada@example.com", "type": "replyed"}, headers=AUTH)
    assert bad.status_code == 422
    missing = client.post(
        "/events", json={"email": "nobody@example.com", "type": "replied"}, headers=AUTH
    )
    assert missing.status_code == 404
    with rt.engine.connect() as conn:
        assert conn.execute(select(EVENTS.c.type)).scalars().all() == ["replied"]


def test_get_never_unsubscribes_and_one_click_post_does(client: TestClient, rt: Runtime) -> None:
    token = sign_token("ada@example.com", SECRET)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert "<form method=post" in page.text
    with rt.engine.connect() as conn:
        assert conn.execute(select(SUPPRESSIONS.c.email)).scalars().all() == []
    done = client.post(
        f"/unsubscribe/{token}",
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200
    with rt.engine.connect() as conn:
        rows = conn.execute(select(SUPPRESSIONS.c.email, SUPPRESSIONS.c.reason)).all()
    assert [tuple(r) for r in rows] == [("ada@example.com", "unsubscribed")]


def test_forged_unsubscribe_token_is_refused(client: TestClient) -> None:
    forged = sign_token("ada@example.com", "some-other-secret-entirely")
    assert client.post(f"/unsubscribe/{forged}").status_code == 404


def test_link_in_emails_is_the_route_the_app_serves(client: TestClient, rt: Runtime) -> None:
    from urllib.parse import urlsplit

    from leadflow.unsubscribe import link_for

    link = link_for("https://leads.example.com/", "ada@example.com", SECRET)
    path = urlsplit(link).path
    assert path.startswith("/unsubscribe/")
    assert client.post(path).status_code == 200
    with rt.engine.connect() as conn:
        assert conn.execute(select(SUPPRESSIONS.c.email)).scalars().all() == ["ada@example.com"]


# --- hostile bodies: a clear 4xx with a JSON error, nothing stored -------------------------

BAD_BODIES = [
    (b'{"email": "a@example.com"', 400, "request body is not JSON"),
    (b"email=a@example.com", 400, "request body is not JSON"),
    (b'{"email": "\xff\xfe"}', 400, "request body is not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "request body is nested too deeply"),
    (b'"just a string"', 422, "expected a JSON object"),
]


@pytest.mark.parametrize("path", ["/leads", "/events"])
@pytest.mark.parametrize(("body", "status", "message"), BAD_BODIES)
def test_a_bad_body_is_a_4xx_json_error_and_stores_nothing(
    client: TestClient, rt: Runtime, path: str, body: bytes, status: int, message: str
) -> None:
    answer = client.post(path, content=body, headers={**AUTH, "Content-Type": "application/json"})
    if path == "/events" and status == 422:
        message = "body"  # the event schema names what is wrong
    assert answer.status_code == status
    assert message in answer.json()["detail"]
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(LEADS)).scalar_one() == 0


def test_a_body_over_the_limit_is_413_before_it_is_read(client: TestClient) -> None:
    huge = b'{"email": "a@example.com", "notes": "' + b"x" * 1_100_000 + b'"}'
    answer = client.post("/leads", content=huge, headers=AUTH)
    assert answer.status_code == 413
    assert answer.json()["detail"] == "request body larger than 1,000,000 bytes"


def test_an_attribute_over_the_limit_rejects_the_row(client: TestClient, rt: Runtime) -> None:
    answer = client.post(
        "/leads", json={"email": "a@example.com", "notes": "x" * 2_001}, headers=AUTH
    )
    assert answer.status_code == 200
    summary = answer.json()
    assert (summary["created"], summary["rejected"]) == (0, 1)


def test_event_data_over_the_limit_is_refused(client: TestClient) -> None:
    client.post("/leads", json={"email": "ada@example.com"}, headers=AUTH)
    answer = client.post(
        "/events",
        json={"email": "ada@example.com", "type": "web_visit", "data": {"x": "y" * 10_001}},
        headers=AUTH,
    )
    assert answer.status_code == 422
    assert answer.json()["detail"] == "event data is larger than 10,000 characters"
