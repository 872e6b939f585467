"""Public names a package imports on first use (a module ``__getattr__``), so importing one of
its light submodules does not load its heavy ones: the delivery helper process builds
messages with ``config.schema`` and ``mail.transport.base`` without the validator, the rule
compiler, the database or the SMTP client."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``homes`` maps each name to the module that
    defines it. The first use imports that module and keeps the name in the package."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    return __getattr__
