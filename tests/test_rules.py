"""Rule language: compiled rules evaluated by a real database, and every rejection message.

Runs on SQLite; set LEADFLOW_TEST_POSTGRES_URL (e.g. postgresql+psycopg://u@host/db) to run the
same SQL tests against PostgreSQL as well.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    not_,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

from leadflow.rules import Catalog, FunctionSpec, Rule, RuleError, compile_rule

metadata = MetaData()
leads = Table(
    "rule_leads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("score", Integer),
    Column("revenue", Float),
    Column("industry", String),
    Column("title", String),
    Column("phone", String),
    Column("active", Boolean),
    Column("created_at", DateTime),
    Column("attributes_budget", Integer),
)
events = Table(
    "rule_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("lead_id", ForeignKey("rule_leads.id")),
    Column("type", String),
)
LEADS = [
    (1, 50, 1000.5, "saas", "CTO", "555-1234", True, datetime(2024, 1, 10), 20000),
    (2, 30, 0.0, "fintech", "VP Sales", "", False, datetime(2024, 3, 1), 5000),
    (3, None, None, None, None, None, None, None, None),
    (4, 40, -5.25, "retail", "ceo", None, True, datetime(2023, 12, 31, 12), 10000),
    (5, -10, 99.9, "SaaS", "50%_off Head", "+1 (555) 000", False, datetime(2024, 6, 15), None),
]
EVENTS = [(1, "replied"), (1, "replied"), (1, "opened"), (2, "opened"), (4, "replied"), (5, "x")]
ALL = {1, 2, 3, 4, 5}

CATALOG = Catalog(
    fields={
        "score": "int",
        "revenue": "float",
        "industry": "str",
        "title": "str",
        "phone": "str",
        "active": "bool",
        "created_at": "datetime",
        "attributes_budget": "int",
    },
    functions={"events": FunctionSpec("events", ("str",), "int")},
)


class Resolver:
    """Fields are columns; events(type) counts the lead's events of that type."""

    def field(self, name: str) -> ColumnElement[Any]:
        return leads.c[name]

    def function(self, name: str, args: Sequence[Any]) -> ColumnElement[Any]:
        assert name == "events"
        count = select(func.count()).select_from(events)
        return count.where(
            events.c.lead_id == leads.c.id, events.c.type == args[0]
        ).scalar_subquery()


RESOLVER = Resolver()
POSTGRES = create_engine("postgresql+psycopg://").dialect  # compiles only, never connects
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("LEADFLOW_TEST_POSTGRES_URL") else [])


@pytest.fixture(scope="module", params=BACKENDS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = "sqlite://" if request.param == "sqlite" else os.environ["LEADFLOW_TEST_POSTGRES_URL"]
    engine = create_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    names = [c.name for c in leads.columns]
    with engine.begin() as conn:
        conn.execute(leads.insert(), [dict(zip(names, row, strict=True)) for row in LEADS])
        conn.execute(events.insert(), [{"lead_id": i, "type": t} for i, t in EVENTS])
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


def matching(engine: Engine, rule: Rule | str, negate: bool = False) -> set[int]:
    compiled = compile_rule(rule, CATALOG) if isinstance(rule, str) else rule
    condition = compiled.to_sql(RESOLVER)
    query = select(leads.c.id).where(not_(condition) if negate else condition)
    with engine.connect() as conn:
        return set(conn.scalars(query))


def error_of(text: str) -> tuple[str, int]:
    with pytest.raises(RuleError) as info:
        compile_rule(text, CATALOG)
    return info.value.message, info.value.offset


CASES: list[tuple[str, set[int]]] = [
    # comparison operators, int / float / text / bool / datetime
    ("score == 50", {1}),
    ("score != 50", {2, 4, 5}),
    ("score < 40", {2, 5}),
    ("score <= 40", {2, 4, 5}),
    ("score > 30", {1, 4}),
    ("score >= 30", {1, 2, 4}),
    ("revenue > 0.5", {1, 5}),
    ("revenue < 0", {4}),
    ("score > 39.5", {1, 4}),
    ("score == 40.0", {4}),
    ("score == 40.5", set()),
    ("industry == 'saas'", {1}),
    ('industry != "saas"', {2, 4, 5}),
    ('industry < "retail"', {2, 5}),
    ("active", {1, 4}),
    ("active == true", {1, 4}),
    ("active == false", {2, 5}),
    ("active != true", {2, 5}),
    ('created_at >= "2024-01-01"', {1, 2, 5}),
    ('created_at < "2024-01-01T00:00:00+01:00"', {4}),
    ('"2024-06-15T00:00:00Z" == created_at', {5}),
    ("attributes_budget >= 10000", {1, 4}),
    # chained comparisons
    ("30 <= score < 50", {2, 4}),
    ("-20 < score < 35", {2, 5}),
    ("0 < score <= 50 < attributes_budget", {1, 2, 4}),
    # arithmetic and precedence
    ("score + 10 > 55", {1}),
    ("score - 10 == 30", {4}),
    ("score * 2 >= 80", {1, 4}),
    ("score * 1.5 == 45", {2}),
    ("revenue * 2 > 100", {1, 5}),
    ("-score > 0", {5}),
    ("+score > 45", {1}),
    ("-score * 2 == 20", {5}),
    ("2 + 3 * score == 152", {1}),
    ("(2 + 3) * score == 250", {1}),
    ("score > 40 or score < 0 and industry == 'SaaS'", {1, 5}),
    ("(score > 40 or score < 0) and industry == 'SaaS'", {5}),
    ("not score > 40 and active", {4}),
    ("not (score > 40 and active)", {2, 4, 5}),
    # in / not in
    ('industry in ["saas", "fintech"]', {1, 2}),
    ('industry not in ["saas", "fintech"]', {4, 5}),
    ("score in (30, 40)", {2, 4}),
    ("score not in [30, -10]", {1, 4}),
    ("score in [40.5, 50]", {1}),
    ("revenue in [0, 99.9]", {2, 5}),
    ('created_at in ["2024-03-01"]', {2}),
    ("active in [false]", {2, 5}),
    ("events('replied') in [1, 2]", {1, 4}),
    # built-in functions
    ('lower(title) == "cto"', {1}),
    ('lower(title) in ["cto", "ceo"]', {1, 4}),
    ('upper(title) == "CEO"', {4}),
    ('lower(industry) in ["saas"]', {1, 5}),
    ('contains(title, "Sales")', {2}),
    ('contains(title, "sales")', set()),
    ('contains(lower(title), "sales")', {2}),
    ('contains(title, "%")', {5}),
    ('contains(title, "_")', {5}),
    ('contains(title, "")', {1, 2, 4, 5}),
    ('startswith(title, "VP")', {2}),
    ('startswith(title, "vp")', set()),
    ('startswith(title, "50%_")', {5}),
    ('startswith(title, "5_")', set()),
    ('startswith(title, "")', {1, 2, 4, 5}),
    ('endswith(title, "ead")', {5}),
    ('endswith(title, "TO")', {1}),
    ('endswith(title, "CTO")', {1}),
    ('endswith(title, "CCTO")', set()),
    ('endswith(title, "")', {1, 2, 4, 5}),
    ('endswith(industry, "as")', {1}),
    ("is_set(phone)", {1, 5}),
    ("not is_set(phone)", {2, 3, 4}),
    ("is_set(score)", {1, 2, 4, 5}),
    ("is_set(active)", {1, 2, 4, 5}),
    ("coalesce(score, 0) == 0", {3}),
    ('coalesce(industry, "unknown") == "unknown"', {3}),
    ("coalesce(attributes_budget, score) > 0", {1, 2, 4}),
    ("coalesce(active, true)", {1, 3, 4}),
    ("coalesce(revenue, 1) > 0.5", {1, 3, 5}),
    ('coalesce(created_at, "2000-01-01") < "2001-01-01"', {3}),
    ("coalesce(score, null) == null", {3}),
    # host function
    ('events("replied") > 0', {1, 4}),
    ("events('replied') == 2", {1}),
    ('events("opened") >= 1 and events("replied") == 0', {2}),
    ('events("bounced") == 0', ALL),
    # the examples from the pipeline config
    ('score >= 40 and industry in ["saas", "fintech"]', {1}),
    ('not is_set(phone) or lower(title) in ["cto", "ceo"]', {1, 2, 3, 4}),
    # true / false / null aliases
    ("true", ALL),
    ("True", ALL),
    ("false", set()),
    ("score == null", {3}),
    ("score == None", {3}),
    ("null == score", {3}),
    ("score != null", {1, 2, 4, 5}),
    ("phone == null", {3, 4}),
    ("null == null", ALL),
    ("null != null", set()),
    # NULL: unknown never matches, and `not` of unknown is still unknown
    ("score > 0", {1, 2, 4}),
    ("not score > 0", {5}),
    ("not not score > 0", {1, 2, 4}),
    ("score > 0 or true", ALL),
    ("score > 0 and false", set()),
    ("not (score > 0 and false)", ALL),
    ("not (score > 100 or industry == 'retail')", {1, 2, 5}),
    ("not (active == null and score > 0)", {1, 2, 4, 5}),
    ("not (active != null and score > 0)", {3, 5}),
    ("(score > 0) == active", {1, 4, 5}),
    ("industry == title", set()),
    # line breaks and leading blanks, as YAML block scalars produce them
    ("\n  score >= 40\n  and active\n", {1, 4}),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_rule_selects_exactly_the_matching_leads(
    engine: Engine, text: str, expected: set[int]
) -> None:
    assert matching(engine, text) == expected


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_negated_rule_selects_exactly_the_other_leads(
    engine: Engine, text: str, expected: set[int]
) -> None:
    assert matching(engine, text, negate=True) == ALL - expected


CONSTANTS: list[tuple[str, bool]] = [
    ("true", True),
    ("false", False),
    ("1 > 2", False),
    ("1 < 2", True),
    ("not (1 > 2)", True),
    ("1 + 2 * 3 == 7", True),
    ("-3 * -2 == 6", True),
    ("1 == 1.0", True),
    ("0.5 + 0.25 == 0.75", True),
    ("1 < 2 < 3", True),
    ("3 > 2 > 2", False),
    ('"abc" < "abd"', True),
    ('lower("ABC") == "abc"', True),
    ('upper("abc") == "ABC"', True),
    ('contains("abc", "b")', True),
    ('startswith("abc", "b")', False),
    ('endswith("abc", "bc")', True),
    ('is_set("")', False),
    ('is_set("x")', True),
    ("is_set(0)", True),
    ('"b" in ["a", "b"]', True),
    ("2 not in [1, 2]", False),
    ("coalesce(null, 3) == 3", True),
    ("null == null", True),
    ("null != null", False),
    ("coalesce(null, null) == null", True),
    ("true and false or true", True),
    ("false or not true", False),
]


@pytest.mark.parametrize(("text", "expected"), CONSTANTS)
def test_constant_value_folds_rules_without_fields_and_agrees_with_sql(
    engine: Engine, text: str, expected: bool
) -> None:
    rule = compile_rule(text, CATALOG)
    assert rule.constant_value() is expected
    assert matching(engine, rule) == (ALL if expected else set())


@pytest.mark.parametrize(
    "text", ["score > 1", 'events("replied") > 0', "true or score > 1", "is_set(phone)"]
)
def test_constant_value_is_none_when_rule_uses_fields_or_functions(text: str) -> None:
    assert compile_rule(text, CATALOG).constant_value() is None


def test_rule_reports_fields_and_host_functions_it_uses() -> None:
    rule = compile_rule(
        'score > 1 and events("replied") > 0 and lower(title) == "x" or score < -5', CATALOG
    )
    assert rule.fields == frozenset({"score", "title"})
    assert rule.functions == frozenset({"events"})
    assert rule.text == 'score > 1 and events("replied") > 0 and lower(title) == "x" or score < -5'
    constant = compile_rule("lower('A') == 'a'", CATALOG)
    assert (constant.fields, constant.functions) == (frozenset(), frozenset())


def test_compiled_rules_compare_equal_when_text_and_catalog_agree() -> None:
    assert compile_rule("score > 1", CATALOG) == compile_rule("score > 1", CATALOG)
    assert hash(compile_rule("score > 1", CATALOG)) == hash(compile_rule("score > 1", CATALOG))


def test_literals_are_bound_parameters_on_sqlite_and_postgresql(engine: Engine) -> None:
    hostile = "x'); drop table rule_leads; --"
    rule = compile_rule(f'industry == "{hostile}" or contains(title, "{hostile}")', CATALOG)
    condition = rule.to_sql(RESOLVER)
    for dialect in (engine.dialect, POSTGRES):
        compiled = select(leads.c.id).where(condition).compile(dialect=dialect)
        assert hostile not in str(compiled)
        assert hostile in compiled.params.values()
    assert matching(engine, rule) == set()
    assert matching(engine, "is_set(industry)") == {1, 2, 4, 5}


def test_to_sql_compiles_for_postgresql() -> None:
    rule = compile_rule(
        'score * 1.5 > 10 and endswith(title, "x") and created_at < "2024-01-01" '
        'and not contains(industry, "a") and coalesce(active, false) and events("r") in [1, 2]',
        CATALOG,
    )
    sql = str(select(leads.c.id).where(rule.to_sql(RESOLVER)).compile(dialect=POSTGRES))
    assert sql.count("coalesce(") == 2
    assert "LIKE" not in sql


def test_float_literal_is_not_bound_as_integer_next_to_an_integer_column() -> None:
    rule = compile_rule("score == 40.5 or score in [1, 2.5]", CATALOG)
    sql = str(select(leads.c.id).where(rule.to_sql(RESOLVER)).compile(dialect=POSTGRES))
    assert "INTEGER" not in sql


ERRORS: list[tuple[str, str, int]] = [
    # attribute access, dunders, subscripts and other Python syntax
    ("score.__class__", "attribute access ('.__class__') is not allowed", 6),
    ('title.lower() == "cto"', "attribute access ('.lower') is not allowed", 6),
    ('__import__("os")', "'__import__' is not allowed (names starting with '__' are reserved)", 0),
    (
        "score > __builtins__",
        "'__builtins__' is not allowed (names starting with '__' are reserved)",
        8,
    ),
    ('title[0] == "C"', "subscripts ('x[...]') are not allowed", 5),
    ("score == (lambda: 1)", "lambda is not allowed", 10),
    ("(lambda: 1)() > 0", "only named functions can be called, like lower(title)", 0),
    ("is_set([s for s in title])", "comprehensions are not allowed", 7),
    ("any(s for s in title)", "unknown function 'any'", 0),
    ('title == f"{score}"', "f-strings are not allowed", 9),
    ("(x := 1) > 0", "':=' is not allowed", 1),
    ("score if active else 0", "'... if ... else ...' is not allowed", 0),
    ('{"a": 1} == 1', "dicts are not allowed", 0),
    ("score in {1, 2}", '\'in\' needs a list of constants, like ["a", "b"]', 9),
    ("[1, 2] == score", "lists are only allowed after 'in'", 0),
    ('b"x" == title', "only text, numbers, true/false and null constants are allowed", 0),
    ("score > 1j", "only text, numbers, true/false and null constants are allowed", 8),
    ("score > 99999999999999999999", "number 99999999999999999999 is out of range", 8),
    ("score > 1e999", "number is out of range", 8),
    ("score / 2 > 1", "operator '/' is not allowed (only +, - and *)", 6),
    ("score ** 2 > 1", "operator '**' is not allowed (only +, - and *)", 6),
    ("score > 1 | active", "operator '|' is not allowed (use 'or')", 10),
    ("(score > 1) & active", "operator '&' is not allowed (use 'and')", 12),
    ("~active", "operator '~' is not allowed (use 'not')", 0),
    ("phone is null", "'is' is not allowed (use '== null', '!= null' or is_set())", 6),
    ("phone is not None", "'is' is not allowed (use '== null', '!= null' or is_set())", 6),
    # calls
    ('lowr(title) == "x"', "unknown function 'lowr' (did you mean 'lower'?)", 0),
    ("score > 1 and evnts('x') > 0", "unknown function 'evnts' (did you mean 'events'?)", 14),
    ("eval('1') > 0", "unknown function 'eval'", 0),
    ("score(1) > 0", "'score' is a field, not a function", 0),
    ("events > 0", "'events' is a function: call it as events(...)", 0),
    ('lower(title, title) == "x"', "lower() takes 1 argument, got 2", 0),
    ("score > 1 and contains(title)", "contains() takes 2 arguments, got 1", 14),
    ("events() > 0", "events() takes 1 argument, got 0", 0),
    ('lower(x=title) == "a"', "lower() does not take keyword arguments", 6),
    ('lower(*title) == "a"', "'*' is not allowed", 6),
    ('lower(score) == "a"', "lower() needs text, got number field 'score'", 6),
    (
        "contains(title, industry)",
        'contains() needs a text constant as its second argument, like contains(title, "vp")',
        16,
    ),
    ("is_set(null)", "is_set() needs a field or value, got null", 7),
    ("events(1) > 0", "events() argument 1 must be text, got a number", 7),
    ("events(industry) > 0", "events() argument 1 must be a constant", 7),
    (
        'coalesce(score, "x") > 1',
        "coalesce() arguments must have the same type, got number field 'score' and text",
        16,
    ),
    # names
    ('industy == "saas"', "unknown field 'industy' (did you mean 'industry'?)", 0),
    ("zzz > 1", "unknown field 'zzz'", 0),
    ('title == "é" and industy == "x"', "unknown field 'industy' (did you mean 'industry'?)", 17),
    ("  score >\n  40 and industy == 1", "unknown field 'industy' (did you mean 'industry'?)", 19),
    # types
    ("industry > 5", "cannot compare text field 'industry' with a number", 0),
    ("5 < industry", "cannot compare text field 'industry' with a number", 0),
    ('score == "50"', "cannot compare number field 'score' with text", 0),
    ("score == active", "cannot compare number field 'score' with true/false field 'active'", 0),
    ("events('x') == 'y'", "cannot compare events() (a number) with text", 0),
    ("created_at > 5", "cannot compare date/time field 'created_at' with a number", 0),
    ('industry in ["saas", 5]', "cannot compare text field 'industry' with a number", 21),
    ("score in [1, true]", "cannot compare number field 'score' with a true/false value", 13),
    ("active < true", "cannot use '<' on true/false values", 7),
    ("score > null", "cannot use '>' with null (use '== null' or is_set())", 6),
    ("score in [1, null]", "null cannot be in a list (use '== null' or is_set())", 13),
    ("score in [1, score]", "the list after 'in' may only contain constants", 13),
    ("score in []", "the list after 'in' is empty", 9),
    ("null in [1]", "cannot use 'in' with null", 0),
    (
        '"sub" in title',
        '\'in\' needs a list of constants, like ["a", "b"] (use contains() to search text)',
        9,
    ),
    (
        'created_at > "yesterday"',
        "invalid date/time 'yesterday' (use ISO 8601, e.g. '2024-05-31' or '2024-05-31T09:30:00Z')",
        13,
    ),
    ('score + "a" > 1', "'+' needs numbers, got text", 8),
    ("-industry == 1", "'-' needs a number, got text field 'industry'", 1),
    ("score", "a rule must be a condition (true/false), got number field 'score'", 0),
    ("score + 1", "a rule must be a condition (true/false), got a number", 0),
    ("null", "a rule must be a condition (true/false), got null", 0),
    ("score and active", "'and' needs a condition (true/false), got number field 'score'", 0),
    ("active or 'x'", "'or' needs a condition (true/false), got text", 10),
    ("not title", "'not' needs a condition (true/false), got text field 'title'", 4),
    # syntax, size and depth
    ("score >", "syntax error: invalid syntax", 7),
    ("score > 40 and (industry == 'saas'", "syntax error: '(' was never closed", 15),
    ("score = 40", "syntax error: invalid syntax", 6),
    ("score > 'abc", "syntax error: unterminated string literal (detected at line 1)", 8),
    ("", "rule is empty", 0),
    (" \n ", "rule is empty", 0),
    ("score > 1\x00", "control character '\\x00' is not allowed", 9),
    ("not " * 60 + "active", "rule is nested too deeply (more than 50 levels)", 204),
    ("(" * 300 + "active" + ")" * 300, "syntax error: too many nested parentheses", 200),
]


@pytest.mark.parametrize(("text", "message", "offset"), ERRORS)
def test_rejected_rule_reports_message_and_offset(text: str, message: str, offset: int) -> None:
    assert error_of(text) == (message, offset)


def test_too_long_rule_is_rejected_before_parsing() -> None:
    text = "score > 1 or " * 160 + "true"
    assert len(text) == 2084
    assert error_of(text) == ("rule is too long (2084 characters, the limit is 2000)", 2000)
    assert compile_rule(("score > 1 or " * 153 + "true").ljust(2000), CATALOG).fields == {"score"}


def test_deep_but_flat_rules_are_fine() -> None:
    rule = compile_rule(" and ".join(f"score != {i}" for i in range(100)), CATALOG)
    assert rule.fields == {"score"}
    assert compile_rule("-" * 40 + "score > 1", CATALOG).fields == {"score"}


def test_rule_error_is_a_value_error_with_message_and_offset_that_survives_pickling() -> None:
    try:
        compile_rule("industy == 1", CATALOG)
    except ValueError as exc:
        assert str(exc) == "unknown field 'industy' (did you mean 'industry'?)"
        copy = pickle.loads(pickle.dumps(exc))
        assert isinstance(copy, RuleError)
        assert (copy.message, copy.offset) == (exc.message, exc.offset)  # type: ignore[attr-defined]
    else:
        pytest.fail("no RuleError")


def test_catalog_rejects_host_function_named_like_a_builtin() -> None:
    with pytest.raises(ValueError, match="host function 'lower' clashes with a built-in"):
        Catalog(fields={}, functions={"lower": FunctionSpec("lower", ("str",), "str")})


# --- property: SQL agrees with a reference three-valued evaluator ------------------------------

INT_COLUMNS = ("a", "b", "c")
DOMAIN = (None, -1, 0, 1, 2)
grid = Table(
    "rule_grid",
    MetaData(),
    Column("id", Integer, primary_key=True),
    *(Column(name, Integer) for name in INT_COLUMNS),
)
GRID_ROWS = [
    {"id": index, "a": a, "b": b, "c": c}
    for index, (a, b, c) in enumerate(
        ((a, b, c) for a in DOMAIN for b in DOMAIN for c in DOMAIN), start=1
    )
]
GRID_CATALOG = Catalog(fields={name: "int" for name in INT_COLUMNS})

Row = dict[str, Any]
Truth = bool | None
Expr = tuple[str, Callable[[Row], Truth]]
Operand = tuple[str, Callable[[Row], int | None]]


class GridResolver:
    def field(self, name: str) -> ColumnElement[Any]:
        return grid.c[name]

    def function(self, name: str, args: Sequence[Any]) -> ColumnElement[Any]:
        raise AssertionError(name)


@pytest.fixture(scope="module")
def grid_engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    grid.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(grid.insert(), GRID_ROWS)
    yield engine
    engine.dispose()


PY_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "==": lambda x, y: x == y,
    "!=": lambda x, y: x != y,
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}


def _column(name: str) -> Operand:
    return name, lambda row: row[name]


def _number(value: int) -> Operand:
    return str(value), lambda row: value


def _sum(left: Operand, right: Operand) -> Operand:
    def value(row: Row) -> int | None:
        x, y = left[1](row), right[1](row)
        return None if x is None or y is None else x + y

    return f"{left[0]} + {right[0]}", value


def _coalesce(left: Operand, default: int) -> Operand:
    def value(row: Row) -> int | None:
        x = left[1](row)
        return default if x is None else x

    return f"coalesce({left[0]}, {default})", value


plain = st.one_of(st.sampled_from(INT_COLUMNS).map(_column), st.integers(-2, 3).map(_number))
operands = st.one_of(
    plain,
    st.builds(_sum, st.sampled_from(INT_COLUMNS).map(_column), plain),
    st.builds(_coalesce, st.sampled_from(INT_COLUMNS).map(_column), st.integers(-1, 2)),
)


def _chain(items: list[Operand], ops: list[str]) -> Expr:
    def truth(row: Row) -> Truth:
        return _and(
            [
                _compare_values(ops[i], items[i][1](row), items[i + 1][1](row))
                for i in range(len(ops))
            ]
        )

    text = items[0][0] + "".join(
        f" {op} {item[0]}" for op, item in zip(ops, items[1:], strict=True)
    )
    return text, truth


def _compare_values(op: str, x: int | None, y: int | None) -> Truth:
    return None if x is None or y is None else PY_COMPARE[op](x, y)


def _and(values: list[Truth]) -> Truth:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _or(values: list[Truth]) -> Truth:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def _membership(column: str, values: list[int], negate: bool) -> Expr:
    def truth(row: Row) -> Truth:
        x = row[column]
        return None if x is None else (x in values) != negate

    word = "not in" if negate else "in"
    return f"{column} {word} [{', '.join(map(str, values))}]", truth


def _null_test(column: str, negate: bool) -> Expr:
    return (
        f"{column} {'!=' if negate else '=='} null",
        lambda row: (row[column] is None) == (not negate),
    )


def _constant(value: bool) -> Expr:
    return ("true" if value else "false"), lambda row: value


@st.composite
def _comparisons(draw: st.DrawFn) -> Expr:
    size = draw(st.integers(2, 3))
    items = [draw(operands) for _ in range(size)]
    ops = [draw(st.sampled_from(sorted(PY_COMPARE))) for _ in range(size - 1)]
    return _chain(items, ops)


leaves = st.one_of(
    _comparisons(),
    st.builds(
        _membership,
        st.sampled_from(INT_COLUMNS),
        st.lists(st.integers(-2, 3), min_size=1, max_size=3),
        st.booleans(),
    ),
    st.builds(_null_test, st.sampled_from(INT_COLUMNS), st.booleans()),
    st.builds(_constant, st.booleans()),
)


def _not(inner: Expr) -> Expr:
    def truth(row: Row) -> Truth:
        value = inner[1](row)
        return None if value is None else not value

    return f"not ({inner[0]})", truth


def _logic(word: str, parts: list[Expr]) -> Expr:
    combine = _and if word == "and" else _or
    return f" {word} ".join(f"({p[0]})" for p in parts), lambda row: combine(
        [p[1](row) for p in parts]
    )


rules = st.recursive(
    leaves,
    lambda inner: st.one_of(
        inner.map(_not),
        st.builds(_logic, st.sampled_from(["and", "or"]), st.lists(inner, min_size=2, max_size=3)),
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=rules)
def test_sql_agrees_with_reference_three_valued_logic(grid_engine: Engine, expr: Expr) -> None:
    text, truth = expr
    rule = compile_rule(text, GRID_CATALOG)
    expected = {row["id"] for row in GRID_ROWS if truth(row) is True}
    condition = rule.to_sql(GridResolver())
    with grid_engine.connect() as conn:
        got = set(conn.scalars(select(grid.c.id).where(condition)))
        complement = set(conn.scalars(select(grid.c.id).where(not_(condition))))
    assert got == expected, text
    assert complement == {row["id"] for row in GRID_ROWS} - expected, text
    if not rule.fields:
        assert rule.constant_value() is (truth(GRID_ROWS[0]) is True), text
