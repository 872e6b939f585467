"""MIME building, Message-IDs and unsubscribe tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, cast

import pytest

from leadflow.mail.message import build_message, make_message_id
from leadflow.mail.rendering import RenderedEmail
from leadflow.unsubscribe import sign_token, unsubscribe_url, verify_token

SECRET = "k3y-for-tests-only-0123456789"
UNSUBSCRIBE = "https://leadflow.example/unsubscribe/" + "T" * 120
WHEN = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
RENDERED = RenderedEmail(
    subject="Grüße an Müller GmbH",
    text="Hallo Zoë,\n\nschön, von Ihnen zu hören.\n",
    html="<p>Hallo Zoë,</p><p>schön, von Ihnen zu hören.</p>\n",
)


def build(**overrides: Any) -> EmailMessage:
    arguments: dict[str, Any] = {
        "from_name": "Sam Rivera",
        "from_email": "sam@leadflow.example",
        "reply_to": "replies@leadflow.example",
        "to_name": "Zoë Ångström",
        "to_email": "zoe@example.com",
        "message_id": "<outbox-42@leadflow.example>",
        "date": WHEN,
        "unsubscribe_url": UNSUBSCRIBE,
        "unsubscribe_mailto": "unsubscribe@leadflow.example?subject=unsubscribe",
    }
    rendered = overrides.pop("rendered", RENDERED)
    arguments.update(overrides)
    return build_message(rendered, **arguments)


def wire(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=policy.SMTP)


def parse(data: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(data)


def test_message_is_multipart_alternative_with_text_then_html() -> None:
    parsed = parse(wire(build()))

    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert cast(EmailMessage, parts[0]).get_content().replace("\r\n", "\n") == RENDERED.text
    assert cast(EmailMessage, parts[1]).get_content().replace("\r\n", "\n") == RENDERED.html


def test_headers_round_trip_with_utf8_names_and_subject() -> None:
    data = wire(build(from_name="Müller GmbH"))
    parsed = parse(data)

    assert data.isascii()
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert str(parsed["Subject"]) == "Grüße an Müller GmbH"
    assert str(parsed["From"]) == "Müller GmbH <sam@leadflow.example>"
    assert str(parsed["To"]) == "Zoë Ångström <zoe@example.com>"
    assert str(parsed["Reply-To"]) == "replies@leadflow.example"
    assert str(parsed["Date"]) == "Tue, 04 Mar 2025 09:30:00 +0000"
    assert str(parsed["Message-ID"]) == "<outbox-42@leadflow.example>"


def test_list_unsubscribe_headers_for_one_click() -> None:
    data = wire(build())
    parsed = parse(data)

    assert str(parsed["List-Unsubscribe"]) == (
        f"<mailto:unsubscribe@leadflow.example?subject=unsubscribe>, <{UNSUBSCRIBE}>"
    )
    assert str(parsed["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    # A long URL is folded between the items, never turned into an encoded word.
    assert f"<{UNSUBSCRIBE}>".encode() in data
    assert b"=?utf-8?" not in data.split(b"List-Unsubscribe:")[1].split(b"\r\nList-")[0]


def test_list_unsubscribe_without_mailto() -> None:
    parsed = parse(wire(build(unsubscribe_mailto=None)))

    assert str(parsed["List-Unsubscribe"]) == f"<{UNSUBSCRIBE}>"


def test_crlf_in_a_lead_name_cannot_inject_headers() -> None:
    data = wire(
        build(
            to_name="Eve\r\nBcc: victim@example.com",
            from_name="Sam\nCc: other@example.com",
            rendered=RenderedEmail("Hi\r\nBcc: victim@example.com", "x\n", "<p>x</p>\n"),
        )
    )
    parsed = parse(data)

    assert parsed["Bcc"] is None
    assert parsed["Cc"] is None
    assert [a.addr_spec for a in parsed["To"].addresses] == ["zoe@example.com"]
    assert parsed["To"].addresses[0].display_name == "Eve Bcc: victim@example.com"
    assert str(parsed["Subject"]) == "Hi Bcc: victim@example.com"
    assert b"\r\nBcc:" not in data and b"\nCc:" not in data


@pytest.mark.parametrize(
    "overrides",
    [
        {"to_email": "zoe@example.com\r\nBcc: victim@example.com"},
        {"to_email": "not-an-address"},
        {"from_email": "sam <sam@leadflow.example>"},
        {"reply_to": "a@b.example, c@d.example"},
        {"message_id": "outbox-42@leadflow.example"},
        {"date": datetime(2025, 3, 4, 9, 30)},
        {"unsubscribe_url": "javascript:alert(1)"},
        {"unsubscribe_url": "https://leadflow.example/u/a b"},
        {"unsubscribe_mailto": "x@example.com>, <https://evil.example"},
        {"extra_headers": {"Bcc": "victim@example.com"}},
        {"extra_headers": {"X-Bad Name": "1"}},
        {"rendered": RenderedEmail(" \r\n ", "x\n", "<p>x</p>\n")},
    ],
)
def test_invalid_inputs_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        build(**overrides)


def test_extra_headers_are_added_on_one_line() -> None:
    parsed = parse(wire(build(extra_headers={"X-Leadflow-Cadence": "new_lead\r\nstep 1"})))

    assert str(parsed["X-Leadflow-Cadence"]) == "new_lead step 1"


def test_date_keeps_its_offset() -> None:
    parsed = parse(wire(build(date=WHEN.astimezone(timezone(timedelta(hours=2))))))

    assert str(parsed["Date"]) == "Tue, 04 Mar 2025 11:30:00 +0200"


def test_message_id_is_deterministic() -> None:
    assert make_message_id("outbox-42", "leadflow.example") == "<outbox-42@leadflow.example>"
    assert make_message_id("outbox-42", "LeadFlow.Example.") == "<outbox-42@leadflow.example>"
    assert make_message_id("lead:7/welcome 1", "leadflow.example") == make_message_id(
        "lead:7/welcome 1", "leadflow.example"
    )


def test_message_id_sanitises_unsafe_keys_without_collisions() -> None:
    unsafe = make_message_id("lead:7/welcome 1", "leadflow.example")
    lookalike = make_message_id("lead-7-welcome-1", "leadflow.example")

    assert unsafe == "<lead-7-welcome-1.68d5845afe903bff@leadflow.example>"
    assert lookalike == "<lead-7-welcome-1@leadflow.example>"
    assert make_message_id("<evil>\r\n@x", "leadflow.example") == (
        "<-evil----x.5fcebfca1aa5f7c3@leadflow.example>"
    )
    parsed = parse(wire(build(message_id=unsafe)))
    assert str(parsed["Message-ID"]) == unsafe


@pytest.mark.parametrize(("key", "domain"), [("", "leadflow.example"), ("k", "bad domain")])
def test_message_id_rejects_empty_key_or_bad_domain(key: str, domain: str) -> None:
    with pytest.raises(ValueError):
        make_message_id(key, domain)


# --- unsubscribe tokens ------------------------------------------------------------------


def test_unsubscribe_token_round_trip() -> None:
    token = sign_token("zoë@example.com", SECRET)

    assert verify_token(token, SECRET) == "zoë@example.com"
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert sign_token("zoë@example.com", SECRET) == token


@pytest.mark.parametrize(
    "token",
    [
        sign_token("dana@example.com", "another-secret-0123456789"),
        sign_token("dana@example.com", SECRET).replace("ZGFuYU", "ZXZl", 1),
        sign_token("dana@example.com", SECRET)[:-2],
        "",
        "no-dot-here",
        "%%%.%%%",
        ".",
    ],
)
def test_unsubscribe_token_rejects_forged_or_broken_tokens(token: str) -> None:
    assert verify_token(token, SECRET) is None


def test_unsubscribe_url_carries_a_verifiable_token() -> None:
    url = unsubscribe_url("https://leadflow.example/unsubscribe/", "dana@example.com", SECRET)

    prefix = "https://leadflow.example/unsubscribe/"
    assert url.startswith(prefix)
    assert verify_token(url.removeprefix(prefix), SECRET) == "dana@example.com"
