"""Signed unsubscribe tokens: the opt-out link must work without a login or a database lookup.

A token is ``<base64url(email)>.<base64url(HMAC-SHA256(secret, email))>`` without padding.
There is no expiry on purpose: CAN-SPAM requires an opt-out to keep working, and an old email
must still let its reader leave. The email is signed exactly as given; callers pass the
normalized address they store (the suppression list lower-cases it anyway).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

# Domain separation: a signature made for unsubscribing is useless for anything else.
_PURPOSE = b"leadflow-unsubscribe-v1:"
_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or any(ch not in _URLSAFE for ch in text):
        raise ValueError("not url-safe base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(email: str, secret: str) -> bytes:
    if not secret:
        raise ValueError("the unsubscribe secret must not be empty")
    return hmac.new(
        secret.encode("utf-8"), _PURPOSE + email.encode("utf-8"), hashlib.sha256
    ).digest()


def sign_token(email: str, secret: str) -> str:
    """A url-safe token that proves we issued an opt-out link for ``email``."""
    if not email:
        raise ValueError("cannot sign an empty email address")
    return f"{_b64encode(email.encode('utf-8'))}.{_b64encode(_signature(email, secret))}"


def verify_token(token: str, secret: str) -> str | None:
    """The email a token was issued for, or None if it is malformed or not ours."""
    payload, dot, signature = token.strip().partition(".")
    if not dot:
        return None
    try:
        email = _b64decode(payload).decode("utf-8")
        given = _b64decode(signature)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not email or not hmac.compare_digest(given, _signature(email, secret)):
        return None
    return email


def unsubscribe_url(base_url: str, email: str, secret: str) -> str:
    """``<base_url>/<token>``; the token needs no quoting (url-safe alphabet plus a dot)."""
    return f"{base_url.rstrip('/')}/{sign_token(email, secret)}"


UNSUBSCRIBE_PATH = "/unsubscribe"  # served by ``leadflow web`` (GET asks, POST unsubscribes)


def link_for(public_url: str, email: str, secret: str) -> str:
    """The one-click unsubscribe link that ``leadflow web`` serves for ``email``."""
    return unsubscribe_url(f"{public_url.rstrip('/')}{UNSUBSCRIBE_PATH}", email, secret)
