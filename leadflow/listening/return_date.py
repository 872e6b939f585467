"""The date an auto-reply says its writer is back, when it says one.

dateparser reads it, one language at a time (mixed, it guesses badly), and only where a date
is written and only for the languages whose "until / back on" words the text uses: each
language costs dateparser ~8 ms, and most auto-replies state no date at all.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_MONTHS = (
    "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|"
    "januar|februar|märz|maerz|mai|juni|juli|okt|dez|"
    "janv|févr|fevr|mars|avr|juin|juil|août|aout|sept|déc|"
    "ene|enero|febrero|marzo|abr|abril|mayo|junio|julio|agosto|septiembre|octubre|noviembre|dic"
)
_WRITTEN_DATE = re.compile(
    rf"\d{{1,4}}[./-]\d{{1,2}}(?:[./-]\d{{2,4}})?|\b\d{{1,2}}\.?\s*(?:de\s+)?(?:{_MONTHS})|"
    rf"\b(?:{_MONTHS})[a-zé]*\.?\s+\d{{1,2}}\b",
    re.I,
)


# Words that say "until / back on" per language: dateparser runs only for the languages whose
# words the auto-reply uses (each language costs it ~8 ms).
_RETURN_CUES = (
    ("en", re.compile(r"\b(until|back|return|returning|through)\b", re.I)),
    ("de", re.compile(r"\b(bis|zurück|wieder|ab dem)\b", re.I)),
    ("fr", re.compile(r"\b(jusqu|retour|serai|absent)", re.I)),
    ("es", re.compile(r"\b(hasta|regreso|volveré|vuelta|fuera)\b", re.I)),
)


def return_date(text: str, received: datetime | None) -> date | None:
    """The date an auto-reply says its writer is back, if it says one (soonest future date
    in the text, at most 90 days after the message)."""
    if not _WRITTEN_DATE.search(text[:2000]):
        return None  # most auto-replies state none: dateparser costs ~8 ms a language
    from dateparser.search import search_dates  # slow to import; only auto-replies need it

    base = (received or datetime.now(UTC)).replace(tzinfo=None)
    dates: list[date] = []
    languages = [lang for lang, cue in _RETURN_CUES if cue.search(text[:2000])] or ["en"]
    for language in languages:  # one at a time: mixed, dateparser guesses badly
        try:
            found = search_dates(
                text[:2000],
                languages=[language],
                settings={"RELATIVE_BASE": base, "PREFER_DATES_FROM": "future"},
            )
        except Exception:  # noqa: S112 - dateparser on odd text: no date rather than no sync
            continue
        dates += [
            d.date()
            for phrase, d in found or []
            if base.date() < d.date() <= base.date() + timedelta(days=90)
            and re.search(r"\d", phrase)
            and len(phrase) >= 5
        ]
    return max(dates) if dates else None
