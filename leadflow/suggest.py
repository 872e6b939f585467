"""Suggestions ("did you mean") for every name a person types: config keys, rule fields,
template names and template variables. One matching policy and one wording, so an error reads
the same wherever it comes from."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.6  # difflib's default similarity: below it a suggestion misleads more than it helps


def closest(name: str, options: Iterable[str]) -> str | None:
    """The option most like ``name``, or None when none is close enough."""
    close = difflib.get_close_matches(name, sorted(set(options)), n=1, cutoff=CUTOFF)
    return close[0] if close else None


def did_you_mean(name: str, options: Iterable[str], *, prefix: str = "") -> str:
    """`` (did you mean 'lead.first_name'?)`` (``prefix`` + the closest option), or ``""``."""
    match = closest(name, options)
    return f" (did you mean '{prefix}{match}'?)" if match is not None else ""
