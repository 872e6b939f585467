"""The names a rule may use: fields and host functions with their kinds, and the built-ins.

The checker type-checks every name against a ``Catalog``; the caller (``rules.fields`` for
leads) decides what is in it, the language decides only the built-in functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

FieldKind = Literal["str", "int", "float", "bool", "datetime"]

BUILTIN_FUNCTIONS: Final = {  # name -> number of arguments
    "lower": 1,
    "upper": 1,
    "contains": 2,
    "startswith": 2,
    "endswith": 2,
    "is_set": 1,
    "coalesce": 2,
}


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
