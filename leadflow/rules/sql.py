"""A typed rule tree as one SQLAlchemy Core expression; the database is the rule's semantics.

Names become SQL through a ``SqlResolver`` the caller supplies (``rules.fields.LeadSql`` for
leads), so this module knows the language, not the tables. NULL handling is SQL's own; only the
whole rule is wrapped in ``coalesce(..., false)`` (see ``Rule.to_sql``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeAlias

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

from leadflow.rules.tree import (
    NUMBERS,
    OPERATORS,
    Arith,
    ArithOp,
    Call,
    CmpOp,
    Compare,
    Const,
    Field,
    Host,
    In,
    IsNull,
    Kind,
    Logic,
    Neg,
    Node,
    Not,
    Value,
)


class SqlResolver(Protocol):
    """Turns rule names into SQL for one dialect and one ``now``; supplied by the caller."""

    def field(self, name: str) -> ColumnElement[Any]: ...

    def function(self, name: str, args: Sequence[Any]) -> ColumnElement[Any]: ...


_Sql: TypeAlias = ColumnElement[Any]
_SQL_OPS: Final[Mapping[CmpOp | ArithOp, Callable[[_Sql, _Sql], _Sql]]] = OPERATORS


def _sql_type(kind: Kind) -> TypeEngine[Any]:
    types: dict[Kind, TypeEngine[Any]] = {
        "str": String(),
        "int": BigInteger(),
        "float": Float(),
        "bool": Boolean(),
        "datetime": DateTime(timezone=True),
        "null": NullType(),
    }
    return types[kind]


def _const_sql(value: Value, kind: Kind, hint: TypeEngine[Any] | None = None) -> _Sql:
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


def _pair(left: Node, right: Node, resolver: SqlResolver) -> tuple[_Sql, _Sql]:
    if isinstance(left, Const) and not isinstance(right, Const):
        right_sql = to_sql(right, resolver)
        return _const_sql(left.value, left.kind, right_sql.type), right_sql
    left_sql = to_sql(left, resolver)
    if isinstance(right, Const):
        hint = None if isinstance(left, Const) else left_sql.type
        return left_sql, _const_sql(right.value, right.kind, hint)
    return left_sql, to_sql(right, resolver)


def to_sql(node: Node, resolver: SqlResolver) -> _Sql:
    """The tree as SQL; NULL stays NULL (unknown), as SQL's three-valued logic has it."""
    match node:
        case Const(value=value, kind=kind):
            return _const_sql(value, kind)
        case Field(name=name):
            return resolver.field(name)
        case Host(name=name, args=args):
            return resolver.function(name, list(args))
        case Not(operand=operand):
            return not_(to_sql(operand, resolver))
        case Logic(op=op, operands=operands):
            parts = [to_sql(part, resolver) for part in operands]
            return and_(*parts) if op == "and" else or_(*parts)
        case Compare(op=op, left=left, right=right):
            return _SQL_OPS[op](*_pair(left, right, resolver))
        case IsNull(operand=operand, negate=negate):
            inner = to_sql(operand, resolver)
            return inner.is_not(None) if negate else inner.is_(None)
        case In(operand=operand, values=values, negate=negate):
            return _in_sql(operand, values, negate, resolver)
        case Arith(op=op, left=left, right=right):
            return _SQL_OPS[op](*_pair(left, right, resolver))
        case Neg(operand=operand):
            return -to_sql(operand, resolver)
        case Call():
            return _call_sql(node, resolver)
    raise AssertionError(f"unexpected node {node!r}")


def _in_sql(operand: Node, values: tuple[Value, ...], negate: bool, resolver: SqlResolver) -> _Sql:
    subject = to_sql(operand, resolver)
    if operand.kind in NUMBERS:
        items: list[Any] = [
            literal(v, BigInteger() if isinstance(v, int) else Float()) for v in values
        ]
    else:
        items = list(values)
    return subject.not_in(items) if negate else subject.in_(items)


def _call_sql(node: Call, resolver: SqlResolver) -> _Sql:
    name, args = node.name, node.args
    if name == "coalesce":
        first, second = _pair(args[0], args[1], resolver)
        kind_type = first.type if not isinstance(first.type, NullType) else second.type
        return func.coalesce(first, second, type_=kind_type)
    subject = to_sql(args[0], resolver)
    if name == "lower":
        return func.lower(subject, type_=String())
    if name == "upper":
        return func.upper(subject, type_=String())
    if name == "is_set":
        if args[0].kind == "str":
            return and_(subject.is_not(None), subject != literal("", String()))
        return subject.is_not(None)
    text = args[1].value if isinstance(args[1], Const) else None
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
