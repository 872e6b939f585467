"""What a template sees: its globals, the keys of each, and the builders of each part (one
definition, used by delivery, preview, the renderer, the static checker and the sample data).

The lead part is made of ``LEAD_COLUMNS`` (lead table columns, which is also what a claim
reads for it) plus ``full_name``; adding a template variable is adding it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol

TEMPLATE_GLOBALS: Final = frozenset({"lead", "sender", "unsubscribe_url", "message"})
LEAD_COLUMNS: Final = (
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "industry",
    "country",
    "timezone",
    "stage",
    "score",
    "grade",
    "attributes",
)
LEAD_KEYS: Final = frozenset({*LEAD_COLUMNS, "full_name"})
SENDER_KEYS: Final = frozenset({"name", "email", "reply_to", "company", "postal_address"})
MESSAGE_KEYS: Final = frozenset({"cadence", "step", "variant"})


class SenderFields(Protocol):
    """The sender block of the config (``config.schema.Sender``), as far as templates see it."""

    @property
    def from_name(self) -> str: ...
    @property
    def from_email(self) -> str: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def company(self) -> str | None: ...
    @property
    def postal_address(self) -> str | None: ...


def lead_context(lead: Mapping[str, Any]) -> dict[str, Any]:
    """``lead`` as a template sees it, from a lead row (or a claim's lead columns)."""
    values = {key: lead.get(key) for key in LEAD_COLUMNS}
    values["email"] = lead["email"]
    values["attributes"] = dict(lead.get("attributes") or {})
    first, last = values["first_name"] or "", values["last_name"] or ""
    values["full_name"] = f"{first} {last}".strip() or None
    return values


def sender_context(sender: SenderFields) -> dict[str, Any]:
    """``sender`` as a template sees it."""
    return {
        "name": sender.from_name,
        "email": sender.from_email,
        "reply_to": sender.reply_to,
        "company": sender.company,
        "postal_address": sender.postal_address,
    }


def message_context(cadence: str, step: str, variant: str | None) -> dict[str, Any]:
    """``message`` as a template sees it: which cadence step this email is."""
    return {"cadence": cadence, "step": step, "variant": variant}
