"""Rule expression language: compiled once to SQLAlchemy Core, evaluated by the database.

Ops write rules such as ``score >= 40 and industry in ["saas", "fintech"]`` in the pipeline
YAML. ``compile_rule`` parses them with ``ast.parse(mode="eval")``, accepts only a small
whitelist of syntax, type-checks every name against a ``Catalog`` and keeps a typed tree, so
``Rule.to_sql`` is a cheap walk that yields one boolean expression the database evaluates over
all due rows in a single statement. There is deliberately no per-row Python evaluator: SQL is
the semantics. The only Python evaluation is ``Rule.constant_value``, a folder for rules that
use no field or function (for the linter's "rule can never fire").

The package, one concept a module: ``catalog`` (the names a rule may use), ``tree`` (the typed
tree), ``checker`` (Python AST to typed tree, with every error message), ``rule`` (``Rule`` and
``compile_rule``), ``sql`` (tree to SQL), ``fold`` (tree to a Python constant), ``errors``
(``RuleError``) and ``fields`` (the lead fields and host functions leadflow offers, and their
SQL).

Semantics worth knowing:

* NULL (a missing value) follows SQL three-valued logic: a comparison, arithmetic or string
  function involving NULL is *unknown*; ``and``/``or``/``not`` combine unknowns the SQL way
  (``false and unknown`` is false, ``true or unknown`` is true, ``not unknown`` is unknown).
  A whole rule that is unknown does not match: ``Rule.to_sql`` wraps the tree in
  ``coalesce(..., false)`` so its result is never NULL and ``not_(rule.to_sql(r))`` is the
  exact complement. So ``score > 10`` and ``not score > 10`` both skip a lead without a score.
* ``x == null`` / ``x != null`` mean SQL ``IS NULL`` / ``IS NOT NULL`` (never unknown);
  ``is_set(x)`` additionally treats the empty string as missing. ``null`` is not allowed
  anywhere else (ordering, lists, arithmetic), because there it could only yield unknown.
* ``contains``, ``startswith`` and ``endswith`` are case-sensitive on every database (built
  from ``replace``/``substr``/``length`` rather than ``LIKE``, which ignores ASCII case on
  SQLite only); combine with ``lower()`` for case-insensitive matching. ``lower``/``upper``
  fold only ASCII letters on SQLite; text ordering (``<``) follows the database collation.
* Date/time fields compare with date/time fields or ISO 8601 text constants
  (``created_at >= "2024-05-01"``), parsed at compile time; naive values are taken as UTC.
* Line breaks in a rule count as spaces. ``RuleError.offset`` is a 0-based character index
  into the original rule text.
"""

from leadflow.rules.catalog import Catalog, FieldKind, FunctionSpec
from leadflow.rules.errors import RuleError
from leadflow.rules.rule import Rule, compile_rule
from leadflow.rules.sql import SqlResolver

__all__ = [
    "Catalog",
    "FieldKind",
    "FunctionSpec",
    "Rule",
    "RuleError",
    "SqlResolver",
    "compile_rule",
]
