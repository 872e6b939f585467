"""Evaluate a rule that uses no field or function, for the linter's "rule can never fire".

Not a second evaluator: it only ever sees field-free trees, and follows SQL's three-valued
logic (None is unknown) so its answer is what the database would say.
"""

from __future__ import annotations

from typing import Any

from leadflow.rules.tree import (
    OPERATORS,
    Arith,
    Call,
    Compare,
    Const,
    In,
    IsNull,
    Logic,
    Neg,
    Node,
    Not,
)


def fold(node: Node) -> Any:
    """Evaluate a field-free tree with SQL's three-valued logic (None is unknown)."""
    match node:
        case Const(value=value):
            return value
        case Not(operand=operand):
            value = fold(operand)
            return None if value is None else not value
        case Logic(op=op, operands=operands):
            values = [fold(part) for part in operands]
            decisive = op == "or"  # True decides an 'or', False an 'and'
            if any(v is decisive for v in values):
                return decisive
            return None if any(v is None for v in values) else not decisive
        case Compare(op=op, left=left, right=right) | Arith(op=op, left=left, right=right):
            a, b = fold(left), fold(right)
            return None if a is None or b is None else OPERATORS[op](a, b)
        case IsNull(operand=operand, negate=negate):
            return (fold(operand) is None) != negate
        case In(operand=operand, values=values, negate=negate):
            value = fold(operand)
            return None if value is None else (value in values) != negate
        case Neg(operand=operand):
            value = fold(operand)
            return None if value is None else -value
        case Call(name=name, args=args):
            return _fold_call(name, [fold(arg) for arg in args])
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
