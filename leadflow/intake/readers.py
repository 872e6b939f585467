"""Streaming readers for lead files: CSV exports (any Excel flavour) and JSON Lines.

Files are read record by record so memory stays flat whatever their size.

Encoding (CSV and JSONL): a UTF-16 BOM selects UTF-16 (Excel "Unicode text"); otherwise a
streaming pre-pass validates the *whole* file as UTF-8 (1 MiB at a time). If every byte is valid
the file is read as UTF-8 (a BOM is dropped); if any byte is not, the whole file is read as
cp1252, the encoding of Excel's "CSV" export. Deciding over the whole file, not a prefix, means a
bad byte on row 90,000 cannot make the first rows decode one way and the rest another. The five
bytes cp1252 leaves undefined are replaced by U+FFFD and the row gets a warning.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any, TextIO

CSV_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
DELIMITERS = (",", ";", "\t")
_CHUNK = 1 << 20
_REPLACEMENT = "\ufffd"


class IntakeError(Exception):
    """A file that cannot be imported at all (unknown format, missing file).

    Messages do not repeat the path: callers (CLI, inbox) prefix it themselves.
    """


@dataclass(frozen=True, slots=True)
class RawRow:
    """One record as read: 1-based data row number (header excluded) and its cells.

    ``error`` marks a record that could not be read (it is rejected with that reason);
    ``warnings`` are reader-level remarks (e.g. replaced undecodable bytes). ``structured``
    names the cells that were a JSON object or array (JSON Lines, web), with which: they are
    kept as JSON text in an attribute, but never taken as a lead field's value.
    """

    number: int
    data: dict[str, str | None]
    warnings: tuple[str, ...] = field(default=())
    error: str | None = None
    structured: dict[str, str] = field(default_factory=dict)


def read_rows(path: Path) -> Iterator[RawRow]:
    """Rows of a ``.csv``/``.tsv``/``.txt`` or ``.jsonl``/``.ndjson`` file, streamed.

    The format and the file's existence are checked now, so a wrong path fails at once
    instead of on the first ``next()``.
    """
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES | JSONL_SUFFIXES:
        known = ", ".join(sorted(CSV_SUFFIXES | JSONL_SUFFIXES))
        raise IntakeError(f"unknown file type {suffix or '(none)'!r}; expected {known}")
    if not path.is_file():
        raise IntakeError("no such file")
    return _read_jsonl(path) if suffix in JSONL_SUFFIXES else _read_csv(path)


def detect_encoding(path: Path) -> str:
    """``utf-16``, ``utf-8-sig`` (also right without a BOM) or ``cp1252``; see module docs."""
    with path.open("rb") as fh:
        head = fh.read(2)
        if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            return "utf-16"
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := fh.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8-sig"


def sniff_delimiter(header_line: str) -> str:
    """The most frequent of ``,`` ``;`` tab outside quotes in the header (``,`` on a tie)."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in header_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])  # max keeps the first on ties
    return best if counts[best] else ","


def _open_text(path: Path, encoding: str) -> TextIO:
    return path.open(encoding=encoding, errors="replace", newline="")


def _replacement_warning(values: Iterable[str | None], encoding: str) -> tuple[str, ...]:
    if encoding == "utf-8-sig":
        return ()  # validated by the pre-pass: a U+FFFD here was in the file itself
    if any(value is not None and _REPLACEMENT in value for value in values):
        return (f"undecodable bytes ({encoding}) replaced with U+FFFD",)
    return ()


def unique_names(names: Iterable[str]) -> list[str]:
    """Trimmed column names; blanks become ``column_N``, repeats get ``_2``, ``_3``..."""
    result: list[str] = []
    seen: set[str] = set()
    for position, raw in enumerate(names, start=1):
        name = raw.strip().strip("\ufeff\u200b").strip() or f"column_{position}"
        candidate, suffix = name, 2
        while candidate.casefold() in seen:
            candidate, suffix = f"{name}_{suffix}", suffix + 1
        seen.add(candidate.casefold())
        result.append(candidate)
    return result


def _read_csv(path: Path) -> Iterator[RawRow]:
    encoding = detect_encoding(path)
    with _open_text(path, encoding) as fh:
        first = fh.readline()
        if not first:
            return
        reader = csv.reader(chain([first], fh), delimiter=sniff_delimiter(first))
        try:
            header = unique_names(next(reader))
        except csv.Error as exc:
            raise IntakeError(f"unreadable header: {exc}") from exc
        number = 0
        while True:
            number += 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                # The reader resumes at the next line, so one bad record costs one row only.
                yield RawRow(number, {}, error=f"unreadable record: {exc}")
                continue
            if not any(map(str.strip, cells)):
                continue  # blank line or ";;;;" filler: nothing to import, number still counts
            yield RawRow(
                number, _cells_to_data(header, cells), _replacement_warning(cells, encoding)
            )


def _cells_to_data(header: list[str], cells: list[str]) -> dict[str, str | None]:
    if len(cells) == len(header):
        return dict(zip(header, cells, strict=True))  # the usual row: one cell per column
    data: dict[str, str | None] = dict.fromkeys(header)
    for position, cell in enumerate(cells, start=1):
        if position <= len(header):
            data[header[position - 1]] = cell
        elif cell.strip():
            data[f"column_{position}"] = cell  # surplus cell: kept, never dropped
    return data


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    encoding = detect_encoding(path)
    with path.open(encoding=encoding, errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            yield _json_row(number, line, encoding)


MAX_NUMBER_CHARS = 100  # a JSON number longer than this is refused, never converted


class NotJson(ValueError):
    """What ``strict_json`` refuses that ``json.loads`` would accept (or choke on)."""


def _constant(name: str) -> Any:
    raise NotJson(f"{name} is not a JSON value")


def _number(text: str) -> int | float:
    if len(text) > MAX_NUMBER_CHARS:
        raise NotJson(f"a number longer than {MAX_NUMBER_CHARS} characters")
    if not any(c in text for c in ".eE"):
        return int(text)
    number = float(text)
    if math.isinf(number):
        raise NotJson(f"{text} is out of range")
    return number


def strict_json(text: str) -> Any:
    """``json.loads`` of RFC 8259 JSON only (JSON Lines and ``POST /leads`` alike): NaN and
    Infinity are not JSON (PostgreSQL refuses them), and a number longer than
    MAX_NUMBER_CHARS is refused before Python converts it (past 4,300 digits it cannot)."""
    return json.loads(text, parse_constant=_constant, parse_int=_number, parse_float=_number)


def _json_row(number: int, line: str, encoding: str) -> RawRow:
    try:
        value = strict_json(line)
    except (ValueError, RecursionError) as exc:
        return RawRow(number, {}, error=f"not valid JSON: {_short(str(exc))}")
    row = json_record(number, value)
    if row.error is not None:
        return row
    return replace(row, warnings=_replacement_warning([line], encoding))


def json_record(number: int, value: Any) -> RawRow:
    """A parsed JSON value as a row (JSON Lines and ``POST /leads`` alike): an object's keys
    are its columns. Not an object, or text that is not Unicode (a lone surrogate written as
    ``"\\ud800"``: no database can store it), is a row rejected with that reason."""
    if not isinstance(value, dict):
        return RawRow(number, {}, error=f"not a JSON object (got {_json_kind(value)})")
    bad = lone_surrogate(value)
    if bad is not None:
        return RawRow(number, {}, error=f"not valid Unicode: a lone surrogate {bad}")
    names = unique_names(str(key) for key in value)
    try:
        data = {name: _json_text(item) for name, item in zip(names, value.values(), strict=True)}
    except RecursionError:
        return RawRow(number, {}, error="not valid JSON: nested too deeply")
    structured = {
        name: "object" if isinstance(item, dict) else "array"
        for name, item in zip(names, value.values(), strict=True)
        if isinstance(item, dict | list)
    }
    return RawRow(number, data, structured=structured)


def lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate in a parsed JSON value's keys and strings, escaped, or None.
    Iterative: a value nested as deep as the JSON parser allows must not overflow the stack."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return ascii(item[exc.start])[1:-1]
    return None


def _json_text(value: Any) -> str | None:
    """Cells are text, as in a CSV: scalars keep their JSON spelling, containers become JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
