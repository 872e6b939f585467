"""Rule text to Python AST, and which of Python's syntax a rule may use.

A rule is one Python expression on one line: line breaks count as spaces, control characters
and over-long text are refused before ``ast.parse`` sees them. The tables below say which
operators the checker accepts and how every refused construct is explained.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Final

from leadflow.rules.errors import RuleError
from leadflow.rules.tree import ArithOp, CmpOp

MAX_RULE_LENGTH: Final = 2000

CMP_OPS: Final[dict[type[ast.cmpop], CmpOp]] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
ARITH_OPS: Final[dict[type[ast.operator], ArithOp]] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}
OTHER_OPS: Final[dict[type[ast.operator], str]] = {
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
REJECTED: Final[dict[type[ast.AST], str]] = {
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


@dataclass(frozen=True)
class Parsed:
    """A rule's expression with the text it was parsed from; offsets map back via ``lead``."""

    body: ast.expr
    source: str  # the text after line breaks became spaces and leading spaces were dropped
    lead: int  # how many characters were dropped in front of ``source``


def parse(text: str) -> Parsed:
    """Python's parse of ``text`` as one expression, or ``RuleError`` at the offending offset."""
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
    return Parsed(tree.body, source, lead)


def _syntax_offset(exc: SyntaxError, source: str) -> int:
    """Python reports 1-based columns, and 0 or None when the input ended too early."""
    if not exc.offset or exc.offset <= 0 or (exc.lineno or 1) > 1:
        return len(source)
    return min(exc.offset - 1, len(source))
