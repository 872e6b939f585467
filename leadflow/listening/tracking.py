"""Open pixels and click redirects: signed tokens, the HTML rewrite, and machine traffic.

Structure: pure functions, no I/O. The send path calls ``rewrite_html`` once per email; the
web app (``leadflow web``) serves ``CLICK_PATH`` and ``OPEN_PATH``, reads the tokens back and
asks ``machine_reason`` whether a hit was a person or a machine.

Tokens name the outbox row (and, for a click, the URL), never the recipient's address:

* open: ``<outbox id>.<signature>``
* click: ``<outbox id>.<base64url(url)>.<signature>``

The signature is HMAC-SHA256 over a purpose prefix plus everything before it in the token,
truncated to 16 bytes (128 bits, 22 characters) to keep links short. The prefixes differ from
the unsubscribe token's, so an open signature is no click signature and neither is an
unsubscribe signature. The token text itself is what is signed and compared (constant time),
so it has exactly one valid spelling. Only URLs that came out of a valid click token are ever
redirect targets, and ``click_token`` signs only absolute http(s) URLs. Tokens do not expire:
a link in an old email keeps working.

Only the HTML part is rewritten; there is no ``rewrite_text``. The plain-text part keeps its
links as written, so its reader sees the real address (a long redirect URL in plain text looks
like phishing), and clicks made there are not tracked.

Machine traffic (``machine_reason``; the first rule that matches wins, user agents are matched
case-insensitively as substrings):

====================================================  ==========  ========================
Hit                                                   Kind        Reason
====================================================  ==========  ========================
HTTP ``HEAD`` request                                 both        ``head request``
sooner than ``human_after_seconds`` after sending     both        ``too soon after sending``
no or blank ``User-Agent``                            both        ``no user agent``
user agent contains one of ``SCANNER_AGENTS``         both        ``link scanner``
user agent contains one of ``PROXY_AGENTS``           open        ``mail proxy prefetch``
user agent is exactly one of ``PREFETCH_AGENTS``      open        ``mail proxy prefetch``
(Apple Mail Privacy Protection sends ``Mozilla/5.0``)
anything else                                         both        None (a person)
====================================================  ==========  ========================
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Collection
from datetime import datetime
from html import escape as _escape
from html import unescape as _unescape
from typing import Final, Literal

CLICK_PATH: Final = "/c"
OPEN_PATH: Final = "/o"

# Domain separation: each purpose signs with its own prefix (unsubscribe uses its own).
_CLICK_PURPOSE: Final = b"leadflow-click-v1:"
_OPEN_PURPOSE: Final = b"leadflow-open-v1:"
_SIGNATURE_BYTES: Final = 16  # truncated HMAC-SHA256: 128 bits, 22 base64url characters
_SIGNATURE_CHARS: Final = 22
_URLSAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_WEB_SCHEMES: Final = ("http://", "https://")
_MAX_ID: Final = 2**63 - 1  # a BIGINT primary key

SCANNER_AGENTS: Final = (
    "BingPreview",  # Microsoft Safe Links
    "SafeLinks",
    "Barracuda",
    "Proofpoint",
    "Mimecast",
    "Symantec",
    "Trend Micro",
    "TrendMicro",
    "Cisco",
    "IronPort",
    "bot",
    "crawler",
    "spider",
    "python-requests",
    "curl",
    "wget",
    "Go-http-client",
    "HeadlessChrome",
)
PROXY_AGENTS: Final = ("GoogleImageProxy", "ggpht.com", "YahooMailProxy")
PREFETCH_AGENTS: Final = ("Mozilla/5.0",)  # the whole user agent, nothing else

_SCANNERS: Final = tuple(a.lower() for a in SCANNER_AGENTS)
_PROXIES: Final = tuple(a.lower() for a in PROXY_AGENTS)
_PREFETCHERS: Final = frozenset(a.lower() for a in PREFETCH_AGENTS)

# A transparent 1x1 GIF89a (43 bytes): one palette entry, transparency on, one pixel.
PIXEL_GIF: Final = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


# --- tokens ----------------------------------------------------------------------------------


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=16)
def _keyed(purpose: bytes, secret: str) -> hmac.HMAC:
    """The HMAC state after key and purpose: copying it halves the cost of each token."""
    if not secret:
        raise ValueError("the tracking secret must not be empty")
    return hmac.new(secret.encode("utf-8"), purpose, hashlib.sha256)


def _signature(purpose: bytes, signed: str, secret: str) -> str:
    mac = _keyed(purpose, secret).copy()
    mac.update(signed.encode("ascii"))
    return _b64encode(mac.digest()[:_SIGNATURE_BYTES])


def _verified(purpose: bytes, signed: str, signature: str, secret: str) -> bool:
    return len(signature) == _SIGNATURE_CHARS and hmac.compare_digest(
        signature.encode("ascii"), _signature(purpose, signed, secret).encode("ascii")
    )


def _row_id(text: str) -> int | None:
    """A positive id in plain ASCII digits (``int`` alone takes ``+7``, `` 7``, ``7_0``)."""
    if not text or len(text) > 19 or not (text.isascii() and text.isdigit()) or text[0] == "0":
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def _is_web_url(url: str) -> bool:
    return url[:8].lower().startswith(_WEB_SCHEMES)


def open_token(outbox_id: int, secret: str) -> str:
    """The token of the open pixel of outbox row ``outbox_id``."""
    if outbox_id <= 0:
        raise ValueError("an outbox id is a positive integer")
    payload = str(outbox_id)
    return f"{payload}.{_signature(_OPEN_PURPOSE, payload, secret)}"


def read_open_token(token: str, secret: str) -> int | None:
    """The outbox id an open token was issued for, or None if it is malformed or not ours."""
    if not token.isascii():
        return None
    payload, dot, signature = token.partition(".")
    outbox_id = _row_id(payload)
    if not dot or outbox_id is None or not _verified(_OPEN_PURPOSE, payload, signature, secret):
        return None
    return outbox_id


def click_token(outbox_id: int, url: str, secret: str) -> str:
    """The token of a tracked link to ``url`` (an absolute http(s) URL) in row ``outbox_id``."""
    if outbox_id <= 0:
        raise ValueError("an outbox id is a positive integer")
    if not _is_web_url(url):
        raise ValueError(f"only absolute http(s) URLs are tracked, not {url[:40]!r}")
    return _click_token(outbox_id, url, secret)


def _click_token(outbox_id: int, url: str, secret: str) -> str:
    payload = f"{outbox_id}.{_b64encode(url.encode('utf-8'))}"
    return f"{payload}.{_signature(_CLICK_PURPOSE, payload, secret)}"


def read_click_token(token: str, secret: str) -> tuple[int, str] | None:
    """``(outbox id, url)`` of a click token, or None if it is malformed or not ours."""
    if not token.isascii():
        return None
    payload, dot, signature = token.rpartition(".")
    id_text, dot2, encoded = payload.partition(".")
    outbox_id = _row_id(id_text)
    if not (dot and dot2 and encoded) or outbox_id is None or not set(encoded) <= _URLSAFE:
        return None
    if not _verified(_CLICK_PURPOSE, payload, signature, secret):
        return None
    try:
        url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return None
    return (outbox_id, url) if _is_web_url(url) else None


# --- the HTML rewrite ------------------------------------------------------------------------

# One pass finds both the href of every <a> tag and the closing </body>. The attributes before
# href are skipped one by one (quoted values included), so "data-href", "hreflang" and an
# "href=" inside another attribute's value are not taken for the link.
_VALUE: Final = r"""(?:"[^"]*"|'[^']*'|[^\s"'<>`]+)"""
_OTHER_ATTRIBUTE: Final = rf"""\s+(?!href\s*=)[^\s"'=<>/]+(?:\s*=\s*{_VALUE})?"""
_TAGS: Final = re.compile(
    rf"""<(?:a(?:{_OTHER_ATTRIBUTE})*\s+href\s*=\s*"""
    r"""(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<uq>[^\s"'<>`]+))"""
    r"""|(?P<body>/body\s*>))""",
    re.IGNORECASE,
)


def _pixel_tag(base: str, outbox_id: int, secret: str) -> str:
    """The invisible open-tracking image for row ``outbox_id`` (``base`` is escaped)."""
    src = f"{base}{OPEN_PATH}/{open_token(outbox_id, secret)}.gif"
    return f'<img src="{src}" width="1" height="1" alt="" style="display:none">'


def rewrite_html(
    html: str,
    *,
    outbox_id: int,
    base_url: str,
    secret: str,
    clicks: bool,
    opens: bool,
    keep: Collection[str] = (),
) -> str:
    """The HTML with tracked links and/or an open pixel.

    With ``clicks``, the ``href`` of each ``<a>`` tag that holds an absolute http(s) URL
    becomes ``{base_url}/c/{token}``, except URLs in ``keep`` (pass the unsubscribe link:
    it must stay as it is). Attribute values are unescaped before signing (the HTML is
    autoescaped, so ``&amp;`` stands for ``&``) and the new value is written escaped, in
    double quotes. ``mailto:``, ``tel:``, ``#anchors`` and relative links stay as they are.
    With ``opens``, an invisible 1x1 image goes just before the last ``</body>`` (or at the end).
    """
    if not (clicks or opens):
        return html
    if outbox_id <= 0:
        raise ValueError("an outbox id is a positive integer")
    # Tokens are url-safe base64 and dots: only the base URL can need escaping.
    base = _escape(base_url.rstrip("/"))
    prefix = f"{base}{CLICK_PATH}/"
    pieces: list[str] = []
    body_at = -1  # index in pieces of the last </body>
    done = 0
    for match in _TAGS.finditer(html):
        if match.lastgroup == "body":
            if opens:
                pieces.append(html[done : match.start()])
                body_at = len(pieces)
                done = match.start()
            continue
        if not clicks:
            continue
        group = match.lastgroup or "uq"
        url = _unescape(match.group(group)).strip()
        if not _is_web_url(url) or url in keep:
            continue
        start, end = match.span(group)
        tracked = prefix + _click_token(outbox_id, url, secret)
        pieces.append(html[done:start])
        pieces.append(f'"{tracked}"' if group == "uq" else tracked)  # quote what was bare
        done = end
    pieces.append(html[done:])
    if opens:
        pixel = _pixel_tag(base, outbox_id, secret)
        if body_at >= 0:
            pieces.insert(body_at, pixel)
        else:
            pieces.append(pixel)
    return "".join(pieces)


# --- machine traffic -------------------------------------------------------------------------


def machine_reason(
    *,
    kind: Literal["open", "click"],
    method: str,
    user_agent: str | None,
    sent_at: datetime | None,
    now: datetime,
    human_after_seconds: int,
) -> str | None:
    """Why a hit is machine traffic, or None when a person made it (module docstring)."""
    if method.upper() == "HEAD":
        return "head request"
    if sent_at is not None and (now - sent_at).total_seconds() < human_after_seconds:
        return "too soon after sending"
    agent = (user_agent or "").strip().lower()
    if not agent:
        return "no user agent"
    if any(token in agent for token in _SCANNERS):
        return "link scanner"
    if kind == "open" and (agent in _PREFETCHERS or any(token in agent for token in _PROXIES)):
        return "mail proxy prefetch"
    return None
