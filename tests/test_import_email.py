"""The email fast path (``values.simple_address``) against email-validator itself.

Intake skips email-validator for plainly simple addresses and only lower-cases them. That is
allowed only where it changes nothing: for every generated address, ``normalize_email``
(fast path first) and ``validated_email`` (email-validator always) must accept the same
addresses with the same stored form and reject the same ones with the same message.
The generators aim at the edges of the fast path's pattern: dots, hyphens and their doubles,
special-use and Punycode domains, numeric and one-letter top-level domains, non-ASCII letters
that case-fold or normalize to ASCII, lengths around the limits.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from leadflow.intake.values import (
    SIMPLE_ADDRESS_MAX,
    InvalidValue,
    normalize_email,
    simple_address,
    validated_email,
)

PROPERTY = settings(max_examples=800, deadline=None)

# characters that are valid, invalid, or only valid somewhere, in either part
EDGE_CHARACTERS = "aZ09.-_+@!#'`~ \t\u00e9\u0130\u212a\uff0e\u3002\u00df\u017f\u0131\"()<>[],;:\\"
PLAIN_LOCAL = st.sampled_from(list("abcXYZ0189._+-"))
PLAIN_LABEL = st.sampled_from(list("abcXYZ0189-"))
EDGY_LOCAL = st.sampled_from(list("abcXYZ0189._+-") + list("!#'~%\u00e9\u212a\""))
EDGY_LABEL = st.sampled_from([*"abcXYZ0189-", "--", "_", "\u00e9", "\u212a", "."])
TOP_LEVEL = st.sampled_from(
    [
        "com",
        "COM",
        "example",
        "de",
        "io",
        "c",
        "x1",
        "123",
        "local",
        "test",
        "invalid",
        "arpa",
        "onion",
        "localhost",
        "xn--p1ai",
        "xn--abc",
        "Local",
        "t-est",
        "",
    ]
)


def outcome(normalizer: object, value: str) -> tuple[str, str]:
    assert callable(normalizer)
    try:
        return ("accepted", normalizer(value))
    except InvalidValue as exc:
        return ("rejected", str(exc))


@st.composite
def addresses(draw: st.DrawFn) -> str:
    """Mostly near-simple addresses (the fast path's own alphabet, where its pattern has to
    draw every line right), some with characters from outside it."""
    edgy = draw(st.integers(0, 3)) == 0
    local_characters = EDGY_LOCAL if edgy else PLAIN_LOCAL
    label_characters = EDGY_LABEL if edgy else PLAIN_LABEL
    local = "".join(draw(st.lists(local_characters, min_size=0 if edgy else 1, max_size=20)))
    labels = draw(
        st.lists(
            st.lists(label_characters, min_size=0 if edgy else 1, max_size=12).map("".join),
            min_size=0 if edgy else 1,
            max_size=4,
        )
    )
    return local + "@" + ".".join([*labels, draw(TOP_LEVEL)])


@PROPERTY
@given(addresses())
@example("Ada@Example.COM")
@example("a..b@example.com")
@example(".a@example.com")
@example("a.@example.com")
@example("a@-example.com")
@example("a@example-.com")
@example("a@ex--ample.com")
@example("a@xn--bcher-kva.example")
@example("a@b.local")
@example("a@b.test")
@example("a@localhost.com")
@example("a@example.123")
@example("postmaster@example.com")
@example("a@example.c")
@example("\u212aelvin@example.com")
@example("a" * 60 + "@b.de")
@example("a" * 64 + "@" + "b" * 63 + ".com")
def test_generated_addresses_are_accepted_and_rejected_as_email_validator_does(
    address: str,
) -> None:
    assert outcome(normalize_email, address) == outcome(validated_email, address)


@PROPERTY
@given(st.text(alphabet=EDGE_CHARACTERS, max_size=40))
def test_any_text_is_accepted_and_rejected_as_email_validator_does(text: str) -> None:
    assert outcome(normalize_email, text) == outcome(validated_email, text)


@PROPERTY
@given(addresses())
def test_where_the_fast_path_answers_email_validator_stores_the_same_address(
    address: str,
) -> None:
    fast = simple_address(address)
    assume(fast is not None)  # every counted example is one the fast path answered
    assert fast == validated_email(address)


@pytest.mark.parametrize(
    ("address", "stored"),
    [
        ("Ada@Example.COM", "ada@example.com"),
        ("m.torvalds0@cleargate.example", "m.torvalds0@cleargate.example"),
        ("first.last+tag@sub.example-host.co.uk", "first.last+tag@sub.example-host.co.uk"),
        ("x_y-z@a1.b2.io", "x_y-z@a1.b2.io"),
    ],
)
def test_plain_addresses_take_the_fast_path(address: str, stored: str) -> None:
    assert simple_address(address) == stored
    assert validated_email(address) == stored


@pytest.mark.parametrize(
    "address",
    [
        "a..b@example.com",  # rejected by email-validator: it gives the reason
        ".a@example.com",
        "a@b.local",
        "a@xn--bcher-kva.example",  # Punycode: email-validator decodes it
        "jos\u00e9@example.com",  # not ASCII
        "a@example.123",
        "a" * 60 + "@b.de",  # longer than the fast path's limit
        " a@example.com",  # not trimmed yet
        '"a"@example.com',
    ],
)
def test_anything_not_plainly_simple_goes_to_email_validator(address: str) -> None:
    assert len(address) > SIMPLE_ADDRESS_MAX or simple_address(address) is None
