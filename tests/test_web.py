"""The web app: token-protected intake and events, RFC 8058 one-click unsubscribe."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from leadflow.runtime import Runtime
from leadflow.unsubscribe import sign_token
from leadflow.web import create_app
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
