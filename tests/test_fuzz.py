"""Property-based fuzzing of what untrusted hands write (issue 16; the cases are in
tests/test_hostile.py): CSV rows, JSON Lines, web bodies and pipeline YAML.

The properties: no exception escapes (a bad row is a reject, a bad file a ConfigError, a bad
body a 4xx with a JSON ``detail``, never a 500), every message stays on one line, the counts
add up, and each example finishes in bounded time. Examples are few per property (the file
runs in well under a minute); every run draws new ones.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DEFAULT_CONFIG, T0
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from leadflow.app.web import create_app
from leadflow.config import ConfigError, load_config
from leadflow.intake import ImportSummary, import_file
from leadflow.pipeline.events import KNOWN_EVENTS
from leadflow.runtime import Runtime

SECONDS = 10.0  # one example; the real cost is milliseconds
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TOKEN = "api-token-for-fuzzing"

# --- what hostile text looks like ------------------------------------------------------------

# Text with what has broken parsers and terminals before: control characters (NUL included),
# line and paragraph separators, quotes and delimiters, markup, template code, formulas,
# BOMs. (Lone surrogates cannot be in a file's text: they come as JSON escapes, below.)
HOSTILE_CHARS = st.sampled_from(
    list("\x00\x01\x07\x08\t\n\r\x0b\x0c\x1b\x7f\x85\u2028\u2029\ufeff\u200b\u00a0\ufffd")
    + list(",;\"'`[]{}<>=+-@/\\%$#&|!*é😀")
)
HOSTILE_WORDS = st.sampled_from(["{{ 7*7 }}", "[/bold]", "[link=https://x.example]", '=CMD("x")'])
HOSTILE_TEXT = st.lists(st.one_of(HOSTILE_CHARS, HOSTILE_WORDS, st.characters()), max_size=30).map(
    "".join
)
CELL = st.one_of(
    st.text(max_size=40),
    HOSTILE_TEXT,
    st.sampled_from(
        [
            "",
            "n/a",
            "#N/A",
            "-",
            "yes",
            "no",
            "1,200",
            "1,5",
            "1e400",
            "-0",
            "99999999999999999999",
            "NaN",
            "inf",
            "2026-11-03",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:00:00-05:00",
            "2026-02-30",
            "Europe/Nowhere",
            "../../etc/passwd",
            "America/New_York",
            "ada@example.com",
            "Ada@Example.COM",
            "a@b",
            "a@example.com\nBcc: b@example.com",
        ]
    ),
    st.sampled_from([2_001, 50_000]).map(lambda n: "x" * n),  # over the caps
)
KNOWN_COLUMNS = [
    "email",
    "E-mail",
    "First Name",
    "last_name",
    "Company",
    "Employees",
    "company_size",
    "Industry",
    "Country",
    "Time Zone",
    "need",
    "updated_at",
    "last_modified",
    "do_not_email",
    "Do Not Email",
    "web_visits",
    "plan_interest",
    "contract_end",
    "source",
]
COLUMN = st.one_of(st.sampled_from(KNOWN_COLUMNS), CELL.filter(lambda c: len(c) < 200))


def assert_sound(summary: ImportSummary) -> None:
    """Counts add up; every reject and warning is one line, as the CLI prints it."""
    assert summary.created + summary.updated + summary.unchanged + summary.rejected == (
        summary.rows
    )
    assert len(summary.rejects) == summary.rejected
    for reject in summary.rejects:
        line = f"row {reject.row}: {reject.field}: {reject.message}"
        assert len(line.splitlines()) == 1, line
        assert reject.message
    for warning in summary.warnings:
        assert len(warning.splitlines()) == 1, warning


class Clock:
    """Fails the example that takes longer than SECONDS."""

    def __enter__(self) -> Clock:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self.started
        assert elapsed < SECONDS, f"took {elapsed:.1f} s"


# --- CSV rows --------------------------------------------------------------------------------


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    header = draw(st.lists(COLUMN, min_size=1, max_size=8))
    if draw(st.booleans()):
        header[0] = "email"
    rows = draw(
        st.lists(
            st.lists(CELL, min_size=0, max_size=len(header) + 2),
            max_size=6,
        )
    )
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))
    )
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if draw(st.booleans()):  # a hand-made file: stray quotes, ragged lines
        lines = text.splitlines(keepends=True)
        extra = draw(st.lists(HOSTILE_TEXT, max_size=3))
        text = "".join(lines + [line + "\n" for line in extra])
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 4)) == 0:  # a few raw bytes anywhere: broken encodings
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=8)) + data[at:]
    return data


def _import(rt: Runtime, path: Path, data: bytes) -> Any:
    """``data`` imported as the file ``path`` (its suffix says CSV or JSON Lines), timed."""
    path.write_bytes(data)
    with Clock():
        return import_file(rt.engine, path, rt.loaded.config.intake, default_timezone="UTC", now=T0)


@FUZZ
@given(data=csv_files())
def test_any_csv_file_imports_or_rejects_row_by_row(
    quick_rt: Runtime, tmp_path: Path, data: bytes
) -> None:
    assert_sound(_import(quick_rt, tmp_path / "fuzz.csv", data))


# --- JSON Lines ------------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    CELL,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
LEAD_OBJECTS = st.dictionaries(COLUMN, JSON_VALUES, max_size=8)
# Lines json.dumps cannot make: NaN, lone surrogates, long numbers, deep nesting, broken JSON
RAW_JSON_LINES = st.sampled_from(
    [
        '{"email": "a@example.com", "x": NaN}',
        '{"email": "a@example.com", "first_name": "\\ud800"}',
        '{"email": "a@example.com", "\\udfff": 1}',
        '{"email": "a@example.com", "company_size": ' + "9" * 5000 + "}",
        '{"email": "a@example.com", "x": 1e999}',
        "[" * 5000 + "]" * 5000,
        '{"a":' * 3000 + "1" + "}" * 3000,
        '{"email": "a@example.com"',
        '"just a string"',
        "null",
        "{}",
    ]
)


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    lines = draw(
        st.lists(
            st.one_of(
                LEAD_OBJECTS.map(lambda o: json.dumps(o, ensure_ascii=False)),
                LEAD_OBJECTS.map(json.dumps),
                RAW_JSON_LINES,
                st.text(max_size=30).filter(lambda t: "\n" not in t and "\r" not in t),
            ),
            max_size=6,
        )
    )
    return ("\n".join(lines) + "\n").encode("utf-8", errors="surrogatepass")


@FUZZ
@given(data=jsonl_files())
def test_any_json_lines_file_imports_or_rejects_line_by_line(
    quick_rt: Runtime, tmp_path: Path, data: bytes
) -> None:
    assert_sound(_import(quick_rt, tmp_path / "fuzz.jsonl", data))


# --- web bodies ------------------------------------------------------------------------------


@pytest.fixture
def client(quick_rt: Runtime) -> TestClient:
    quick_rt.settings = quick_rt.settings.model_copy(
        update={
            "secret_key": SecretStr("a-fuzzing-secret-that-is-long-enough"),
            "api_token": SecretStr(TOKEN),
            "demo": False,
        }
    )
    app = TestClient(create_app(quick_rt), raise_server_exceptions=False)
    known = app.post("/leads", json={"email": "ada@example.com"}, headers=_headers())
    assert known.status_code == 200
    return app


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


EVENT_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "email": st.one_of(st.sampled_from(["ada@example.com", " ADA@example.com "]), JSON_VALUES),
        "type": st.one_of(st.sampled_from(sorted(KNOWN_EVENTS)), JSON_VALUES),
        "at": st.one_of(
            st.sampled_from(["2026-11-03T10:00:00Z", "2026-02-30", "0001-01-01", "+99999-01-01"]),
            JSON_VALUES,
        ),
        "data": JSON_VALUES,
    },
)


def _bodies(objects: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        objects.map(lambda o: json.dumps(o).encode()),
        st.lists(objects, max_size=4).map(
            lambda o: json.dumps(o, ensure_ascii=False).encode("utf-8", "surrogatepass")
        ),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        RAW_JSON_LINES.map(str.encode),
        st.binary(max_size=64),
    )


def _assert_answer(status: int, answer: Any) -> None:
    assert status in {200, 400, 404, 413, 422}, (status, answer)
    if status != 200:
        assert isinstance(answer["detail"], str)
        assert len(answer["detail"].splitlines()) == 1


@FUZZ
@given(body=_bodies(LEAD_OBJECTS))
def test_any_body_posted_to_leads_is_answered_never_a_500(client: TestClient, body: bytes) -> None:
    with Clock():
        answer = client.post("/leads", content=body, headers=_headers())
    _assert_answer(answer.status_code, answer.json())
    if answer.status_code == 200:
        summary = answer.json()
        assert (
            summary["created"] + summary["updated"] + summary["unchanged"] + summary["rejected"]
            == summary["rows"]
        )


@FUZZ
@given(body=_bodies(EVENT_OBJECTS))
def test_any_body_posted_to_events_is_answered_never_a_500(client: TestClient, body: bytes) -> None:
    with Clock():
        answer = client.post("/events", content=body, headers=_headers())
    _assert_answer(answer.status_code, answer.json())
    if answer.status_code == 200:
        assert answer.json()["lead"] == "ada@example.com"


# --- pipeline YAML ---------------------------------------------------------------------------

PIPELINE = DEFAULT_CONFIG.read_text(encoding="utf-8")
PIPELINE_LINES = PIPELINE.splitlines()
YAML_SNIPPETS = st.sampled_from(
    [
        "",
        "~",
        "null",
        "[]",
        "{}",
        "- x",
        "&a [*a]",
        "*nowhere",
        "!!python/object/apply:os.system ['true']",
        "!!binary aGVsbG8=",
        "!!set {a: null}",
        "!Ref x",
        "<<: *x",
        "'unterminated",
        '"\\ud800"',
        "1e999",
        "-.inf",
        ".nan",
        "0x1F",
        "2026-02-30",
        "yes",
        "{a: [1, {b: 2}]}",
        "? complex key\n: value",
        "|\n  block",
        "\t tab",
        "%YAML 1.1",
        "---",
        "...",
    ]
)


@st.composite
def yaml_documents(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 2))
    if kind == 0:  # the real file, edited: a value replaced, a line dropped, doubled or added
        lines = list(PIPELINE_LINES)
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(lines) - 1))
            edit = draw(st.integers(0, 3))
            snippet = draw(st.one_of(YAML_SNIPPETS, CELL.filter(lambda c: len(c) < 80)))
            if edit == 0 and ":" in lines[at]:
                key = lines[at].split(":", 1)[0]
                lines[at] = f"{key}: {snippet}"
            elif edit == 1:
                del lines[at]
            elif edit == 2:
                lines.insert(at, lines[at])
            else:
                lines.insert(at, snippet)
        return "\n".join(lines) + "\n"
    if kind == 1:  # any structure YAML can carry
        return yaml.safe_dump(draw(JSON_VALUES), allow_unicode=draw(st.booleans()))
    return "\n".join(draw(st.lists(st.one_of(YAML_SNIPPETS, st.text(max_size=30)), max_size=8)))


@FUZZ
@given(text=yaml_documents())
def test_any_yaml_document_is_a_config_or_a_config_error(text: str) -> None:
    with Clock():
        try:
            loaded = load_config(DEFAULT_CONFIG, text=text)
        except ConfigError as exc:
            assert exc.issues
            for issue in exc.issues:
                assert issue.line >= 1 and issue.column >= 1, issue
                assert len(str(issue).splitlines()) == 1, str(issue)
        else:
            assert loaded.config.pipelines


def test_the_yaml_fuzzer_reaches_valid_configs_too() -> None:
    """The edits above start from the real file: unedited, it is valid (so edited examples
    exercise validation past parsing, not only syntax errors)."""
    assert load_config(DEFAULT_CONFIG, text=PIPELINE).config.pipelines
