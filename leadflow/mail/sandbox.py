"""The Jinja sandbox templates render in, with the limits that keep a template from hanging
or exhausting memory (templates are edited by marketing and rendered unattended).

``ImmutableSandboxedEnvironment`` already refuses unsafe attributes and mutation; on top of it
no constant is folded at compile time (the environment is made with ``optimized=False``),
``**`` and ``*`` refuse results past the sizes below, and a rendered part longer than
MAX_RENDER_CHARS stops. Loops nested deeper than MAX_LOOP_DEPTH are refused by the static
template check before anything renders.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Template
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_POWER_DIGITS = 100  # 10**100 is fine; 10**(10**10) is refused, never computed
MAX_REPEAT_CHARS = 100_000  # "x" * n and [..] * n
MAX_RENDER_CHARS = 1_000_000  # one part of one email (HTML or text)
MAX_LOOP_DEPTH = 2  # {% for %} inside {% for %}, no deeper (checked before any render)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with bounded arithmetic (see the limits above)."""

    intercepted_binops = frozenset({"**", "*"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _too_large_power(left, right):
            raise SecurityError("**: the result would be too large")
        if operator == "*" and (_too_long(left, right) or _too_long(right, left)):
            raise SecurityError("*: the repeated result would be too long")
        return super().call_binop(context, operator, left, right)


def _too_large_power(base: Any, exponent: Any) -> bool:
    """``base ** exponent`` with more than MAX_POWER_DIGITS digits (estimated, not computed)."""
    if not (_is_number(base) and _is_number(exponent)) or abs(base) <= 1:
        return False
    digits = len(str(abs(int(base)))) if abs(base) >= 10 else 1
    return bool(abs(exponent) * digits > MAX_POWER_DIGITS)


def _too_long(seq: Any, count: Any) -> bool:
    return (
        isinstance(seq, str | list | tuple)
        and isinstance(count, int)
        and len(seq) * max(count, 0) > MAX_REPEAT_CHARS
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def render_bounded(template: Template, values: dict[str, Any]) -> str:
    """``template.render`` that stops once the output passes MAX_RENDER_CHARS."""
    pieces: list[str] = []
    size = 0
    for piece in template.generate(values):
        size += len(piece)
        if size > MAX_RENDER_CHARS:
            raise SecurityError(
                f"the rendered email is longer than {MAX_RENDER_CHARS:,} characters"
            )
        pieces.append(piece)
    return "".join(pieces)
