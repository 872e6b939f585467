"""The date an auto-reply says its writer is back, when it says one.

The text is searched for written dates (``15.12.2026``, ``December 14``, ``4 December 2026``,
``10 de diciembre de 2026``, a weekday before any of them); dateparser reads each phrase
found, one language at a time (mixed, it guesses badly), and only for the languages whose
"until / back on" words the text uses. Reading a short phrase costs dateparser ~1.5 ms
against ~4-8 ms for a search of the whole text, and auto-replies repeat their phrases (a
team's holiday, one person's absence answering many emails), so each (phrase, language,
day) is read once per process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

_MONTHS = (
    "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|"
    "januar|februar|märz|maerz|mai|juni|juli|okt|dez|"
    "janv|févr|fevr|mars|avr|juin|juil|août|aout|sept|déc|"
    "ene|enero|febrero|marzo|abr|abril|mayo|junio|julio|agosto|septiembre|octubre|noviembre|dic"
)
_MONTH = rf"(?:{_MONTHS})[a-zéû]*\.?"
_YEAR = r"(?:,?\s+(?:de\s+)?\d{4}\b)?"
_WEEKDAYS = (
    "mon|tue|wed|thu|fri|sat|sun|montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonntag|"
    "lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche|"
    "lunes|martes|miércoles|miercoles|jueves|viernes|sábado|sabado|domingo"
)
_WEEKDAY = rf"(?:\b(?:{_WEEKDAYS})[a-z]*\.?,?\s+(?:(?:the|den|le|el)\s+)?)?"
_WRITTEN_DATE = re.compile(
    rf"{_WEEKDAY}(?:"
    rf"\b\d{{1,4}}[./-]\d{{1,2}}(?:[./-]\d{{2,4}})?"  # 15.12.2026, 2026-12-15, 12/15
    rf"|\b\d{{1,2}}(?:st|nd|rd|th|er)?\.?\s*(?:de\s+|of\s+)?{_MONTH}{_YEAR}"  # 4 December 2026
    rf"|\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?\b{_YEAR}"  # December 14, 2026
    r")",
    re.I,
)
_TEXT_LIMIT, _PHRASE_LIMIT = 2000, 8

# Words that say "until / back on" per language: dateparser runs only for the languages whose
# words the auto-reply uses.
_RETURN_CUES = (
    ("en", re.compile(r"\b(until|back|return|returning|through)\b", re.I)),
    ("de", re.compile(r"\b(bis|zurück|wieder|ab dem)\b", re.I)),
    ("fr", re.compile(r"\b(jusqu|retour|serai|absent)", re.I)),
    ("es", re.compile(r"\b(hasta|regreso|volveré|vuelta|fuera)\b", re.I)),
)


@dataclass(frozen=True)
class ReturnQuestion:
    """The date phrases an auto-reply states and the languages to read them in: found by a
    regex wherever the message is classified, read by dateparser (``answer``) in the process
    that keeps it loaded (its import and first use cost ~0.4 s of CPU, per process)."""

    phrases: tuple[str, ...]
    languages: tuple[str, ...]
    base: date


def return_date(text: str, received: datetime | None) -> date | None:
    """The date an auto-reply says its writer is back, if it says one (the latest date in
    the text that is after the message and at most 90 days after it)."""
    asked = return_question(text, received)
    return answer(asked) if asked is not None else None


def return_question(text: str, received: datetime | None) -> ReturnQuestion | None:
    """What ``answer`` needs to read the return date; None when the text states no date."""
    head = text[:_TEXT_LIMIT]
    phrases = list(dict.fromkeys(m.group(0).strip() for m in _WRITTEN_DATE.finditer(head)))
    if not phrases:
        return None  # most auto-replies state none
    base = (received or datetime.now(UTC)).astimezone(UTC).date()
    languages = [lang for lang, cue in _RETURN_CUES if cue.search(head)] or ["en"]
    return ReturnQuestion(tuple(phrases[:_PHRASE_LIMIT]), tuple(languages), base)


def answer(asked: ReturnQuestion) -> date | None:
    """The latest date the phrases name after the message, at most 90 days after it."""
    dates = [
        found
        for language in asked.languages
        for phrase in asked.phrases
        if (found := _read(phrase, language, asked.base)) is not None
        and asked.base < found <= asked.base + timedelta(days=90)
    ]
    return max(dates) if dates else None


@lru_cache(maxsize=4096)
def _read(phrase: str, language: str, base: date) -> date | None:
    """One phrase read by dateparser in one language, relative to the message's day."""
    import dateparser  # slow to import; only auto-replies that state a date need it

    try:
        found = dateparser.parse(
            phrase,
            languages=[language],
            settings={
                "RELATIVE_BASE": datetime.combine(base, datetime.min.time()),
                "PREFER_DATES_FROM": "future",
                "STRICT_PARSING": False,
            },
        )
    except Exception:  # dateparser on odd text: no date rather than no sync
        return None
    return found.date() if found is not None else None
