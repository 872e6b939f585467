"""Lead intake: hostile files in, clean merged leads out, nothing lost without a reason."""

from __future__ import annotations

import csv
import tempfile
import tracemalloc
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, select, text, update
from sqlmodel import SQLModel

from leadflow.config.schema import Intake
from leadflow.intake import (
    ImportSummary,
    IntakeError,
    NormalizedLead,
    RawRow,
    Rejected,
    import_file,
    import_rows,
    normalize,
    read_rows,
    write_rejects,
)
from leadflow.intake.readers import sniff_delimiter
from models.db import make_engine, open_database
from models.tables import LEADS, SUPPRESSIONS

FIXTURES = Path(__file__).parent / "fixtures" / "intake"
NEW_YORK = "America/New_York"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=7)
INTAKE = Intake(
    mapping={
        "E-mail": "email",
        "Email Address": "email",
        "First Name": "first_name",
        "Last Name": "last_name",
        "Company": "company",
        "Job Title": "title",
        "Employees": "company_size",
        "Time Zone": "timezone",
        "Lead Source": "source",
    },
    attributes={
        "plan_interest": "str",
        "web_visits": "int",
        "trial": "bool",
        "arr": "float",
        "contract_end": "datetime",
    },
    do_not_email_columns=["do_not_email", "Do Not Email", "unsubscribed"],
    default_source="import",
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = open_database(f"sqlite:///{tmp_path / 'leads.db'}")
    yield db
    db.dispose()


def rows_of(*records: Mapping[str, str | None]) -> list[RawRow]:
    return [RawRow(number, dict(record)) for number, record in enumerate(records, start=1)]


def run(engine: Engine, rows: list[RawRow], now: datetime = NOW, **kw: Any) -> ImportSummary:
    return import_rows(engine, rows, INTAKE, default_timezone=NEW_YORK, now=now, **kw)


def norm(record: dict[str, str | None], number: int = 1) -> NormalizedLead | Rejected:
    return normalize(RawRow(number, record), INTAKE, default_timezone=NEW_YORK)


def accepted(record: dict[str, str | None]) -> NormalizedLead:
    result = norm(record)
    assert isinstance(result, NormalizedLead), result
    return result


def leads(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        found = conn.execute(select(LEADS).order_by(LEADS.c.email)).mappings()
        return {row["email"]: dict(row) for row in found}


def suppressions(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {
            email: reason
            for email, reason in conn.execute(select(SUPPRESSIONS.c.email, SUPPRESSIONS.c.reason))
        }


def counts(summary: ImportSummary) -> tuple[int, int, int, int, int, int]:
    s = summary
    return (s.created, s.updated, s.unchanged, s.rejected, s.suppressed, s.rows)


def data_of(lead: dict[str, Any]) -> dict[str, Any]:
    """The columns intake owns, without ids and bookkeeping."""
    skip = {"id", "fit_score", "engagement_score", "score", "round", "recycle_count", "stuck"}
    return {k: v for k, v in lead.items() if k not in skip and v is not None}


# --- readers ---------------------------------------------------------------------------------


def test_bom_semicolon_csv_keeps_quoted_delimiters_line_breaks_and_record_numbers() -> None:
    rows = list(read_rows(FIXTURES / "messy_semicolon_bom.csv"))

    # Record 7 is an empty ";;;;" line: skipped, but numbering counts records, not lines.
    assert [row.number for row in rows] == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11]
    first, second = rows[0].data, rows[1].data
    assert next(iter(first)) == "E-mail"  # the BOM is not part of the first column name
    assert first["Company"] == "Analytical Engines; Ltd, London"
    assert second["Last Name"] == "O'Brien\r\nSmith"
    assert second["Notes"] == "line one\r\nline two"
    assert second["First Name"] == '=HYPERLINK("http://evil.example","click")'
    assert rows[2].data["E-mail"] == "  ÅSA@EXAMPLE.SE "


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ("email,first_name,company", ","),
        ("email;first_name;company", ";"),
        ("email\tfirst_name\tcompany", "\t"),
        ('email;"name, full";"a,b,c"', ";"),
        ("email", ","),
    ],
)
def test_delimiter_is_sniffed_from_the_header_outside_quotes(header: str, delimiter: str) -> None:
    assert sniff_delimiter(header + "\r\n") == delimiter


def test_tab_separated_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "leads.tsv"
    path.write_text("email\tcompany\nada@example.com\tAcme, Inc\n", encoding="utf-8")

    assert [row.data for row in read_rows(path)] == [
        {"email": "ada@example.com", "company": "Acme, Inc"}
    ]


def test_cp1252_file_is_decoded_even_when_the_first_bad_byte_is_megabytes_in(
    tmp_path: Path,
) -> None:
    path = tmp_path / "excel.csv"
    ascii_rows = b"".join(b"lead%d@example.com,Smith\r\n" % i for i in range(60_000))
    assert len(ascii_rows) > 1_500_000  # beyond any prefix sample
    path.write_bytes(
        b"email,last_name\r\n" + ascii_rows + "hans@example.de,Müller\r\n".encode("cp1252")
    )

    *_, last = read_rows(path)

    assert last == RawRow(60_001, {"email": "hans@example.de", "last_name": "Müller"})


def test_undefined_cp1252_byte_is_replaced_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"email,last_name\r\nhans@example.de,M\xfcller\x81\r\n")

    (row,) = read_rows(path)

    assert row.data["last_name"] == "Müller\ufffd"
    assert row.warnings == ("undecodable bytes (cp1252) replaced with U+FFFD",)


def test_utf16_unicode_text_export_is_read(tmp_path: Path) -> None:
    path = tmp_path / "unicode.txt"
    path.write_bytes("email\tfirst_name\r\nli@example.cn\t李雷\r\n".encode("utf-16"))

    assert [row.data for row in read_rows(path)] == [
        {"email": "li@example.cn", "first_name": "李雷"}
    ]


def test_header_names_are_trimmed_and_made_unique_and_surplus_cells_kept(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text(' Email ,,email,"  Plan "\nada@example.com,x,ADA@example.com,pro,extra,\n')

    (row,) = read_rows(path)

    assert row.data == {
        "Email": "ada@example.com",
        "column_2": "x",
        "email_2": "ADA@example.com",
        "Plan": "pro",
        "column_5": "extra",
    }


def test_oversized_csv_field_rejects_its_record_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_text(f"email,notes\na@example.com,{'x' * 200_000}\nb@example.com,ok\n")

    first, second = read_rows(path)

    assert first == RawRow(1, {}, error="unreadable record: field larger than field limit (131072)")
    assert second == RawRow(2, {"email": "b@example.com", "notes": "ok"})


def test_jsonl_lines_that_are_not_objects_become_rows_with_an_error() -> None:
    rows = list(read_rows(FIXTURES / "webform.jsonl"))

    assert [(row.number, row.error) for row in rows] == [
        (1, None),
        (2, "not a JSON object (got an array)"),
        (3, None),
        (
            4,
            "not valid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        (5, "not a JSON object (got a string)"),
        (7, None),
    ]
    assert rows[0].data == {
        "email": "Ada@Example.COM",
        "first_name": "Ada",
        "company_size": "1200",
        "authority": "true",
        "budget": "25,000.50",
        "utm_campaign": "spring",
    }
    assert rows[2].data["tags"] == '["a", "b"]'
    assert rows[5].data["deal_value"] is None


@pytest.mark.parametrize("name", ["leads.xlsx", "leads", "leads.json"])
def test_unknown_file_type_is_refused_before_reading(tmp_path: Path, name: str) -> None:
    with pytest.raises(IntakeError, match="unknown file type"):
        read_rows(tmp_path / name)  # not even iterated: the error is immediate


def test_missing_file_is_an_intake_error(tmp_path: Path) -> None:
    with pytest.raises(IntakeError, match="no such file"):
        read_rows(tmp_path / "nope.csv")


def test_reading_streams_with_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("email,first_name,notes\r\n")
        for i in range(10_000):
            fh.write(f'lead{i}@example.com,Name {i},"{"n" * 600}"\r\n')
    size = path.stat().st_size

    tracemalloc.start()
    try:
        total = sum(1 for _ in read_rows(path))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert total == 10_000
    assert size > 6_000_000
    assert peak < size / 2


# --- normalize -------------------------------------------------------------------------------


def test_columns_map_by_config_then_case_insensitively_then_by_field_name() -> None:
    lead = accepted(
        {
            "E-mail": "Ada@Example.COM",  # mapping, exact
            "first name": "Ada",  # mapping, case-insensitive
            "LAST_NAME": "Lovelace",  # lead field, case-insensitive
            "Phone Number": "+44 20",  # no such field: attribute
            "Country": "GB",  # lead field
            "Deal Value": "1,000.5",  # lead field once snake_cased
            "Web Visits": "1 200",  # declared int attribute
            "planInterest": "pro",  # declared str attribute (camelCase)
            "Favourite Colour": "teal",  # undeclared attribute: kept as text
            "Trial": "Y",
            "ARR": "12000",
            "Contract End": "2027-01-31",
        }
    )

    assert lead.email == "ada@example.com"
    assert lead.fields == {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "country": "GB",
        "deal_value": 1000.5,
        "timezone": NEW_YORK,
        "source": "import",
    }
    assert lead.defaults == frozenset({"timezone", "source"})
    assert lead.attributes == {
        "phone_number": "+44 20",
        "web_visits": 1200,
        "plan_interest": "pro",
        "favourite_colour": "teal",
        "trial": True,
        "arr": 12000.0,
        "contract_end": "2027-01-31T00:00:00+00:00",
    }
    assert lead.warnings == []


@pytest.mark.parametrize("blank", ["", "   ", "-", "N/A", "n/a", "null", "NULL", "none", "#N/A"])
def test_blank_placeholders_are_none(blank: str) -> None:
    lead = accepted({"email": "a@example.com", "company": blank, "Employees": blank, "x": blank})

    assert "company" not in lead.fields
    assert "company_size" not in lead.fields
    assert lead.attributes == {}


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("1200", 1200),
        ("1,200", 1200),
        ("1 200", 1200),
        ("1_200", 1200),
        ("1,200,000", 1200000),
        ("1200.0", 1200),
        ("+7", 7),
        (" 42 ", 42),
    ],
)
def test_whole_numbers_accept_thousands_separators(cell: str, expected: int) -> None:
    assert accepted({"email": "a@example.com", "company_size": cell}).fields["company_size"] == (
        expected
    )


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("12.5", "not a whole number: '12.5'"),
        ("1,5", "not a whole number: '1,5'"),  # a German 1.5? or 15? not guessed
        ("12k", "not a whole number: '12k'"),
        ("1,20,0", "not a whole number: '1,20,0'"),
        ("99999999999", "number out of range: '99999999999'"),
    ],
)
def test_bad_whole_numbers_reject_the_row(cell: str, message: str) -> None:
    result = norm({"email": "a@example.com", "company_size": cell}, number=7)

    assert result == Rejected(7, "company_size", message, email="a@example.com")


@pytest.mark.parametrize(
    ("cell", "expected"), [("25,000.50", 25000.5), ("-3.5", -3.5), ("1e3", 1000.0), (".5", 0.5)]
)
def test_decimal_numbers(cell: str, expected: float) -> None:
    assert accepted({"email": "a@example.com", "budget": cell}).fields["budget"] == expected


@pytest.mark.parametrize("cell", ["nan", "inf", "1,5", "$100", "1_0"])
def test_bad_decimal_numbers_reject_the_row(cell: str) -> None:
    result = norm({"email": "a@example.com", "budget": cell})

    assert result == Rejected(1, "budget", f"not a number: {cell!r}", email="a@example.com")


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("yes", True),
        ("No", False),
        ("TRUE", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("y", True),
        ("N", False),
        ("x", True),
        ("X", True),
    ],
)
def test_booleans(cell: str, expected: bool) -> None:
    assert accepted({"email": "a@example.com", "authority": cell}).fields["authority"] is expected


def test_bad_boolean_rejects_the_row() -> None:
    assert norm({"email": "a@example.com", "authority": "maybe"}) == Rejected(
        1, "authority", "not a yes/no value: 'maybe'", email="a@example.com"
    )


def test_ten_thousand_character_field_is_rejected_not_truncated() -> None:
    result = norm({"email": "a@example.com", "first_name": "A" * 10_000}, number=3)

    assert result == Rejected(
        3, "first_name", "field too long (10000 characters, max 200)", email="a@example.com"
    )


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (None, "missing email"),
        ("N/A", "missing email"),
        ("ada", "An email address must have an @-sign."),
        ("ada@localhost", "The part after the @-sign is not valid. It should have a period."),
        ("ada..b@example.com", "An email address cannot have two periods in a row."),
        ("a@b@example.com", "The part after the @-sign contains invalid characters: '@'."),
    ],
)
def test_missing_or_invalid_email_is_rejected_with_the_validator_message(
    cell: str | None, message: str
) -> None:
    assert norm({"email": cell, "first_name": "Ada"}, number=4) == Rejected(4, "email", message)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("Ada@Example.COM", "ada@example.com"),
        ("  ada@example.com\t", "ada@example.com"),
        ("Zoë@Bücher.DE", "zoë@bücher.de"),
    ],
)
def test_email_is_normalized_and_lower_cased(cell: str, expected: str) -> None:
    assert accepted({"Email Address": cell}).email == expected


def test_email_problem_wins_over_other_problems() -> None:
    result = norm({"first_name": "A" * 300, "email": "nope"})

    assert result == Rejected(1, "email", "An email address must have an @-sign.")


def test_time_zone_invalid_falls_back_with_a_warning_and_blank_silently() -> None:
    invalid = accepted({"email": "a@example.com", "Time Zone": "Mars/Olympus"})
    blank = accepted({"email": "a@example.com", "Time Zone": ""})
    valid = accepted({"email": "a@example.com", "Time Zone": "Asia/Tokyo"})

    assert invalid.fields["timezone"] == NEW_YORK
    assert invalid.warnings == [
        "time zone 'Mars/Olympus' is not an IANA zone; using America/New_York"
    ]
    assert "timezone" in invalid.defaults
    assert (blank.fields["timezone"], blank.warnings) == (NEW_YORK, [])
    assert (valid.fields["timezone"], valid.defaults) == ("Asia/Tokyo", frozenset({"source"}))


def test_formula_like_cells_are_kept_verbatim() -> None:
    lead = accepted(
        {
            "email": "a@example.com",
            "first_name": '=HYPERLINK("http://evil.example","click")',
            "company": "+cmd|' /C calc'!A0",
            "title": "@SUM(A1:A2)",
            "phone": "+1 555 0100",
            "Notes": "-2+3",
        }
    )

    assert lead.fields["first_name"] == '=HYPERLINK("http://evil.example","click")'
    assert lead.fields["company"] == "+cmd|' /C calc'!A0"
    assert lead.fields["title"] == "@SUM(A1:A2)"
    assert lead.fields["phone"] == "+1 555 0100"
    assert lead.attributes == {"notes": "-2+3"}


def test_control_characters_collapse_in_single_line_fields_only() -> None:
    lead = accepted(
        {
            "email": "a@example.com",
            "first_name": "Ada \r\n Augusta\x00",
            "company": "Acme\tInc\x0bLtd",
            "need": "line one\r\nline two\x00",
            "Notes": "a\rb",
        }
    )

    assert lead.fields["first_name"] == "Ada Augusta"
    assert lead.fields["company"] == "Acme Inc Ltd"
    assert lead.fields["need"] == "line one\nline two"
    assert lead.attributes == {"notes": "a\nb"}


def test_names_are_stored_in_composed_unicode() -> None:
    lead = accepted(
        {"email": "a@example.com", "first_name": "Zoe\u0308", "last_name": "Mu\u0308ller"}
    )

    assert (lead.fields["first_name"], lead.fields["last_name"]) == ("Zoë", "Müller")


def test_declared_attribute_of_the_wrong_kind_rejects_the_row() -> None:
    assert norm({"email": "a@example.com", "Contract End": "next year"}) == Rejected(
        1, "contract_end", "not an ISO date: 'next year'", email="a@example.com"
    )


@pytest.mark.parametrize(
    ("column", "cell", "flag"),
    [
        ("do_not_email", "yes", True),
        ("DO NOT EMAIL", "x", True),
        ("Unsubscribed", "TRUE", True),
        ("unsubscribed", "no", False),
        ("do_not_email", "", False),
    ],
)
def test_do_not_email_columns_are_matched_case_insensitively(
    column: str, cell: str, flag: bool
) -> None:
    lead = accepted({"email": "a@example.com", column: cell})

    assert lead.do_not_email is flag
    assert lead.attributes == {}


def test_unreadable_do_not_email_value_errs_on_the_side_of_not_mailing() -> None:
    lead = accepted({"email": "a@example.com", "unsubscribed": "2024-05-01"})

    assert lead.do_not_email is True
    assert lead.warnings == [
        "column 'unsubscribed': '2024-05-01' is not yes/no; treated as do-not-email"
    ]


def test_two_columns_disagreeing_on_a_field_keep_both_values() -> None:
    lead = accepted(
        {
            "E-mail": "ada@example.com",
            "Email Address": "ADA@example.com",  # same address: nothing to keep
            "Job Title": "CTO",
            "title": "Chief Technology Officer",
            "First Name": "Ada",
            "first_name": "Ada",
        }
    )

    assert (lead.email, lead.fields["title"], lead.fields["first_name"]) == (
        "ada@example.com",
        "CTO",
        "Ada",
    )
    assert lead.attributes == {"title_2": "Chief Technology Officer"}
    assert lead.warnings == [
        "column 'title' repeats title (from 'Job Title'); kept as attribute title_2"
    ]


def test_unreadable_record_is_rejected_with_its_reason() -> None:
    raw = RawRow(5, {}, error="not a JSON object (got an array)")

    assert normalize(raw, INTAKE, default_timezone=NEW_YORK) == Rejected(
        5, "row", "not a JSON object (got an array)"
    )


# --- store -----------------------------------------------------------------------------------


def test_messy_csv_import_exact_outcome(engine: Engine) -> None:
    summary = import_file(
        engine,
        FIXTURES / "messy_semicolon_bom.csv",
        INTAKE,
        default_timezone=NEW_YORK,
        now=NOW,
        batch_size=3,
    )

    # created: Ada, Zoë, Åsa, Li, Grace; updated: ada@ again (row 8) adds Byron and 15 visits
    assert counts(summary) == (5, 1, 0, 4, 2, 10)
    assert [r.as_dict() for r in summary.rejects] == [
        {"row": 5, "field": "email", "message": "An email address must have an @-sign."},
        {"row": 6, "field": "email", "message": "missing email"},
        {"row": 9, "field": "company_size", "message": "not a whole number: '12.5'"},
        {"row": 11, "field": "web_visits", "message": "not a whole number: 'lots'"},
    ]
    assert summary.warnings == [
        "row 2: time zone 'Mars/Olympus' is not an IANA zone; using America/New_York"
    ]
    stored = {email: data_of(lead) for email, lead in leads(engine).items()}
    stamps = {"created_at": NOW, "updated_at": NOW, "rescore_at": NOW, "next_action_at": NOW}
    assert stored == {
        "ada@example.com": {
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Byron",
            "company": "Analytical Engines; Ltd, London",
            "title": "Countess",
            "phone": "+44 20 7946 0000",
            "company_size": 1200,
            "timezone": "Europe/London",
            "source": "import",
            "attributes": {"plan_interest": "enterprise", "web_visits": 15},
            "status": "active",
            **stamps,
        },
        "zoe@example.com": {
            "email": "zoe@example.com",
            "first_name": '=HYPERLINK("http://evil.example","click")',
            "last_name": "O'Brien Smith",
            "company": "Zoë & Co",
            "title": "@admin",
            "timezone": NEW_YORK,
            "source": "import",
            "attributes": {"notes": "line one\nline two"},
            "status": "active",
            **stamps,
        },
        "åsa@example.se": {
            "email": "åsa@example.se",
            "first_name": "Åsa",
            "last_name": "Öberg",
            "company": "Ikea, Älmhult",
            "company_size": 1200,
            "timezone": "Europe/Stockholm",
            "source": "import",
            "attributes": {"plan_interest": "pro", "web_visits": 7},
            "status": "active",
            **stamps,
        },
        "li.lei@example.cn": {
            "email": "li.lei@example.cn",
            "first_name": "李雷",
            "company": "Beijing Co",
            "title": "CTO",
            "company_size": 50,
            "timezone": "Asia/Shanghai",
            "source": "import",
            "attributes": {},
            "status": "active",
            **stamps,
        },
        "grace@example.com": {
            "email": "grace@example.com",
            "first_name": "Grace",
            "last_name": "Hopper",
            "company": "US Navy",
            "timezone": NEW_YORK,
            "source": "import",
            "attributes": {},
            "status": "active",
            **stamps,
        },
    }
    # Hans's row was rejected (12.5 employees) but his do-not-email wish is still honoured.
    assert suppressions(engine) == {
        "åsa@example.se": "do_not_email",
        "hans@example.de": "do_not_email",
    }


def test_reimporting_the_messy_csv_changes_nothing(engine: Engine) -> None:
    path = FIXTURES / "messy_semicolon_bom.csv"
    import_file(engine, path, INTAKE, default_timezone=NEW_YORK, now=NOW)
    before = leads(engine)

    again = import_file(engine, path, INTAKE, default_timezone=NEW_YORK, now=LATER)

    assert counts(again) == (0, 0, 6, 4, 0, 10)
    assert leads(engine) == before


def test_cp1252_excel_export_imports_umlauts(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "E-mail;Last Name;Company\r\nhans@example.de;Müller;Bäckerei Müller\r\n".encode("cp1252")
    )

    summary = import_file(engine, path, INTAKE, default_timezone=NEW_YORK, now=NOW)

    assert counts(summary) == (1, 0, 0, 0, 0, 1)
    lead = leads(engine)["hans@example.de"]
    assert (lead["last_name"], lead["company"]) == ("Müller", "Bäckerei Müller")


def test_jsonl_import_merges_into_existing_leads(engine: Engine) -> None:
    import_file(
        engine, FIXTURES / "messy_semicolon_bom.csv", INTAKE, default_timezone=NEW_YORK, now=NOW
    )

    summary = import_file(
        engine, FIXTURES / "webform.jsonl", INTAKE, default_timezone=NEW_YORK, now=LATER
    )

    # Ada: authority, budget, utm_campaign added; Grace: timeline filled although older;
    # Zoë: first name replaced (the form is newer than the stored lead).
    assert counts(summary) == (0, 3, 0, 3, 1, 6)
    assert [(r.row, r.field) for r in summary.rejects] == [(2, "row"), (4, "row"), (5, "row")]
    stored = leads(engine)
    ada, grace, zoe = (
        stored["ada@example.com"],
        stored["grace@example.com"],
        stored["zoe@example.com"],
    )
    assert (ada["authority"], ada["budget"], ada["company_size"]) == (True, 25000.5, 1200)
    assert ada["attributes"] == {
        "plan_interest": "enterprise",
        "web_visits": 15,
        "utm_campaign": "spring",
    }
    assert (ada["updated_at"], ada["created_at"]) == (LATER, NOW)
    assert (grace["timeline_days"], grace["attributes"]) == (30, {"tags": '["a", "b"]'})
    assert zoe["first_name"] == "Zoë"
    assert suppressions(engine)["zoe@example.com"] == "do_not_email"


def test_duplicates_merge_by_normalized_email_later_rows_winning(engine: Engine) -> None:
    summary = run(
        engine,
        rows_of(
            {"email": "Ada@Example.COM", "first_name": "Ada", "company": "Acme"},
            {"email": "ada@example.com", "first_name": "", "company": "Acme Ltd", "title": "CTO"},
            {"email": "ADA@EXAMPLE.COM", "first_name": "Ada", "company": "N/A"},
        ),
    )

    assert counts(summary) == (1, 1, 1, 0, 0, 3)
    (lead,) = leads(engine).values()
    assert (lead["email"], lead["first_name"], lead["company"], lead["title"]) == (
        "ada@example.com",
        "Ada",
        "Acme Ltd",
        "CTO",
    )


def test_merging_with_the_database_fills_blanks_and_newer_data_wins(engine: Engine) -> None:
    run(
        engine,
        rows_of(
            {"email": "ada@example.com", "first_name": "Ada", "company": "Acme", "Plan": "pro"},
            {"email": "bob@example.com", "first_name": "Bob", "Time Zone": "Europe/Berlin"},
            {"email": "cy@example.com", "first_name": "Cy", "Lead Source": "webinar"},
        ),
    )

    summary = run(
        engine,
        rows_of(
            # newer than the stored lead: overwrites, fills, adds an attribute
            {"email": "ada@example.com", "company": "Acme Ltd", "title": "CTO", "Plan": "team"},
            # blank and invalid time zone: the default must not overwrite Europe/Berlin
            {"email": "bob@example.com", "first_name": "Bob", "Time Zone": "Mars/Olympus"},
            # no source column: the default "import" must not overwrite "webinar"
            {"email": "cy@example.com", "first_name": "Cy"},
        ),
        now=LATER,
    )

    assert counts(summary) == (0, 1, 2, 0, 0, 3)
    stored = leads(engine)
    ada, bob, cy = stored["ada@example.com"], stored["bob@example.com"], stored["cy@example.com"]
    assert (ada["first_name"], ada["company"], ada["title"]) == ("Ada", "Acme Ltd", "CTO")
    assert ada["attributes"] == {"plan": "team"}
    assert (ada["created_at"], ada["updated_at"], ada["rescore_at"]) == (NOW, LATER, NOW)
    assert (bob["timezone"], bob["updated_at"]) == ("Europe/Berlin", NOW)  # not written
    assert (cy["source"], cy["updated_at"]) == ("webinar", NOW)


def test_rows_older_than_the_stored_lead_only_fill_blanks(engine: Engine) -> None:
    run(engine, rows_of({"email": "ada@example.com", "company": "Acme", "Plan": "pro"}))
    older = (NOW - timedelta(days=30)).isoformat()
    newer = (LATER - timedelta(days=1)).isoformat()

    summary = run(
        engine,
        rows_of(
            {
                "email": "ada@example.com",
                "company": "Old Co",
                "title": "Intern",
                "Plan": "free",
                "web visits": "3",
                "updated_at": older,
            },
        ),
        now=LATER,
    )
    mid = leads(engine)["ada@example.com"]
    run(
        engine,
        rows_of({"email": "ada@example.com", "company": "New Co", "last_modified": newer}),
        now=LATER + timedelta(days=1),
    )

    assert counts(summary) == (0, 1, 0, 0, 0, 1)
    assert (mid["company"], mid["title"]) == ("Acme", "Intern")
    assert mid["attributes"] == {"plan": "pro", "web_visits": 3}
    # The lead was last changed at LATER; a row modified one day before that is older again.
    assert leads(engine)["ada@example.com"]["company"] == "Acme"
    run(
        engine,
        rows_of(
            {"email": "ada@example.com", "company": "New Co", "last_modified": LATER.isoformat()}
        ),
        now=LATER + timedelta(days=2),
    )
    assert leads(engine)["ada@example.com"]["company"] == "New Co"


def test_changed_lead_is_due_for_rescoring_and_action_unless_already_due(engine: Engine) -> None:
    run(
        engine,
        rows_of(
            {"email": "early@example.com"},
            {"email": "late@example.com"},
            {"email": "closed@example.com"},
        ),
    )
    earlier, far = NOW + timedelta(days=1), LATER + timedelta(days=60)
    with engine.begin() as conn:
        conn.execute(
            update(LEADS)
            .where(LEADS.c.email == "early@example.com")
            .values(rescore_at=earlier, next_action_at=earlier)
        )
        conn.execute(
            update(LEADS)
            .where(LEADS.c.email == "late@example.com")
            .values(rescore_at=None, next_action_at=far)
        )
        conn.execute(
            update(LEADS)
            .where(LEADS.c.email == "closed@example.com")
            .values(status="closed", next_action_at=None, rescore_at=far)
        )

    run(
        engine,
        rows_of(
            {"email": "early@example.com", "company": "A"},
            {"email": "late@example.com", "company": "B"},
            {"email": "closed@example.com", "company": "C"},
        ),
        now=LATER,
    )

    stored = leads(engine)
    assert [
        (stored[e]["rescore_at"], stored[e]["next_action_at"])
        for e in ("early@example.com", "late@example.com", "closed@example.com")
    ] == [
        (earlier, earlier),
        (LATER, LATER),
        (LATER, None),
    ]
    assert stored["late@example.com"]["status"] == "active"
    assert stored["closed@example.com"]["status"] == "closed"


def test_new_lead_gets_active_status_and_no_stage(engine: Engine) -> None:
    run(engine, rows_of({"email": "new@example.com", "stage": "won", "status": "closed"}))

    lead = leads(engine)["new@example.com"]
    assert (lead["status"], lead["pipeline"], lead["stage"]) == ("active", None, None)
    assert lead["attributes"] == {"stage": "won", "status": "closed"}  # data, not control


def test_suppressed_address_stays_suppressed_on_reimport(engine: Engine) -> None:
    first = run(engine, rows_of({"email": "Ada@Example.com", "Do Not Email": "yes"}))
    second = run(engine, rows_of({"email": "ada@example.com", "Do Not Email": "no"}), now=LATER)
    third = run(engine, rows_of({"email": "ada@example.com", "Do Not Email": "yes"}), now=LATER)

    assert (first.suppressed, second.suppressed, third.suppressed) == (1, 0, 0)
    assert suppressions(engine) == {"ada@example.com": "do_not_email"}
    with engine.connect() as conn:
        created = conn.execute(select(SUPPRESSIONS.c.created_at)).scalar_one()
    assert created == NOW


def test_source_label_replaces_the_default_source(engine: Engine) -> None:
    run(
        engine,
        rows_of({"email": "a@example.com"}, {"email": "b@example.com", "source": "fair"}),
        source_label="webform",
    )

    assert {e: lead["source"] for e, lead in leads(engine).items()} == {
        "a@example.com": "webform",
        "b@example.com": "fair",
    }


def test_progress_is_reported_after_each_committed_batch(engine: Engine) -> None:
    seen: list[int] = []
    rows = rows_of(*({"email": f"lead{i}@example.com"} for i in range(7)))

    run(engine, rows, batch_size=3, on_progress=seen.append)

    assert seen == [3, 6, 7]


def test_a_failing_batch_leaves_no_half_written_lead(engine: Engine) -> None:
    run(engine, rows_of({"email": "ada@example.com", "company": "Acme"}))
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER boom BEFORE INSERT ON lead WHEN NEW.email = 'boom@example.com' "
                "BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
        )
    rows = rows_of(
        {"email": "first@example.com"},
        {"email": "second@example.com"},
        {"email": "ada@example.com", "company": "Changed"},  # batch 2: an update...
        {"email": "boom@example.com"},  # ...and an insert that fails
    )

    with pytest.raises(Exception, match="boom"):
        run(engine, rows, batch_size=2, now=LATER)

    stored = leads(engine)
    assert sorted(stored) == ["ada@example.com", "first@example.com", "second@example.com"]
    assert (stored["ada@example.com"]["company"], stored["ada@example.com"]["updated_at"]) == (
        "Acme",
        NOW,
    )


def test_queries_per_batch_do_not_grow_with_the_number_of_rows(engine: Engine) -> None:
    statements: list[str] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda *a: None if a[2].startswith("BEGIN") else statements.append(a[2]),
    )

    def batch_statements(size: int) -> int:
        statements.clear()
        rows = [
            *({"email": f"old{i}@example.com", "company": "New"} for i in range(size)),
            *({"email": f"new{size}-{i}@example.com", "Do Not Email": "y"} for i in range(size)),
        ]
        run(engine, rows_of(*rows), batch_size=10_000, now=LATER)
        return len(statements)

    run(engine, rows_of(*({"email": f"old{i}@example.com"} for i in range(200))))

    # SELECT leads, INSERT new, UPDATE changed (executemany), SELECT + INSERT suppressions
    assert batch_statements(5) == batch_statements(200) == 5


def test_write_rejects_escapes_cells_a_spreadsheet_would_run(tmp_path: Path) -> None:
    path = tmp_path / "rejects.csv"
    write_rejects(
        path,
        [
            Rejected(3, "email", "An email address must have an @-sign."),
            Rejected(4, "=cmd", "@SUM(1+1)"),
            Rejected(5, "-2+3", '+1, "quoted"'),
        ],
    )

    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        assert list(csv.reader(fh)) == [
            ["row", "field", "message"],
            ["3", "email", "An email address must have an @-sign."],
            ["4", "'=cmd", "'@SUM(1+1)"],
            ["5", "'-2+3", '\'+1, "quoted"'],
        ]


def test_summary_as_dict_is_json_ready(engine: Engine) -> None:
    summary = run(engine, rows_of({"email": "x"}, {"email": "a@example.com", "Time Zone": "Nope"}))

    assert summary.as_dict() == {
        "created": 1,
        "updated": 0,
        "unchanged": 0,
        "rejected": 1,
        "suppressed": 0,
        "rows": 2,
        "rejects": [
            {"row": 1, "field": "email", "message": "An email address must have an @-sign."}
        ],
        "warnings": ["row 2: time zone 'Nope' is not an IANA zone; using America/New_York"],
    }


# --- properties ------------------------------------------------------------------------------

COLUMNS: dict[str, list[str]] = {
    "E-mail": [
        "ada@example.com",
        "ADA@Example.com",
        "bob@example.org",
        "Zoë@example.de",
        "bad",
        "",
    ],
    "First Name": ["", "Ada", "Zoë", "N/A", "=1+2", "李雷", "a\r\nb"],
    "Employees": ["", "1,200", "12", "-", "x"],
    "Time Zone": ["", "Europe/Berlin", "Mars/Base"],
    "Lead Source": ["", "web", "fair"],
    "Plan Interest": ["", "pro", "enterprise"],
    "Web Visits": ["", "3", "lots"],
    "Do Not Email": ["", "yes", "no"],
}
raw_records = st.lists(
    st.fixed_dictionaries({column: st.sampled_from(values) for column, values in COLUMNS.items()}),
    max_size=12,
)


def fresh_engine(folder: str) -> Engine:
    db = make_engine(f"sqlite:///{folder}/p.db")
    SQLModel.metadata.create_all(db)
    return db


def snapshot(engine: Engine) -> tuple[list[dict[str, Any]], dict[str, str]]:
    return [{k: v for k, v in lead.items() if k != "id"} for lead in leads(engine).values()], (
        suppressions(engine)
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=raw_records)
def test_importing_the_same_rows_twice_changes_nothing(records: list[dict[str, str]]) -> None:
    rows = rows_of(*records)
    with tempfile.TemporaryDirectory() as folder:
        db = fresh_engine(folder)
        try:
            run(db, rows)
            before = snapshot(db)
            again = run(db, rows, now=LATER)
            after = snapshot(db)
        finally:
            db.dispose()

    assert (again.created, again.updated, again.suppressed) == (0, 0, 0)
    assert again.unchanged + again.rejected == again.rows == len(rows)
    assert after == before


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=raw_records, second=raw_records)
def test_final_state_does_not_depend_on_the_batch_size(
    first: list[dict[str, str]], second: list[dict[str, str]]
) -> None:
    states = []
    for batch_size in (1, 3, 1000):
        with tempfile.TemporaryDirectory() as folder:
            db = fresh_engine(folder)
            try:
                summary = run(db, rows_of(*first), batch_size=batch_size)
                after_first = snapshot(db)
                run(db, rows_of(*second), now=LATER, batch_size=batch_size)
                leads_after, suppressed = snapshot(db)
            finally:
                db.dispose()
        # From an empty database everything is identical, timestamps included; on top of
        # existing leads the values are (see the store docstring for the timestamp caveat).
        values = [{k: v for k, v in lead.items() if not k.endswith("_at")} for lead in leads_after]
        states.append((after_first, values, suppressed, summary.rejected))
        assert summary.created + summary.updated + summary.unchanged + summary.rejected == len(
            first
        )
    assert states[0] == states[1] == states[2]
