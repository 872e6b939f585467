"""MIME building, Message-IDs and unsubscribe tokens."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.mail.headers import POLICY, check_header_block
from leadflow.mail.message import build_wire, checked_headers, make_message_id
from leadflow.mail.rendering import RenderedEmail
from leadflow.mail.transport.transaction import flatten
from leadflow.unsubscribe import sign_token, unsubscribe_url, verify_token

SECRET = "k3y-for-tests-only-0123456789"
UNSUBSCRIBE = "https://leadflow.example/unsubscribe/" + "T" * 120
WHEN = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
RENDERED = RenderedEmail(
    subject="Grüße an Müller GmbH",
    text="Hallo Zoë,\n\nschön, von Ihnen zu hören.\n",
    html="<p>Hallo Zoë,</p><p>schön, von Ihnen zu hören.</p>\n",
)


ARGUMENTS: dict[str, Any] = {
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


def with_overrides(overrides: dict[str, Any]) -> tuple[RenderedEmail, dict[str, Any]]:
    """The email and the arguments ``build`` and ``build_bytes`` share, with ``overrides``."""
    overrides = dict(overrides)
    rendered = overrides.pop("rendered", RENDERED)
    return rendered, {**ARGUMENTS, **overrides}


def build(**overrides: Any) -> EmailMessage:
    rendered, arguments = with_overrides(overrides)
    return stdlib_message(rendered, **arguments)


def stdlib_message(rendered: RenderedEmail, **arguments: Any) -> EmailMessage:
    """The same message built by the ``email`` package from the same checked values: what
    ``build_wire`` is held to (headers written alike, parts decoding alike)."""
    h = checked_headers(rendered, **arguments)
    msg = EmailMessage(policy=POLICY)
    msg["Subject"] = h.subject
    msg["From"] = Address(display_name=h.from_name, addr_spec=h.from_email)
    msg["To"] = Address(display_name=h.to_name, addr_spec=h.to_email)
    if h.reply_to:
        msg["Reply-To"] = Address(display_name="", addr_spec=h.reply_to)
    msg["Date"] = h.date
    msg["Message-ID"] = h.message_id
    msg["List-Unsubscribe"] = h.unsubscribe
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in h.extra:
        msg[name] = value
    msg.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


def wire(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=policy.SMTP)


def build_bytes(**overrides: Any) -> bytes:
    """``build_wire`` with the same arguments as ``build``."""
    rendered, arguments = with_overrides(overrides)
    return build_wire(rendered, **arguments).data


# Every guarantee holds for the wire bytes the send path uses and for the email package's own
# message (flattened as the stdlib does) it is compared with.
Builder = Callable[..., bytes]
BUILDERS = pytest.mark.parametrize(
    "built", [lambda **o: wire(build(**o)), build_bytes], ids=["email_message", "wire"]
)


def parse(data: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(data)


@BUILDERS
def test_message_is_multipart_alternative_with_text_then_html(built: Builder) -> None:
    parsed = parse(built())

    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert cast(EmailMessage, parts[0]).get_content().replace("\r\n", "\n") == RENDERED.text
    assert cast(EmailMessage, parts[1]).get_content().replace("\r\n", "\n") == RENDERED.html


@BUILDERS
def test_headers_round_trip_with_utf8_names_and_subject(built: Builder) -> None:
    data = built(from_name="Müller GmbH")
    parsed = parse(data)

    assert data.isascii()
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert str(parsed["Subject"]) == "Grüße an Müller GmbH"
    assert str(parsed["From"]) == "Müller GmbH <sam@leadflow.example>"
    assert str(parsed["To"]) == "Zoë Ångström <zoe@example.com>"
    assert str(parsed["Reply-To"]) == "replies@leadflow.example"
    assert str(parsed["Date"]) == "Tue, 04 Mar 2025 09:30:00 +0000"
    assert str(parsed["Message-ID"]) == "<outbox-42@leadflow.example>"


@BUILDERS
def test_list_unsubscribe_headers_for_one_click(built: Builder) -> None:
    data = built()
    parsed = parse(data)

    assert str(parsed["List-Unsubscribe"]) == (
        f"<mailto:unsubscribe@leadflow.example?subject=unsubscribe>, <{UNSUBSCRIBE}>"
    )
    assert str(parsed["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    # A long URL is folded between the items, never turned into an encoded word.
    assert f"<{UNSUBSCRIBE}>".encode() in data
    assert b"=?utf-8?" not in data.split(b"List-Unsubscribe:")[1].split(b"\r\nList-")[0]


@BUILDERS
def test_list_unsubscribe_without_mailto(built: Builder) -> None:
    parsed = parse(built(unsubscribe_mailto=None))

    assert str(parsed["List-Unsubscribe"]) == f"<{UNSUBSCRIBE}>"


@BUILDERS
def test_crlf_in_a_lead_name_cannot_inject_headers(built: Builder) -> None:
    data = built(
        to_name="Eve\r\nBcc: victim@example.com",
        from_name="Sam\nCc: other@example.com",
        rendered=RenderedEmail("Hi\r\nBcc: victim@example.com", "x\n", "<p>x</p>\n"),
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
    with pytest.raises(ValueError):
        build_bytes(**overrides)


@BUILDERS
def test_extra_headers_are_added_on_one_line(built: Builder) -> None:
    parsed = parse(built(extra_headers={"X-Leadflow-Cadence": "new_lead\r\nstep 1"}))

    assert str(parsed["X-Leadflow-Cadence"]) == "new_lead step 1"


@BUILDERS
def test_date_keeps_its_offset(built: Builder) -> None:
    parsed = parse(built(date=WHEN.astimezone(timezone(timedelta(hours=2)))))
    utc = parse(built(date=WHEN))  # the same instant: the header must not be cached across

    assert str(parsed["Date"]) == "Tue, 04 Mar 2025 11:30:00 +0200"
    assert str(utc["Date"]) == "Tue, 04 Mar 2025 09:30:00 +0000"


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


# --- the wire form: the same message as the email package writes ------------------------

PROPERTY_SETTINGS = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
# Names that take the plain path (atoms) and names that need quoting or RFC 2047 encoding.
plain_names = st.lists(st.text(ATEXT, min_size=1, max_size=12), max_size=6).map(" ".join)
names = st.one_of(plain_names, st.text(ATEXT + ' .,:;"()<>@\\[]éß', max_size=40), st.text())
printable_words = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)
subjects = st.one_of(
    st.lists(printable_words, min_size=1, max_size=12).map(" ".join),  # ASCII, short or folded
    st.text(min_size=1, max_size=120),  # anything, control characters included
)
locals_ = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\.[A-Za-z0-9_-]{1,8}){0,2}", fullmatch=True
)
domains = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
    st.sampled_from(["bücher.example", "EXAMPLE.COM", "xn--bcher-kva.example"]),
)
uri_tails = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='<>"'))
message_ids = st.one_of(
    st.from_regex(r"<[A-Za-z0-9._-]{1,90}@[a-z0-9.-]{1,30}>", fullmatch=True),
    st.from_regex(r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,40}@[a-z0-9.-]{1,20}>", fullmatch=True),
)


def header_block(data: bytes) -> bytes:
    """The top-level headers, the multipart boundary replaced (the stdlib's is random)."""
    return re.sub(rb'boundary="[^"]*"', b'boundary="B"', data.split(b"\r\n\r\n", 1)[0])


def flattened(message: EmailMessage, *, utf8: bool) -> bytes:
    """What ``SmtpTransport`` sends for an ``EmailMessage`` (7-bit relay)."""
    return flatten(message, utf8=utf8, eight_bit=False)


@PROPERTY_SETTINGS
@given(
    from_name=names,
    to_name=names,
    subject=subjects,
    to_email=st.builds("{}@{}".format, locals_, domains),
    message_id=message_ids,
    offset_minutes=st.integers(-14 * 60, 14 * 60),
    url=uri_tails,
    mailto=st.none() | uri_tails,
    extra=st.text(max_size=100),
)
def test_wire_headers_are_the_email_packages_own(
    from_name: str,
    to_name: str,
    subject: str,
    to_email: str,
    message_id: str,
    offset_minutes: int,
    url: str,
    mailto: str | None,
    extra: str,
) -> None:
    arguments: dict[str, Any] = {
        "from_name": from_name,
        "from_email": "sam@leadflow.example",
        "reply_to": "replies@leadflow.example",
        "to_name": to_name,
        "to_email": to_email,
        "message_id": message_id,
        "date": datetime(2026, 11, 3, 14, 30, tzinfo=timezone(timedelta(minutes=offset_minutes))),
        "unsubscribe_url": f"https://leadflow.example/u/{url}",
        "unsubscribe_mailto": f"mailto:{mailto}" if mailto is not None else None,
        "extra_headers": {"X-Leadflow-Cadence": extra},
    }
    rendered = RenderedEmail(subject, "x\n", "<p>x</p>\n")
    try:
        message = stdlib_message(rendered, **arguments)
    except ValueError:
        with pytest.raises(ValueError):
            build_wire(rendered, **arguments)
        return
    built = build_wire(rendered, **arguments)

    expected = flattened(message, utf8=not to_email.isascii())
    assert header_block(built.data) == header_block(expected)
    # what delivery records: as the EmailMessage reported them
    assert (built.message_id, built.subject) == (
        str(message["Message-ID"]),
        str(message["Subject"]),
    )
    assert [key.lower() for key in parse(built.data)] == [
        "subject",
        "from",
        "to",
        "reply-to",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "x-leadflow-cadence",
        "mime-version",
        "content-type",
    ]


bodies = st.one_of(
    st.text(),
    st.lists(
        st.sampled_from(
            [
                *(".", "..", ". x", "From x", "a=b", "=?utf-8?q?x?=", " ", "\t", "x \t"),
                *("\r", "\r\n", "--===============0000000000000000000==", "é" * 40, "x" * 200),
                "\x00\x0b\x0c",
            ]
        ),
        max_size=20,
    ).map("\n".join),
)


@PROPERTY_SETTINGS
@given(text=bodies, document=bodies)
def test_wire_parts_decode_to_what_the_email_package_decodes(text: str, document: str) -> None:
    rendered = RenderedEmail("Hello", text, document)
    arguments: dict[str, Any] = {"rendered": rendered}
    ours, theirs = parse(build_bytes(**arguments)), parse(wire(build(**arguments)))

    def parts(message: EmailMessage) -> list[tuple[str, str, str]]:
        return [
            (part.get_content_type(), str(part["Content-Transfer-Encoding"]), part.get_content())
            for part in message.iter_parts()
            if isinstance(part, EmailMessage)
        ]

    assert parts(ours) == parts(theirs)
    assert len(parts(ours)) == 2
    assert not ours.defects and all(not part.defects for part in ours.iter_parts())


def test_wire_message_is_7bit_crlf_and_the_same_bytes_on_every_attempt() -> None:
    data = build_bytes()

    assert data == build_bytes()
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")
    head, body = data.split(b"\r\n\r\n", 1)
    assert max(len(line) for line in head.split(b"\r\n")) <= 998  # List-Unsubscribe is long
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # quoted-printable
    assert data.endswith(b"--\r\n")


def test_wire_headers_for_a_non_ascii_address_are_utf8() -> None:
    """As the transport flattens an EmailMessage for it: RFC 6532 headers (needs SMTPUTF8)."""
    data = build_bytes(to_email="zoe@bücher.example")
    parsed = Parser(policy=policy.default).parsestr(data.decode("utf-8"))

    assert header_block(data) == header_block(
        flattened(build(to_email="zoe@bücher.example"), utf8=True)
    )
    assert "Zoë Ångström <zoe@bücher.example>".encode() in data
    assert parsed["To"].addresses[0].addr_spec == "zoe@bücher.example"


@pytest.mark.parametrize(
    "block",
    [
        "Subject: hi\r\nBcc: victim@example.com\r\n",  # a header nobody meant to set
        "Subject: hi\r\n\r\nBody\r\n",  # an empty line: the body would start early
        "Subject: hi\nBcc: victim@example.com\r\n",  # a bare line feed
        "Subject: hi",  # not terminated
    ],
)
def test_header_block_check_refuses_lines_no_expected_header_started(block: str) -> None:
    names = frozenset({"subject"})
    check_header_block("Subject: hi\r\n folded on\r\n", names, utf8=False)

    with pytest.raises(ValueError):
        check_header_block(block, names, utf8=False)


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
