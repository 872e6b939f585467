"""Python AST to typed rule tree: applies the syntax whitelist, type-checks names and kinds.

One pass: each node is rejected with a human message and a character offset, or becomes a
typed node (``rules.tree``) whose kind is known. Names are checked against a ``Catalog``.
"""

from __future__ import annotations

import ast
import math
from datetime import UTC, datetime
from typing import Final, Literal

from leadflow.rules.catalog import BUILTIN_FUNCTIONS, Catalog, FunctionSpec
from leadflow.rules.errors import RuleError
from leadflow.rules.syntax import ARITH_OPS, CMP_OPS, OTHER_OPS, REJECTED
from leadflow.rules.tree import (
    NOUN,
    NUMBERS,
    Arith,
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
    describe,
    is_text_const,
)
from leadflow.suggest import did_you_mean

MAX_DEPTH: Final = 50
_ALIASES: Final[dict[str, tuple[Value, Kind]]] = {
    "true": (True, "bool"),
    "false": (False, "bool"),
    "null": (None, "null"),
}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class Checker:
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
    def condition(self, node: ast.expr, what: str, depth: int) -> Node:
        compiled = self.expr(node, depth)
        if compiled.kind != "bool":
            if what == "a rule":
                message = f"a rule must be a condition (true/false), got {describe(compiled)}"
            else:
                message = f"{what} needs a condition (true/false), got {describe(compiled)}"
            raise self.error(message, node)
        return compiled

    def expr(self, node: ast.expr, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise self.error(f"rule is nested too deeply (more than {MAX_DEPTH} levels)", node)
        inner = depth + 1
        match node:
            case ast.BoolOp(op=op, values=values):
                word: Literal["and", "or"] = "and" if isinstance(op, ast.And) else "or"
                return Logic(word, tuple(self.condition(v, f"'{word}'", inner) for v in values))
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return Not(self.condition(operand, "'not'", inner))
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
        message = REJECTED.get(type(node), f"'{type(node).__name__}' is not allowed")
        raise self.error(message, node)

    def constant(self, value: object, node: ast.expr) -> Const:
        if value is None:
            return Const(None, "null")
        if isinstance(value, bool):
            return Const(value, "bool")
        if isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise self.error(f"number {value} is out of range", node)
            return Const(value, "int")
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.error("number is out of range", node)
            return Const(value, "float")
        if isinstance(value, str):
            return Const(value, "str")
        raise self.error("only text, numbers, true/false and null constants are allowed", node)

    def name(self, name: str, node: ast.expr) -> Node:
        if name in _ALIASES:
            value, kind = _ALIASES[name]
            return Const(value, kind)
        self.not_dunder(name, node)
        field_kind = self.catalog.fields.get(name)
        if field_kind is None:
            if name in BUILTIN_FUNCTIONS or name in self.catalog.functions:
                raise self.error(f"'{name}' is a function: call it as {name}(...)", node)
            suggestion = did_you_mean(name, self.catalog.fields)
            raise self.error(f"unknown field '{name}'{suggestion}", node)
        self.fields_used.add(name)
        return Field(name, field_kind)

    def sign(self, op: ast.unaryop, operand: ast.expr, depth: int) -> Node:
        symbol = "-" if isinstance(op, ast.USub) else "+"
        inner = self.expr(operand, depth)
        if inner.kind not in NUMBERS:
            raise self.error(f"'{symbol}' needs a number, got {describe(inner)}", operand)
        if symbol == "+":
            return inner
        if isinstance(inner, Const) and isinstance(inner.value, int | float):
            return Const(-inner.value, inner.kind)
        return Neg(inner, inner.kind)

    def arithmetic(self, node: ast.BinOp, depth: int) -> Node:
        symbol = ARITH_OPS.get(type(node.op))
        if symbol is None:
            other = OTHER_OPS.get(type(node.op), "?")
            hint = {"|": " (use 'or')", "&": " (use 'and')"}.get(other, " (only +, - and *)")
            at = self.between(node.left, node.right, other)
            raise self.error(f"operator '{other}' is not allowed{hint}", at)
        left = self.expr(node.left, depth)
        right = self.expr(node.right, depth)
        for operand, source in ((left, node.left), (right, node.right)):
            if operand.kind not in NUMBERS:
                raise self.error(f"'{symbol}' needs numbers, got {describe(operand)}", source)
        kind: Kind = "int" if left.kind == right.kind == "int" else "float"
        return Arith(symbol, left, right, kind)

    def compare(self, node: ast.Compare, depth: int) -> Node:
        parts: list[Node] = []
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
            parts.append(self.comparison(CMP_OPS[type(op)], left, right, left_ast, right_ast))
            left, left_ast = right, right_ast
        return parts[0] if len(parts) == 1 else Logic("and", tuple(parts))

    def comparison(
        self, op: CmpOp, left: Node, right: Node, left_ast: ast.expr, right_ast: ast.expr
    ) -> Node:
        if "null" in (left.kind, right.kind):
            if op not in ("==", "!="):
                at = self.between(left_ast, right_ast, op)
                raise self.error(f"cannot use '{op}' with null (use '== null' or is_set())", at)
            subject = right if left.kind == "null" else left
            return IsNull(subject, negate=op == "!=")
        left, right = self.matched(left, right, left_ast, right_ast)
        if left.kind == "bool" and op not in ("==", "!="):
            at = self.between(left_ast, right_ast, op)
            raise self.error(f"cannot use '{op}' on true/false values", at)
        return Compare(op, left, right)

    def matched(
        self, left: Node, right: Node, left_ast: ast.expr, right_ast: ast.expr
    ) -> tuple[Node, Node]:
        """Make two operands comparable (ISO text becomes a date/time) or explain why not."""
        if left.kind == "datetime" and isinstance(right, Const) and right.kind == "str":
            right = self.timestamp(right, right_ast)
        elif right.kind == "datetime" and isinstance(left, Const) and left.kind == "str":
            left = self.timestamp(left, left_ast)
        if left.kind == right.kind or {left.kind, right.kind} <= NUMBERS:
            return left, right
        first, second = (left, right)
        if not isinstance(left, Field | Host) and isinstance(right, Field | Host):
            first, second = right, left
        message = f"cannot compare {describe(first)} with {describe(second)}"
        raise self.error(message, left_ast)

    def timestamp(self, const: Const, node: ast.expr) -> Const:
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
        return Const(parsed.astimezone(UTC), "datetime")

    def membership(
        self, left: Node, left_ast: ast.expr, right_ast: ast.expr, op: ast.cmpop, depth: int
    ) -> Node:
        negate = isinstance(op, ast.NotIn)
        word = "not in" if negate else "in"
        if not isinstance(right_ast, ast.List | ast.Tuple):
            message = f'\'{word}\' needs a list of constants, like ["a", "b"]'
            if is_text_const(left) or left.kind == "str":
                message += " (use contains() to search text)"
            raise self.error(message, right_ast)
        if not right_ast.elts:
            raise self.error(f"the list after '{word}' is empty", right_ast)
        if left.kind == "null":
            raise self.error(f"cannot use '{word}' with null", left_ast)
        values: list[Value] = []
        for element in right_ast.elts:
            item = self.expr(element, depth)
            if not isinstance(item, Const):
                raise self.error(f"the list after '{word}' may only contain constants", element)
            if item.kind == "null":
                raise self.error("null cannot be in a list (use '== null' or is_set())", element)
            _, item_matched = self.matched(left, item, element, element)
            assert isinstance(item_matched, Const)
            values.append(item_matched.value)
        return In(left, tuple(values), negate)

    def call(self, node: ast.Call, depth: int) -> Node:
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
            suggestion = did_you_mean(name, self.catalog.function_names())
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

    def host_call(self, spec: FunctionSpec, args: list[Node], nodes: list[ast.expr]) -> Node:
        values: list[Value] = []
        for position, (arg, node, kind) in enumerate(
            zip(args, nodes, spec.arg_kinds, strict=True), start=1
        ):
            where = f"{spec.name}() argument {position}"
            if not isinstance(arg, Const):
                raise self.error(f"{where} must be a constant", node)
            if kind == "datetime" and arg.kind == "str":
                arg = self.timestamp(arg, node)
            if arg.kind != kind and not (kind == "float" and arg.kind == "int"):
                raise self.error(f"{where} must be {NOUN[kind]}, got {describe(arg)}", node)
            value = arg.value
            values.append(float(value) if isinstance(value, int) and kind == "float" else value)
        self.functions_used.add(spec.name)
        return Host(spec.name, tuple(values), spec.returns)

    def builtin(self, name: str, args: list[Node], nodes: list[ast.expr]) -> Node:
        if name in ("lower", "upper"):
            self.need_text(name, args[0], nodes[0])
            return Call(name, (args[0],), "str")
        if name in ("contains", "startswith", "endswith"):
            self.need_text(name, args[0], nodes[0])
            if not is_text_const(args[1]):
                raise self.error(
                    f"{name}() needs a text constant as its second argument, "
                    f'like {name}(title, "vp")',
                    nodes[1],
                )
            return Call(name, (args[0], args[1]), "bool")
        if name == "is_set":
            if args[0].kind == "null":
                raise self.error("is_set() needs a field or value, got null", nodes[0])
            return Call(name, (args[0],), "bool")
        first, second = self.matched_coalesce(args, nodes)
        kinds = {first.kind, second.kind} - {"null"}
        kind: Kind = "null" if not kinds else kinds.pop() if len(kinds) == 1 else "float"
        return Call("coalesce", (first, second), kind)

    def matched_coalesce(self, args: list[Node], nodes: list[ast.expr]) -> tuple[Node, Node]:
        first, second = args
        if "null" in (first.kind, second.kind):
            return first, second
        try:
            return self.matched(first, second, nodes[0], nodes[1])
        except RuleError:
            raise self.error(
                "coalesce() arguments must have the same type, "
                f"got {describe(first)} and {describe(second)}",
                nodes[1],
            ) from None

    def not_dunder(self, name: str, node: ast.expr) -> None:
        if name.startswith("__"):
            message = f"'{name}' is not allowed (names starting with '__' are reserved)"
            raise self.error(message, node)

    def need_text(self, name: str, arg: Node, node: ast.expr) -> None:
        if arg.kind != "str":
            raise self.error(f"{name}() needs text, got {describe(arg)}", node)
