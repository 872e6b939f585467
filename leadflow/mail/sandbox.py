"""The Jinja sandbox templates render in, with the limits that keep a template from hanging
or exhausting memory (templates are edited by marketing and rendered unattended).

``ImmutableSandboxedEnvironment`` already refuses unsafe attributes and mutation; on top of it
no constant is folded at compile time (the environment is made with ``optimized=False``),
``**`` and ``*`` refuse results past the sizes below, and a rendered part longer than
MAX_RENDER_CHARS stops. Loops nested deeper than MAX_LOOP_DEPTH are refused by the static
template check before anything renders.

Work is bounded too, not only sizes: every loop iteration and every call (a macro, a method)
is a step, and a render stops past MAX_STEPS steps or MAX_RENDER_SECONDS. Two loops over a
99,999-character string, or a macro that calls itself twice per level, produce no output at
all (the size limit never trips) yet would run for hours.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import Template, nodes, pass_context
from jinja2.compiler import generate
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_POWER_DIGITS = 100  # 10**100 is fine; 10**(10**10) is refused, never computed
MAX_REPEAT_CHARS = 100_000  # "x" * n and [..] * n
MAX_RENDER_CHARS = 1_000_000  # one part of one email (HTML or text)
MAX_LOOP_DEPTH = 2  # {% for %} inside {% for %}, no deeper (checked before any render)
MAX_STEPS = 250_000  # loop iterations + calls in one render of one part
MAX_RENDER_SECONDS = 2.0  # one render of one part; a real email takes milliseconds

_STEP_FILTER = "_leadflow_step"  # wraps every loop's iterable (added at compile time)
_BUDGET_ATTRIBUTE = "_leadflow_budget"


class _Budget:
    """Steps and time left to one render."""

    __slots__ = ("deadline", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SecurityError(
                f"the template does too much work (more than {MAX_STEPS:,} loop iterations "
                "and calls)"
            )
        if time.monotonic() > self.deadline:
            raise SecurityError(
                f"the template does too much work (rendering took more than "
                f"{MAX_RENDER_SECONDS:g} seconds)"
            )


_active: ContextVar[_Budget | None] = ContextVar("leadflow_template_budget", default=None)


def _budget(context: Context) -> _Budget:
    """The budget of the render in progress: ``render_bounded``'s, else one per Jinja context
    (a block rendered on its own, such as the subject)."""
    budget = _active.get()
    if budget is None:
        budget = getattr(context, _BUDGET_ATTRIBUTE, None)
        if budget is None:
            budget = _Budget()
            setattr(context, _BUDGET_ATTRIBUTE, budget)
    return budget


@pass_context
def _counted(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _budget(context)
    for item in iterable:
        budget.step()
        yield item


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with bounded arithmetic and bounded work (see the limits above)."""

    intercepted_binops = frozenset({"**", "*"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters[_STEP_FILTER] = _counted
        for name in ("center", "format", "indent"):
            self.filters[name] = _bounded_filter(name, self.filters[name])

    def parse(
        self, source: str, name: str | None = None, filename: str | None = None
    ) -> nodes.Template:
        """The syntax tree, or TemplateSyntaxError also for what only code generation finds
        (a block defined twice, an unknown filter or test): a checker that parses a template
        reports those as errors with their line instead of crashing later."""
        ast = super().parse(source, name, filename)
        try:
            generate(ast, self, name, filename, optimized=False)
        except TemplateSyntaxError:
            self.handle_exception(source=source)
        return ast

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        # every {% for %} iterates through _counted, so each iteration is a step
        for loop in source.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _STEP_FILTER, [], [], None, None).set_lineno(
                loop.iter.lineno
            )
        return super()._generate(source, name, filename, defer_init)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _budget(__context).step()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and _too_wide(owner, getattr(__obj, "__name__", ""), args):
            raise SecurityError(f"{__obj.__name__}: the result would be too long")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        """``"...".format`` as Jinja's sandbox wraps it, refusing a width past the limit,
        written (``{:>1000000000}``) or passed as an argument (``{:>{}}``)."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text: str = value.__self__

        def bounded(*args: Any, **kwargs: Any) -> str:
            nested = "{" in text.replace("{{", "").split("{", 1)[-1]
            arguments = [*args, *kwargs.values()]
            if _HUGE_WIDTH.search(text) or (
                nested and any(isinstance(a, int) and a > MAX_REPEAT_CHARS for a in arguments)
            ):
                raise SecurityError("format: the result would be too long")
            result: str = wrapped(*args, **kwargs)
            return result

        return bounded

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _too_large_power(left, right):
            raise SecurityError("**: the result would be too large")
        if operator == "*" and (_too_long(left, right) or _too_long(right, left)):
            raise SecurityError("*: the repeated result would be too long")
        return super().call_binop(context, operator, left, right)


# A width written in a format ("%1000000000s", "{:>1000000000}") or passed to a padding
# method: like ``*``, it makes one value of that many characters at once.
_HUGE_WIDTH = re.compile(r"\d{7,}")
_PADDING = frozenset({"center", "ljust", "rjust", "zfill"})


def _too_wide(text: str, method: str, args: tuple[Any, ...]) -> bool:
    width = args[0] if args and isinstance(args[0], int) else 0
    if method in _PADDING:
        return width > MAX_REPEAT_CHARS
    if method == "expandtabs":
        return width * text.count("\t") > MAX_REPEAT_CHARS
    if method in {"format", "format_map"}:
        return bool(_HUGE_WIDTH.search(text))
    return False


def _bounded_filter(name: str, original: Any) -> Any:
    """The filter ``name`` refusing widths past MAX_REPEAT_CHARS (``center(10**9)``,
    ``"%1000000000s"|format``, ``indent(10**9)``) before it builds the value."""

    def bounded(*args: Any, **kwargs: Any) -> Any:
        values = list(args[1:] if name != "format" else args[:1]) + list(kwargs.values())
        value = args[0] if args else ""
        if name == "format" and isinstance(value, str) and _HUGE_WIDTH.search(value):
            raise SecurityError("format: the result would be too long")
        if name != "format":
            lines = str(value).count("\n") + 1 if name == "indent" else 1
            if any(isinstance(v, int) and v * lines > MAX_REPEAT_CHARS for v in values):
                raise SecurityError(f"{name}: the result would be too long")
        return original(*args, **kwargs)

    return bounded  # (none of the three takes Jinja's context or environment first)


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
    """``template.render`` that stops once the output passes MAX_RENDER_CHARS, or once it
    has taken MAX_STEPS steps or MAX_RENDER_SECONDS."""
    pieces: list[str] = []
    size = 0
    token = _active.set(_Budget())
    try:
        for piece in template.generate(values):
            size += len(piece)
            if size > MAX_RENDER_CHARS:
                raise SecurityError(
                    f"the rendered email is longer than {MAX_RENDER_CHARS:,} characters"
                )
            pieces.append(piece)
    finally:
        _active.reset(token)
    return "".join(pieces)
