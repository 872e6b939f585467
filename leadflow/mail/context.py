"""What a template sees: its globals, the keys of each, and the builders of each part (one
definition, used by delivery, preview, the renderer, the static checker and the sample data).

The lead part is made of ``LEAD_COLUMNS`` (lead table columns, which is also what a claim
reads for it) plus ``full_name`` and a ``<field>_label`` per ``LABELLED_FIELDS`` (the display
label of a coded value, from the YAML's ``labels``); adding a template variable is adding it
here. ``TEMPLATE_FILTERS`` are the filters templates get beyond Jinja's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
# Lead fields holding codes ("ecommerce", "US") that templates show through a label.
LABELLED_FIELDS: Final = ("industry", "country")
LEAD_KEYS: Final = frozenset(
    {*LEAD_COLUMNS, "full_name", *(f"{field}_label" for field in LABELLED_FIELDS)}
)
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


Labels = Mapping[str, Mapping[str, str]]  # field -> code -> label (the YAML's ``labels``)
NO_LABELS: Final[Labels] = {}


def label(value: Any, labels: Mapping[str, str]) -> str | None:
    """The display label of a coded value: its entry in ``labels`` (exact, else ignoring
    case), else the code itself made readable: a code in lower case gets its ``_`` as spaces
    and a capital first letter (``real_estate`` -> ``Real estate``); one with capitals
    (``US``, ``SaaS``) is shown as written. None or blank stays None."""
    if value is None or not str(value).strip():
        return None
    code = str(value).strip()
    found = labels.get(code)
    if found is None:
        folded = code.casefold()
        found = next((v for k, v in labels.items() if k.casefold() == folded), None)
    if found is not None:
        return found
    if code == code.lower():
        readable = " ".join(code.replace("_", " ").split())
        return readable[:1].upper() + readable[1:]
    return code


def lead_context(lead: Mapping[str, Any], labels: Labels = NO_LABELS) -> dict[str, Any]:
    """``lead`` as a template sees it, from a lead row (or a claim's lead columns)."""
    values = {key: lead.get(key) for key in LEAD_COLUMNS}
    values["email"] = lead["email"]
    values["attributes"] = dict(lead.get("attributes") or {})
    first, last = values["first_name"] or "", values["last_name"] or ""
    values["full_name"] = f"{first} {last}".strip() or None
    for field in LABELLED_FIELDS:
        values[f"{field}_label"] = label(values[field], labels.get(field, {}))
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


# --- filters ------------------------------------------------------------------------------

# "an" before these beginnings although they are spelt with a consonant (a silent h) ...
_AN_ANYWAY = ("hour", "honest", "honor", "honour", "heir")
# ... and "a" before these although they start with a vowel letter (a "you" or "w" sound).
_A_ANYWAY = ("uni", "use", "usu", "uti", "ura", "uro", "eu", "ewe", "one", "once")
# Letters whose spoken name starts with a vowel sound: "an MBA", "an SEO team", "a US firm".
_VOWEL_SOUND_LETTERS = frozenset("AEFHILMNORSX")


def indefinite_article(text: str) -> str:
    """``a`` or ``an`` for ``text``, by a simple rule: a word in capitals (an acronym such as
    ``HR``, ``B2B``) is read letter by letter, so "an" before A E F H I L M N O R S X; other
    words take "an" before a vowel letter (a e i o u) or an 8, except the few beginnings in
    ``_A_ANYWAY`` ("a university", "a European") and ``_AN_ANYWAY`` ("an hour")."""
    word = text.strip().split(" ", 1)[0]
    if not word:
        return "a"
    letters = "".join(ch for ch in word if ch.isalpha())
    if len(letters) > 1 and letters.isupper():
        return "an" if letters[0] in _VOWEL_SOUND_LETTERS else "a"
    lower = word.lower()
    if lower.startswith(_AN_ANYWAY):
        return "an"
    if lower.startswith(_A_ANYWAY):
        return "a"
    return "an" if lower[0] in "aeiou8" else "a"


def article(value: Any) -> str:
    """The ``article`` filter: ``{{ "E-commerce" | article }}`` -> ``an E-commerce``."""
    text = "" if value is None else str(value).strip()
    return f"{indefinite_article(text)} {text}" if text else ""


SENTENCE_ENDS: Final = (".", "!", "?", "…")


def end_sentence(value: Any) -> str:
    """The ``end_sentence`` filter: the text with a full stop, unless it already ends a
    sentence (``Acme Inc.`` stays ``Acme Inc.``, never ``Acme Inc..``)."""
    text = "" if value is None else str(value).rstrip()
    return text if not text or text.endswith(SENTENCE_ENDS) else text + "."


TEMPLATE_FILTERS: Final[Mapping[str, Callable[[Any], str]]] = {
    "article": article,
    "end_sentence": end_sentence,
}
