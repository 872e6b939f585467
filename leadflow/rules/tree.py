"""The typed tree a rule compiles to: every node knows its kind, so SQL and folding never check.

The checker builds it, ``sql`` and ``fold`` walk it. ``describe`` is how a node reads in an
error message ("number field 'score'"), kept next to the kinds it names.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

Kind = Literal["str", "int", "float", "bool", "datetime", "null"]
Value: TypeAlias = str | int | float | bool | datetime | None
CmpOp = Literal["==", "!=", "<", "<=", ">", ">="]
ArithOp = Literal["+", "-", "*"]

NUMBERS: Final = frozenset({"int", "float"})

# What each operator does: the same functions work on Python values (``fold``) and build
# SQLAlchemy expressions (``sql``), so the two cannot disagree on which operator is which.
OPERATORS: Final[dict[CmpOp | ArithOp, Callable[[Any, Any], Any]]] = {
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


@dataclass(frozen=True)
class Const:
    value: Value
    kind: Kind


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind


@dataclass(frozen=True)
class Host:
    """A host function call; its arguments are constants checked at compile time."""

    name: str
    args: tuple[Value, ...]
    kind: Kind


@dataclass(frozen=True)
class Not:
    operand: Node
    kind: Kind = "bool"


@dataclass(frozen=True)
class Logic:
    op: Literal["and", "or"]
    operands: tuple[Node, ...]
    kind: Kind = "bool"


@dataclass(frozen=True)
class Compare:
    op: CmpOp
    left: Node
    right: Node
    kind: Kind = "bool"


@dataclass(frozen=True)
class IsNull:
    operand: Node
    negate: bool
    kind: Kind = "bool"


@dataclass(frozen=True)
class In:
    operand: Node
    values: tuple[Value, ...]
    negate: bool
    kind: Kind = "bool"


@dataclass(frozen=True)
class Arith:
    op: ArithOp
    left: Node
    right: Node
    kind: Kind


@dataclass(frozen=True)
class Neg:
    operand: Node
    kind: Kind


@dataclass(frozen=True)
class Call:
    """A built-in function call (``lower``, ``contains``, ``coalesce``...)."""

    name: str
    args: tuple[Node, ...]
    kind: Kind


Node: TypeAlias = Const | Field | Host | Not | Logic | Compare | IsNull | In | Arith | Neg | Call

NOUN: Final[dict[Kind, str]] = {
    "str": "text",
    "int": "a number",
    "float": "a number",
    "bool": "a true/false value",
    "datetime": "a date/time",
    "null": "null",
}
_ADJECTIVE: Final[dict[Kind, str]] = {
    "str": "text",
    "int": "number",
    "float": "number",
    "bool": "true/false",
    "datetime": "date/time",
    "null": "null",
}


def describe(node: Node) -> str:
    """How ``node`` reads in an error message: a named field or function, else its kind."""
    if isinstance(node, Field):
        return f"{_ADJECTIVE[node.kind]} field '{node.name}'"
    if isinstance(node, Host):
        return f"{node.name}() ({NOUN[node.kind]})"
    return NOUN[node.kind]


def is_text_const(node: Node) -> bool:
    return isinstance(node, Const) and node.kind == "str"
