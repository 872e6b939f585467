"""A compiled rule and how text becomes one: parse, check, and fold it if it is constant."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Boolean, false, func
from sqlalchemy.sql.elements import ColumnElement

from leadflow.rules.catalog import Catalog
from leadflow.rules.checker import Checker
from leadflow.rules.fold import fold
from leadflow.rules.sql import SqlResolver, to_sql
from leadflow.rules.syntax import parse
from leadflow.rules.tree import Node


@dataclass(frozen=True)
class Rule:
    """A compiled rule: the validated tree plus the names it uses."""

    text: str
    fields: frozenset[str]
    functions: frozenset[str]
    _tree: Node = field(repr=False)
    _constant: bool | None = field(default=None, repr=False)

    def to_sql(self, resolver: SqlResolver) -> ColumnElement[bool]:
        """The rule as a boolean SQL expression that is never NULL (unknown counts as false)."""
        return func.coalesce(to_sql(self._tree, resolver), false(), type_=Boolean())

    def constant_value(self) -> bool | None:
        """True/False when the rule uses no field or function, else None (for the linter)."""
        return self._constant


def compile_rule(text: str, catalog: Catalog) -> Rule:
    """Parse, whitelist and type-check ``text``; raise ``RuleError`` with a human message."""
    parsed = parse(text)
    checker = Checker(parsed.source, parsed.lead, catalog)
    node = checker.condition(parsed.body, "a rule", 0)
    constant = None
    if not checker.fields_used and not checker.functions_used:
        constant = fold(node) is True
    return Rule(
        text=text,
        fields=frozenset(checker.fields_used),
        functions=frozenset(checker.functions_used),
        _tree=node,
        _constant=constant,
    )
