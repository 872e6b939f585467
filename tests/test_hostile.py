"""Issue 16: hostile input never breaks, hangs or half-applies anything. The proof, in one place.

Every case goes through the real command line (``leadflow.app.cli.main``, what the ``leadflow``
script runs) or the real web app (``create_app`` over a real runtime), and asserts:

* the exit code (or HTTP status) and the exact message, on one line, with no traceback;
* the database checksum (every table's rows, sorted, hashed) unchanged where nothing should
  change, and for database faults that no file, folder or byte was added;
* a wall-clock bound (generous: two slow cores).

Cases are numbered as in the issue; 7, 8, 10 and 11 (plan/config changes, removed stages,
concurrency, SIGTERM) have their own tests. The property-based half is tests/test_fuzz.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import DEFAULT_CONFIG, TEMPLATES, cli_environment, database_url, run_leadflow
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, inspect, select, text

from leadflow.app.web import create_app
from leadflow.config import LoadedConfig
from leadflow.intake import import_file
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from leadflow.timeutil import parse_instant
from models.db import make_engine, open_database
from models.tables import LEADS

SECONDS = 20.0  # every command or request, start to finish; the real cost is a few seconds
NOW = "2026-11-03T14:00:00Z"
SECRET = "a-test-secret-that-is-long-enough"
TOKEN = "api-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# --- helpers ---------------------------------------------------------------------------------


def checksum(url: str) -> str:
    """Every table's rows, sorted, hashed: an equal checksum means nothing was written."""
    engine = make_engine(url)
    try:
        digest = hashlib.sha256()
        with engine.connect() as conn:
            for name in sorted(inspect(conn).get_table_names()):
                result = conn.execute(text(f'SELECT * FROM "{name}"'))
                rows = sorted(repr(tuple(row)) for row in result)
                digest.update(f"{name}:{len(rows)}\n".encode())
                for row in rows:
                    digest.update(row.encode("utf-8", "backslashreplace") + b"\n")
    finally:
        engine.dispose()
    return digest.hexdigest()


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def line(self) -> str:
        """The one line on stderr (asserting that there is exactly one)."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        return lines[0]


Cli = Callable[..., Result]


@pytest.fixture
def url(tmp_path: Path, blank_database: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated, empty database of the test's own (a copy of a blank SQLite file, or on
    PostgreSQL a database cloned from a migrated template), for the CLI too."""
    found = database_url(tmp_path)
    if found.startswith("sqlite"):
        shutil.copyfile(blank_database, tmp_path / "test.db")
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", found)
    return found


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``leadflow ARGS...`` in this process, as the console script runs it (``main``),
    bounded in time and never with a traceback. (The database: the ``url`` fixture's.)"""
    cli_environment(monkeypatch, tmp_path)
    if "LEADFLOW_DATABASE_URL" not in os.environ:  # set by ``url`` or ``seeded``, or none
        missing = tmp_path / "no-such-folder" / "x.db"
        monkeypatch.setenv("LEADFLOW_DATABASE_URL", f"sqlite:///{missing}")

    def run(*args: str) -> Result:
        started = time.monotonic()
        code, out, err = run_leadflow(monkeypatch, capsys, *args)
        elapsed = time.monotonic() - started
        assert elapsed < SECONDS, f"leadflow {' '.join(args)} took {elapsed:.1f} s"
        assert "Traceback" not in err + out
        return Result(code, out, err)

    return run


LEADS_CSV = (
    "E-mail,First Name,Company,Employees,Industry,Country\n"
    "ada@example.com,Ada,Analytical Engines,120,saas,US\n"
    "grace@example.com,Grace,Cobol Corp,40,fintech,US\n"
)


@pytest.fixture
def empty(url: str) -> str:
    """The checksum of the test's database while it has no rows."""
    return checksum(url)


@pytest.fixture(scope="module")
def seeded_url(
    tmp_path_factory: pytest.TempPathFactory, blank_database: Path, loaded: LoadedConfig
) -> str:
    """One database for the module's refusals: two imported leads, due for scoring and the
    stage engine (a command that got as far as a tick would change them)."""
    folder = tmp_path_factory.mktemp("seeded")
    found = database_url(folder)
    if found.startswith("sqlite"):
        shutil.copyfile(blank_database, folder / "test.db")
    leads = folder / "seed.csv"
    leads.write_text(LEADS_CSV, encoding="utf-8")
    engine = make_engine(found)
    try:
        summary = import_file(
            engine,
            leads,
            loaded.config.intake,
            default_timezone=loaded.config.timezone,
            now=parse_instant(NOW),
        )
    finally:
        engine.dispose()
    assert (summary.created, summary.rejected) == (2, 0)
    return found


@dataclass(frozen=True)
class Seeded:
    url: str
    before: str

    def unchanged(self) -> bool:
        return checksum(self.url) == self.before


@pytest.fixture
def seeded(seeded_url: str, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    """The seeded database, for the CLI too, and its checksum as this test starts. (Shared by
    the tests that change nothing: each compares with its own starting point.)"""
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", seeded_url)
    return Seeded(seeded_url, checksum(seeded_url))


@dataclass(frozen=True)
class Web:
    client: TestClient
    url: str
    engine: Engine


@pytest.fixture(scope="module")
def web(
    tmp_path_factory: pytest.TempPathFactory, blank_database: Path, loaded: LoadedConfig
) -> Iterator[Web]:
    """The real app over a real runtime (a real secret and API token), one database for the
    module: every test compares the checksum with its own starting point. A 500 comes back
    as a response, not raised into the test, so it can be asserted away."""
    folder = tmp_path_factory.mktemp("web")
    found = database_url(folder)
    if found.startswith("sqlite"):
        shutil.copyfile(blank_database, folder / "test.db")
    settings = Settings(
        home=folder,
        database_url=found,
        config=DEFAULT_CONFIG,
        templates=TEMPLATES,
        secret_key=SecretStr(SECRET),
        api_token=SecretStr(TOKEN),
        demo=False,
    )
    engine = make_engine(found)
    try:
        app = create_app(Runtime(settings=settings, loaded=loaded, engine=engine))
        yield Web(TestClient(app, raise_server_exceptions=False), found, engine)
    finally:
        engine.dispose()


def post(web: Web, path: str, body: bytes | Iterator[bytes]) -> tuple[int, Any]:
    """POST a raw body; (status, JSON answer), bounded in time, JSON whatever the status."""
    started = time.monotonic()
    answer = web.client.post(
        path, content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert time.monotonic() - started < SECONDS
    assert answer.headers["content-type"] == "application/json"
    return answer.status_code, answer.json()


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


# --- 1. lead data that looks like terminal markup is printed as text --------------------------

MARKUP_CSV = (
    "E-mail,First Name,Company,Employees\n"
    "m0@example.com,[red]x,[/bold],10\n"
    "m1@example.com,Ann,[link=https://evil.example]click[/link],10\n"
    "m2@example.com,Bo,[/x],[/x]\n"
)


def test_1_lead_data_is_printed_as_written_never_as_terminal_markup(
    cli: Cli, tmp_path: Path, url: str
) -> None:
    leads = tmp_path / "markup.csv"
    leads.write_text(MARKUP_CSV, encoding="utf-8")
    imported = cli("import", str(leads), "--now", NOW)
    assert imported.code == 0
    # the rejected value is quoted as written: as markup "[/x]" would be a closing tag (crash)
    assert imported.line == "row 3: company_size: not a whole number: '[/x]'"

    listed = cli("leads")
    assert (listed.code, listed.err) == (0, "")
    assert "│ [/bold] " in listed.out
    assert "│ [link=https" in listed.out  # cut to the cell's width, but as written
    assert "\x1b" not in listed.out  # no style, no terminal hyperlink

    shown = cli("show", "m1@example.com", "--now", NOW)
    assert (shown.code, shown.err) == (0, "")
    heading = "Ann <m1@example.com> — [link=https://evil.example]click[/link], -"
    assert shown.out.splitlines()[0] == heading
    shown = cli("show", "m0@example.com", "--now", NOW)
    assert shown.out.splitlines()[0] == "[red]x <m0@example.com> — [/bold], -"
    assert "\x1b" not in shown.out


# --- 2. templates that would hang or exhaust memory ------------------------------------------

LOOPS_5 = "".join(f"{{% for {v} in lead.email %}}" for v in "abcde") + "{% endfor %}" * 5
TWO_LONG_LOOPS = "{% set s = 'x' * 99999 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}"
MACRO_2_POW_40 = (
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
)
TOO_MUCH_WORK = "the template does too much work"

# name: (template code, what validate says, what preview says)
HOSTILE_TEMPLATES = {
    "power": (
        "{{ 10**(10**10) }}",
        "test render with sample data failed: **: the result would be too large",
        "**: the result would be too large",
    ),
    "repeat": (
        "{{ 'x' * 1000000000 }}",
        "test render with sample data failed: *: the repeated result would be too long",
        "*: the repeated result would be too long",
    ),
    "five_nested_loops": (LOOPS_5, "loops nested deeper than 2", TOO_MUCH_WORK),
    # found here: no output at all, so the output limit never tripped (validate ran for hours)
    "two_loops_over_a_long_string": (
        TWO_LONG_LOOPS,
        f"test render with sample data failed: {TOO_MUCH_WORK}",
        TOO_MUCH_WORK,
    ),
    "macro_calling_itself_twice": (
        MACRO_2_POW_40,
        f"test render with sample data failed: {TOO_MUCH_WORK}",
        TOO_MUCH_WORK,
    ),
    # found here: what only Jinja's code generator sees crashed validate with a traceback
    "block_defined_twice": (
        "{% block subject %}x{% endblock %}",
        "syntax error: block 'subject' defined twice",
        "syntax error: block 'subject' defined twice",
    ),
    "unknown_filter": (
        "{{ lead.email|no_such_filter }}",
        "syntax error: No filter named 'no_such_filter'.",
        "syntax error: No filter named 'no_such_filter'.",
    ),
    # found here: a width makes one value of a billion characters at once (~1 GB each)
    **{
        f"width_{name}": (
            code,
            f"test render with sample data failed: {what}: the result would be too long",
            f"{what}: the result would be too long",
        )
        for name, code, what in [
            ("center", "{{ 'x'|center(1000000000)|length }}", "center"),
            ("format_filter", "{{ '%1000000000s'|format('x')|length }}", "format"),
            ("zfill", "{{ 'x'.zfill(1000000000)|length }}", "zfill"),
            ("str_format", "{{ '{:>1000000000}'.format('x')|length }}", "format"),
            ("str_format_argument", "{{ '{:>{}}'.format('x', 10**9)|length }}", "format"),
            ("indent", "{{ 'a\\nb'|indent(1000000000)|length }}", "indent"),
        ]
    },
}


def _templates_with(folder: Path, name: str, code: str) -> Path:
    """The shipped templates plus ``name``.html.j2: welcome with ``code`` in its content."""
    if not folder.exists():
        shutil.copytree(TEMPLATES, folder)
    source = (TEMPLATES / "welcome.html.j2").read_text(encoding="utf-8")
    assert source.splitlines()[2] == "{% block content %}"  # so the code is on line 3
    path = folder / f"{name}.html.j2"
    path.write_text(
        source.replace("{% block content %}", "{% block content %}" + code, 1), encoding="utf-8"
    )
    return path


@pytest.mark.parametrize("case", list(HOSTILE_TEMPLATES))
def test_2_validate_refuses_a_hostile_template_at_once(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    code, message, _ = HOSTILE_TEMPLATES[case]
    path = _templates_with(tmp_path / "templates", "welcome", code)  # used by the pipeline
    monkeypatch.setenv("LEADFLOW_TEMPLATES", str(tmp_path / "templates"))
    result = cli("validate")
    assert result.code == 1
    lines = result.err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"error {path}:3:1: {message}")
    assert lines[1] == "1 error(s); nothing was changed."


@pytest.mark.parametrize("case", list(HOSTILE_TEMPLATES))
def test_2_preview_stops_a_hostile_template_with_one_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seeded: Seeded, case: str
) -> None:
    code, _, message = HOSTILE_TEMPLATES[case]
    _templates_with(tmp_path / "templates", "evil", code)  # not used by the pipeline
    monkeypatch.setenv("LEADFLOW_TEMPLATES", str(tmp_path / "templates"))
    for lead in ([], ["--lead", "ada@example.com"]):
        result = cli("preview", "evil", *lead)
        assert result.code == 1
        assert result.line.startswith(f"error: template 'evil' (line 3): {message}")
    assert seeded.unchanged()


def test_2_commands_that_do_not_render_never_compile_a_template(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seeded: Seeded
) -> None:
    """Every hostile template at once, none used by the pipeline: listing and showing leads
    never compile them, so they cost nothing."""
    for case, (code, _, _) in HOSTILE_TEMPLATES.items():
        _templates_with(tmp_path / "templates", f"evil_{case}", code)
    monkeypatch.setenv("LEADFLOW_TEMPLATES", str(tmp_path / "templates"))
    started = time.monotonic()
    assert cli("leads").code == 0
    assert cli("show", "ada@example.com").code == 0
    assert cli("callbacks").code == 0
    assert time.monotonic() - started < SECONDS
    assert seeded.unchanged()


def test_2_a_hostile_template_in_use_stops_a_command_before_it_touches_data(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seeded: Seeded
) -> None:
    path = _templates_with(tmp_path / "templates", "welcome", TWO_LONG_LOOPS)
    monkeypatch.setenv("LEADFLOW_TEMPLATES", str(tmp_path / "templates"))
    result = cli("move", "ada@example.com", "lost", "--reason", "test", "--now", NOW)
    assert result.code == 1
    assert result.err.splitlines() == [
        f"error {path}:3:1: test render with sample data failed: {TOO_MUCH_WORK} "
        "(more than 250,000 loop iterations and calls)",
        "1 error(s) in the configuration; nothing was changed.",
    ]
    assert seeded.unchanged()


# --- 3. YAML that would expand without end, or is simply too big -----------------------------


def _alias_bomb() -> str:
    """Nine levels of nine aliases: 387 million values if expanded."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        refs = ", ".join(f"*a{level - 1}" for _ in range(9))
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


PIPELINE = DEFAULT_CONFIG.read_text(encoding="utf-8")
# name: (file text, FILE:<this>)
HOSTILE_YAML = {
    "alias_bomb": (
        _alias_bomb(),
        "1:17: the file expands to more than 100,000 values (aliases of aliases?); "
        "see docs/pipeline-yaml.md",
    ),
    "too_large": (
        "# " + "x" * 1_000_001 + "\n",
        "1:1: the file is larger than 1,000,000 characters",
    ),
    "too_deep": ("a: " + "[" * 50 + "]" * 50 + "\n", "1:44: nested deeper than 40 levels"),
    "python_tag": (
        'version: !!python/object/apply:os.system "touch pwned"\n',
        "1:10: YAML error: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    # found here: a date that does not exist crashed validate with a traceback
    "impossible_date": (
        "version: 2026-02-30\n",
        "1:10: YAML error: cannot read '2026-02-30': day is out of range for month",
    ),
    # found here: a control character was a two-line message, a key "\r" reached the terminal
    "control_character": (
        "version: 1\x07\n",
        "1:11: YAML error: unacceptable character #x0007: special characters are not allowed",
    ),
    "control_character_in_a_key": (
        PIPELINE + '"\\r\\e[2J": 1\n',
        f"{PIPELINE.count(chr(10)) + 1}:1: \\r\\x1b[2J: unknown key '\\r\\x1b[2J'",
    ),
    # found here: a tag on a list or mapping was dropped silently (the list read as plain)
    "python_tag_on_a_list": (
        'version: !!python/object/apply:os.system ["touch pwned"]\n',
        "1:10: YAML error: the tag 'tag:yaml.org,2002:python/object/apply:os.system' "
        "is not allowed here",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_YAML))
def test_3_hostile_yaml_is_refused_quickly_with_one_error(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seeded: Seeded,
    case: str,
) -> None:
    text, message = HOSTILE_YAML[case]
    config = tmp_path / "pipeline.yaml"
    config.write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = cli("validate", "--config", str(config))
    assert result.code == 1
    assert result.err.splitlines() == [
        f"error {config}:{message}",
        "1 error(s); nothing was changed.",
    ]
    result = cli("run", "tick", "--config", str(config), "--now", NOW)  # would commit a tick
    assert result.code == 1
    assert result.err.splitlines() == [
        f"error {config}:{message}",
        "1 error(s) in the configuration; nothing was changed.",
    ]
    assert not (tmp_path / "pwned").exists()
    assert seeded.unchanged()


def test_3_a_config_that_is_not_utf8_is_one_error(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_bytes(DEFAULT_CONFIG.read_bytes().replace(b"Ada Byron", b"Ad\xe9 Byron"))
    result = cli("validate", "--config", str(config))
    assert result.code == 1
    assert result.err.splitlines() == [
        f"error {config}:1:1: not UTF-8 text: invalid continuation byte",
        "1 error(s); nothing was changed.",
    ]


# --- 4. web bodies: 413, 400 or 422 with a JSON detail, never 500, nothing stored -------------

# name: (body, status, detail)
BAD_BODIES = {
    "broken_json": (
        b'{"email": "a@example.com"',
        400,
        "request body is not JSON: Expecting ',' delimiter at 25",
    ),
    "not_json": (b"email=a@example.com", 400, "request body is not JSON: Expecting value at 0"),
    "not_utf8": (b'{"email": "\xff\xfe"}', 400, "request body is not UTF-8"),
    "nested_arrays": (b"[" * 100_000 + b"]" * 100_000, 400, "request body is nested too deeply"),
    "nested_objects": (
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        400,
        "request body is nested too deeply",
    ),
    "a_string": (b'"just a string"', 422, None),
    # found here, each a 500: NaN and Infinity are not JSON (PostgreSQL refused them), Python
    # refuses to convert a number of more than 4,300 digits, a lone surrogate cannot be stored
    "nan": (
        b'{"email": "a@example.com", "type": "replied", "data": {"x": NaN}}',
        400,
        "request body is not JSON: NaN is not a JSON value",
    ),
    "infinity": (
        b'{"email": "a@example.com", "x": -Infinity}',
        400,
        "request body is not JSON: -Infinity is not a JSON value",
    ),
    "huge_float": (
        b'{"email": "a@example.com", "x": 1e999}',
        400,
        "request body is not JSON: 1e999 is out of range",
    ),
    "long_number": (
        b'{"email": "a@example.com", "x": ' + b"9" * 5000 + b"}",
        400,
        "request body is not JSON: a number longer than 100 characters",
    ),
    "lone_surrogate": (
        b'{"email": "a@example.com", "first_name": "\\ud800"}',
        400,
        "request body is not valid Unicode: a lone surrogate \\ud800",
    ),
}
NOT_AN_OBJECT = {
    "/leads": "expected a JSON object or a list of up to 1000 objects",
    "/events": "body: Input should be a valid dictionary or instance of EventBody",
}


@pytest.mark.parametrize("path", ["/leads", "/events"])
@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_4_a_bad_body_is_a_4xx_json_error_and_stores_nothing(
    web: Web, path: str, case: str
) -> None:
    before = checksum(web.url)
    body, status, detail = BAD_BODIES[case]
    assert post(web, path, body) == (status, {"detail": detail or NOT_AN_OBJECT[path]})
    assert checksum(web.url) == before


@pytest.mark.parametrize("path", ["/leads", "/events"])
def test_4_a_20_mb_body_is_413_announced_or_streamed(web: Web, path: str) -> None:
    before = checksum(web.url)
    chunk = b'{"email": "a@example.com", "notes": "' + b"x" * 1_000_000
    expected = (413, {"detail": "request body larger than 1,000,000 bytes"})
    assert post(web, path, chunk * 20) == expected  # Content-Length: 20 MB
    assert post(web, path, iter([chunk] * 20)) == expected  # chunked: no length announced
    assert checksum(web.url) == before


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (
            {"email": "a\u0000@example.com", "type": "replied"},
            422,
            "email: must not contain control characters",  # found here: a 500 on PostgreSQL
        ),
        (
            {"email": "a@example.com", "type": "replied\n"},
            422,
            "type: must not contain control characters",
        ),
        ({"email": "a@example.com", "type": "replyed"}, 422, "unknown event type 'replyed'"),
        (
            {"email": "a@example.com", "type": "replied", "at": "0001-01-01"},
            422,
            "'0001-01-01' is outside the years 1970-2200 leadflow works in",
        ),
        (
            {"email": "a@example.com", "type": "replied", "data": [1]},
            422,
            "data: Input should be a valid dictionary",
        ),
        (
            {"email": "a@example.com", "type": "web_visit", "data": {"x": "y" * 10_001}},
            422,
            "event data is larger than 10,000 characters",
        ),
        ({"email": "nobody@example.com", "type": "replied"}, 404, "no such lead"),
    ],
    ids=["nul-email", "newline-type", "unknown-type", "year-1", "list-data", "big-data", "nobody"],
)
def test_4_a_bad_event_is_refused_and_records_nothing(
    web: Web, body: dict[str, Any], status: int, detail: str
) -> None:
    assert post(web, "/leads", json.dumps({"email": "a@example.com"}).encode())[0] == 200
    before = checksum(web.url)
    assert post(web, "/events", json.dumps(body).encode()) == (status, {"detail": detail})
    assert checksum(web.url) == before


TOO_LONG_VALUE = ("notes", "attribute value too long (max 2,000 characters)")
TOO_LONG_NAME = ("n" * 100, "attribute name too long (max 100 characters)")
OVER_THE_CAP = pytest.mark.parametrize(
    ("key", "value", "reject"),
    [("notes", "x" * 2_001, TOO_LONG_VALUE), ("n" * 101, "x", TOO_LONG_NAME)],
    ids=["value", "name"],
)


@OVER_THE_CAP
def test_4_the_attribute_cap_rejects_the_row_through_the_web(
    web: Web, key: str, value: str, reject: tuple[str, str]
) -> None:
    before = checksum(web.url)
    email = f"cap-{len(key)}@example.com"
    row = {"email": email, key: value}
    status, summary = post(web, "/leads", json.dumps(row).encode())
    assert status == 200
    assert (summary["created"], summary["rejected"]) == (0, 1)
    assert summary["rejects"] == [{"row": 1, "field": reject[0], "message": reject[1]}]
    assert checksum(web.url) == before
    at_the_cap = {"email": email, key[:100]: value[:2_000]}
    assert post(web, "/leads", json.dumps(at_the_cap).encode())[1]["created"] == 1


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@OVER_THE_CAP
def test_4_the_attribute_cap_is_the_same_for_csv_and_json_lines(
    cli: Cli,
    tmp_path: Path,
    empty: str,
    url: str,
    suffix: str,
    key: str,
    value: str,
    reject: tuple[str, str],
) -> None:
    leads = tmp_path / f"leads{suffix}"
    if suffix == ".csv":
        leads.write_text(f"email,{key}\na@example.com,{value}\n", encoding="utf-8")
    else:
        leads.write_text(json.dumps({"email": "a@example.com", key: value}) + "\n")
    result = cli("import", str(leads), "--json", "--now", NOW)
    assert result.code == 0
    summary = json.loads(result.out)
    assert (summary["created"], summary["rejected"]) == (0, 1)
    assert summary["rejects"] == [{"row": 1, "field": reject[0], "message": reject[1]}]
    assert checksum(url) == empty


# Found here: each of these lines stopped an import with a traceback (or, for NaN, stored
# what PostgreSQL refuses); now each is one reject, and the other lines go in.
HOSTILE_JSON_LINES = [
    ('{"email": "ok@example.com", "first_name": "Ok"}', None),
    (
        '{"email": "a@example.com", "first_name": "\\ud800"}',
        ("row", "not valid Unicode: a lone surrogate \\ud800"),
    ),
    (
        '{"email": "b@example.com", "company_size": ' + "9" * 5000 + "}",
        ("row", "not valid JSON: a number longer than 100 characters"),
    ),
    ('{"email": "e@example.com", "x": NaN}', ("row", "not valid JSON: NaN is not a JSON value")),
    (
        "[" * 5000 + "]" * 5000,
        (
            "row",
            "not valid JSON: maximum recursion depth exceeded while decoding a JSON array "
            "from a unicode string",
        ),
    ),
    ('{"email": "c@example.com", "updated_at": "0001-01-01T00:00:00+01:00"}', None),
    (
        '{"email": "d@example.com", "First Name": {"x": 1}}',
        ("first_name", "expected one value, not a JSON object"),
    ),
]


def test_4_json_lines_that_broke_an_import_are_rejected_line_by_line(
    cli: Cli, tmp_path: Path, empty: str, url: str
) -> None:
    leads = tmp_path / "hostile.jsonl"
    leads.write_text("\n".join(line for line, _ in HOSTILE_JSON_LINES) + "\n", encoding="utf-8")
    result = cli("import", str(leads), "--json", "--now", NOW)
    assert result.code == 0
    summary = json.loads(result.out)
    assert (summary["created"], summary["rejected"]) == (2, 5)
    assert summary["rejects"] == [
        {"row": n, "field": reject[0], "message": reject[1]}
        for n, (_, reject) in enumerate(HOSTILE_JSON_LINES, start=1)
        if reject is not None
    ]
    assert summary["warnings"] == [
        "row 6: column 'updated_at' ignored: date out of range: '0001-01-01T00:00:00+01:00'"
    ]
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            emails = conn.execute(select(LEADS.c.email).order_by(LEADS.c.email)).scalars()
            assert list(emails) == ["c@example.com", "ok@example.com"]
    finally:
        engine.dispose()


def test_4_a_csv_date_before_year_1_in_utc_is_a_warning_not_a_crash(
    cli: Cli, tmp_path: Path, url: str
) -> None:
    """Found here: ``0001-01-01T00:00:00+01:00`` overflowed when turned into UTC."""
    leads = tmp_path / "dates.csv"
    leads.write_text(
        "email,last_modified\na@example.com,0001-01-01T00:00:00+01:00\n"
        "b@example.com,9999-12-31T23:00:00-05:00\n",
        encoding="utf-8",
    )
    result = cli("import", str(leads), "--json", "--now", NOW)
    assert result.code == 0
    summary = json.loads(result.out)
    assert (summary["created"], summary["rejected"]) == (2, 0)
    assert summary["warnings"] == [
        "row 1: column 'last_modified' ignored: date out of range: '0001-01-01T00:00:00+01:00'",
        "row 2: column 'last_modified' ignored: date out of range: '9999-12-31T23:00:00-05:00'",
    ]


# --- 5. an unsafe secret is refused before anything starts or commits ------------------------


@pytest.mark.parametrize("command", [("run", "tick", "--now", NOW), ("web",), ("serve",)])
@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "error: LEADFLOW_SECRET_KEY is the demo placeholder; set a random secret"),
        ("short", "error: LEADFLOW_SECRET_KEY must be at least 16 characters long"),
    ],
    ids=["placeholder", "short"],
)
def test_5_an_unsafe_secret_is_refused_before_anything_starts_or_commits(
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    seeded: Seeded,
    command: tuple[str, ...],
    secret: str | None,
    message: str,
) -> None:
    """The seeded leads are due: a tick that got as far as intake or scoring would commit."""
    monkeypatch.setenv("LEADFLOW_DEMO", "false")
    if secret is not None:
        monkeypatch.setenv("LEADFLOW_SECRET_KEY", secret)
    result = cli(*command)
    assert result.code == 1
    assert result.line.startswith(message)
    assert seeded.unchanged()


# --- 6. a database that cannot be opened: one line, nothing created --------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cut_sqlite_file(folder: Path, keep: int) -> Path:
    """A migrated SQLite database cut to its first ``keep`` bytes (a copy that broke off)."""
    path = folder / "cut.db"
    open_database(f"sqlite:///{path}").dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    for extra in folder.glob("cut.db-*"):
        extra.unlink()
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _corrupt(folder: Path) -> Path:
    path = folder / "corrupt.db"
    path.write_bytes(b"this is not a SQLite database, just some bytes " * 200)
    return path


# name: (URL made in a folder, what the one line says)
DATABASE_FAULTS: dict[str, tuple[Callable[[Path], str], str]] = {
    "corrupt": (lambda d: f"sqlite:///{_corrupt(d)}", "corrupt.db: file is not a database"),
    "truncated_header": (
        lambda d: f"sqlite:///{_cut_sqlite_file(d, 50)}",
        "cut.db: database disk image is malformed",
    ),
    "truncated_pages": (
        lambda d: f"sqlite:///{_cut_sqlite_file(d, 20_000)}",
        "cut.db: database disk image is malformed",
    ),
    "a_folder": (lambda d: f"sqlite:///{d}", "data is a folder, not a database file"),
    "missing_folder": (
        lambda d: f"sqlite:///{d / 'missing' / 'x.db'}",
        "missing does not exist (check LEADFLOW_DATABASE_URL, or create the folder)",
    ),
    "mysql": (
        lambda d: "mysql://u@localhost/db",
        "error: LEADFLOW_DATABASE_URL: 'mysql' is not supported; use SQLite or PostgreSQL",
    ),
    "not_a_url": (
        lambda d: "not a url",
        "error: LEADFLOW_DATABASE_URL 'not a url' is not a database URL",
    ),
    "postgres_closed_port": (
        lambda d: f"postgresql+psycopg://u@127.0.0.1:{_closed_port()}/db",
        'connection to server at "127.0.0.1", port ',
    ),
}


@pytest.mark.parametrize("command", ["leads", "import"])
@pytest.mark.parametrize("case", list(DATABASE_FAULTS))
def test_6_a_database_that_cannot_be_opened_is_one_line_and_creates_nothing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, command: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    leads = tmp_path / "leads.csv"
    leads.write_text(LEADS_CSV, encoding="utf-8")
    make, message = DATABASE_FAULTS[case]
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", make(data))
    before = snapshot(data)
    args = ["import", str(leads), "--now", NOW] if command == "import" else ["leads"]
    result = cli(*args)
    assert result.code == 1
    assert result.line.startswith("error: ")
    assert message in result.line
    assert snapshot(data) == before  # no file, folder, journal or byte more


# --- 9. previews, test sends, reports and imports with bad arguments -------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("preview", "welcom"), "error: unknown template 'welcom' (did you mean 'welcome'?)"),
        (
            ("preview", "welcome", "--lead", "nobody@example.com"),
            "error: no lead with email 'nobody@example.com'",
        ),
        (("send-test", "nope", "--to", "a@example.com"), "error: unknown template 'nope'"),
        (
            ("send-test", "welcome", "--to", "not-an-address"),
            "error: --to: 'not-an-address' is not an email address",
        ),
        (
            ("send-test", "welcome", "--to", "a@example.com\nBcc: b@x.example"),
            "error: --to takes one email address (no line breaks, commas or semicolons)",
        ),
        (
            ("send-test", "welcome", "--to", "a@example.com, b@example.com"),
            "error: --to takes one email address (no line breaks, commas or semicolons)",
        ),
        (
            ("report", "--pipeline", "nope"),
            "error: unknown pipeline 'nope'; pipelines: b2b",
        ),
        (
            ("report", "--since", "2026-12-01", "--until", "2026-11-01"),
            "error: --since 2026-12-01T00:00:00+00:00 is not before --until "
            "2026-11-01T00:00:00+00:00",
        ),
    ],
    ids=[
        "preview-template",
        "preview-lead",
        "send-test-template",
        "send-test-bad-to",
        "send-test-multi-line-to",
        "send-test-two-addresses",
        "report-pipeline",
        "report-since-after-until",
    ],
)
def test_9_bad_arguments_are_one_line_and_change_nothing(
    cli: Cli, seeded: Seeded, args: tuple[str, ...], message: str
) -> None:
    result = cli(*args)
    assert result.code == 1
    assert result.line.startswith(message)
    assert seeded.unchanged()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "no-such-folder" / "rejects.csv", "the folder {folder} does not exist"),
        (lambda d: d, "is a folder"),
        (lambda d: d / ("x" * 300 + ".csv"), "cannot write (File name too long)"),
        (lambda d: d / "seed.csv" / "rejects.csv", "the folder {folder} does not exist"),
    ],
    ids=["missing-folder", "a-folder", "name-too-long", "under-a-file"],
)
def test_9_an_unwritable_rejects_path_stops_the_import_before_it_commits(
    cli: Cli, tmp_path: Path, seeded: Seeded, make: Callable[[Path], Path], message: str
) -> None:
    leads = tmp_path / "more.csv"
    leads.write_text(
        "email,first_name\nnew@example.com,New\nbroken-address,Bob\n", encoding="utf-8"
    )
    rejects = make(tmp_path)
    result = cli("import", str(leads), "--rejects", str(rejects), "--now", NOW)
    assert result.code == 1
    expected = f"error: --rejects {rejects}: " + message.format(folder=rejects.parent)
    assert result.line == expected
    assert seeded.unchanged()  # new@example.com was not imported


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_9_a_rejects_file_that_fills_up_says_the_import_was_committed(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writable when checked, full when written (found by this file): the import has
    committed by then, so the one line says so instead of a traceback."""
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", database_url(tmp_path))  # its own database
    leads = tmp_path / "full.csv"
    leads.write_text("email,first_name\nfull@example.com,Fay\nbroken-address,Bob\n", "utf-8")
    result = cli("import", str(leads), "--rejects", "/dev/full", "--now", NOW)
    assert result.code == 1
    assert result.line == (
        "error: --rejects /dev/full: cannot write (No space left on device); the import "
        "itself was committed (created 1, updated 0, rejected 1): run it again with another "
        "--rejects path to get the rows"
    )
    assert cli("show", "full@example.com").code == 0


# --- 12. unknown filters, blank reasons, impossible instants, structured names ---------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("leads", "--status", "bogus"),
            "error: unknown status 'bogus'; one of active, callback, closed",
        ),
        (("leads", "--stage", "bogus"), "error: unknown stage 'bogus'"),
        (
            ("leads", "--stage", "qualifed"),
            "error: unknown stage 'qualifed' (did you mean 'qualified'?)",
        ),
        (
            ("move", "ada@example.com", "lost", "--reason", ""),
            "error: --reason must say why (it is kept in the audit trail)",
        ),
        (
            ("move", "ada@example.com", "lost", "--reason", " \t "),
            "error: --reason must say why (it is kept in the audit trail)",
        ),
        (
            ("move", "ada@example.com", "lost", "--reason", "why", "--now", "0001-01-01"),
            "error: '0001-01-01' is outside the years 1970-2200 leadflow works in",
        ),
        (
            ("import", "seed.csv", "--now", "0001-01-01"),
            "error: '0001-01-01' is outside the years 1970-2200 leadflow works in",
        ),
        (
            ("event", "ada@example.com", "replied", "--at", "0001-01-01"),
            "error: '0001-01-01' is outside the years 1970-2200 leadflow works in",
        ),
        (
            ("run", "tick", "--now", "0001-01-01"),
            "error: '0001-01-01' is outside the years 1970-2200 leadflow works in",
        ),
        (
            ("event", "ada@example.com", "replied", "--at", "9999-12-31T23:00:00-05:00"),
            "error: '9999-12-31T23:00:00-05:00' is outside the years 1970-2200",
        ),
    ],
    ids=[
        "status",
        "stage",
        "stage-typo",
        "empty-reason",
        "blank-reason",
        "move-now",
        "import-now",
        "event-at",
        "run-now",
        "event-at-9999",
    ],
)
def test_12_bad_filters_reasons_and_instants_are_refused_and_change_nothing(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seeded: Seeded,
    args: tuple[str, ...],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed.csv").write_text(LEADS_CSV, encoding="utf-8")
    result = cli(*args)
    assert result.code == 1
    assert result.line.startswith(message)
    assert seeded.unchanged()


STRUCTURED = [({"x": 1}, "object"), (["Ada"], "array"), ({}, "object")]


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("first_name", {"x": 1}, "object"),
        ("first_name", ["Ada"], "array"),
        ("first_name", {}, "object"),
        ("company", {"name": "Acme"}, "object"),
        ("company_size", [120], "array"),
        ("email", {"x": "a@example.com"}, "object"),
    ],
    ids=["object", "array", "empty-object", "company", "company-size", "email"],
)
def test_12_a_json_object_is_never_a_lead_field_through_the_web(
    web: Web, field: str, value: Any, kind: str
) -> None:
    """Found here: ``{"first_name": {"x": 1}}`` was stored as the name '{"x": 1}'."""
    before = checksum(web.url)
    row = {"email": "a@example.com", field: value}
    status, summary = post(web, "/leads", json.dumps(row).encode())
    assert status == 200
    assert (summary["created"], summary["rejected"]) == (0, 1)
    reject = {"row": 1, "field": field, "message": f"expected one value, not a JSON {kind}"}
    assert summary["rejects"] == [reject]
    assert checksum(web.url) == before


@pytest.mark.parametrize(("value", "kind"), STRUCTURED, ids=["object", "array", "empty-object"])
def test_12_a_json_object_is_never_a_lead_field_in_json_lines(
    cli: Cli, tmp_path: Path, empty: str, url: str, value: Any, kind: str
) -> None:
    leads = tmp_path / "leads.jsonl"
    leads.write_text(json.dumps({"email": "a@example.com", "First Name": value}) + "\n")
    result = cli("import", str(leads), "--now", NOW)
    assert result.code == 0
    assert result.line == f"row 1: first_name: expected one value, not a JSON {kind}"
    assert checksum(url) == empty


def test_12_a_json_object_is_still_kept_as_an_attribute(web: Web) -> None:
    """The rule is about lead fields: anything else keeps the JSON text (as before)."""
    row = {"email": "kept@example.com", "first_name": "Ada", "interests": ["ml", {"x": 1}]}
    status, summary = post(web, "/leads", json.dumps(row).encode())
    assert (status, summary["created"], summary["rejected"]) == (200, 1, 0)
    with web.engine.connect() as conn:
        query = select(LEADS.c.first_name, LEADS.c.attributes)
        stored = conn.execute(query.where(LEADS.c.email == "kept@example.com")).one()
    assert tuple(stored) == ("Ada", {"interests": '["ml", {"x": 1}]'})


# --- 13. outbox decisions on rows that do not exist or without a reason ----------------------


@pytest.mark.parametrize(
    ("args", "code", "out", "message"),
    [
        (("outbox", "unknown"), 0, "0 email(s) with unknown delivery", None),
        (
            ("outbox", "requeue", "999", "--reason", "relay log"),
            1,
            "requeue: 0 email(s) []",
            "email 999 left alone: no such email",
        ),
        (
            ("outbox", "close", "1", "2", "--reason", "relay log"),
            1,
            "close: 0 email(s) []",
            None,
        ),
        (
            ("outbox", "close", "1", "--reason", ""),
            1,
            "",
            "error: --reason must say why (it is kept in the audit trail)",
        ),
        (
            ("outbox", "requeue", "1", "--reason", "  "),
            1,
            "",
            "error: --reason must say why (it is kept in the audit trail)",
        ),
    ],
    ids=["unknown", "requeue-nothing", "close-nothing", "empty-reason", "blank-reason"],
)
def test_13_outbox_decisions_on_nothing_or_without_reason_change_nothing(
    cli: Cli,
    seeded: Seeded,
    args: tuple[str, ...],
    code: int,
    out: str,
    message: str | None,
) -> None:
    result = cli(*args)
    assert result.code == code
    assert out in result.out
    if message is not None:
        assert result.line == message
    elif args[1] == "close":
        assert result.err.splitlines() == [
            "email 1 left alone: no such email",
            "email 2 left alone: no such email",
        ]
    else:
        assert result.err == ""
    assert seeded.unchanged()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("outbox", "close", "1"), "Missing option '--reason'"),
        (("outbox", "requeue", "--reason", "x"), "Missing argument 'ids'."),
        (("outbox", "requeue", "one", "--reason", "x"), "Invalid value for 'ids'"),
    ],
    ids=["no-reason", "no-ids", "not-an-id"],
)
def test_13_outbox_usage_errors_exit_2_and_change_nothing(
    cli: Cli, seeded: Seeded, args: tuple[str, ...], message: str
) -> None:
    result = cli(*args)
    assert result.code == 2
    assert message in result.err
    assert seeded.unchanged()
