"""Open and click tracking: signed tokens, the HTML rewrite, machine traffic, the web routes."""

from __future__ import annotations

import base64
import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
import test_web
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from test_outbox import enroll, queue

from leadflow.app.web import record_hit
from leadflow.listening.tracking import (
    CLICK_PATH,
    OPEN_PATH,
    PIXEL_GIF,
    PREFETCH_AGENTS,
    PROXY_AGENTS,
    SCANNER_AGENTS,
    click_token,
    machine_reason,
    open_token,
    read_click_token,
    read_open_token,
    rewrite_html,
)
from leadflow.runtime import Runtime
from leadflow.timeutil import utcnow
from leadflow.unsubscribe import sign_token, verify_token
from models.tables import EVENTS, MessageStatus

SECRET = test_web.SECRET
client = test_web.client  # the fixture: the app over a fresh database, signing with SECRET

URL = "https://example.com/pricing?utm_source=mail&utm_campaign=intro"
BASE = "https://t.example.com"
UNSUBSCRIBE = "https://t.example.com/unsubscribe/YWRhQGV4YW1wbGUuY29t.c2lnbmF0dXJl"
CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)


def flip(text: str, at: int) -> str:
    """``text`` with the character at ``at`` replaced by another url-safe one."""
    return text[:at] + ("B" if text[at] == "A" else "A") + text[at + 1 :]


# --- tokens ----------------------------------------------------------------------------------


def test_tokens_round_trip() -> None:
    assert read_open_token(open_token(42, SECRET), SECRET) == 42
    assert read_click_token(click_token(42, URL, SECRET), SECRET) == (42, URL)


def test_an_open_token_is_the_row_id_and_a_22_character_signature() -> None:
    row_id, dot, signature = open_token(123456, SECRET).partition(".")
    assert (row_id, dot, len(signature)) == ("123456", ".", 22)


@pytest.mark.parametrize("at", range(len(open_token(42, SECRET))))
def test_any_flipped_character_spoils_an_open_token(at: int) -> None:
    assert read_open_token(flip(open_token(42, SECRET), at), SECRET) is None


def test_any_flipped_character_spoils_a_click_token() -> None:
    token = click_token(42, URL, SECRET)
    for at in range(len(token)):
        if token[at] != ".":
            assert read_click_token(flip(token, at), SECRET) is None, at


def test_a_token_signed_with_another_secret_is_refused() -> None:
    other = "another-secret-that-is-long-enough"
    assert read_open_token(open_token(42, other), SECRET) is None
    assert read_click_token(click_token(42, URL, other), SECRET) is None


@pytest.mark.parametrize(
    "token", ["", ".", "42", "42.", "042.x", "+42.x", "4 2.x", "x.y.z", "é.x", "42.a.b.c"]
)
def test_malformed_tokens_read_as_none(token: str) -> None:
    assert read_open_token(token, SECRET) is None
    assert read_click_token(token, SECRET) is None


def test_an_open_token_is_not_a_click_token_and_neither_is_an_unsubscribe_token() -> None:
    opened = open_token(42, SECRET)
    clicked = click_token(42, URL, SECRET)
    unsubscribe = sign_token("42", SECRET)
    assert read_click_token(opened, SECRET) is None
    assert read_open_token(clicked, SECRET) is None
    assert read_open_token(unsubscribe, SECRET) is None
    assert read_click_token(unsubscribe, SECRET) is None
    assert verify_token(opened, SECRET) is None
    assert verify_token(clicked, SECRET) is None
    # The same payload under another purpose's signature: domain separation, not just shape.
    open_signature = opened.partition(".")[2]
    click_payload = clicked.rpartition(".")[0]
    assert read_click_token(f"{click_payload}.{open_signature}", SECRET) is None
    unsubscribe_mac = base64.urlsafe_b64decode(unsubscribe.partition(".")[2] + "=")
    truncated = base64.urlsafe_b64encode(unsubscribe_mac[:16]).rstrip(b"=").decode()
    assert read_open_token(f"42.{truncated}", SECRET) is None


def test_only_web_urls_are_signed_for_a_redirect() -> None:
    with pytest.raises(ValueError, match="http"):
        click_token(42, "javascript:alert(1)", SECRET)


# --- the HTML rewrite ------------------------------------------------------------------------

EMAIL = f"""<!doctype html><html><body style="margin:0">
<p>Hi Ada, see <a href="{html.escape(URL)}" style="color:#06c">our pricing</a>,
<A class='cta' HREF='https://example.com/demo'>a demo</A>,
<a href=https://example.com/bare>bare</a> and <a data-href="x" href="https://example.com/d">d</a>.</p>
<p><a href="mailto:ada@example.com">mail</a> <a href="tel:+15551234">call</a>
<a href="#top">top</a> <a href="/relative">relative</a> <a name="anchor">anchor</a></p>
<p><a href="{UNSUBSCRIBE}">Unsubscribe</a></p>
</body></html>
"""


def rewrite(document: str = EMAIL, **options: Any) -> str:
    settings: dict[str, Any] = {"clicks": True, "opens": True, "keep": (UNSUBSCRIBE,)}
    settings.update(options)
    return rewrite_html(document, outbox_id=42, base_url=BASE, secret=SECRET, **settings)


def tracked_urls(document: str) -> list[str | None]:
    """The URLs signed in each tracked link, read back from their tokens."""
    prefix = re.escape(f"{BASE}{CLICK_PATH}/")
    tokens = re.findall(rf"""href=["']?{prefix}([^"'\s>]+)""", document, re.IGNORECASE)
    found = [read_click_token(html.unescape(t), SECRET) for t in tokens]
    return [f[1] if f else None for f in found]


def test_rewrite_signs_the_unescaped_url_of_each_web_link() -> None:
    assert tracked_urls(rewrite()) == [
        URL,  # written as &amp; in the HTML, signed (and redirected to) with a plain &
        "https://example.com/demo",
        "https://example.com/bare",
        "https://example.com/d",
    ]


def test_rewrite_keeps_the_unsubscribe_link_and_non_web_links() -> None:
    out = rewrite()
    for kept in (
        f'href="{UNSUBSCRIBE}"',
        'href="mailto:ada@example.com"',
        'href="tel:+15551234"',
        'href="#top"',
        'href="/relative"',
        '<a name="anchor">',
        'data-href="x"',
    ):
        assert kept in out


def test_rewrite_changes_nothing_but_the_tracked_hrefs() -> None:
    out = rewrite(opens=False)
    back = re.sub(
        rf"""{re.escape(BASE + CLICK_PATH)}/[^"'\s>]+""",
        lambda m: html.escape(tracked_urls(f'href="{m.group(0)}"')[0] or "?"),
        out,
    )
    assert back == EMAIL.replace("href=https://example.com/bare", 'href="https://example.com/bare"')


def test_the_pixel_is_added_once_just_before_the_body_ends() -> None:
    out = rewrite(clicks=False)
    pixel = (
        f'<img src="{BASE}{OPEN_PATH}/{open_token(42, SECRET)}.gif" width="1" height="1" '
        'alt="" style="display:none">'
    )
    assert out.count("<img") == 1
    assert out == EMAIL.replace("</body>", pixel + "</body>")
    assert rewrite("<p>no body</p>", clicks=False) == "<p>no body</p>" + pixel


def test_nothing_changes_with_tracking_off() -> None:
    assert rewrite(clicks=False, opens=False) == EMAIL


def test_the_pixel_is_a_transparent_1x1_gif() -> None:
    assert len(PIXEL_GIF) == 43
    assert PIXEL_GIF[:10] == b"GIF89a\x01\x00\x01\x00"  # 1 x 1
    assert PIXEL_GIF[19:23] == b"!\xf9\x04\x01"  # graphic control: transparency on
    assert PIXEL_GIF.endswith(b";")


# --- machine traffic -------------------------------------------------------------------------

SENT = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)
LATER = SENT + timedelta(hours=1)


def reason(
    *,
    kind: Literal["open", "click"] = "click",
    method: str = "GET",
    user_agent: str | None = CHROME,
    now: datetime = LATER,
) -> str | None:
    return machine_reason(
        kind=kind,
        method=method,
        user_agent=user_agent,
        sent_at=SENT,
        now=now,
        human_after_seconds=10,
    )


@pytest.mark.parametrize("kind", ["open", "click"])
@pytest.mark.parametrize(
    ("hit", "expected"),
    [
        ({}, None),
        ({"method": "HEAD"}, "head request"),
        ({"method": "head"}, "head request"),
        ({"now": SENT + timedelta(seconds=2)}, "too soon after sending"),
        ({"now": SENT + timedelta(seconds=10)}, None),
        ({"now": SENT - timedelta(seconds=5)}, "too soon after sending"),
        ({"user_agent": None}, "no user agent"),
        ({"user_agent": "  "}, "no user agent"),
        *[
            ({"user_agent": f"Mozilla/5.0 ({agent.upper()})"}, "link scanner")
            for agent in SCANNER_AGENTS
        ],
    ],
)
def test_machine_traffic_rules(
    kind: Literal["open", "click"], hit: Any, expected: str | None
) -> None:
    assert reason(kind=kind, **hit) == expected


@pytest.mark.parametrize(
    "agent",
    [
        *[f"Mozilla/5.0 (Windows NT 5.1) Firefox/11.0 (via {a.lower()})" for a in PROXY_AGENTS],
        *PREFETCH_AGENTS,
        " mozilla/5.0 ",
    ],
)
def test_mail_proxies_prefetch_opens_but_do_not_click(agent: str) -> None:
    assert reason(kind="open", user_agent=agent) == "mail proxy prefetch"
    assert reason(kind="click", user_agent=agent) is None


def test_without_a_send_time_the_timing_rule_is_skipped() -> None:
    assert (
        machine_reason(
            kind="click",
            method="GET",
            user_agent=CHROME,
            sent_at=None,
            now=LATER,
            human_after_seconds=10,
        )
        is None
    )


def test_head_wins_over_every_other_rule() -> None:
    assert reason(method="HEAD", user_agent=None, now=SENT) == "head request"


# --- through the web app ---------------------------------------------------------------------


def sent_message(rt: Runtime, *, ago: timedelta = timedelta(minutes=5)) -> int:
    """An outbox row that was sent ``ago`` before the real clock (the app reads it)."""
    lead = enroll(rt, "ada@example.com")
    return queue(rt, lead, status=MessageStatus.SENT, sent_at=utcnow() - ago)


def events(rt: Runtime) -> list[tuple[str, int | None, dict[str, Any], str | None]]:
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(EVENTS.c.type, EVENTS.c.message_id, EVENTS.c.data, EVENTS.c.source).order_by(
                EVENTS.c.id
            )
        ).all()
    return [(r.type, r.message_id, r.data, r.source) for r in rows]


def click_path(outbox_id: int, url: str = URL) -> str:
    return f"{CLICK_PATH}/{click_token(outbox_id, url, SECRET)}"


def open_path(outbox_id: int) -> str:
    return f"{OPEN_PATH}/{open_token(outbox_id, SECRET)}.gif"


def test_a_click_redirects_to_exactly_the_signed_url_and_records_it(
    client: TestClient, rt: Runtime
) -> None:
    outbox_id = sent_message(rt)
    response = client.get(
        click_path(outbox_id), headers={"User-Agent": CHROME}, follow_redirects=False
    )
    assert response.status_code == 302
    assert response.headers["location"] == URL
    assert response.headers["cache-control"] == "no-store, private"
    assert events(rt) == [("email_clicked", outbox_id, {"url": URL}, "tracking")]


def test_a_head_request_is_a_machine_click(client: TestClient, rt: Runtime) -> None:
    outbox_id = sent_message(rt)
    response = client.head(
        click_path(outbox_id), headers={"User-Agent": CHROME}, follow_redirects=False
    )
    assert response.status_code == 302
    assert response.headers["location"] == URL
    assert events(rt) == [
        ("machine_clicked", outbox_id, {"url": URL, "machine": "head request"}, "tracking")
    ]


def test_a_link_scanner_click_is_a_machine_click(client: TestClient, rt: Runtime) -> None:
    outbox_id = sent_message(rt)
    agent = "Mozilla/5.0 (compatible; BingPreview/1.0b)"
    response = client.get(
        click_path(outbox_id), headers={"User-Agent": agent}, follow_redirects=False
    )
    assert response.status_code == 302
    assert events(rt) == [
        ("machine_clicked", outbox_id, {"url": URL, "machine": "link scanner"}, "tracking")
    ]


def test_a_click_two_seconds_after_sending_is_machine_traffic(
    client: TestClient, rt: Runtime
) -> None:
    outbox_id = sent_message(rt, ago=timedelta(seconds=2))
    client.get(click_path(outbox_id), headers={"User-Agent": CHROME}, follow_redirects=False)
    assert [(e[0], e[2].get("machine")) for e in events(rt)] == [
        ("machine_clicked", "too soon after sending")
    ]


def test_a_tampered_click_token_is_a_404_and_records_nothing(
    client: TestClient, rt: Runtime
) -> None:
    outbox_id = sent_message(rt)
    token = click_token(outbox_id, URL, SECRET)
    signature = token.rpartition(".")[2]
    evil = base64.urlsafe_b64encode(b"https://evil.example/").rstrip(b"=").decode()
    for forged in (
        flip(token, len(token) - 2),
        f"{outbox_id}.{evil}.{signature}",
        click_token(outbox_id, "https://evil.example/", "not-our-secret-at-all"),
    ):
        response = client.get(f"{CLICK_PATH}/{forged}", follow_redirects=False)
        assert response.status_code == 404
        assert response.json() == {"detail": "this link is not valid"}
        assert "location" not in response.headers
    assert events(rt) == []


def test_a_click_on_an_unknown_outbox_row_is_a_404(client: TestClient, rt: Runtime) -> None:
    response = client.get(click_path(999), follow_redirects=False)
    assert response.status_code == 404
    assert events(rt) == []


def test_the_open_pixel_is_a_gif_and_records_an_open(client: TestClient, rt: Runtime) -> None:
    outbox_id = sent_message(rt)
    response = client.get(open_path(outbox_id), headers={"User-Agent": CHROME})
    assert response.status_code == 200
    assert response.content == PIXEL_GIF
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["cache-control"] == "no-store, private"
    assert events(rt) == [("email_opened", outbox_id, {}, "tracking")]


def test_an_apple_privacy_prefetch_is_a_machine_open(client: TestClient, rt: Runtime) -> None:
    outbox_id = sent_message(rt)
    client.get(open_path(outbox_id), headers={"User-Agent": "Mozilla/5.0"})
    assert events(rt) == [
        ("machine_opened", outbox_id, {"machine": "mail proxy prefetch"}, "tracking")
    ]


def test_a_head_request_for_the_pixel_is_a_machine_open(client: TestClient, rt: Runtime) -> None:
    outbox_id = sent_message(rt)
    response = client.head(open_path(outbox_id), headers={"User-Agent": CHROME})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert events(rt) == [("machine_opened", outbox_id, {"machine": "head request"}, "tracking")]


def test_a_bad_open_token_still_gets_the_gif_but_records_nothing(
    client: TestClient, rt: Runtime
) -> None:
    outbox_id = sent_message(rt)
    for path in (
        f"{OPEN_PATH}/{flip(open_token(outbox_id, SECRET), 0)}.gif",
        f"{OPEN_PATH}/garbage.gif",
        open_path(999),
    ):
        response = client.get(path, headers={"User-Agent": CHROME})
        assert response.status_code == 200
        assert response.content == PIXEL_GIF
    assert events(rt) == []


def test_the_links_rewritten_into_an_email_are_the_routes_the_app_serves(
    client: TestClient, rt: Runtime
) -> None:
    outbox_id = sent_message(rt)
    out = rewrite_html(
        EMAIL, outbox_id=outbox_id, base_url=BASE, secret=SECRET, clicks=True, opens=True
    )
    link = re.search(rf'href="{re.escape(BASE)}(/c/[^"]+)"', out)
    pixel = re.search(rf'src="{re.escape(BASE)}(/o/[^"]+)"', out)
    assert link is not None and pixel is not None
    headers = {"User-Agent": CHROME}
    click = client.get(html.unescape(link.group(1)), headers=headers, follow_redirects=False)
    assert click.headers["location"] == URL
    assert client.get(html.unescape(pixel.group(1)), headers=headers).content == PIXEL_GIF
    assert [e[0] for e in events(rt)] == ["email_clicked", "email_opened"]


def test_a_hit_while_the_send_is_not_yet_recorded_counts_from_the_claim(rt: Runtime) -> None:
    lead = enroll(rt, "ada@example.com")
    claimed = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)
    outbox_id = queue(rt, lead, status=MessageStatus.SENDING, claimed_at=claimed)
    hit: dict[str, Any] = {"kind": "click", "url": URL, "method": "GET", "user_agent": CHROME}
    soon = record_hit(rt, outbox_id=outbox_id, now=claimed + timedelta(seconds=3), **hit)
    later = record_hit(rt, outbox_id=outbox_id, now=claimed + timedelta(minutes=3), **hit)
    assert (soon, later) == ("machine_clicked", "email_clicked")
    assert record_hit(rt, outbox_id=outbox_id + 1, now=claimed, **hit) is None


def test_without_a_database_the_click_still_redirects_and_the_pixel_still_loads(
    client: TestClient, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox_id = sent_message(rt)

    def database_down(*args: Any, **kwargs: Any) -> str | None:
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr("leadflow.app.web.record_hit", database_down)
    click = client.get(click_path(outbox_id), follow_redirects=False)
    assert (click.status_code, click.headers["location"]) == (302, URL)
    assert client.get(open_path(outbox_id)).content == PIXEL_GIF
