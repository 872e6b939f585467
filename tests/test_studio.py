"""``leadflow studio``: the real app served by uvicorn on 127.0.0.1 over a copy of the shipped
templates, a real SQLite/PostgreSQL database, test sends to a real aiosmtpd sink."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from conftest import DEFAULT_CONFIG, ROOT, T0, TEMPLATES, Cli, database_url, insert_lead
from seeding import intake_lead
from starlette.testclient import TestClient
from test_rendering import EXPECTED_NAMES

from leadflow.app.preview import TEST_UNSUBSCRIBE_URL, preview_context
from leadflow.app.studio import SendLimit, Studio, allowed_hosts, create_studio_app
from leadflow.config import ConfigError
from leadflow.mail.rendering import TemplateSet
from leadflow.mail.sink import SmtpSink
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from leadflow.unsubscribe import link_for

if TYPE_CHECKING:
    from browser import Chromium
    from playwright.sync_api import Page

pytest_plugins = ["browser"]  # the session's chromium (imported by pytest, not here)

SHIPPED = EXPECTED_NAMES  # the shipped templates, listed once in test_rendering
WELCOME_SUBJECT = "Welcome, Dana: a quick hello from Acme Analytics Inc."


class Served:
    """A studio served on a free loopback port, with its templates folder and SMTP sink."""

    def __init__(self, studio: Studio, url: str, folder: Path, sink: SmtpSink) -> None:
        self.studio, self.url, self.folder, self.sink = studio, url, folder, sink
        # the page's own Origin, as a browser sends it on the page's POSTs
        self.http = httpx.Client(base_url=url, timeout=10, headers={"Origin": url})

    def get(self, path: str, **params: str) -> Any:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("studio")
    folder = home / "templates"
    shutil.copytree(TEMPLATES, folder)
    with SmtpSink(None) as sink:
        settings = Settings(
            home=home,
            database_url=database_url(home),
            config=DEFAULT_CONFIG,
            templates=folder,
            demo=True,
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
        )
        studio = Studio.open(settings)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                create_studio_app(studio),
                log_level="warning",
                ws="none",
                lifespan="on",
                timeout_graceful_shutdown=1,
            )
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the studio did not start"
            time.sleep(0.02)
        done = Served(studio, f"http://127.0.0.1:{port}", folder, sink)
        try:
            yield done
        finally:
            done.http.close()
            studio.closed = True  # ends the event streams, so the server can stop
            server.should_exit = True
            thread.join(timeout=30)
            listener.close()


@pytest.fixture
def welcome(served: Served) -> Iterator[Path]:
    """welcome.html.j2 of the studio's folder, put back as shipped after the test."""
    path = served.folder / "welcome.html.j2"
    yield path
    original = (TEMPLATES / "welcome.html.j2").read_text(encoding="utf-8")
    if path.read_text(encoding="utf-8") != original:
        generation = served.studio.generation
        path.write_text(original, encoding="utf-8")
        wait_for_generation(served, generation)


def wait_for_generation(served: Served, generation: int) -> None:
    deadline = time.monotonic() + 10
    while served.studio.generation == generation:
        assert time.monotonic() < deadline, "the studio never saw the change"
        time.sleep(0.01)


def test_lists_every_template_of_the_config_folder(served: Served) -> None:
    listed = served.get("/api/templates")
    assert listed["templates"] == SHIPPED
    assert listed["folder"] == str(served.folder)
    assert listed["watch"] in ("watchfiles", "polling")


def test_renders_subject_text_and_html_for_the_sample_lead_as_preview_does(
    served: Served,
) -> None:
    shown = served.get("/api/render", template="welcome")
    expected = (
        TemplateSet(served.folder)
        .compile("welcome")
        .render(preview_context(served.studio.rt, None))
    )
    assert shown["subject"] == WELCOME_SUBJECT == expected.subject
    assert shown["text"] == expected.text
    assert shown["text"].startswith(
        "Hi Dana,\n\nThanks for your interest in Acme Analytics Inc. I'm Ada Byron, and I'll be"
    )
    assert shown["html"] == expected.html
    assert '<p style="margin: 0 0 16px 0;">Hi Dana,</p>' in shown["html"]
    assert shown["problems"] == []
    assert shown["lead"] is None


def test_renders_for_a_real_lead_by_email_keeping_its_data_as_data(served: Served) -> None:
    hostile = '<script>alert("x")</script>'
    insert_lead(
        served.studio.rt.engine,
        intake_lead("mallory@evil.example", now=T0, first_name=hostile, company="Evil & Co"),
    )
    shown = served.get("/api/render", template="welcome", lead="mallory@evil.example")
    assert shown["lead"] == "mallory@evil.example"
    assert shown["subject"] == f"Welcome, {hostile}: a quick hello from Acme Analytics Inc."
    assert '>Hi &lt;script&gt;alert("x")&lt;/script&gt;,</p>' in shown["html"]
    assert "<script>" not in shown["html"]
    assert "Evil &amp; Co" in shown["html"]
    assert shown["text"].startswith(f"Hi {hostile},\n")

    unknown = served.http.get(
        "/api/render", params={"template": "welcome", "lead": "nobody@example.com"}
    )
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"error": "no lead with email 'nobody@example.com'"},
    )


def test_an_edit_is_picked_up_and_the_next_render_shows_it(
    served: Served, welcome: Path, record_property: Any
) -> None:
    """Save -> the page's event -> its render, through the event stream the page listens to;
    the times are reported, not asserted."""
    source = welcome.read_text(encoding="utf-8")
    timings: list[float] = []
    with served.http.stream("GET", "/events", timeout=10) as stream:
        lines = stream.iter_lines()
        assert next(lines) == "retry: 1000"
        assert next(lines) == "event: hello"
        for n in range(1, 6):
            subject = f"Edit {n} for {{{{ lead.first_name }}}}"
            edited = source.replace(
                'Welcome, {{ lead.first_name or "there" }}: a quick hello from '
                "{{ sender.company }}",
                subject,
            )
            saved = time.perf_counter()
            welcome.write_text(edited, encoding="utf-8")
            line = next(lines)
            while line != "event: change":
                line = next(lines)
            shown = served.get("/api/render", template="welcome")
            timings.append((time.perf_counter() - saved) * 1000)
            assert shown["subject"] == f"Edit {n} for Dana"
            assert shown["problems"] == []
    report = (
        f"save -> new render: median {statistics.median(timings):.0f} ms, "
        f"max {max(timings):.0f} ms over {len(timings)} saves "
        f"({served.studio.watch_method}); last render {shown['render_ms']} ms"
    )
    record_property("save_to_render", report)
    print(report)


def test_a_new_template_file_is_listed_and_rendered_once_saved(served: Served) -> None:
    generation = served.studio.generation
    added = served.folder / "spring_offer.html.j2"
    added.write_text(
        '{% extends "base.html.j2" %}\n'
        "{% block subject %}Spring offer for {{ lead.company }}{% endblock %}\n"
        "{% block content %}<p>Hello {{ lead.first_name }}</p>{% endblock %}\n",
        encoding="utf-8",
    )
    try:
        wait_for_generation(served, generation)
        assert served.get("/api/templates")["templates"] == sorted([*SHIPPED, "spring_offer"])
        shown = served.get("/api/render", template="spring_offer")
        assert shown["subject"] == "Spring offer for Northwind Logistics"
        assert shown["problems"] == []
    finally:
        generation = served.studio.generation
        added.unlink()
        wait_for_generation(served, generation)
    assert served.get("/api/templates")["templates"] == SHIPPED
    gone = served.http.get("/api/render", params={"template": "spring_offer"})
    assert (gone.status_code, gone.json()) == (404, {"error": "unknown template 'spring_offer'"})


def test_a_broken_template_shows_its_error_with_its_line_and_the_page_still_serves(
    served: Served, welcome: Path
) -> None:
    lines = (TEMPLATES / "welcome.html.j2").read_text(encoding="utf-8").splitlines()

    generation = served.studio.generation
    lines[3] = "<p>Hi {{ lead.first_name or }},</p>"
    welcome.write_text("\n".join(lines) + "\n", encoding="utf-8")
    wait_for_generation(served, generation)
    shown = served.get("/api/render", template="welcome")
    assert (shown["subject"], shown["text"], shown["html"]) == (None, None, None)
    assert shown["problems"] == [
        {
            "file": "welcome.html.j2",
            "line": 4,
            "message": "syntax error: unexpected 'end of print statement'",
            "source": "<p>Hi {{ lead.first_name or }},</p>",
        }
    ]

    generation = served.studio.generation
    lines[3] = "<p>Hi {{ lead.frist_name }},</p>"
    welcome.write_text("\n".join(lines) + "\n", encoding="utf-8")
    wait_for_generation(served, generation)
    shown = served.get("/api/render", template="welcome")
    assert shown["subject"] is None
    assert shown["problems"][0] == {
        "file": "welcome.html.j2",
        "line": 4,
        "message": "unknown field lead.frist_name (did you mean 'lead.first_name'?)",
        "source": "<p>Hi {{ lead.frist_name }},</p>",
    }

    page = served.http.get("/")
    assert page.status_code == 200
    assert '<iframe id="desktop" sandbox=""' in page.text
    other = served.get("/api/render", template="revival")
    assert other["subject"] and other["problems"] == []
    assert served.get("/api/templates")["templates"] == SHIPPED


def test_a_render_shows_the_renderers_compliance_errors(served: Served, welcome: Path) -> None:
    generation = served.studio.generation
    source = (TEMPLATES / "base.html.j2").read_text(encoding="utf-8")
    # a copy of the layout without its unsubscribe link, used by welcome only
    (served.folder / "_nolink.html.j2").write_text(
        source.replace("{{ unsubscribe_url }}", "https://example.com/"), encoding="utf-8"
    )
    text = (TEMPLATES / "welcome.html.j2").read_text(encoding="utf-8")
    welcome.write_text(text.replace('"base.html.j2"', '"_nolink.html.j2"'), encoding="utf-8")
    try:
        wait_for_generation(served, generation)
        shown = served.get("/api/render", template="welcome")
        assert shown["subject"] is None
        assert shown["problems"] == [
            {
                "file": "welcome.html.j2",
                "line": 0,
                "message": "test render with sample data failed: the HTML part has no link to "
                "unsubscribe_url (required by CAN-SPAM)",
                "source": "",
            }
        ]
    finally:
        generation = served.studio.generation
        (served.folder / "_nolink.html.j2").unlink()
        wait_for_generation(served, generation)


def test_the_studio_opens_over_a_broken_template_that_runtime_open_refuses(
    tmp_path: Path,
) -> None:
    """One way to open: ``Runtime.open(check_templates=False)``, the rest as every command."""
    folder = tmp_path / "templates"
    shutil.copytree(TEMPLATES, folder)
    welcome = folder / "welcome.html.j2"
    welcome.write_text(
        welcome.read_text(encoding="utf-8").replace("{{ lead.first_name", "{{ lead.frist_name"),
        encoding="utf-8",
    )
    settings = Settings(
        home=tmp_path,
        database_url=database_url(tmp_path),
        config=DEFAULT_CONFIG,
        templates=folder,
        demo=True,
    )
    with pytest.raises(ConfigError, match="frist_name"):
        Runtime.open(settings)
    studio = Studio.open(settings, watch=False)
    try:
        shown = studio.render("welcome")
        assert shown["subject"] is None
        assert "unknown field lead.frist_name" in shown["problems"][0]["message"]
        assert studio.render("revival")["problems"] == []
    finally:
        studio.close()


def test_lists_the_variables_a_template_may_use_with_sample_values(served: Served) -> None:
    listed = served.get("/api/variables")
    names = [row["name"] for row in listed["variables"]]
    samples = {row["name"]: row["sample"] for row in listed["variables"]}
    assert names == [
        "lead.attributes.contract_end",
        "lead.attributes.plan_interest",
        "lead.attributes.web_visits",
        "lead.company",
        "lead.country",
        "lead.country_label",
        "lead.email",
        "lead.first_name",
        "lead.full_name",
        "lead.grade",
        "lead.industry",
        "lead.industry_label",
        "lead.last_name",
        "lead.score",
        "lead.stage",
        "lead.timezone",
        "lead.title",
        "message.cadence",
        "message.step",
        "message.variant",
        "sender.company",
        "sender.email",
        "sender.name",
        "sender.postal_address",
        "sender.reply_to",
        "unsubscribe_url",
    ]
    assert samples["lead.first_name"] == "Dana"
    assert samples["lead.full_name"] == "Dana Whitfield"
    assert samples["lead.industry"] == "logistics"
    assert samples["lead.industry_label"] == "Logistics"
    assert samples["lead.attributes.web_visits"] == "sample web_visits"
    assert samples["sender.company"] == "Acme Analytics Inc."
    assert samples["unsubscribe_url"] == "https://leadflow.example/unsubscribe/sample-token"
    assert [f["name"] for f in listed["filters"]] == ["article", "end_sentence"]


def test_a_test_send_arrives_at_the_smtp_sink_with_a_test_subject(served: Served) -> None:
    before = len(served.sink.messages)
    response = served.http.post(
        "/api/send-test", json={"template": "welcome", "to": "marketer@example.com"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["subject"] == f"[test] {WELCOME_SUBJECT}"
    assert response.json()["outcome"] == "sent"
    (received,) = served.sink.messages[before:]
    assert received.recipients == ("marketer@example.com",)
    message = message_from_bytes(received.data, policy=default_policy)
    assert message["Subject"] == f"[test] {WELCOME_SUBJECT}"
    assert message["To"] == "marketer@example.com"
    assert message["X-Leadflow-Test"] == "1"


def test_a_test_send_for_a_real_lead_carries_its_data_but_no_working_link(
    served: Served,
) -> None:
    rt = served.studio.rt
    insert_lead(rt.engine, intake_lead("real.lead@customer.example", now=T0, first_name="Rhea"))
    signed = link_for(
        rt.settings.public_url,
        "real.lead@customer.example",
        rt.settings.secret_key.get_secret_value(),
    )
    assert (
        signed
        in served.get("/api/render", template="welcome", lead="real.lead@customer.example")["html"]
    )
    before = len(served.sink.messages)
    response = served.http.post(
        "/api/send-test",
        json={
            "template": "welcome",
            "to": "anyone@elsewhere.example",
            "lead": "real.lead@customer.example",
        },
    )
    assert response.status_code == 200, response.text
    assert (
        response.json()["subject"] == "[test] Welcome, Rhea: a quick hello from Acme Analytics Inc."
    )
    (received,) = served.sink.messages[before:]
    assert received.recipients == ("anyone@elsewhere.example",)
    message = message_from_bytes(received.data, policy=default_policy)
    html_part, text_part = message.get_body(("html",)), message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html, text = html_part.get_content(), text_part.get_content()
    assert "Hi Rhea," in text and ">Hi Rhea,</p>" in html  # the lead's data, as the page showed
    assert f'href="{TEST_UNSUBSCRIBE_URL}"' in html
    assert TEST_UNSUBSCRIBE_URL in text
    assert f"<{TEST_UNSUBSCRIBE_URL}>" in message["List-Unsubscribe"]
    headers = "\n".join(f"{name}: {value}" for name, value in message.items())
    for part in (html, text, headers):  # no signed link of any kind, body or header
        assert rt.settings.public_url not in part
        assert "/unsubscribe/" not in part.replace(TEST_UNSUBSCRIBE_URL, "")


def test_test_sends_past_ten_a_minute_are_refused_with_429(served: Served) -> None:
    now = [1000.0]
    kept = served.studio.send_limit
    served.studio.send_limit = SendLimit(clock=lambda: now[0])
    send = {"template": "welcome", "to": "marketer@example.com"}
    before = len(served.sink.messages)
    try:
        codes = [served.http.post("/api/send-test", json=send).status_code for _ in range(10)]
        assert codes == [200] * 10
        now[0] += 59.5
        refused = served.http.post("/api/send-test", json=send)
        assert (refused.status_code, refused.json()) == (
            429,
            {"error": "not sent: at most 10 test sends per 60 seconds; try again in 1 s"},
        )
        assert len(served.sink.messages) == before + 10
        now[0] += 0.5  # the first send is a minute old: one more may go
        assert served.http.post("/api/send-test", json=send).status_code == 200
        assert len(served.sink.messages) == before + 11
    finally:
        served.studio.send_limit = kept


@pytest.mark.parametrize("field", ["to", "lead"])
def test_a_test_send_with_an_address_over_320_characters_is_refused_unread(
    served: Served, field: str
) -> None:
    body = {"template": "welcome", "to": "marketer@example.com", field: "a" * 309 + "@example.com"}
    before = len(served.sink.messages)
    response = served.http.post("/api/send-test", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "string_too_long"
    assert response.json()["detail"][0]["loc"] == ["body", field]
    assert len(served.sink.messages) == before


@pytest.mark.parametrize(
    ("to", "error"),
    [
        ("not-an-address", "the address: 'not-an-address' is not an email address"),
        ("a@example.com\r\nBcc: b@example.com", "the address takes one email address"),
        ("a@example.com, b@example.com", "the address takes one email address"),
    ],
)
def test_a_test_send_to_anything_but_one_address_is_refused(
    served: Served, to: str, error: str
) -> None:
    before = len(served.sink.messages)
    response = served.http.post("/api/send-test", json={"template": "welcome", "to": to})
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    assert len(served.sink.messages) == before


def test_the_studio_refuses_other_sites(served: Served) -> None:
    rebinding = served.http.get("/api/templates", headers={"Host": "evil.example"})
    assert rebinding.status_code == 400
    cross = served.http.post(
        "/api/send-test",
        json={"template": "welcome", "to": "a@example.com"},
        headers={"Origin": "https://evil.example"},
    )
    assert (cross.status_code, cross.json()) == (403, {"error": "cross-origin request refused"})
    before = len(served.sink.messages)
    bare = httpx.post(  # no Origin at all (not a browser's page): refused too
        served.url + "/api/send-test", json={"template": "welcome", "to": "a@example.com"}
    )
    assert (bare.status_code, bare.json()) == (
        403,
        {"error": "refused: a POST needs the Origin of the studio's own page"},
    )
    same = httpx.post(  # a browser that says same-origin instead of sending an Origin
        served.url + "/api/send-test",
        json={"template": "welcome", "to": "not-an-address"},
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code == 400  # past the Origin check, refused for its address
    assert len(served.sink.messages) == before
    form = served.http.post(
        "/api/send-test",
        content=json.dumps({"template": "welcome", "to": "a@example.com"}),
        headers={"Content-Type": "text/plain"},
    )
    assert form.status_code == 422
    page = served.http.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize("bound", ["0.0.0.0", "::"])
def test_bound_to_every_interface_the_studio_refuses_foreign_hosts_and_origins(
    served: Served, bound: str
) -> None:
    """DNS rebinding: attacker.example resolves to this machine, so its page's requests carry
    ``Host: attacker.example:8765`` and, on a POST, ``Origin: http://attacker.example:8765``."""
    hosts = allowed_hosts(bound, ["studio.lan"])
    assert hosts == ["127.0.0.1", "::1", "[::1]", "localhost", "studio.lan"]  # never "*"
    app = create_studio_app(served.studio, hosts=hosts, port=8765)
    client = TestClient(app, base_url="http://studio.lan:8765")  # no lifespan: not started
    evil = {"Host": "attacker.example:8765", "Origin": "http://attacker.example:8765"}
    send = {"template": "welcome", "to": "marketer@example.com"}
    before = len(served.sink.messages)

    render = client.get("/api/render", params={"template": "welcome"}, headers=evil)
    assert (render.status_code, render.text) == (400, "Invalid host header")
    posted = client.post("/api/send-test", json=send, headers=evil)
    assert (posted.status_code, posted.text) == (400, "Invalid host header")
    for origin in (
        "http://attacker.example:8765",  # a foreign Origin with an allowed Host
        "http://studio.lan:9999",  # another port
        "https://studio.lan:8765",  # another scheme
        "null",
    ):
        own_host = {"Host": "studio.lan:8765", "Origin": origin}
        render = client.get("/api/render", params={"template": "welcome"}, headers=own_host)
        assert (render.status_code, render.json()) == (
            403,
            {"error": "cross-origin request refused"},
        ), origin
        posted = client.post("/api/send-test", json=send, headers=own_host)
        assert (posted.status_code, posted.json()) == (
            403,
            {"error": "cross-origin request refused"},
        ), origin
    assert len(served.sink.messages) == before

    for name in ("studio.lan", "localhost", "127.0.0.1", "[::1]"):
        own = {"Host": f"{name}:8765", "Origin": f"http://{name}:8765"}
        render = client.get("/api/render", params={"template": "welcome"}, headers=own)
        assert (render.status_code, render.json()["subject"]) == (200, WELCOME_SUBJECT), name
    posted = client.post(
        "/api/send-test",
        json=send,
        headers={"Host": "studio.lan:8765", "Origin": "http://studio.lan:8765"},
    )
    assert (posted.status_code, posted.json()["outcome"]) == (200, "sent")
    assert len(served.sink.messages) == before + 1


@pytest.mark.parametrize("name", ["*", "*.example.com", "studio.lan:8765", "http://studio.lan"])
def test_allow_host_takes_only_a_plain_name(name: str) -> None:
    with pytest.raises(ValueError, match="give one host name or address"):
        allowed_hosts("127.0.0.1", [name])


def test_the_studio_command_binds_loopback_on_8765_by_default(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``leadflow studio`` with no options, run for real up to the server, which records what
    it was asked to bind instead of binding it."""
    asked: list[dict[str, Any]] = []

    def record(studio: Studio, **kwargs: Any) -> None:
        asked.append(kwargs)
        studio.close()

    monkeypatch.setattr("leadflow.app.studio.serve_studio", record)
    code, out, err = cli("studio")
    assert (code, err) == (0, "")
    assert asked == [{"host": "127.0.0.1", "port": 8765, "allow_hosts": ()}]
    assert out.splitlines()[0] == "leadflow studio on http://127.0.0.1:8765/ (Ctrl-C stops it)"


def test_in_a_browser_at_desktop_and_phone_width_a_picked_template_shows_its_subject(
    served: Served, chromium: Chromium, screenshot: Callable[[Page, str], Path]
) -> None:
    expected = served.get("/api/render", template="revival")["subject"]

    def pick_revival(label: str) -> Callable[[Page], dict[str, Any]]:
        def work(page: Page) -> dict[str, Any]:
            page.get_by_role("button", name="revival", exact=True).click()
            page.wait_for_selector('body[data-rendered$=":revival"]')  # no eval: CSP
            frame = page.frame_locator("#phone").locator("body")
            seen = {
                "subject": page.locator("#subject").text_content(),
                "email_in_frame": frame.inner_text(),
                "sandbox": page.get_attribute("#phone", "sandbox"),
                "phone_shown": page.locator("#phone").is_visible(),
                "desktop_shown": page.locator("#desktop").is_visible(),
                "sideways": page.evaluate(
                    "document.documentElement.scrollWidth > window.innerWidth"
                ),
                "variables": page.locator("#variables tbody tr").count(),
            }
            screenshot(page, label)
            return seen

        return work

    desktop = chromium.open(served.url + "/", pick_revival("desktop"), viewport=chromium.DESKTOP)
    phone = chromium.open(served.url + "/", pick_revival("phone"), viewport=chromium.PHONE)
    for seen in (desktop, phone):
        assert seen["subject"] == expected
        assert "Dana" in seen["email_in_frame"]
        assert seen["sandbox"] == ""
        assert seen["phone_shown"] is True
        assert seen["sideways"] is False
        assert seen["variables"] == len(served.studio.variables()["variables"])
    assert desktop["desktop_shown"] is True  # side by side on a wide screen
    assert phone["desktop_shown"] is False  # the phone width alone on a narrow one


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_the_studio_command_serves_on_loopback_until_stopped_and_exits_cleanly(
    tmp_path: Path, stop: signal.Signals
) -> None:
    with socket.socket() as probe:  # a free port for the command to take
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "LEADFLOW_HOME": str(tmp_path),
        "LEADFLOW_DATABASE_URL": database_url(tmp_path),
        "LEADFLOW_CONFIG": str(DEFAULT_CONFIG),
        "LEADFLOW_TEMPLATES": str(TEMPLATES),
        "LEADFLOW_DEMO": "true",
    }
    command = [sys.executable, "-m", "leadflow.app.cli", "studio", "--port", str(port)]
    studio = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert studio.poll() is None, studio.communicate()
            try:
                listed = httpx.get(url + "/api/templates", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "leadflow studio did not answer"
                time.sleep(0.2)
        assert listed.json()["templates"] == SHIPPED
        with httpx.stream("GET", url + "/events", timeout=10) as stream:  # a page left open
            lines = stream.iter_lines()
            assert [next(lines), next(lines)] == ["retry: 1000", "event: hello"]
            studio.send_signal(stop)
            out, err = studio.communicate(timeout=30)
    finally:
        if studio.poll() is None:
            studio.kill()
            studio.communicate()
    assert studio.returncode == 0
    assert out.splitlines() == [
        f"leadflow studio on {url}/ (Ctrl-C stops it)",
        f"templates: {TEMPLATES} (12 emails)",
    ]
    assert "Traceback" not in err and "ERROR" not in err


def test_in_a_browser_a_save_shows_up_on_the_open_page_by_itself(
    served: Served, chromium: Chromium, welcome: Path, record_property: Any
) -> None:
    """The whole loop: the file saved, the page's event stream, its render, the subject on
    screen; the time from save to screen is reported, not asserted."""
    source = welcome.read_text(encoding="utf-8")
    old_subject = (
        'Welcome, {{ lead.first_name or "there" }}: a quick hello from {{ sender.company }}'
    )

    def save_and_watch(page: Page) -> tuple[float, str | None]:
        page.get_by_role("button", name="welcome", exact=True).click()
        page.wait_for_selector('body[data-rendered$=":welcome"]')
        saved = time.time() * 1000
        welcome.write_text(
            source.replace(old_subject, "Seen in the browser, {{ lead.first_name }}"),
            encoding="utf-8",
        )
        page.wait_for_selector('#subject:has-text("Seen in the browser, Dana")')
        shown = float(page.get_attribute("body", "data-rendered-at") or "nan")
        return shown - saved, page.locator("#timing").text_content()

    took, timing = chromium.open(served.url + "/", save_and_watch)
    assert timing is not None and timing.startswith("saved: rendered in ")
    report = f"save -> subject on screen in chromium: {took:.0f} ms ({timing})"
    record_property("save_to_screen", report)
    print(report)
