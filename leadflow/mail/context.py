"""What a template sees: its globals and the keys of each (one definition, used by the
renderer, the static checker and the sample data)."""

from __future__ import annotations

from typing import Final

TEMPLATE_GLOBALS: Final = frozenset({"lead", "sender", "unsubscribe_url", "message"})
LEAD_KEYS: Final = frozenset(
    {
        "email",
        "first_name",
        "last_name",
        "full_name",
        "company",
        "title",
        "industry",
        "country",
        "timezone",
        "stage",
        "score",
        "grade",
        "attributes",
    }
)
SENDER_KEYS: Final = frozenset({"name", "email", "reply_to", "company", "postal_address"})
MESSAGE_KEYS: Final = frozenset({"cadence", "step", "variant"})
