"""Rule expression language: compiled once to SQLAlchemy Core, evaluated by the database.

Ops write rules such as ``score >= 40 and industry in ["saas", "fintech"]`` in the pipeline
YAML. ``compile_rule`` parses them with ``ast.parse(mode="eval")``, accepts only a small
whitelist of syntax, type-checks every name against a ``Catalog`` and keeps a typed tree, so
``Rule.to_sql`` is a cheap walk that yields one boolean expression the database evaluates over
all due rows in a single statement. There is deliberately no per-row Python evaluator: SQL is
the semantics. The only Python evaluation is ``Rule.constant_value``, a folder for rules that
use no field or function (for the linter's "rule can never fire").

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

Size: one concept, the rule language, in one module (~850 lines): the parser, the type
checker, the typed tree and its SQL compiler share private node classes, and splitting them
would make those classes public for no reader's benefit. Issue 17 may still move it to a
``rules/`` package (tree, compiler, sql, fold).
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol, TypeAlias

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    and_,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    true,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType, TypeEngine

FieldKind = Literal["str", "int", "float", "bool", "datetime"]
_Kind = Literal["str", "int", "float", "bool", "datetime", "null"]
_Value: TypeAlias = str | int | float | bool | datetime | None
_CmpOp = Literal["==", "!=", "<", "<=", ">", ">="]
_ArithOp = Literal["+", "-", "*"]

MAX_RULE_LENGTH: Final = 2000
MAX_DEPTH: Final = 50
BUILTIN_FUNCTIONS: Final = {
    "lower": 1,
    "upper": 1,
    "contains": 2,
    "startswith": 2,
    "endswith": 2,
    "is_set": 1,
    "coalesce": 2,
}
_ALIASES: Final[dict[str, tuple[_Value, _Kind]]] = {
    "true": (True, "bool"),
    "false": (False, "bool"),
    "null": (None, "null"),
}
_NUMBERS: Final = frozenset({"int", "float"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class FunctionSpec:
    """A host function a rule may call, e.g. ``events("replied")``; its args must be constants."""

    name: str
    arg_kinds: tuple[FieldKind, ...]
    returns: FieldKind


@dataclass(frozen=True)
class Catalog:
    """The names a rule may use and their kinds; rules are type-checked against it."""

    fields: Mapping[str, FieldKind]
    functions: Mapping[str, FunctionSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.functions:
            if name in BUILTIN_FUNCTIONS:
                raise ValueError(f"host function '{name}' clashes with a built-in function")

    def function_names(self) -> list[str]:
        """Every callable name, built-in and host, for suggestions and docs."""
        return [*BUILTIN_FUNCTIONS, *self.functions]


class SqlResolver(Protocol):
    """Turns rule names into SQL for one dialect and one ``now``; supplied by the caller."""

    def field(self, name: str) -> ColumnElement[Any]: ...

    def function(self, name: str, args: Sequence[Any]) -> ColumnElement[Any]: ...


class RuleError(ValueError):
    """A rule that cannot be compiled; ``offset`` is the 0-based character index of the problem."""

    def __init__(self, message: str, offset: int):
        super().__init__(message, offset)
        self.message = message
        self.offset = offset

    def __str__(self) -> str:
        return self.message


# --- typed tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Const:
    value: _Value
    kind: _Kind


@dataclass(frozen=True)
class _Field:
    name: str
    kind: _Kind


@dataclass(frozen=True)
class _Host:
    name: str
    args: tuple[_Value, ...]
    kind: _Kind


@dataclass(frozen=True)
class _Not:
    operand: _Node
    kind: _Kind = "bool"


@dataclass(frozen=True)
class _Logic:
    op: Literal["and", "or"]
    operands: tuple[_Node, ...]
    kind: _Kind = "bool"


@dataclass(frozen=True)
class _Compare:
    op: _CmpOp
    left: _Node
    right: _Node
    kind: _Kind = "bool"


@dataclass(frozen=True)
class _IsNull:
    operand: _Node
    negate: bool
    kind: _Kind = "bool"


@dataclass(frozen=True)
class _In:
    operand: _Node
    values: tuple[_Value, ...]
    negate: bool
    kind: _Kind = "bool"


@dataclass(frozen=True)
class _Arith:
    op: _ArithOp
    left: _Node
    right: _Node
    kind: _Kind


@dataclass(frozen=True)
class _Neg:
    operand: _Node
    kind: _Kind


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[_Node, ...]
    kind: _Kind


_Node: TypeAlias = (
    _Const | _Field | _Host | _Not | _Logic | _Compare | _IsNull | _In | _Arith | _Neg | _Call
)


@dataclass(frozen=True)
class Rule:
    """A compiled rule: the validated tree plus the names it uses."""

    text: str
    fields: frozenset[str]
    functions: frozenset[str]
    _tree: _Node = field(repr=False)
    _constant: bool | None = field(default=None, repr=False)

    def to_sql(self, resolver: SqlResolver) -> ColumnElement[bool]:
        """The rule as a boolean SQL expression that is never NULL (unknown counts as false)."""
        return func.coalesce(_sql(self._tree, resolver), false(), type_=Boolean())

    def constant_value(self) -> bool | None:
        """True/False when the rule uses no field or function, else None (for the linter)."""
        return self._constant


def compile_rule(text: str, catalog: Catalog) -> Rule:
    """Parse, whitelist and type-check ``text``; raise ``RuleError`` with a human message."""
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(
            f"rule is too long ({len(text)} characters, the limit is {MAX_RULE_LENGTH})",
            MAX_RULE_LENGTH,
        )
    for index, char in enumerate(text):
        if char < " " and char not in "\t\n\r":
            raise RuleError(f"control character {char!r} is not allowed", index)
    flat = text.translate({9: 32, 10: 32, 13: 32})
    source = flat.lstrip(" ")
    lead = len(flat) - len(source)
    if not source.strip():
        raise RuleError("rule is empty", 0)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise RuleError(f"syntax error: {exc.msg}", lead + _syntax_offset(exc, source)) from None
    except (RecursionError, MemoryError):
        raise RuleError("rule is nested too deeply", 0) from None
    compiler = _Compiler(source, lead, catalog)
    node = compiler.condition(tree.body, "a rule", 0)
    constant = None
    if not compiler.fields_used and not compiler.functions_used:
        constant = _fold(node) is True
    return Rule(
        text=text,
        fields=frozenset(compiler.fields_used),
        functions=frozenset(compiler.functions_used),
        _tree=node,
        _constant=constant,
    )


def _syntax_offset(exc: SyntaxError, source: str) -> int:
    """Python reports 1-based columns, and 0 or None when the input ended too early."""
    if not exc.offset or exc.offset <= 0 or (exc.lineno or 1) > 1:
        return len(source)
    return min(exc.offset - 1, len(source))


# --- compiler ---------------------------------------------------------------------------------

_NOUN: Final[dict[_Kind, str]] = {
    "str": "text",
    "int": "a number",
    "float": "a number",
    "bool": "a true/false value",
    "datetime": "a date/time",
    "null": "null",
}
_ADJECTIVE: Final[dict[_Kind, str]] = {
    "str": "text",
    "int": "number",
    "float": "number",
    "bool": "true/false",
    "datetime": "date/time",
    "null": "null",
}
_CMP_OPS: Final[dict[type[ast.cmpop], _CmpOp]] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_ARITH_OPS: Final[dict[type[ast.operator], _ArithOp]] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}
_OTHER_OPS: Final[dict[type[ast.operator], str]] = {
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
}
_REJECTED: Final[dict[type[ast.AST], str]] = {
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.NamedExpr: "':=' is not allowed",
    ast.IfExp: "'... if ... else ...' is not allowed",
    ast.List: "lists are only allowed after 'in'",
    ast.Tuple: "lists are only allowed after 'in'",
    ast.Dict: "dicts are not allowed",
    ast.Set: "sets are not allowed (use a list after 'in')",
    ast.Starred: "'*' is not allowed",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
}


def _describe(node: _Node) -> str:
    if isinstance(node, _Field):
        return f"{_ADJECTIVE[node.kind]} field '{node.name}'"
    if isinstance(node, _Host):
        return f"{node.name}() ({_NOUN[node.kind]})"
    return _NOUN[node.kind]


def _suggest(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _is_text_const(node: _Node) -> bool:
    return isinstance(node, _Const) and node.kind == "str"


class _Compiler:
    """One pass over the Python AST: rejects, type-checks and builds the typed tree."""

    def __init__(self, source: str, lead: int, catalog: Catalog):
        self.encoded = source.encode()
        self.lead = lead
        self.catalog = catalog
        self.fields_used: set[str] = set()
        self.functions_used: set[str] = set()

    # positions: ast columns are UTF-8 byte offsets into the single line we parsed
    def at(self, byte_col: int) -> int:
        return self.lead + len(self.encoded[:byte_col].decode(errors="ignore"))

    def error(self, message: str, node: ast.AST | int) -> RuleError:
        col = node if isinstance(node, int) else getattr(node, "col_offset", 0)
        return RuleError(message, self.at(col))

    def between(self, left: ast.expr, right: ast.expr, token: str) -> int:
        """Byte column of an operator token, which the AST does not record."""
        start = left.end_col_offset or left.col_offset
        found = self.encoded.find(token.encode(), start, right.col_offset)
        return found if found >= 0 else left.col_offset

    # entry points
    def condition(self, node: ast.expr, what: str, depth: int) -> _Node:
        compiled = self.expr(node, depth)
        if compiled.kind != "bool":
            if what == "a rule":
                message = f"a rule must be a condition (true/false), got {_describe(compiled)}"
            else:
                message = f"{what} needs a condition (true/false), got {_describe(compiled)}"
            raise self.error(message, node)
        return compiled

    def expr(self, node: ast.expr, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise self.error(f"rule is nested too deeply (more than {MAX_DEPTH} levels)", node)
        inner = depth + 1
        match node:
            case ast.BoolOp(op=op, values=values):
                word: Literal["and", "or"] = "and" if isinstance(op, ast.And) else "or"
                return _Logic(word, tuple(self.condition(v, f"'{word}'", inner) for v in values))
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return _Not(self.condition(operand, "'not'", inner))
            case ast.UnaryOp(op=ast.USub() | ast.UAdd() as op, operand=operand):
                return self.sign(op, operand, inner)
            case ast.UnaryOp(op=ast.Invert()):
                raise self.error("operator '~' is not allowed (use 'not')", node)
            case ast.BinOp():
                return self.arithmetic(node, inner)
            case ast.Compare():
                return self.compare(node, inner)
            case ast.Call():
                return self.call(node, inner)
            case ast.Name(id=name):
                return self.name(name, node)
            case ast.Constant(value=value):
                return self.constant(value, node)
            case ast.Attribute(attr=attr):
                end = node.end_col_offset or node.col_offset
                at = end - len(attr.encode())
                raise self.error(f"attribute access ('.{attr}') is not allowed", at)
            case ast.Subscript(value=value):
                raise self.error(
                    "subscripts ('x[...]') are not allowed", value.end_col_offset or node.col_offset
                )
        message = _REJECTED.get(type(node), f"'{type(node).__name__}' is not allowed")
        raise self.error(message, node)

    def constant(self, value: object, node: ast.expr) -> _Const:
        if value is None:
            return _Const(None, "null")
        if isinstance(value, bool):
            return _Const(value, "bool")
        if isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise self.error(f"number {value} is out of range", node)
            return _Const(value, "int")
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.error("number is out of range", node)
            return _Const(value, "float")
        if isinstance(value, str):
            return _Const(value, "str")
        raise self.error("only text, numbers, true/false and null constants are allowed", node)

    def name(self, name: str, node: ast.expr) -> _Node:
        if name in _ALIASES:
            value, kind = _ALIASES[name]
            return _Const(value, kind)
        self.not_dunder(name, node)
        field_kind = self.catalog.fields.get(name)
        if field_kind is None:
            if name in BUILTIN_FUNCTIONS or name in self.catalog.functions:
                raise self.error(f"'{name}' is a function: call it as {name}(...)", node)
            suggestion = _suggest(name, list(self.catalog.fields))
            raise self.error(f"unknown field '{name}'{suggestion}", node)
        self.fields_used.add(name)
        return _Field(name, field_kind)

    def sign(self, op: ast.unaryop, operand: ast.expr, depth: int) -> _Node:
        symbol = "-" if isinstance(op, ast.USub) else "+"
        inner = self.expr(operand, depth)
        if inner.kind not in _NUMBERS:
            raise self.error(f"'{symbol}' needs a number, got {_describe(inner)}", operand)
        if symbol == "+":
            return inner
        if isinstance(inner, _Const) and isinstance(inner.value, int | float):
            return _Const(-inner.value, inner.kind)
        return _Neg(inner, inner.kind)

    def arithmetic(self, node: ast.BinOp, depth: int) -> _Node:
        symbol = _ARITH_OPS.get(type(node.op))
        if symbol is None:
            other = _OTHER_OPS.get(type(node.op), "?")
            hint = {"|": " (use 'or')", "&": " (use 'and')"}.get(other, " (only +, - and *)")
            at = self.between(node.left, node.right, other)
            raise self.error(f"operator '{other}' is not allowed{hint}", at)
        left = self.expr(node.left, depth)
        right = self.expr(node.right, depth)
        for operand, source in ((left, node.left), (right, node.right)):
            if operand.kind not in _NUMBERS:
                raise self.error(f"'{symbol}' needs numbers, got {_describe(operand)}", source)
        kind: _Kind = "int" if left.kind == right.kind == "int" else "float"
        return _Arith(symbol, left, right, kind)

    def compare(self, node: ast.Compare, depth: int) -> _Node:
        parts: list[_Node] = []
        left_ast = node.left
        left = self.expr(left_ast, depth)
        for index, (op, right_ast) in enumerate(zip(node.ops, node.comparators, strict=True)):
            if isinstance(op, ast.Is | ast.IsNot):
                at = self.between(left_ast, right_ast, "is")
                raise self.error("'is' is not allowed (use '== null', '!= null' or is_set())", at)
            if isinstance(op, ast.In | ast.NotIn):
                parts.append(self.membership(left, left_ast, right_ast, op, depth))
                if index + 1 < len(node.ops):
                    self.expr(right_ast, depth)  # a list cannot be compared further: raises
                continue
            right = self.expr(right_ast, depth)
            parts.append(self.comparison(_CMP_OPS[type(op)], left, right, left_ast, right_ast))
            left, left_ast = right, right_ast
        return parts[0] if len(parts) == 1 else _Logic("and", tuple(parts))

    def comparison(
        self, op: _CmpOp, left: _Node, right: _Node, left_ast: ast.expr, right_ast: ast.expr
    ) -> _Node:
        if "null" in (left.kind, right.kind):
            if op not in ("==", "!="):
                at = self.between(left_ast, right_ast, op)
                raise self.error(f"cannot use '{op}' with null (use '== null' or is_set())", at)
            subject = right if left.kind == "null" else left
            return _IsNull(subject, negate=op == "!=")
        left, right = self.matched(left, right, left_ast, right_ast)
        if left.kind == "bool" and op not in ("==", "!="):
            at = self.between(left_ast, right_ast, op)
            raise self.error(f"cannot use '{op}' on true/false values", at)
        return _Compare(op, left, right)

    def matched(
        self, left: _Node, right: _Node, left_ast: ast.expr, right_ast: ast.expr
    ) -> tuple[_Node, _Node]:
        """Make two operands comparable (ISO text becomes a date/time) or explain why not."""
        if left.kind == "datetime" and isinstance(right, _Const) and right.kind == "str":
            right = self.timestamp(right, right_ast)
        elif right.kind == "datetime" and isinstance(left, _Const) and left.kind == "str":
            left = self.timestamp(left, left_ast)
        if left.kind == right.kind or {left.kind, right.kind} <= _NUMBERS:
            return left, right
        first, second = (left, right)
        if not isinstance(left, _Field | _Host) and isinstance(right, _Field | _Host):
            first, second = right, left
        message = f"cannot compare {_describe(first)} with {_describe(second)}"
        raise self.error(message, left_ast)

    def timestamp(self, const: _Const, node: ast.expr) -> _Const:
        assert isinstance(const.value, str)
        try:
            parsed = datetime.fromisoformat(const.value)
        except ValueError:
            raise self.error(
                f"invalid date/time '{const.value}' (use ISO 8601, e.g. '2024-05-31' or "
                "'2024-05-31T09:30:00Z')",
                node,
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return _Const(parsed.astimezone(UTC), "datetime")

    def membership(
        self, left: _Node, left_ast: ast.expr, right_ast: ast.expr, op: ast.cmpop, depth: int
    ) -> _Node:
        negate = isinstance(op, ast.NotIn)
        word = "not in" if negate else "in"
        if not isinstance(right_ast, ast.List | ast.Tuple):
            message = f'\'{word}\' needs a list of constants, like ["a", "b"]'
            if _is_text_const(left) or left.kind == "str":
                message += " (use contains() to search text)"
            raise self.error(message, right_ast)
        if not right_ast.elts:
            raise self.error(f"the list after '{word}' is empty", right_ast)
        if left.kind == "null":
            raise self.error(f"cannot use '{word}' with null", left_ast)
        values: list[_Value] = []
        for element in right_ast.elts:
            item = self.expr(element, depth)
            if not isinstance(item, _Const):
                raise self.error(f"the list after '{word}' may only contain constants", element)
            if item.kind == "null":
                raise self.error("null cannot be in a list (use '== null' or is_set())", element)
            _, item_matched = self.matched(left, item, element, element)
            assert isinstance(item_matched, _Const)
            values.append(item_matched.value)
        return _In(left, tuple(values), negate)

    def call(self, node: ast.Call, depth: int) -> _Node:
        if isinstance(node.func, ast.Attribute):
            return self.expr(node.func, depth)  # raises the attribute-access error
        if not isinstance(node.func, ast.Name):
            raise self.error("only named functions can be called, like lower(title)", node)
        name = node.func.id
        self.not_dunder(name, node)
        host = self.catalog.functions.get(name)
        if name not in BUILTIN_FUNCTIONS and host is None:
            if name in self.catalog.fields:
                raise self.error(f"'{name}' is a field, not a function", node)
            suggestion = _suggest(name, self.catalog.function_names())
            raise self.error(f"unknown function '{name}'{suggestion}", node)
        if node.keywords:
            raise self.error(f"{name}() does not take keyword arguments", node.keywords[0])
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.error("'*' is not allowed", arg)
        expected = len(host.arg_kinds) if host is not None else BUILTIN_FUNCTIONS[name]
        if len(node.args) != expected:
            plural = "" if expected == 1 else "s"
            raise self.error(
                f"{name}() takes {expected} argument{plural}, got {len(node.args)}", node
            )
        args = [self.expr(arg, depth) for arg in node.args]
        if host is not None:
            return self.host_call(host, args, node.args)
        return self.builtin(name, args, node.args)

    def host_call(self, spec: FunctionSpec, args: list[_Node], nodes: list[ast.expr]) -> _Node:
        values: list[_Value] = []
        for position, (arg, node, kind) in enumerate(
            zip(args, nodes, spec.arg_kinds, strict=True), start=1
        ):
            where = f"{spec.name}() argument {position}"
            if not isinstance(arg, _Const):
                raise self.error(f"{where} must be a constant", node)
            if kind == "datetime" and arg.kind == "str":
                arg = self.timestamp(arg, node)
            if arg.kind != kind and not (kind == "float" and arg.kind == "int"):
                raise self.error(f"{where} must be {_NOUN[kind]}, got {_describe(arg)}", node)
            value = arg.value
            values.append(float(value) if isinstance(value, int) and kind == "float" else value)
        self.functions_used.add(spec.name)
        return _Host(spec.name, tuple(values), spec.returns)

    def builtin(self, name: str, args: list[_Node], nodes: list[ast.expr]) -> _Node:
        if name in ("lower", "upper"):
            self.need_text(name, args[0], nodes[0])
            return _Call(name, (args[0],), "str")
        if name in ("contains", "startswith", "endswith"):
            self.need_text(name, args[0], nodes[0])
            if not _is_text_const(args[1]):
                raise self.error(
                    f"{name}() needs a text constant as its second argument, "
                    f'like {name}(title, "vp")',
                    nodes[1],
                )
            return _Call(name, (args[0], args[1]), "bool")
        if name == "is_set":
            if args[0].kind == "null":
                raise self.error("is_set() needs a field or value, got null", nodes[0])
            return _Call(name, (args[0],), "bool")
        first, second = self.matched_coalesce(args, nodes)
        kinds = {first.kind, second.kind} - {"null"}
        kind: _Kind = "null" if not kinds else kinds.pop() if len(kinds) == 1 else "float"
        return _Call("coalesce", (first, second), kind)

    def matched_coalesce(self, args: list[_Node], nodes: list[ast.expr]) -> tuple[_Node, _Node]:
        first, second = args
        if "null" in (first.kind, second.kind):
            return first, second
        try:
            return self.matched(first, second, nodes[0], nodes[1])
        except RuleError:
            raise self.error(
                "coalesce() arguments must have the same type, "
                f"got {_describe(first)} and {_describe(second)}",
                nodes[1],
            ) from None

    def not_dunder(self, name: str, node: ast.expr) -> None:
        if name.startswith("__"):
            message = f"'{name}' is not allowed (names starting with '__' are reserved)"
            raise self.error(message, node)

    def need_text(self, name: str, arg: _Node, node: ast.expr) -> None:
        if arg.kind != "str":
            raise self.error(f"{name}() needs text, got {_describe(arg)}", node)


# --- SQL --------------------------------------------------------------------------------------

_Sql: TypeAlias = ColumnElement[Any]
_SQL_CMP: Final[dict[_CmpOp, Callable[[_Sql, _Sql], _Sql]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_SQL_ARITH: Final[dict[_ArithOp, Callable[[_Sql, _Sql], _Sql]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}


def _sql_type(kind: _Kind) -> TypeEngine[Any]:
    types: dict[_Kind, TypeEngine[Any]] = {
        "str": String(),
        "int": BigInteger(),
        "float": Float(),
        "bool": Boolean(),
        "datetime": DateTime(timezone=True),
        "null": NullType(),
    }
    return types[kind]


def _const_sql(value: _Value, kind: _Kind, hint: TypeEngine[Any] | None = None) -> _Sql:
    """A bound parameter; text and dates take the other side's column type when there is one.

    Numbers always carry their own type, so ``int_col == 2.5`` is not bound as an integer.
    """
    if value is None:
        return null()
    if isinstance(value, bool):
        return true() if value else false()
    if kind in ("str", "datetime") and hint is not None and not isinstance(hint, NullType):
        return literal(value, hint)
    return literal(value, _sql_type(kind))


def _pair(left: _Node, right: _Node, resolver: SqlResolver) -> tuple[_Sql, _Sql]:
    if isinstance(left, _Const) and not isinstance(right, _Const):
        right_sql = _sql(right, resolver)
        return _const_sql(left.value, left.kind, right_sql.type), right_sql
    left_sql = _sql(left, resolver)
    if isinstance(right, _Const):
        hint = None if isinstance(left, _Const) else left_sql.type
        return left_sql, _const_sql(right.value, right.kind, hint)
    return left_sql, _sql(right, resolver)


def _sql(node: _Node, resolver: SqlResolver) -> _Sql:
    match node:
        case _Const(value=value, kind=kind):
            return _const_sql(value, kind)
        case _Field(name=name):
            return resolver.field(name)
        case _Host(name=name, args=args):
            return resolver.function(name, list(args))
        case _Not(operand=operand):
            return not_(_sql(operand, resolver))
        case _Logic(op=op, operands=operands):
            parts = [_sql(part, resolver) for part in operands]
            return and_(*parts) if op == "and" else or_(*parts)
        case _Compare(op=op, left=left, right=right):
            return _SQL_CMP[op](*_pair(left, right, resolver))
        case _IsNull(operand=operand, negate=negate):
            inner = _sql(operand, resolver)
            return inner.is_not(None) if negate else inner.is_(None)
        case _In(operand=operand, values=values, negate=negate):
            return _in_sql(operand, values, negate, resolver)
        case _Arith(op=op, left=left, right=right):
            return _SQL_ARITH[op](*_pair(left, right, resolver))
        case _Neg(operand=operand):
            return -_sql(operand, resolver)
        case _Call():
            return _call_sql(node, resolver)
    raise AssertionError(f"unexpected node {node!r}")


def _in_sql(
    operand: _Node, values: tuple[_Value, ...], negate: bool, resolver: SqlResolver
) -> _Sql:
    subject = _sql(operand, resolver)
    if operand.kind in _NUMBERS:
        items: list[Any] = [
            literal(v, BigInteger() if isinstance(v, int) else Float()) for v in values
        ]
    else:
        items = list(values)
    return subject.not_in(items) if negate else subject.in_(items)


def _call_sql(node: _Call, resolver: SqlResolver) -> _Sql:
    name, args = node.name, node.args
    if name == "coalesce":
        first, second = _pair(args[0], args[1], resolver)
        kind_type = first.type if not isinstance(first.type, NullType) else second.type
        return func.coalesce(first, second, type_=kind_type)
    subject = _sql(args[0], resolver)
    if name == "lower":
        return func.lower(subject, type_=String())
    if name == "upper":
        return func.upper(subject, type_=String())
    if name == "is_set":
        if args[0].kind == "str":
            return and_(subject.is_not(None), subject != literal("", String()))
        return subject.is_not(None)
    text = args[1].value if isinstance(args[1], _Const) else None
    assert isinstance(text, str)
    pattern = literal(text, String())
    size = len(text)
    if name == "startswith":
        return func.substr(subject, 1, literal(size, Integer()), type_=String()) == pattern
    if name == "endswith":
        start = func.length(subject, type_=Integer()) + literal(1 - size, Integer())
        return func.substr(subject, start, type_=String()) == pattern
    if size == 0:  # every non-NULL text contains "": unknown only when the text is NULL
        return func.length(subject, type_=Integer()) >= literal(0, Integer())
    stripped = func.replace(subject, pattern, literal("", String()), type_=String())
    return stripped != subject


# --- constant folding (linter only) -----------------------------------------------------------

_PY_OPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}


def _fold(node: _Node) -> Any:
    """Evaluate a field-free tree with SQL's three-valued logic (None is unknown)."""
    match node:
        case _Const(value=value):
            return value
        case _Not(operand=operand):
            value = _fold(operand)
            return None if value is None else not value
        case _Logic(op=op, operands=operands):
            values = [_fold(part) for part in operands]
            decisive = op == "or"  # True decides an 'or', False an 'and'
            if any(v is decisive for v in values):
                return decisive
            return None if any(v is None for v in values) else not decisive
        case _Compare(op=op, left=left, right=right) | _Arith(op=op, left=left, right=right):
            a, b = _fold(left), _fold(right)
            return None if a is None or b is None else _PY_OPS[op](a, b)
        case _IsNull(operand=operand, negate=negate):
            return (_fold(operand) is None) != negate
        case _In(operand=operand, values=values, negate=negate):
            value = _fold(operand)
            return None if value is None else (value in values) != negate
        case _Neg(operand=operand):
            value = _fold(operand)
            return None if value is None else -value
        case _Call(name=name, args=args):
            return _fold_call(name, [_fold(arg) for arg in args])
    raise AssertionError(f"not a constant: {node!r}")


def _fold_call(name: str, values: list[Any]) -> Any:
    if name == "coalesce":
        return values[0] if values[0] is not None else values[1]
    if name == "is_set":
        return values[0] is not None and values[0] != ""
    if values[0] is None:
        return None
    text: str = values[0]
    if name == "lower":
        return text.lower()
    if name == "upper":
        return text.upper()
    if name == "contains":
        return values[1] in text
    if name == "startswith":
        return text.startswith(values[1])
    return text.endswith(values[1])
